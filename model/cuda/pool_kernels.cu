// Pooling kernels, NHWC: blocks of 32 channels x 8 rows, one row = one output (forward) or input
// (backward) pixel, so each thread's window walk reads 32 neighbouring channels per pixel with its warp.
#include <math.h>

#include "model/cuda/cuda_check.h"
#include "model/cuda/launch_math.h"
#include "model/cuda/pool_kernels.h"
#include "model/cuda/storage.h"

namespace sx::model::cuda {
namespace {

struct Geo {
  int64_t n, c;
  int h, w, oh, ow, k, s, p;
};

Geo geo_of(const PoolGeometry& g) {
  return Geo{g.in.n, g.in.c, g.in.h, g.in.w, g.out.h, g.out.w, g.kernel, g.stride, g.pad};
}

template <class T, bool Max>
__global__ void pool_forward_kernel(Geo g, const T* __restrict__ x, T* __restrict__ y, int32_t* __restrict__ argmax) {
  const int64_t rows = g.n * g.oh * g.ow;
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int ow = int(r % g.ow), oh = int((r / g.ow) % g.oh);
    const int64_t n = r / (int64_t(g.ow) * g.oh);
    int h0, h1, w0, w1;
    pool_window(oh, g.k, g.s, g.p, g.h, &h0, &h1);
    pool_window(ow, g.k, g.s, g.p, g.w, &w0, &w1);
    const T* plane = x + n * g.h * g.w * g.c;
    for (int64_t c = threadIdx.x; c < g.c; c += kChannelLanes) {
      float best = -INFINITY, sum = 0.f;
      int32_t at = h0 * g.w + w0;
      for (int ih = h0; ih < h1; ++ih)
        for (int iw = w0; iw < w1; ++iw) {
          const float v = ew::to_float(plane[(int64_t(ih) * g.w + iw) * g.c + c]);
          if (Max) {
            if (v > best) best = v, at = ih * g.w + iw;  // the first maximum in scan order
          } else {
            sum += v;
          }
        }
      if (Max) {
        y[r * g.c + c] = ew::from_float<T>(best);
        argmax[r * g.c + c] = at;
      } else {
        y[r * g.c + c] = ew::from_float<T>(sum / float((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

template <class T, bool Max>
__global__ void pool_backward_kernel(Geo g, const T* __restrict__ dy, const int32_t* __restrict__ argmax,
                                     T* __restrict__ dx) {
  const int64_t rows = g.n * g.h * g.w;
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int iw = int(r % g.w), ih = int((r / g.w) % g.h);
    const int64_t n = r / (int64_t(g.w) * g.h);
    int oh0, oh1, ow0, ow1;
    pool_outputs_covering(ih, g.k, g.s, g.p, g.oh, &oh0, &oh1);
    pool_outputs_covering(iw, g.k, g.s, g.p, g.ow, &ow0, &ow1);
    const int32_t me = ih * g.w + iw;
    for (int64_t c = threadIdx.x; c < g.c; c += kChannelLanes) {
      float acc = 0.f;
      for (int oh = oh0; oh < oh1; ++oh)
        for (int ow = ow0; ow < ow1; ++ow) {
          const int64_t o = ((n * g.oh + oh) * g.ow + ow) * g.c + c;
          if (Max) {
            if (argmax[o] == me) acc += ew::to_float(dy[o]);
          } else {
            int h0, h1, w0, w1;
            pool_window(oh, g.k, g.s, g.p, g.h, &h0, &h1);
            pool_window(ow, g.k, g.s, g.p, g.w, &w0, &w1);
            acc += ew::to_float(dy[o]) / float((h1 - h0) * (w1 - w0));
          }
        }
      dx[r * g.c + c] = ew::from_float<T>(acc);
    }
  }
}

}  // namespace

Status launch_pool_forward(cudaStream_t stream, int sm, Precision p, const PoolGeometry& pg, const void* x, void* y,
                           int32_t* argmax) {
  const Geo g = geo_of(pg);
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
  const Geo g = geo_of(pg);
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
