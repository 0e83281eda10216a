// defines: the run-time choice of our CPU kernels — what this CPU has (cpuid), what oneDNN may use
// (its effective ISA, capped by ONEDNN_MAX_CPU_ISA or cap_cpu_isa), the level a backend runs at —
// and SX_ISA_CALL, which calls the build of a kernel for a level.
//
// Every kernel file listed in model/CMakeLists.txt (SX_MODEL_ISA_SOURCES) is compiled once per
// level (isa_begin.h), into namespaces generic::, avx2:: and avx512:: with the same functions
// (kernels_isa.h); one binary then runs on any x86-64 CPU and the lower levels can be tested on a
// higher machine. The level of a backend also fixes the activation layout (cpu_isa_block), so
// oneDNN's jit kernels and ours agree on the channel block.
#pragma once

#include <string>

#include "common/status.h"
#include "model/cpu_isa.h"

namespace sx::model::cpu {

CpuIsa cpu_isa_detected();   // the highest level this CPU and OS support
CpuIsa cpu_isa_onednn();     // oneDNN's effective ISA as one of our levels
// min(detected, oneDNN's): the level a backend uses unless BackendOptions::max_cpu_isa asks for less.
CpuIsa cpu_isa_available();
// Caps oneDNN (dnnl::set_max_cpu_isa) and so every backend made afterwards. oneDNN accepts this
// only before its first primitive is created; later calls fail with a message saying so.
Status cap_cpu_isa(CpuIsa isa);
// The CPU's brand string, e.g. "AMD EPYC 7B13" (what measurements name).
std::string cpu_model_name();
// "AMD EPYC 7B13, avx2 (oneDNN avx2)" — model, our level, oneDNN's: one line for benchmark output.
std::string cpu_description();

}  // namespace sx::model::cpu

// The build of kernel `fn` for level `isa` (a function pointer; the three have one signature).
#define SX_ISA_CALL(isa, fn)                                                      \
  ((isa) == ::sx::model::CpuIsa::kAvx512 ? &::sx::model::cpu::avx512::fn        \
   : (isa) == ::sx::model::CpuIsa::kAvx2 ? &::sx::model::cpu::avx2::fn         \
                                         : &::sx::model::cpu::generic::fn)
