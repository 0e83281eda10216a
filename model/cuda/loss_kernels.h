// defines: launchers of the loss, metric and optimizer kernels (loss_kernels.cu): softmax cross-entropy
// with label smoothing or soft targets, top-1/top-5 counting, the fused SGD step over segments.
// logits (N, K) fp32, labels (N) int32 — all device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"

namespace sx::model::cuda {

// Device results of the loss: the mean loss over the batch (double) and the first sample whose label is
// outside [0, K) (INT32_MAX when none; initialise `bad_row` to it). row_loss: N doubles of scratch.
Status launch_softmax_cross_entropy(cudaStream_t stream, const float* logits, const int32_t* labels,
                                    const float* soft_targets, int n, int k, float label_smoothing, float grad_scale,
                                    float* dlogits, double* row_loss, double* mean_loss, int32_t* bad_row);
// hits[0] += top-1 hits, hits[1] += top-5 hits; bad_row as above.
Status launch_count_top_k(cudaStream_t stream, const float* logits, const int32_t* labels, int n, int k,
                          unsigned long long* hits, int32_t* bad_row);

// SGD over segments laid end to end (launch_math.h segment_of): start (S+1), offset (S), weight_decay (S).
Status launch_sgd(cudaStream_t stream, int sm, float* params, const float* grads, float* momentum,
                  const int64_t* start, const int64_t* offset, const float* weight_decay, int segments, int64_t total,
                  float lr, float momentum_factor, float grad_scale, bool nesterov);

}  // namespace sx::model::cuda
