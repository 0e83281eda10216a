// defines: test helpers for the CPU instruction-set levels (model/cpu/isa.h) — every level our
// kernels are built for, the skip of a level this machine cannot run (naming what is missing), a
// backend at a level, and that level's blocked activation layout. Numeric tests run at every level
// the machine has, so an AVX-512 machine also tests the AVX2 and generic kernels.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/cpu/isa.h"

namespace sx::model::testing {

inline const std::vector<CpuIsa>& all_isas() {
  static const std::vector<CpuIsa> levels = {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512};
  return levels;
}

// Empty when this machine runs `isa`; otherwise why not (for GTEST_SKIP).
inline std::string why_not_runnable(CpuIsa isa) {
  if (isa <= cpu::cpu_isa_available()) return "";
  return std::string("needs ") + cpu_isa_name(isa) + "; this machine runs at most " +
         cpu_isa_name(cpu::cpu_isa_available()) + " (" + cpu::cpu_description() + ")";
}

#define SX_SKIP_UNLESS_RUNNABLE(isa)                                                              \
  do {                                                                                            \
    const std::string sx_why = ::sx::model::testing::why_not_runnable(isa);                      \
    if (!sx_why.empty()) GTEST_SKIP() << sx_why;                                                  \
  } while (0)

inline std::unique_ptr<Backend> make_backend_at(CpuIsa isa, int threads = 2) {
  return make_cpu_backend({.threads = threads, .max_cpu_isa = isa});
}

// The layout a backend at this level keeps blocked activations in.
inline Layout blocked_layout(CpuIsa isa) { return cpu_isa_block(isa) == 16 ? Layout::kNChw16c : Layout::kNChw8c; }

}  // namespace sx::model::testing
