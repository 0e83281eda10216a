// Memory kernels: fill, layout transposes with the storage conversion, weight conversions, the
// finiteness check. Grid-stride loops over one side's linear index; the index maps are launch_math.h.
#include "model/cuda/cuda_check.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/launch_math.h"
#include "model/cuda/layout_kernels.h"
#include "model/cuda/storage.h"

namespace sx::model::cuda {
namespace {

__global__ void fill_kernel(float* dst, float value, int64_t count) {
  SX_GRID_STRIDE(i, count) dst[i] = value;
}

template <class T>
__global__ void nchw_to_nhwc_kernel(const float* __restrict__ src, T* __restrict__ dst, int64_t count, int64_t C,
                                    int64_t HW) {
  SX_GRID_STRIDE(i, count) dst[i] = ew::from_float<T>(src[nchw_of_nhwc(i, C, HW)]);
}

template <class T>
__global__ void nhwc_to_nchw_kernel(const T* __restrict__ src, float* __restrict__ dst, int64_t count, int64_t C,
                                    int64_t HW) {
  SX_GRID_STRIDE(i, count) dst[i] = ew::to_float(src[nhwc_of_nchw(i, C, HW)]);
}

template <class T>
__global__ void weights_to_krsc_kernel(const float* __restrict__ w, T* __restrict__ out, int64_t count, int64_t cg,
                                       int64_t khw) {
  SX_GRID_STRIDE(i, count) out[krsc_of_kcrs(i, cg, khw)] = ew::from_float<T>(w[i]);
}

template <class T>
__global__ void weights_from_krsc_kernel(const T* __restrict__ in, float* __restrict__ dw, int64_t count, int64_t cg,
                                         int64_t khw, bool accumulate) {
  SX_GRID_STRIDE(i, count) {
    const float g = ew::to_float(in[krsc_of_kcrs(i, cg, khw)]);
    dw[i] = accumulate ? dw[i] + g : g;
  }
}

__global__ void find_nonfinite_kernel(const float* __restrict__ data, int64_t count, int* flag) {
  bool bad = false;
  SX_GRID_STRIDE(i, count) bad |= !isfinite(data[i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;  // every writer writes 1: no race on the value
}

}  // namespace

Status launch_fill(cudaStream_t stream, int sm, float* dst, float value, int64_t count) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  fill_kernel<<<g.blocks, g.threads, 0, stream>>>(dst, value, count);
  return launch_status("fill");
}

Status launch_nchw_to_nhwc(cudaStream_t stream, int sm, const float* src, void* dst, Precision p, const Dims& d) {
  const int64_t count = d.count();
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    nchw_to_nhwc_kernel<T><<<g.blocks, g.threads, 0, stream>>>(src, static_cast<T*>(dst), count, d.c,
                                                               int64_t(d.h) * d.w);
  });
  return launch_status("nchw_to_nhwc");
}

Status launch_nhwc_to_nchw(cudaStream_t stream, int sm, const void* src, Precision p, float* dst, const Dims& d) {
  const int64_t count = d.count();
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    nhwc_to_nchw_kernel<T><<<g.blocks, g.threads, 0, stream>>>(static_cast<const T*>(src), dst, count, d.c,
                                                               int64_t(d.h) * d.w);
  });
  return launch_status("nhwc_to_nchw");
}

Status launch_weights_to_krsc(cudaStream_t stream, int sm, const float* w, void* krsc, Precision p, int64_t count,
                              int64_t cg, int64_t khw) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    weights_to_krsc_kernel<T><<<g.blocks, g.threads, 0, stream>>>(w, static_cast<T*>(krsc), count, cg, khw);
  });
  return launch_status("weights_to_krsc");
}

Status launch_weights_from_krsc(cudaStream_t stream, int sm, const void* krsc, Precision p, float* dw,
                                int64_t count, int64_t cg, int64_t khw, bool accumulate) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    weights_from_krsc_kernel<T>
        <<<g.blocks, g.threads, 0, stream>>>(static_cast<const T*>(krsc), dw, count, cg, khw, accumulate);
  });
  return launch_status("weights_from_krsc");
}

Status launch_find_nonfinite(cudaStream_t stream, int sm, const float* data, int64_t count, int* flag) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  find_nonfinite_kernel<<<g.blocks, g.threads, 0, stream>>>(data, count, flag);
  return launch_status("find_nonfinite");
}

}  // namespace sx::model::cuda
