// Batch norm kernels: per-channel sums in a fixed order (reduce_grid: threads -> 8 row lanes in order ->
// splits in order, so no atomics and the same bits every run), the per-channel constant kernels, and
// the two element-wise passes. Arithmetic: bn_math.h, model/elementwise.h.
#include "model/cuda/bn_kernels.h"
#include "model/cuda/bn_math.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/launch_math.h"
#include "model/cuda/storage.h"

namespace sx::model::cuda {
namespace {

// Block (32, 8), grid (tiles, splits): partials[split][j][c] for j = 0, 1 (the two sums of channel c).
template <class T>
__global__ void stat_partials_kernel(const T* __restrict__ x, int64_t rows, int64_t C, const float* __restrict__ shift,
                                     double* __restrict__ partials) {
  __shared__ double lane1[kRowLanes][kChannelLanes], lane2[kRowLanes][kChannelLanes];
  const int64_t c = int64_t(blockIdx.x) * kChannelLanes + threadIdx.x;
  double s1 = 0.0, s2 = 0.0;
  if (c < C)
    bn_stat_partial(x, C, c, rows, reduce_row_start(blockIdx.y, threadIdx.y), reduce_row_step(gridDim.y), shift[c],
                    &s1, &s2);
  lane1[threadIdx.y][threadIdx.x] = s1;
  lane2[threadIdx.y][threadIdx.x] = s2;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double t1 = 0.0, t2 = 0.0;
    for (int y = 0; y < kRowLanes; ++y) t1 += lane1[y][threadIdx.x], t2 += lane2[y][threadIdx.x];
    double* out = partials + int64_t(blockIdx.y) * 2 * C;
    out[c] = t1;
    out[C + c] = t2;
  }
}

template <class T>
__global__ void grad_partials_kernel(const T* __restrict__ x, const T* __restrict__ dy, int64_t rows, int64_t C,
                                     const float* __restrict__ mean, const float* __restrict__ scale,
                                     const float* __restrict__ shift, bool fuse_relu, double* __restrict__ partials) {
  __shared__ double lane1[kRowLanes][kChannelLanes], lane2[kRowLanes][kChannelLanes];
  const int64_t c = int64_t(blockIdx.x) * kChannelLanes + threadIdx.x;
  double g1 = 0.0, g2 = 0.0;
  if (c < C)
    bn_grad_partial(x, dy, C, c, rows, reduce_row_start(blockIdx.y, threadIdx.y), reduce_row_step(gridDim.y), mean[c],
                    scale[c], shift[c], fuse_relu, &g1, &g2);
  lane1[threadIdx.y][threadIdx.x] = g1;
  lane2[threadIdx.y][threadIdx.x] = g2;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double t1 = 0.0, t2 = 0.0;
    for (int y = 0; y < kRowLanes; ++y) t1 += lane1[y][threadIdx.x], t2 += lane2[y][threadIdx.x];
    double* out = partials + int64_t(blockIdx.y) * 2 * C;
    out[c] = t1;
    out[C + c] = t2;
  }
}

// sums[j] = Σ_split partials[split][j], j < 2C, in split order.
__global__ void sum_splits_kernel(const double* __restrict__ partials, int splits, int64_t n, double* __restrict__ sums) {
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    double t = 0.0;
    for (int s = 0; s < splits; ++s) t += partials[int64_t(s) * n + j];
    sums[j] = t;
  }
}

__global__ void train_constants_kernel(int64_t C, const double* __restrict__ sums, double m, const float* __restrict__ gamma,
                                       float eps, float momentum, float* running_mean, float* running_var,
                                       float* __restrict__ save_mean, float* __restrict__ save_var,
                                       float* __restrict__ mean, float* __restrict__ scale) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const BnTrainChannel r =
        bn_train_channel(sums[c], sums[C + c], m, running_mean[c], gamma[c], eps, momentum, running_var[c]);
    save_mean[c] = r.mean;
    save_var[c] = r.var;
    mean[c] = r.mean;
    scale[c] = r.scale;
    running_mean[c] = r.running_mean;
    running_var[c] = r.running_var;
  }
}

__global__ void eval_constants_kernel(int64_t C, const float* __restrict__ gamma, const float* __restrict__ running_mean,
                                      const float* __restrict__ running_var, float eps, float* __restrict__ mean,
                                      float* __restrict__ scale) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    mean[c] = running_mean[c];
    scale[c] = bn_eval_scale(gamma[c], running_var[c], eps);
  }
}

__global__ void grad_constants_kernel(int64_t C, const double* __restrict__ local, const double* __restrict__ global,
                                      double m, const float* __restrict__ gamma, const float* __restrict__ save_var,
                                      float eps, float* dgamma, float* dbeta, bool accumulate, float* __restrict__ a,
                                      float* __restrict__ b, float* __restrict__ cc) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    const BnGradChannel r = bn_grad_channel(local[c], local[C + c], global[c], global[C + c], m, gamma[c], save_var[c], eps);
    dgamma[c] = accumulate ? dgamma[c] + r.dgamma : r.dgamma;
    dbeta[c] = accumulate ? dbeta[c] + r.dbeta : r.dbeta;
    a[c] = r.a;
    b[c] = r.b;
    cc[c] = r.c;
  }
}

// Block (32, 8): x over channels, y over rows, grid-stride over rows.
template <class T>
__global__ void apply_kernel(const T* __restrict__ x, int64_t rows, int64_t C, const float* __restrict__ mean,
                             const float* __restrict__ scale, const float* __restrict__ shift, bool fuse_relu,
                             T* __restrict__ y) {
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes)
    for (int64_t c = threadIdx.x; c < C; c += kChannelLanes) {
      const int64_t i = r * C + c;
      y[i] = ew::from_float<T>(ew::bn_output(ew::to_float(x[i]), mean[c], scale[c], shift[c], fuse_relu));
    }
}

