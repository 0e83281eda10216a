// defines: sx::model::cpu::CpuBackend — the oneDNN implementation of model/backend.h.
// Split by job: cpu_backend.cc (memory, layouts, reorders, op factories), conv.cc, batch_norm.cc,
// pool.cc, linear.cc (oneDNN primitives, cached per op), kernels.cc (our own element-wise,
// residual, loss and SGD loops, OpenMP-parallel, layout-aware).
#pragma once

#include <atomic>
#include <dnnl.hpp>
#include <memory>
#include <optional>

#include "model/backend.h"

namespace sx::model::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options);

  std::string name() const override { return "cpu-onednn"; }
  // The instruction-set level of our kernels and of the activation layout (isa.h).
  CpuIsa isa() const { return isa_; }
  bool is_device() const override { return false; }

  Buffer allocate(size_t bytes) override;
  Status copy_to_device(void* dst, const void* host_src, size_t bytes) override;
  Status copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  Status fill(float* dst, float value, int64_t count) override;
  Status upload_nchw(const float* host_nchw, const Tensor& dst) override;
  Status download_nchw(const Tensor& src, float* host_nchw) override;
  Layout activation_layout(int channels) const override;
  Status synchronize() override { return Status::ok(); }

  StatusOr<std::unique_ptr<ConvOp>> make_conv(const ConvDesc& desc) override;
  StatusOr<std::unique_ptr<BatchNormOp>> make_batch_norm(const BatchNormDesc& desc) override;
  StatusOr<std::unique_ptr<PoolOp>> make_pool(const PoolDesc& desc) override;
  StatusOr<std::unique_ptr<LinearOp>> make_linear(const LinearDesc& desc) override;

  // kernels.cc
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
  Status scale_add_relu_backward_sums(const Tensor& dout, const Tensor& out, const Tensor& x, ChannelAffine x_bn,
                                      const float* s, const Tensor& shortcut, ChannelAffine shortcut_bn,
                                      const Tensor& dshortcut, float* ds, const MergeSums& sums) override;
  Status scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) override;
  Status add_into(const Tensor& dst, const Tensor& src) override;
  Status softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets, int n, int k,
                               float label_smoothing, float grad_scale, float* dlogits, float* host_loss) override;
  Status count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                     int64_t* host_top5) override;
  Status sgd_step(float* params, const float* grads, float* momentum_buf, std::span<const SgdSegment> segments,
                  const SgdHyper& hyper) override;

  int64_t reorder_count() const override { return reorders_.load(); }
  void freeze_weights(bool frozen) override {
    frozen_ = frozen;
    ++freeze_epoch_;
  }
  // While weights_frozen(), an op's converted weights stay valid as long as they were converted in
  // this freeze_epoch().
  bool weights_frozen() const { return frozen_; }
  uint64_t freeze_epoch() const { return freeze_epoch_; }

  // ---- for the op implementations ----
  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }
  // Runs a reorder src -> dst on this backend's stream and counts it.
  void reorder(const dnnl::memory& src, const dnnl::memory& dst);
  // Counts an activation reorder that an op ran with its own prebuilt reorder primitive.
  void count_reorder() { reorders_.fetch_add(1, std::memory_order_relaxed); }
  // Shared scratch for activations an op reorders for the duration of one call (ops run one at a
  // time). Slot 0 holds input-side tensors, slot 1 output-side; grows, never shrinks. Ops reserve
  // their size when planned so the hot path does not allocate.
  float* scratch(int slot, size_t bytes);

  // Scratch slots for scratch().
  static constexpr int kScratchSlots = 2;

 private:
  CpuIsa isa_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::atomic<int64_t> reorders_{0};
  bool frozen_ = false;
  uint64_t freeze_epoch_ = 0;
  Buffer scratch_[kScratchSlots];
  size_t scratch_bytes_[kScratchSlots] = {};
};

// oneDNN memory descriptor of a tensor's physical layout.
dnnl::memory::desc tensor_md(const Dims& dims, Layout layout);
// Our Layout for a oneDNN descriptor, if it is one of ours.
std::optional<Layout> layout_of(const dnnl::memory::desc& md, const Dims& dims);

// One file per op kind.
StatusOr<std::unique_ptr<ConvOp>> make_cpu_conv(CpuBackend& backend, const ConvDesc& desc);
StatusOr<std::unique_ptr<BatchNormOp>> make_cpu_batch_norm(CpuBackend& backend, const BatchNormDesc& desc);
// Our fused kernels (batch_norm_fused.cc); make_cpu_batch_norm picks it or oneDNN's by desc.impl.
StatusOr<std::unique_ptr<BatchNormOp>> make_fused_batch_norm(const BatchNormDesc& desc, CpuIsa isa);
// Both BN implementations: t has the desc's dims and layout and memory, or an error naming `what`.
Status check_bn_tensor(const BatchNormDesc& desc, const Tensor& t, const char* what);
StatusOr<std::unique_ptr<PoolOp>> make_cpu_pool(CpuBackend& backend, const PoolDesc& desc);
StatusOr<std::unique_ptr<LinearOp>> make_cpu_linear(CpuBackend& backend, const LinearDesc& desc);

}  // namespace sx::model::cpu
