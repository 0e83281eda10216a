// defines: sx::model::cuda::CudaBackend — the cuDNN/cuBLAS implementation of model/backend.h — and
// make_device_backend (what make_cuda_backend returns once a device is there).
// Split by job: cuda_backend.cc (device, stream, handles, memory, upload/download, factories),
// conv.cc + cudnn_plan.cc (cuDNN graph API), batch_norm.cc, pool.cc, linear.cc (cuBLAS), ops.cc
// (the stateless ops), and the kernels in *_kernels.cu behind the launchers of *_kernels.h; the
// kernels' index arithmetic is launch_math.h, their per-element math model/elementwise.h and bn_math.h.
//
// Conventions (model/cuda/README.md): activations (Tensor) are NHWC in the compute precision's storage
// type (fp32, bf16 or fp16 bits); every float* argument (parameters, gradients, statistics, the 2-D
// (N, C) activations of the SE branch and the classifier, logits) is fp32 device memory. All work is
// queued on one stream in call order; calls that hand a result to the host wait for it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <memory>
#include <vector>

#include "model/backend.h"
#include "model/cuda/cuda_backend.h"

namespace sx::model::cuda {

class CudaBackend final : public Backend {
 public:
  static StatusOr<std::unique_ptr<CudaBackend>> create(const CudaBackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override;
  bool is_device() const override { return true; }
  Precision precision() const override { return options_.precision; }
  void* native_stream() override { return stream_; }
  size_t activation_bytes(const Dims& dims, Layout layout) const override {
    return size_t(padded_count(dims, layout)) * element_bytes();
  }
  Status all_finite(const float* data, int64_t count, bool* host_all_finite) override;

  Buffer allocate(size_t bytes) override;
  Status copy_to_device(void* dst, const void* host_src, size_t bytes) override;
  Status copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  Status fill(float* dst, float value, int64_t count) override;
  Status upload_nchw(const float* host_nchw, const Tensor& dst) override;
  Status download_nchw(const Tensor& src, float* host_nchw) override;
  Layout activation_layout(int /*channels*/) const override { return Layout::kNHWC; }
  Status synchronize() override;

  StatusOr<std::unique_ptr<ConvOp>> make_conv(const ConvDesc& desc) override;
  StatusOr<std::unique_ptr<BatchNormOp>> make_batch_norm(const BatchNormDesc& desc) override;
  StatusOr<std::unique_ptr<PoolOp>> make_pool(const PoolDesc& desc) override;
  StatusOr<std::unique_ptr<LinearOp>> make_linear(const LinearDesc& desc) override;

  // ops.cc
  Status global_avg_pool_forward(const Tensor& x, float* y) override;
  Status global_avg_pool_backward(const float* dy, const Tensor& dx) override;
  Status relu_forward(const float* x, float* y, int64_t count) override;
  Status relu_backward(const float* y, const float* dy, float* dx, int64_t count) override;
  Status sigmoid_forward(const float* x, float* y, int64_t count) override;
  Status sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) override;
  Status scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out,
                                ChannelAffine x_bn = {}, ChannelAffine shortcut_bn = {}) override;
  Status scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                 const Tensor& dshortcut, float* ds, ChannelAffine x_bn = {}) override;
  Status scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) override;
  Status add_into(const Tensor& dst, const Tensor& src) override;
  Status softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets, int n, int k,
                               float label_smoothing, float grad_scale, float* dlogits, float* host_loss) override;
  Status count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                     int64_t* host_top5) override;
  Status sgd_step(float* params, const float* grads, float* momentum_buf, std::span<const SgdSegment> segments,
                  const SgdHyper& hyper) override;

  int64_t reorder_count() const override { return reorders_.load(); }

  // ---- for the op implementations ----
  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  cublasHandle_t cublas() const { return cublas_; }
  int device() const { return options_.device; }
  int sm_count() const { return sm_count_; }
  // Bytes of one activation element in the storage type of precision() (4 or 2).
  size_t element_bytes() const { return options_.precision == Precision::kFp32 ? 4 : 2; }
  // Scratch shared by the ops (they run one at a time, in stream order): slot kWorkspace for cuDNN
  // plans, kStaging for upload/download conversions, kReduce for the partial sums of reductions. Grows, never shrinks; growing waits for queued
  // work first, since that may still use the old buffer. Ops reserve their size when planned.
  enum ScratchSlot { kWorkspace, kStaging, kReduce, kScratchSlots };
  StatusOr<void*> scratch(ScratchSlot slot, size_t bytes);
  // Pinned host memory for small results the host reads (losses, counters, SyncBN sums): `bytes` at
  // least, valid until the next call; the device writes into it with copies on stream().
  StatusOr<void*> host_result(size_t bytes);
  // A small device buffer (kSmallBytes, zeroed at start) for the flags, counters and sums that ops hand
  // to the host; an op uses it between its launch and its copy back, within one call.
  void* small() const { return small_.get(); }
  static constexpr size_t kSmallBytes = 4096;
  // Checks the last kernel launch (cudaGetLastError) and names it.
  Status check_launch(const char* what) const;
  // Counts an activation layout conversion (upload/download transpose).
  void count_reorder() { reorders_.fetch_add(1, std::memory_order_relaxed); }

 private:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {}
  Status init();

  CudaBackendOptions options_;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::atomic<int64_t> reorders_{0};
  Buffer scratch_[kScratchSlots];
  size_t scratch_bytes_[kScratchSlots] = {};
  Buffer small_;
  void* host_result_ = nullptr;  // pinned
  // sgd_step's segment table on the device (start, offset, weight decay), kept while the segments stay
  // the same (they are fixed for a run), so a step uploads nothing.
  std::vector<SgdSegment> sgd_segments_;
  Buffer sgd_table_;
  size_t host_result_bytes_ = 0;
};

StatusOr<std::unique_ptr<Backend>> make_device_backend(const CudaBackendOptions& options);

// One file per op kind.
StatusOr<std::unique_ptr<ConvOp>> make_cuda_conv(CudaBackend& backend, const ConvDesc& desc);
StatusOr<std::unique_ptr<BatchNormOp>> make_cuda_batch_norm(CudaBackend& backend, const BatchNormDesc& desc);
StatusOr<std::unique_ptr<PoolOp>> make_cuda_pool(CudaBackend& backend, const PoolDesc& desc);
StatusOr<std::unique_ptr<LinearOp>> make_cuda_linear(CudaBackend& backend, const LinearDesc& desc);

// Checks shared by the ops: t is NHWC with the given dims and memory, or an error naming `what`.
Status check_nhwc(const Tensor& t, const Dims& dims, const char* what);

}  // namespace sx::model::cuda
