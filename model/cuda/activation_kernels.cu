// Activation kernels. Element-wise passes over NHWC run blocks of 32 channels x 8 rows (launch_math.h),
// per-(n, c) sums over H, W one block per (32-channel tile, image) with its 8 row lanes added in order
// (deterministic, no atomics). In place is allowed where the CPU backend allows it (each element is
// read before it is written by the same thread).
#include "model/cuda/activation_kernels.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/kernel_util.cuh"
#include "model/cuda/launch_math.h"
#include "model/cuda/storage.h"
#include "model/elementwise.h"

namespace sx::model::cuda {
namespace {

// A ChannelAffine read per channel on the device: identity where it is empty.
struct Affine {
  const float *mean, *scale, *shift;
  __device__ float operator()(float v, int64_t c) const {
    return mean ? ew::affine(v, mean[c], scale[c], shift[c]) : v;
  }
};
Affine affine_of(const ChannelAffine& a) { return Affine{a.mean, a.scale, a.shift}; }

__global__ void unary_forward_kernel(Unary f, const float* x, float* y, int64_t count) {
  SX_GRID_STRIDE(i, count) y[i] = f == Unary::kRelu ? ew::relu(x[i]) : ew::sigmoid(x[i]);
}
__global__ void unary_backward_kernel(Unary f, const float* y, const float* dy, float* dx, int64_t count) {
  SX_GRID_STRIDE(i, count) dx[i] = f == Unary::kRelu ? ew::relu_grad(y[i], dy[i]) : ew::sigmoid_grad(y[i], dy[i]);
}

// Grid (tiles, N), block (32, 8): the sum over the image's HW rows of value(i, c) for channel c, in
// lane order; returned to the y == 0 threads (others get 0). value(i, c) reads element i of channel c.
template <class Value>
__device__ float plane_sum(int64_t hw, int64_t C, int64_t c, Value value) {
  __shared__ float lanes[kRowLanes][kChannelLanes];
  float acc = 0.f;
  if (c < C)
    for (int64_t p = threadIdx.y; p < hw; p += kRowLanes) acc += value((int64_t(blockIdx.y) * hw + p) * C + c, c);
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  float t = 0.f;
  if (threadIdx.y == 0)
    for (int y = 0; y < kRowLanes; ++y) t += lanes[y][threadIdx.x];
  return t;
}

template <class T>
struct LoadValue {
  const T* x;
  __device__ float operator()(int64_t i, int64_t) const { return ew::to_float(x[i]); }
};

template <class T>
__global__ void gap_forward_kernel(const T* __restrict__ x, int64_t hw, int64_t C, float* __restrict__ y) {
  const int64_t c = int64_t(blockIdx.x) * kChannelLanes + threadIdx.x;
  const float sum = plane_sum(hw, C, c, LoadValue<T>{x});
  if (threadIdx.y == 0 && c < C) y[int64_t(blockIdx.y) * C + c] = sum / float(hw);
}

// dz = relu_grad(out, dout) written to dsc; the value summed is dz·x_bn(x).
template <class T>
struct MergeGrad {
  const T *dout, *out, *x;
  T* dsc;
  Affine x_bn;
  int64_t C;
  bool with_sum;
  __device__ float operator()(int64_t i, int64_t c) const {
    const float dz = ew::relu_grad(ew::to_float(out[i]), ew::to_float(dout[i]));
    dsc[i] = ew::from_float<T>(dz);
    return with_sum ? dz * x_bn(ew::to_float(x[i]), c) : 0.f;
  }
};

template <class T>
__global__ void merge_backward_kernel(MergeGrad<T> g, int64_t hw, float* __restrict__ ds) {
  const int64_t c = int64_t(blockIdx.x) * kChannelLanes + threadIdx.x;
  const float sum = plane_sum(hw, g.C, c, g);
  if (ds != nullptr && threadIdx.y == 0 && c < g.C) ds[int64_t(blockIdx.y) * g.C + c] = sum;
}

// Row-pattern kernels: block (32, 8), r = pixel row n·HW + p.
template <class T>
__global__ void merge_forward_kernel(int64_t rows, int64_t hw, int64_t C, const T* x, const float* __restrict__ s,
                                     const T* shortcut, T* out, Affine x_bn, Affine sc_bn) {
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const float* sn = s ? s + (r / hw) * C : nullptr;
    for (int64_t c = threadIdx.x; c < C; c += kChannelLanes) {
      const int64_t i = r * C + c;
      out[i] = ew::from_float<T>(ew::scale_add_relu(x_bn(ew::to_float(x[i]), c), sn ? sn[c] : 1.f,
                                                    sc_bn(ew::to_float(shortcut[i]), c)));
    }
  }
}

template <class T>
__global__ void scale_backward_kernel(int64_t rows, int64_t hw, int64_t C, const T* dz, const float* __restrict__ s,
                                      const float* __restrict__ dmean, T* dx) {
  const float inv_hw = 1.f / float(hw);
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int64_t nc = (r / hw) * C;
    for (int64_t c = threadIdx.x; c < C; c += kChannelLanes) {
      const int64_t i = r * C + c;
      dx[i] = ew::from_float<T>(
          ew::scale_grad(ew::to_float(dz[i]), s ? s[nc + c] : 1.f, dmean ? dmean[nc + c] * inv_hw : 0.f));
    }
  }
}

