// defines: the direct grouped 3x3 convolution of SE-ResNeXt's narrow groups (4 or 8 channels per
// group; 16 with AVX-512) on blocked layouts — our own ConvOp, one build per instruction-set level:
// avx512::make_grouped_conv_direct on nChw16c, avx2::make_grouped_conv_direct on nChw8c (declared
// in kernels_isa.h; the generic level has none). oneDNN has no jit kernel for groups narrower than
// its channel block, so its path reorders the activations around slower kernels; this op needs no
// reorders.
//
// In a blocked layout one L-lane vector holds L/GS whole groups, so for each input channel j of a
// group a lane permute puts, in output lane l, input channel (l/GS)·GS + j; one FMA with a weight
// vector (lane l = w[oc = l, j, kh, kw]) then does L multiply-adds of the right group.
// N batch, C = OC channels, G groups, GS = C/G channels per group, L = 16 or 8 lanes.
//
// <level>::grouped_conv_direct_supports(desc): kernel 3x3, pad 1, stride 1 or 2, the level's
// blocked input layout, C % L == 0, OC == C, GS in {4, 8} (and 16 with AVX-512).
// The op is deterministic for any thread count (backward-weights reduces fixed per-image partial
// sums in a fixed order); impl_info() is "direct_avx512_grouped:gsN" or "direct_avx2_grouped:gsN".
#pragma once

#include "model/cpu/kernels_isa.h"
