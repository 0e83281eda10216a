// defines: the per-element arithmetic of the Backend's own kernels (ReLU, sigmoid, the SE residual
// merge, softmax cross-entropy targets, the SGD update), written once as SX_HOST_DEVICE inline
// functions. The CPU loops in cpu/kernels.cc call them and a CUDA backend's kernels call the very
// same functions, so the CPU tests cover the GPU arithmetic too. No loops, no memory layout here.
#pragma once

#include <math.h>  // expf: the same name on host and device

#ifdef __CUDACC__
#define SX_HOST_DEVICE __host__ __device__
#else
#define SX_HOST_DEVICE
#endif

namespace sx::model::ew {

SX_HOST_DEVICE inline float relu(float x) { return x > 0.f ? x : 0.f; }
// Takes the forward output y: y > 0 exactly where x > 0 (the gradient at 0 is taken as 0, as PyTorch).
SX_HOST_DEVICE inline float relu_grad(float y, float dy) { return y > 0.f ? dy : 0.f; }

// 1 / (1 + e^-x) needs no branch to be safe: e^-x overflows to inf for x < -88 and the result is 0.
SX_HOST_DEVICE inline float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
SX_HOST_DEVICE inline float sigmoid_grad(float y, float dy) { return dy * y * (1.f - y); }

// A batch norm with its statistics folded into per-channel constants: (x - mean)·scale + shift.
SX_HOST_DEVICE inline float affine(float x, float mean, float scale, float shift) { return (x - mean) * scale + shift; }

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

}  // namespace sx::model::ew
