// Loss, metric and SGD kernels. One block per sample for the loss and top-k, reductions in a fixed tree
// order (deterministic); the batch loss is summed serially over the samples, as on the CPU.
#include <climits>
#include <math.h>

#include "model/cuda/cuda_check.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/launch_math.h"
#include "model/cuda/loss_kernels.h"
#include "model/elementwise.h"

namespace sx::model::cuda {
namespace {

constexpr int kRowThreads = 256;

// Tree reduction over the block in a fixed order; every thread gets the result.
template <class V, class Op>
__device__ V block_reduce(V v, Op op) {
  __shared__ V lanes[kRowThreads];
  lanes[threadIdx.x] = v;
  __syncthreads();
  for (int s = kRowThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) lanes[threadIdx.x] = op(lanes[threadIdx.x], lanes[threadIdx.x + s]);
    __syncthreads();
  }
  const V r = lanes[0];
  __syncthreads();  // the next reduction reuses lanes
  return r;
}
struct Max {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct Sum {
  template <class V>
  __device__ V operator()(V a, V b) const { return a + b; }
};

__device__ bool label_ok(const int32_t* labels, int row, int k, int32_t* bad_row) {
  const int32_t l = labels[row];
  if (l >= 0 && l < k) return true;
  if (threadIdx.x == 0) atomicMin(bad_row, row);
  return false;
}

__global__ void softmax_ce_kernel(const float* logits, const int32_t* __restrict__ labels,
                                  const float* __restrict__ soft, int k, float eps, float scale, float* dlogits,
                                  double* __restrict__ row_loss, int32_t* bad_row) {
  const int i = blockIdx.x;
  const float* z = logits + int64_t(i) * k;
  float* dz = dlogits + int64_t(i) * k;
  int label = -1;
  if (soft == nullptr) {
    if (!label_ok(labels, i, k, bad_row)) {
      if (threadIdx.x == 0) row_loss[i] = 0.0;
      return;
    }
    label = labels[i];
  }
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < k; c += kRowThreads) mx = fmaxf(mx, z[c]);
  mx = block_reduce(mx, Max{});
  double sum = 0.0;
  for (int c = threadIdx.x; c < k; c += kRowThreads) sum += exp(double(z[c]) - double(mx));
  sum = block_reduce(sum, Sum{});
  const double lse = double(mx) + log(sum);  // log Σ exp z, without overflow
  const float inv_k = 1.f / float(k);
  double loss = 0.0;
  for (int c = threadIdx.x; c < k; c += kRowThreads) {
    const float t = soft ? soft[int64_t(i) * k + c] : ew::smoothed_target(c == label, eps, inv_k);
    const double zc = z[c];
    loss += double(t) * (lse - zc);  // -t · log softmax
    dz[c] = ew::softmax_ce_grad(float(exp(zc - lse)), t, scale);
  }
  loss = block_reduce(loss, Sum{});
  if (threadIdx.x == 0) row_loss[i] = loss;
}

__global__ void mean_of_rows_kernel(const double* row_loss, int n, double* mean_loss) {
  double t = 0.0;
  for (int i = 0; i < n; ++i) t += row_loss[i];  // serial: the same bits whatever the launch
  *mean_loss = t / n;
}

// Rank of the label = classes with a higher logit + those with an equal one and a lower index (a stable
// descending sort); a hit in top-k when rank < k. A NaN label logit is a miss.
__global__ void top_k_kernel(const float* __restrict__ logits, const int32_t* __restrict__ labels, int k,
                             unsigned long long* hits, int32_t* bad_row) {
  const int i = blockIdx.x;
  if (!label_ok(labels, i, k, bad_row)) return;
  const float* z = logits + int64_t(i) * k;
  const int label = labels[i];
  const float zl = z[label];
  int rank = 0;
  for (int c = threadIdx.x; c < k; c += kRowThreads) rank += (z[c] > zl) || (z[c] == zl && c < label);
  rank = block_reduce(rank, Sum{});
  if (threadIdx.x == 0 && !isnan(zl)) {
    if (rank < 1) atomicAdd(&hits[0], 1ull);
    if (rank < 5) atomicAdd(&hits[1], 1ull);
  }
}

__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ v,
                           const int64_t* __restrict__ start, const int64_t* __restrict__ offset,
                           const float* __restrict__ weight_decay, int segments, int64_t total, float lr, float m,
                           float gs, bool nesterov) {
  SX_GRID_STRIDE(j, total) {
    const int s = segment_of(start, segments, j);
    const int64_t i = offset[s] + (j - start[s]);
    ew::sgd_update(w[i], g[i], v[i], lr, m, weight_decay[s], nesterov, gs);
  }
}

}  // namespace

Status launch_softmax_cross_entropy(cudaStream_t stream, const float* logits, const int32_t* labels,
                                    const float* soft_targets, int n, int k, float label_smoothing, float grad_scale,
                                    float* dlogits, double* row_loss, double* mean_loss, int32_t* bad_row) {
  softmax_ce_kernel<<<n, kRowThreads, 0, stream>>>(logits, labels, soft_targets, k, label_smoothing,
                                                   grad_scale / float(n), dlogits, row_loss, bad_row);
  SX_TRY(launch_status("softmax_cross_entropy"));
  mean_of_rows_kernel<<<1, 1, 0, stream>>>(row_loss, n, mean_loss);
  return launch_status("mean_of_rows");
}

Status launch_count_top_k(cudaStream_t stream, const float* logits, const int32_t* labels, int n, int k,
                          unsigned long long* hits, int32_t* bad_row) {
  top_k_kernel<<<n, kRowThreads, 0, stream>>>(logits, labels, k, hits, bad_row);
  return launch_status("count_top_k");
}

Status launch_sgd(cudaStream_t stream, int sm, float* params, const float* grads, float* momentum,
                  const int64_t* start, const int64_t* offset, const float* weight_decay, int segments, int64_t total,
                  float lr, float momentum_factor, float grad_scale, bool nesterov) {
  if (total == 0) return Status::ok();
  const Grid1d g = grid_1d(total, sm);
  sgd_kernel<<<g.blocks, g.threads, 0, stream>>>(params, grads, momentum, start, offset, weight_decay, segments, total,
                                                 lr, momentum_factor, grad_scale, nesterov);
  return launch_status("sgd");
}

}  // namespace sx::model::cuda
