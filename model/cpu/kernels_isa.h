// defines: the kernels compiled once per instruction-set level (isa.h), declared in each of the
// namespaces generic::, avx2:: and avx512:: with one signature (kernels_isa.inc), and BnGrad.
// Callers pick a level with SX_ISA_CALL(isa, name)(args...). The checks of arguments are the
// callers' (CpuBackend, the ops); these loops trust their inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "model/backend.h"
#include "model/cpu/conv_plan.h"
#include "model/cpu/layout_view.h"

namespace sx::model::cpu {

// The incoming gradient as the fused BN's backward kernels read it: dy = dz·gs[n·CP + c] +
// gt[n·CP + c] (1 and 0 for a plain backward; the SE scale and pooled-mean gradient for
// backward_scaled). CP = padded channels.
struct BnGrad {
  LayoutView dz;
  const float* gs;
  const float* gt;
};

namespace generic {
#include "model/cpu/kernels_isa.inc"
}
namespace avx2 {
#include "model/cpu/kernels_isa.inc"
}
namespace avx512 {
#include "model/cpu/kernels_isa.inc"
}

}  // namespace sx::model::cpu