template <class T>
__global__ void gap_backward_kernel(int64_t rows, int64_t hw, int64_t C, const float* __restrict__ dy, T* __restrict__ dx) {
  const float inv_hw = 1.f / float(hw);
  for (int64_t r = int64_t(blockIdx.x) * kRowLanes + threadIdx.y; r < rows; r += int64_t(gridDim.x) * kRowLanes) {
    const int64_t nc = (r / hw) * C;
    for (int64_t c = threadIdx.x; c < C; c += kChannelLanes) dx[r * C + c] = ew::from_float<T>(dy[nc + c] * inv_hw);
  }
}

template <class T>
__global__ void add_into_kernel(T* dst, const T* src, int64_t count) {
  SX_GRID_STRIDE(i, count) dst[i] = ew::from_float<T>(ew::to_float(dst[i]) + ew::to_float(src[i]));
}

__global__ void bias_rows_kernel(const float* __restrict__ b, float* __restrict__ y, int64_t n, int64_t out) {
  SX_GRID_STRIDE(i, n * out) y[i] = b[i % out];
}

__global__ void column_sums_kernel(const float* __restrict__ dy, int64_t n, int64_t out, float* db, bool accumulate) {
  SX_GRID_STRIDE(o, out) {
    float t = 0.f;
    for (int64_t i = 0; i < n; ++i) t += dy[i * out + o];
    db[o] = accumulate ? db[o] + t : t;
  }
}

dim3 row_block() { return dim3(kChannelLanes, kRowLanes); }
dim3 plane_grid(const Dims& d) { return dim3(unsigned((d.c + kChannelLanes - 1) / kChannelLanes), unsigned(d.n)); }

}  // namespace

Status launch_unary_forward(cudaStream_t stream, int sm, Unary f, const float* x, float* y, int64_t count) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  unary_forward_kernel<<<g.blocks, g.threads, 0, stream>>>(f, x, y, count);
  return launch_status("unary forward");
}

Status launch_unary_backward(cudaStream_t stream, int sm, Unary f, const float* y, const float* dy, float* dx,
                             int64_t count) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  unary_backward_kernel<<<g.blocks, g.threads, 0, stream>>>(f, y, dy, dx, count);
  return launch_status("unary backward");
}

