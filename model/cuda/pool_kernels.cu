// Pooling kernels, NHWC: blocks of 32 channels x 8 rows, one row = one output (forward) or input
// (backward) pixel, so each thread's window walk reads 32 neighbouring channels per pixel with its warp.
#include "model/cuda/cuda_check.h"
#include "model/cuda/launch_math.h"
#include "model/cuda/pool_kernels.h"
#include "model/cuda/pool_math.h"
#include "model/cuda/storage.h"

namespace sx::model::cuda {
namespace {

PoolGeo geo_of(const PoolGeometry& g) {
  PoolGeo r;
  r.n = g.in.n, r.c = g.in.c, r.h = g.in.h, r.w = g.in.w, r.oh = g.out.h, r.ow = g.out.w;
  r.k = g.kernel, r.s = g.stride, r.p = g.pad;
  return r;
}

template <class T, bool Max>
__global__ void pool_forward_kernel(PoolGeo g, const T* __restrict__ x, T* __restrict__ y, int32_t* __restrict__ argmax) {
  const int64_t rows = g.n * g.oh * g.ow;
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int ow = int(r % g.ow), oh = int((r / g.ow) % g.oh);
    const int64_t n = r / (int64_t(g.ow) * g.oh);
    const T* image = x + n * g.h * g.w * g.c;
    for (int64_t c = threadIdx.x; c < g.c; c += kChannelLanes) {
      int32_t at = 0;
      y[r * g.c + c] = ew::from_float<T>(pool_output<T, Max>(g, image, oh, ow, c, &at));
      if (Max) argmax[r * g.c + c] = at;
    }
  }
}

template <class T, bool Max>
__global__ void pool_backward_kernel(PoolGeo g, const T* __restrict__ dy, const int32_t* __restrict__ argmax,
                                     T* __restrict__ dx) {
  const int64_t rows = g.n * g.h * g.w;
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int iw = int(r % g.w), ih = int((r / g.w) % g.h);
    const int64_t n = r / (int64_t(g.w) * g.h), image = n * g.oh * g.ow * g.c;
    for (int64_t c = threadIdx.x; c < g.c; c += kChannelLanes)
      dx[r * g.c + c] = ew::from_float<T>(
          pool_input_grad<T, Max>(g, dy + image, Max ? argmax + image : nullptr, ih, iw, c));
  }
}

}  // namespace

Status launch_pool_forward(cudaStream_t stream, int sm, Precision p, const PoolGeometry& pg, const void* x, void* y,
                           int32_t* argmax) {
  const PoolGeo g = geo_of(pg);
  const int64_t rows = g.n * g.oh * g.ow;
  if (rows == 0 || g.c == 0) return Status::ok();
  const dim3 block(kChannelLanes, kRowLanes);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    if (pg.max)
      pool_forward_kernel<T, true><<<row_blocks(rows, sm), block, 0, stream>>>(g, static_cast<const T*>(x),
                                                                               static_cast<T*>(y), argmax);
    else
      pool_forward_kernel<T, false><<<row_blocks(rows, sm), block, 0, stream>>>(g, static_cast<const T*>(x),
                                                                                static_cast<T*>(y), nullptr);
  });
  return launch_status(pg.max ? "max pool forward" : "avg pool forward");
}

Status launch_pool_backward(cudaStream_t stream, int sm, Precision p, const PoolGeometry& pg, const void* dy,
                            const int32_t* argmax, void* dx) {
  const PoolGeo g = geo_of(pg);
  const int64_t rows = g.n * g.h * g.w;
  if (rows == 0 || g.c == 0) return Status::ok();
  const dim3 block(kChannelLanes, kRowLanes);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    if (pg.max)
      pool_backward_kernel<T, true><<<row_blocks(rows, sm), block, 0, stream>>>(g, static_cast<const T*>(dy), argmax,
                                                                                static_cast<T*>(dx));
    else
      pool_backward_kernel<T, false><<<row_blocks(rows, sm), block, 0, stream>>>(g, static_cast<const T*>(dy), nullptr,
                                                                                 static_cast<T*>(dx));
  });
  return launch_status(pg.max ? "max pool backward" : "avg pool backward");
}

}  // namespace sx::model::cuda