template <class T>
__global__ void grad_apply_kernel(const T* __restrict__ x, const T* __restrict__ dy, int64_t rows, int64_t C,
                                  const float* __restrict__ mean, const float* __restrict__ scale,
                                  const float* __restrict__ shift, bool fuse_relu, const float* __restrict__ a,
                                  const float* __restrict__ b, const float* __restrict__ cc, T* __restrict__ dx) {
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes)
    for (int64_t c = threadIdx.x; c < C; c += kChannelLanes) {
      const int64_t i = r * C + c;
      const float xv = ew::to_float(x[i]);
      const float g = ew::bn_masked_grad(ew::to_float(dy[i]), xv, mean[c], scale[c], shift[c], fuse_relu);
      dx[i] = ew::from_float<T>(ew::bn_input_grad(g, xv, mean[c], a[c], b[c], cc[c]));
    }
}

int channel_blocks(int64_t C) { return int((C + 255) / 256); }

Status sum_splits(cudaStream_t stream, const double* partials, int splits, int64_t C, double* sums) {
  sum_splits_kernel<<<channel_blocks(2 * C), 256, 0, stream>>>(partials, splits, 2 * C, sums);
  return launch_status("bn sum_splits");
}

}  // namespace

size_t bn_partials_bytes(int64_t rows, int64_t C, int sm) {
  return size_t(reduce_grid(rows, C, sm).splits) * 2 * size_t(C) * sizeof(double);
}

Status launch_bn_stat_sums(cudaStream_t stream, int sm, Precision p, const void* x, int64_t rows, int64_t C,
                           const float* shift, double* partials, double* sums) {
  const ReduceGrid g = reduce_grid(rows, C, sm);
  const dim3 block(kChannelLanes, kRowLanes), grid(g.tiles, g.splits);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    stat_partials_kernel<T><<<grid, block, 0, stream>>>(static_cast<const T*>(x), rows, C, shift, partials);
  });
  SX_TRY(launch_status("bn stat_partials"));
  return sum_splits(stream, partials, g.splits, C, sums);
}

Status launch_bn_grad_sums(cudaStream_t stream, int sm, Precision p, const void* x, const void* dy, int64_t rows,
                           int64_t C, const float* mean, const float* scale, const float* shift, bool fuse_relu,
                           double* partials, double* sums) {
  const ReduceGrid g = reduce_grid(rows, C, sm);
  const dim3 block(kChannelLanes, kRowLanes), grid(g.tiles, g.splits);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    grad_partials_kernel<T><<<grid, block, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(dy), rows, C,
                                                         mean, scale, shift, fuse_relu, partials);
  });
  SX_TRY(launch_status("bn grad_partials"));
  return sum_splits(stream, partials, g.splits, C, sums);
}

Status launch_bn_train_constants(cudaStream_t stream, int64_t C, const double* sums, double m, const float* gamma,
                                 float eps, float momentum, float* running_mean, float* running_var, float* save_mean,
                                 float* save_var, float* mean, float* scale) {
  train_constants_kernel<<<channel_blocks(C), 256, 0, stream>>>(C, sums, m, gamma, eps, momentum, running_mean,
                                                               running_var, save_mean, save_var, mean, scale);
  return launch_status("bn train_constants");
}

Status launch_bn_eval_constants(cudaStream_t stream, int64_t C, const float* gamma, const float* running_mean,
                                const float* running_var, float eps, float* mean, float* scale) {
  eval_constants_kernel<<<channel_blocks(C), 256, 0, stream>>>(C, gamma, running_mean, running_var, eps, mean, scale);
  return launch_status("bn eval_constants");
}

Status launch_bn_grad_constants(cudaStream_t stream, int64_t C, const double* local, const double* global, double m,
                                const float* gamma, const float* save_var, float eps, float* dgamma, float* dbeta,
                                bool accumulate, float* a, float* b, float* c) {
  grad_constants_kernel<<<channel_blocks(C), 256, 0, stream>>>(C, local, global, m, gamma, save_var, eps, dgamma, dbeta,
                                                              accumulate, a, b, c);
  return launch_status("bn grad_constants");
}

Status launch_bn_apply(cudaStream_t stream, int sm, Precision p, const void* x, int64_t rows, int64_t C,
                       const float* mean, const float* scale, const float* shift, bool fuse_relu, void* y) {
  if (rows == 0) return Status::ok();
  const dim3 block(kChannelLanes, kRowLanes);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    apply_kernel<T><<<row_blocks(rows, sm), block, 0, stream>>>(static_cast<const T*>(x), rows, C, mean, scale, shift,
                                                                fuse_relu, static_cast<T*>(y));
  });
  return launch_status("bn apply");
}

Status launch_bn_grad_apply(cudaStream_t stream, int sm, Precision p, const void* x, const void* dy, int64_t rows,
                            int64_t C, const float* mean, const float* scale, const float* shift, bool fuse_relu,
                            const float* a, const float* b, const float* c, void* dx) {
  if (rows == 0) return Status::ok();
  const dim3 block(kChannelLanes, kRowLanes);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    grad_apply_kernel<T><<<row_blocks(rows, sm), block, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(dy),
                                                                     rows, C, mean, scale, shift, fuse_relu, a, b, c,
                                                                     static_cast<T*>(dx));
  });
  return launch_status("bn grad_apply");
}

}  // namespace sx::model::cuda