Status launch_gap_forward(cudaStream_t stream, Precision p, const void* x, const Dims& d, float* y) {
  if (d.count() == 0) return Status::ok();
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    gap_forward_kernel<T><<<plane_grid(d), row_block(), 0, stream>>>(static_cast<const T*>(x), int64_t(d.h) * d.w, d.c, y);
  });
  return launch_status("global_avg_pool forward");
}

Status launch_gap_backward(cudaStream_t stream, int sm, Precision p, const float* dy, const Dims& d, void* dx) {
  const int64_t hw = int64_t(d.h) * d.w, rows = d.n * hw;
  if (d.count() == 0) return Status::ok();
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    gap_backward_kernel<T><<<row_blocks(rows, sm), row_block(), 0, stream>>>(rows, hw, d.c, dy, static_cast<T*>(dx));
  });
  return launch_status("global_avg_pool backward");
}

Status launch_merge_forward(cudaStream_t stream, int sm, Precision p, const Dims& d, const void* x, const float* s,
                            const void* shortcut, void* out, ChannelAffine x_bn, ChannelAffine sc_bn) {
  const int64_t hw = int64_t(d.h) * d.w, rows = d.n * hw;
  if (d.count() == 0) return Status::ok();
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    merge_forward_kernel<T><<<row_blocks(rows, sm), row_block(), 0, stream>>>(
        rows, hw, d.c, static_cast<const T*>(x), s, static_cast<const T*>(shortcut), static_cast<T*>(out),
        affine_of(x_bn), affine_of(sc_bn));
  });
  return launch_status("scale_add_relu forward");
}

Status launch_merge_backward(cudaStream_t stream, Precision p, const Dims& d, const void* dout, const void* out,
                             const void* x, void* dshortcut, float* ds, ChannelAffine x_bn) {
  if (d.count() == 0) return Status::ok();
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    const MergeGrad<T> g{static_cast<const T*>(dout), static_cast<const T*>(out), static_cast<const T*>(x),
                         static_cast<T*>(dshortcut), affine_of(x_bn), d.c, ds != nullptr};
    merge_backward_kernel<T><<<plane_grid(d), row_block(), 0, stream>>>(g, int64_t(d.h) * d.w, ds);
  });
  return launch_status("scale_add_relu backward");
}

Status launch_scale_backward(cudaStream_t stream, int sm, Precision p, const Dims& d, const void* dz, const float* s,
                             const float* dmean, void* dx) {
  const int64_t hw = int64_t(d.h) * d.w, rows = d.n * hw;
  if (d.count() == 0) return Status::ok();
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    scale_backward_kernel<T><<<row_blocks(rows, sm), row_block(), 0, stream>>>(rows, hw, d.c, static_cast<const T*>(dz),
                                                                                s, dmean, static_cast<T*>(dx));
  });
  return launch_status("scale_backward");
}

Status launch_add_into(cudaStream_t stream, int sm, Precision p, void* dst, const void* src, int64_t count) {
  if (count == 0) return Status::ok();
  const Grid1d g = grid_1d(count, sm);
  dispatch_storage(p, [&](auto t) {
    using T = decltype(t);
    add_into_kernel<T><<<g.blocks, g.threads, 0, stream>>>(static_cast<T*>(dst), static_cast<const T*>(src), count);
  });
  return launch_status("add_into");
}

Status launch_bias_rows(cudaStream_t stream, int sm, const float* b, float* y, int64_t n, int64_t out) {
  if (n * out == 0) return Status::ok();
  const Grid1d g = grid_1d(n * out, sm);
  bias_rows_kernel<<<g.blocks, g.threads, 0, stream>>>(b, y, n, out);
  return launch_status("bias_rows");
}

Status launch_column_sums(cudaStream_t stream, const float* dy, int64_t n, int64_t out, float* db, bool accumulate) {
  if (out == 0) return Status::ok();
  column_sums_kernel<<<unsigned((out + 255) / 256), 256, 0, stream>>>(dy, n, out, db, accumulate);
  return launch_status("column_sums");
}

}  // namespace sx::model::cuda
