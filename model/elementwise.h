// defines: the per-element arithmetic of the Backend's own kernels (ReLU, sigmoid, the SE residual
// merge, softmax cross-entropy targets, the SGD update, the bf16/fp16 storage conversions), written
// once as SX_HOST_DEVICE inline functions. The CPU loops in cpu/kernels.cc call them and a CUDA backend's kernels call the very
// same functions, so the CPU tests cover the GPU arithmetic too. No loops, no memory layout here.
#pragma once

#include <math.h>    // expf: the same name on host and device
#include <stdint.h>
#include <string.h>  // memcpy: the host's bit cast

#ifdef __CUDACC__
#define SX_HOST_DEVICE __host__ __device__
#else
#define SX_HOST_DEVICE
#endif

namespace sx::model::ew {

// NaN stays NaN (x <= 0 is false for NaN), so a diverged network shows as NaN, not as zeros.
SX_HOST_DEVICE inline float relu(float x) { return x <= 0.f ? 0.f : x; }
// Takes the forward output y: y > 0 exactly where x > 0 (the gradient at 0 is taken as 0, as PyTorch).
SX_HOST_DEVICE inline float relu_grad(float y, float dy) { return y > 0.f ? dy : 0.f; }

// 1 / (1 + e^-x) needs no branch to be safe: e^-x overflows to inf for x < -88 and the result is 0.
SX_HOST_DEVICE inline float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
SX_HOST_DEVICE inline float sigmoid_grad(float y, float dy) { return dy * y * (1.f - y); }

// A batch norm with its statistics folded into per-channel constants: (x - mean)·scale + shift.
SX_HOST_DEVICE inline float affine(float x, float mean, float scale, float shift) { return (x - mean) * scale + shift; }

// Batch norm with its optional ReLU, from a forward's per-channel constants: y = [relu](affine(x)).
SX_HOST_DEVICE inline float bn_output(float x, float mean, float scale, float shift, bool fuse_relu) {
  const float v = affine(x, mean, scale, shift);
  return fuse_relu ? relu(v) : v;
}
// The gradient that reaches a batch norm through its fused ReLU: dy where the forward's pre-ReLU value
// (recomputed from x with the forward's constants, so the mask is the forward's) was positive.
SX_HOST_DEVICE inline float bn_masked_grad(float dy, float x, float mean, float scale, float shift, bool fuse_relu) {
  return fuse_relu && !(affine(x, mean, scale, shift) > 0.f) ? 0.f : dy;
}
// Batch norm input gradient with per-channel constants: a·dy' + b·(x - mean) + c, a = γ/σ,
// b = -a/σ²·mean(dy'·(x - μ)), c = -a·mean(dy') (means over the batch, the global one under SyncBN).
SX_HOST_DEVICE inline float bn_input_grad(float dy_masked, float x, float mean, float a, float b, float c) {
  return a * dy_masked + b * (x - mean) + c;
}

// Residual merge of a bottleneck, out = relu(x·s + shortcut), s the SE channel scale (1 without SE).
SX_HOST_DEVICE inline float scale_add_relu(float x, float s, float shortcut) { return relu(x * s + shortcut); }
// Input gradient of the SE-scaled branch: dz·s plus the share of the SE pool input's gradient,
// dmean_per_pixel = dmean[n, c] / (H·W).
SX_HOST_DEVICE inline float scale_grad(float dz, float s, float dmean_per_pixel) { return dz * s + dmean_per_pixel; }

// Label-smoothed target of class k: (1-ε)·[k == label] + ε/K.
SX_HOST_DEVICE inline float smoothed_target(bool is_label, float eps, float inv_k) {
  return (is_label ? 1.f - eps : 0.f) + eps * inv_k;
}
// dlogit = (softmax - target) · scale, scale = grad_scale / N.
SX_HOST_DEVICE inline float softmax_ce_grad(float prob, float target, float scale) { return (prob - target) * scale; }

// One element of SGD with momentum, PyTorch semantics (dampening 0):
//   g' = g + wd·w;  v = m·v + g';  w -= lr·(nesterov ? g' + m·v : v).
// PyTorch's first step sets v = g'; with v starting at 0, m·0 + g' is the same.
SX_HOST_DEVICE inline void sgd_update(float& w, float g, float& v, float lr, float m, float wd, bool nesterov,
                                      float grad_scale = 1.f) {
  const float gd = g * grad_scale + wd * w;
  v = m * v + gd;
  w -= lr * (nesterov ? gd + m * v : v);
}

// ---- storage types of reduced-precision activations (model/precision.h) ---------------------------
// The bits of a bfloat16 / IEEE binary16 value; the conversions below are the only arithmetic on them,
// so a kernel computes in fp32 and the host tests cover the rounding exactly.
struct Bf16 {
  uint16_t bits;
};
struct Fp16 {
  uint16_t bits;
};

SX_HOST_DEVICE inline uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
#endif
}
SX_HOST_DEVICE inline float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// bf16 is the upper half of fp32: round to nearest, ties to even (overflow rounds to inf); NaN stays
// NaN (made quiet, so rounding cannot turn it into inf).
SX_HOST_DEVICE inline Bf16 to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{uint16_t((u >> 16) | 0x40u)};
  return Bf16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
SX_HOST_DEVICE inline float to_float(Bf16 v) { return bits_float(uint32_t(v.bits) << 16); }

// binary16: 5 exponent bits (bias 15), 10 mantissa bits; round to nearest, ties to even; |f| >= 65520
// is inf, below 2^-14 a subnormal (multiples of 2^-24), below 2^-25 zero (2^-25 itself ties to 0).
SX_HOST_DEVICE inline Fp16 to_fp16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return Fp16{uint16_t(sign | 0x7e00u)};   // NaN
  if (a >= 0x477ff000u) return Fp16{uint16_t(sign | 0x7c00u)};  // inf, and what rounds to it
  if (a >= 0x38800000u) {                                        // normal: rebias 127 -> 15, drop 13 bits
    const uint32_t r = a - (112u << 23);
    return Fp16{uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13))};
  }
  const uint32_t e = a >> 23;
  if (e < 102) return Fp16{sign};                  // below 2^-25
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;  // value = m·2^(e-150) = (m >> (126-e)) units of 2^-24
  const uint32_t shift = 126 - e;                  // 14..24
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal: same bits
  return Fp16{uint16_t(sign | q)};
}
SX_HOST_DEVICE inline float to_float(Fp16 v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t e = (v.bits >> 10) & 0x1fu, m = v.bits & 0x3ffu;
  if (e == 0x1fu) return bits_float(sign | 0x7f800000u | (m << 13));           // inf, NaN
  if (e == 0) return bits_float(sign | float_bits(float(m) * 5.9604644775390625e-8f));  // m·2^-24, exact
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}
SX_HOST_DEVICE inline float to_float(float v) { return v; }

// from_float<T>(v): v in storage type T (float, Bf16, Fp16).
template <class T>
SX_HOST_DEVICE inline T from_float(float v);
template <>
SX_HOST_DEVICE inline float from_float<float>(float v) { return v; }
template <>
SX_HOST_DEVICE inline Bf16 from_float<Bf16>(float v) { return to_bf16(v); }
template <>
SX_HOST_DEVICE inline Fp16 from_float<Fp16>(float v) { return to_fp16(v); }

}  // namespace sx::model::ew
