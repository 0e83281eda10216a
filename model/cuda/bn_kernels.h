// defines: launchers of the batch norm kernels (bn_kernels.cu), NHWC activations in the storage type
// of `p`, per-channel arrays fp32, sums double. rows = N·H·W; C channels. The arithmetic is bn_math.h
// and model/elementwise.h; the grid is launch_math.h's reduce_grid / row_blocks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"
#include "model/precision.h"

namespace sx::model::cuda {

// Bytes of the per-split partial sums a reduction over (rows, C) needs (reduce_grid's splits · 2C doubles).
size_t bn_partials_bytes(int64_t rows, int64_t C, int sm);

// sums[0, C) = Σ (x - k), sums[C, 2C) = Σ (x - k)² per channel, k = shift (C floats). partials: scratch.
Status launch_bn_stat_sums(cudaStream_t stream, int sm, Precision p, const void* x, int64_t rows, int64_t C,
                           const float* shift, double* partials, double* sums);
// sums[0, C) = Σ dy', sums[C, 2C) = Σ dy'·(x - mean), dy' masked by the fused ReLU of (mean, scale, shift).
Status launch_bn_grad_sums(cudaStream_t stream, int sm, Precision p, const void* x, const void* dy, int64_t rows,
                           int64_t C, const float* mean, const float* scale, const float* shift, bool fuse_relu,
                           double* partials, double* sums);

// Per channel, from sums over m values relative to running_mean (bn_train_channel): save_mean,
// save_var, the apply constants mean/scale, and the running statistics updated in place.
Status launch_bn_train_constants(cudaStream_t stream, int64_t C, const double* sums, double m, const float* gamma,
                                 float eps, float momentum, float* running_mean, float* running_var, float* save_mean,
                                 float* save_var, float* mean, float* scale);
// mean = running_mean, scale = γ/sqrt(running_var + eps).
Status launch_bn_eval_constants(cudaStream_t stream, int64_t C, const float* gamma, const float* running_mean,
                                const float* running_var, float eps, float* mean, float* scale);
// dgamma, dbeta (+)= from local sums; a, b, c from global sums (bn_grad_channel).
Status launch_bn_grad_constants(cudaStream_t stream, int64_t C, const double* local, const double* global, double m,
                                const float* gamma, const float* save_var, float eps, float* dgamma, float* dbeta,
                                bool accumulate, float* a, float* b, float* c);

// y = [relu]((x - mean)·scale + shift).
Status launch_bn_apply(cudaStream_t stream, int sm, Precision p, const void* x, int64_t rows, int64_t C,
                       const float* mean, const float* scale, const float* shift, bool fuse_relu, void* y);
// dx = a·dy' + b·(x - mean) + c, dy' as in launch_bn_grad_sums.
Status launch_bn_grad_apply(cudaStream_t stream, int sm, Precision p, const void* x, const void* dy, int64_t rows,
                            int64_t C, const float* mean, const float* scale, const float* shift, bool fuse_relu,
                            const float* a, const float* b, const float* c, void* dx);

}  // namespace sx::model::cuda
