// defines: sx::worker::mixup_lambda, mixup_batch — mixup (Zhang et al. 2018) within a rank's batch:
// row i is mixed with row n-1-i (the batch reversed, as timm does), targets become soft (N, K) with
// label smoothing folded in. lambda ~ Beta(alpha, alpha) is a pure function of (seed, step, micro,
// rank), so a resumed run mixes exactly as the uninterrupted one.
#pragma once

#include <cstdint>
#include <vector>

namespace sx::worker {

float mixup_lambda(uint64_t seed, int64_t step, int micro, int rank, double alpha);

// images: (N, C, H, W) or (N, H, W, C), `image_floats` per row, mixed in place.
// soft_targets: resized to (N, K): lam·smooth(y_i) + (1 - lam)·smooth(y_{n-1-i}).
void mixup_batch(float* images, int64_t image_floats, const int32_t* labels, int n, int k, float lam,
                 float label_smoothing, std::vector<float>* soft_targets);

}  // namespace sx::worker
