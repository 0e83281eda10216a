// defines: sx::model::cpu::make_grouped_conv_direct — our own AVX-512 ConvOp for the narrow
// grouped 3x3 convolutions of SE-ResNeXt (4, 8 or 16 channels per group) directly on nChw16c.
// oneDNN has no jit kernel for groups narrower than a 16-channel block on nChw16c, so its path
// reorders the activations around slower nChw4c/nChw8c/nhwc kernels; this op needs no reorders.
//
// In nChw16c one 16-lane vector holds 16/GS whole groups, so for each input channel j of a group
// a lane permute puts, in output lane l, input channel (l/GS)·GS + j; one FMA with a weight
// vector (lane l = w[oc = l, j, kh, kw]) then does 16 multiply-adds of the right group.
// N batch, C = OC channels, G groups, GS = C/G channels per group, CB = C/16 channel blocks.
#pragma once

#include <memory>

#include "common/status.h"
#include "model/backend.h"
#include "model/cpu/conv_plan.h"

namespace sx::model::cpu {

// True when the op below handles the shape: kernel 3x3, pad 1, stride 1 or 2, nChw16c input,
// C % 16 == 0, OC == C, C/G in {4, 8, 16}, and the build has AVX-512 (-march=native here).
bool grouped_conv_direct_supports(const ConvDesc& desc);

// Deterministic for any thread count (backward-weights reduces fixed per-image partial sums in
// a fixed order). impl_info() is "direct_avx512_grouped:gsN".
StatusOr<std::unique_ptr<CpuConv>> make_grouped_conv_direct(const ConvDesc& desc);

}  // namespace sx::model::cpu
