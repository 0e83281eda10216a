// defines: the arithmetic of the CUDA batch norm kernels that is not per element — a thread's partial
// sums over its rows, and the per-channel statistics and gradient constants — as SX_HOST_DEVICE
// functions, so the host tests (tests/test_cuda_bn_math.cc) run them in the kernels' exact order and
// compare with the CPU backend. Conventions are the CPU fused BN's (model/cpu/batch_norm_fused.cc):
// sums relative to a shift k (the running mean before the update), biased variance for normalising,
// unbiased for the running variance, running = (1 - momentum)·running + momentum·batch.
// NHWC activations: element (row, c) at row·C + c, rows = N·H·W.
#pragma once

#include <math.h>
#include <stdint.h>

#include "model/elementwise.h"

namespace sx::model::cuda {

// Rows are summed in fp32 over chunks of this many, then in double (the CPU kernels' precision).
constexpr int kBnChunk = 64;

// Σ (x - k) and Σ (x - k)² over rows r0, r0 + step, ... < rows of channel c. Summed relative to the
// thread's first value (close to the data: no cancellation even when |mean| >> σ), moved to k in double.
template <class T>
SX_HOST_DEVICE inline void bn_stat_partial(const T* x, int64_t C, int64_t c, int64_t rows, int64_t r0, int64_t step,
                                           float k, double* s1, double* s2) {
  *s1 = 0.0;
  *s2 = 0.0;
  if (r0 >= rows) return;
  const float local = ew::to_float(x[r0 * C + c]);
  double d1 = 0.0, d2 = 0.0;
  float f1 = 0.f, f2 = 0.f;
  int64_t n = 0;
  int chunk = 0;
  for (int64_t r = r0; r < rows; r += step) {
    const float v = ew::to_float(x[r * C + c]) - local;
    f1 += v;
    f2 += v * v;
    ++n;
    if (++chunk == kBnChunk) {
      d1 += f1, d2 += f2;
      f1 = f2 = 0.f;
      chunk = 0;
    }
  }
  d1 += f1, d2 += f2;
  // Σ(x-k) = S1 + n·d, Σ(x-k)² = S2 + 2d·S1 + n·d², d = local - k.
  const double d = double(local) - double(k);
  *s1 = d1 + double(n) * d;
  *s2 = d2 + d * (2.0 * d1 + double(n) * d);
}

// Σ dy' and Σ dy'·(x - mean) over the same rows; dy' = dy masked by the forward's fused ReLU.
template <class T>
SX_HOST_DEVICE inline void bn_grad_partial(const T* x, const T* dy, int64_t C, int64_t c, int64_t rows, int64_t r0,
                                           int64_t step, float mean, float scale, float shift, bool fuse_relu,
                                           double* g1, double* g2) {
  double d1 = 0.0, d2 = 0.0;
  float f1 = 0.f, f2 = 0.f;
  int chunk = 0;
  for (int64_t r = r0; r < rows; r += step) {
    const float xv = ew::to_float(x[r * C + c]);
    const float g = ew::bn_masked_grad(ew::to_float(dy[r * C + c]), xv, mean, scale, shift, fuse_relu);
    f1 += g;
    f2 += g * (xv - mean);
    if (++chunk == kBnChunk) {
      d1 += f1, d2 += f2;
      f1 = f2 = 0.f;
      chunk = 0;
    }
  }
  *g1 = d1 + f1;
  *g2 = d2 + f2;
}

// Training statistics of one channel from its (reduced) sums relative to k over m values.
struct BnTrainChannel {
  float mean, var, scale;                // batch mean, biased variance, γ/sqrt(var + eps)
  float running_mean, running_var;       // updated
};
SX_HOST_DEVICE inline BnTrainChannel bn_train_channel(double sum1, double sum2, double m, float k, float gamma,
                                                      float eps, float momentum, float running_var) {
  const double d1 = sum1 / m, d2 = sum2 / m;
  double var = d2 - d1 * d1;
  if (var < 0.0) var = 0.0;
  const double mean = double(k) + d1;
  const double unbias = m > 1.0 ? m / (m - 1.0) : 1.0;
  BnTrainChannel r;
  r.mean = float(mean);
  r.var = float(var);
  r.scale = float(double(gamma) / sqrt(var + double(eps)));
  r.running_mean = (1.f - momentum) * k + momentum * float(mean);
  r.running_var = (1.f - momentum) * running_var + momentum * float(var * unbias);
  return r;
}

// Inference: the running statistics' scale.
SX_HOST_DEVICE inline float bn_eval_scale(float gamma, float running_var, float eps) {
  return float(double(gamma) / sqrt(double(running_var) + double(eps)));
}

// Backward of one channel: this process's dgamma/dbeta from its local sums (the gradient allreduce adds
// the other ranks'), and the dx constants from the (global, under SyncBN) sums over m values.
struct BnGradChannel {
  float dgamma, dbeta;  // this process's share
  float a, b, c;        // ew::bn_input_grad's constants
};
SX_HOST_DEVICE inline BnGradChannel bn_grad_channel(double local1, double local2, double global1, double global2,
                                                    double m, float gamma, float save_var, float eps) {
  const double inv = 1.0 / sqrt(double(save_var) + double(eps));
  const double a = double(gamma) * inv;
  BnGradChannel r;
  r.dbeta = float(local1);
  r.dgamma = float(local2 * inv);
  r.a = float(a);
  r.b = float(-a * inv * inv * global2 / m);
  r.c = float(-a * global1 / m);
  return r;
}

}  // namespace sx::model::cuda
