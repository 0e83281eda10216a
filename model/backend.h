// defines: sx::model::Backend and the planned ops it makes (ConvOp, BatchNormOp, PoolOp, LinearOp),
// plus the op descriptors. The narrow interface every layer calls; cpu/ (oneDNN) implements it
// and is the reference other backends are tested against.
//
// Planning: each layer asks the backend once, at build time, for an op planned for its shape
// (make_conv, ...). The op caches its primitives, chooses its output layout and keeps any
// workspace it needs between forward and backward, so one op object belongs to one layer.
//
// Gradient rule: parameter gradients accumulate into the flat gradient buffer when
// `accumulate` is true and overwrite it when false (the first micro-batch of a step);
// activation gradients always overwrite, except the explicit merges (add_into,
// ConvOp::backward_data_accumulate, the residual shortcut gradient of scale_add_relu_backward).
//
// Memory: every float* / Tensor::data passed here is backend memory (see allocate()).
// 2-D activations (N, C) — SE and classifier inputs/outputs, logits — are plain row-major float*.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/precision.h"
#include "model/cpu_isa.h"
#include "model/tensor.h"

namespace sx::model {

struct ConvDesc {
  Dims in;                       // (N, C, H, W) input
  Layout in_layout = Layout::kNCHW;
  int oc = 0;                    // output channels
  int kh = 1, kw = 1;
  int stride = 1, pad = 0;       // same in both spatial dims
  int groups = 1;                // C and OC divisible by groups
};

// SyncBN: sums data[0, count) in place across the processes that share the batch (an allreduce
// with MPI_SUM; a few KB). BN calls it once in forward_train (statistics) and once in backward
// (gradient sums), in layer order, identically on every rank. Doubles: per-rank partial sums then
// add up as exactly as one process's sum over the whole batch.
using BnReducer = std::function<Status(double* data, int count)>;

enum class BatchNormImpl : uint8_t {
  kAuto,    // kFused (measured a little faster than kOneDnn, see model/README.md)
  kOneDnn,  // oneDNN batch_normalization (no reducer)
  kFused,   // our kernels, reducible partial sums (model/cpu/batch_norm_fused.cc)
};

struct BatchNormDesc {
  Dims dims;                     // (N, C, H, W)
  Layout layout = Layout::kNCHW;
  float eps = 1e-5f;
  bool fuse_relu = false;        // y = relu(bn(x)); backward applies the relu mask itself
  BatchNormImpl impl = BatchNormImpl::kAuto;
  // Empty: statistics of this process's batch. Set: statistics of the global batch (SyncBN); the
  // running statistics then use the global count and are the same on every rank.
  BnReducer reducer;
};

enum class PoolKind : uint8_t {
  kMax,          // padding never wins
  kAvg,          // average over the in-bounds part of the window (PyTorch count_include_pad=False)
};

struct PoolDesc {
  Dims in;
  Layout in_layout = Layout::kNCHW;
  PoolKind kind = PoolKind::kMax;
  int kernel = 2, stride = 2, pad = 0;
  bool ceil_mode = false;        // output size rounds up (PyTorch ceil_mode)
};

struct LinearDesc {
  int n = 0, in = 0, out = 0;    // y (N, OUT) = x (N, IN) · w^T (OUT, IN) + b (OUT)
  bool bias = true;
};

// SGD with momentum, PyTorch semantics: v = m·v + g + wd·w; w -= lr·(nesterov ? g + wd·w + m·v : v),
// where g = grad_scale · (the gradient buffer): the 1/world average of an allreduce that only sums,
// and 1/A of A accumulated micro-batches, are folded into this pass instead of costing one of their own.
struct SgdHyper {
  float lr = 0.1f;
  float momentum = 0.9f;
  bool nesterov = false;
  float grad_scale = 1.f;
};
// A contiguous run of the flat buffers that shares a weight decay (BN and biases usually 0).
struct SgdSegment {
  int64_t offset = 0, count = 0;
  float weight_decay = 0.f;
};

// A batch norm applied by its consumer instead of in a pass of its own: v ↦ (v - mean[c])·scale[c] +
// shift[c] (BatchNormOp::defer_output). Arrays of at least C floats; mean == nullptr: identity.
struct ChannelAffine {
  const float* mean = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
  explicit operator bool() const { return mean != nullptr; }
};

class ConvOp {
 public:
  virtual ~ConvOp() = default;
  virtual Dims out_dims() const = 0;
  virtual Layout out_layout() const = 0;
  // y = conv(x, w). w: (OC, C/G, KH, KW) plain. x must be in desc.in_layout, y in out_layout().
  virtual Status forward(const Tensor& x, const float* w, const Tensor& y) = 0;
  // dx = conv_transpose(dy, w), overwrites dx (in desc.in_layout). Uses the same w as the last forward.
  virtual Status backward_data(const Tensor& dy, const float* w, const Tensor& dx) = 0;
  // dw (+)= correlation of x and dy. dw: (OC, C/G, KH, KW) plain.
  virtual Status backward_weights(const Tensor& x, const Tensor& dy, float* dw, bool accumulate) = 0;
  // Optional: dx += conv_transpose(dy, w), so the projection shortcut's input gradient merges into
  // the block input's gradient without a pass of its own. Callers check accumulates_data() first
  // and otherwise run backward_data and add.
  virtual bool accumulates_data() const { return false; }
  virtual Status backward_data_accumulate(const Tensor& /*dy*/, const float* /*w*/, const Tensor& /*dx*/) {
    return Status::unimplemented("conv backward_data_accumulate");
  }
};

class BatchNormOp {
 public:
  virtual ~BatchNormOp() = default;
  // Training: normalises with the batch statistics, stores them (biased variance) in
  // save_mean/save_var (C floats each, kept for backward), and updates the running statistics:
  // running = (1 - momentum)·running + momentum·batch, with the unbiased variance (PyTorch).
  virtual Status forward_train(const Tensor& x, const float* gamma, const float* beta, const Tensor& y,
                               float* save_mean, float* save_var, float* running_mean, float* running_var,
                               float momentum) = 0;
  // Inference: normalises with the running statistics.
  virtual Status forward_eval(const Tensor& x, const float* gamma, const float* beta, const float* running_mean,
                              const float* running_var, const Tensor& y) = 0;
  // dx overwritten; dgamma, dbeta (+)=. y is the forward output (needed for the fused relu mask).
  // With a reducer, dx is the gradient through the global statistics (the sums of dy and dy·x̂ are
  // reduced), while dgamma/dbeta stay this process's share: the gradient allreduce sums them.
  // Uses the ReLU mask and statistics of the last forward_train.
  virtual Status backward(const Tensor& x, const Tensor& y, const Tensor& dy, const float* gamma,
                          const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                          float* dbeta, bool accumulate) = 0;
  // Optional: backward() for dy = dz · s[n, c] + dmean[n, c] / (H·W) (what Backend::scale_backward
  // writes) formed on the fly, so the SE block's gradient skips a pass writing and reading dy. s and
  // dmean plain (N, C), either may be null (1, 0). dz is only read. Callers check scales_dy() first.
  virtual bool scales_dy() const { return false; }
  // Optional: from now on every forward (train and eval) also writes the mean over H, W of y for each
  // (n, c) into pooled (plain (N, C); null stops it) — the SE block's global average pool, taken in
  // the pass that writes y. Returns false when this implementation cannot (the caller pools itself).
  virtual bool pool_output_into(float* /*pooled*/) { return false; }
  // Optional (no fused ReLU only): from now on forwards write no y; output_affine() then maps x to y
  // for a consumer that applies it on the fly (the SE block's residual merge), and pool_output_into
  // still delivers the pooled means of y. Saves the pass that writes y and the one that reads it.
  // Returns false when this implementation cannot (it keeps writing y).
  virtual bool defer_output() { return false; }
  // The last forward's y = affine(x) (training: batch statistics; eval: running statistics).
  virtual ChannelAffine output_affine() const { return {}; }
  virtual Status backward_scaled(const Tensor& /*x*/, const Tensor& /*y*/, const Tensor& /*dz*/, const float* /*s*/,
                                 const float* /*dmean*/, const float* /*gamma*/, const float* /*save_mean*/,
                                 const float* /*save_var*/, const Tensor& /*dx*/, float* /*dgamma*/,
                                 float* /*dbeta*/, bool /*accumulate*/) {
    return Status::unimplemented("batch norm backward_scaled");
  }
  // Optional: backward_scaled whose first pass (per-plane sums) the caller already took, plain (N, C)
  // doubles: sum_dz = Σ_hw dz and sum_dzx = Σ_hw dz·(x - save_mean) (Backend::
  // scale_add_relu_backward_sums takes them in the merge's pass). Needs a deferred output
  // (defer_output) and the forward_train that save_mean comes from. Callers check takes_sums().
  virtual bool takes_sums() const { return false; }
  virtual Status backward_scaled_sums(const Tensor& /*x*/, const Tensor& /*dz*/, const float* /*s*/,
                                      const float* /*dmean*/, const double* /*sum_dz*/, const double* /*sum_dzx*/,
                                      const float* /*gamma*/, const float* /*save_mean*/, const float* /*save_var*/,
                                      const Tensor& /*dx*/, float* /*dgamma*/, float* /*dbeta*/, bool /*accumulate*/) {
    return Status::unimplemented("batch norm backward_scaled_sums");
  }
};

class PoolOp {
 public:
  virtual ~PoolOp() = default;
  virtual Dims out_dims() const = 0;
  virtual Layout out_layout() const = 0;
  virtual Status forward(const Tensor& x, const Tensor& y) = 0;  // keeps the max-pool argmax for backward
  virtual Status backward(const Tensor& dy, const Tensor& dx) = 0;  // dx overwritten
};

class LinearOp {
 public:
  virtual ~LinearOp() = default;
  virtual Status forward(const float* x, const float* w, const float* b, float* y) = 0;
  virtual Status backward_data(const float* dy, const float* w, float* dx) = 0;  // dx overwritten
  // dw (OUT, IN) and db (OUT) (+)=. db may be null when the desc has no bias.
  virtual Status backward_weights(const float* x, const float* dy, float* dw, float* db, bool accumulate) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool is_device() const = 0;  // true when memory is not host-addressable

  // ---- memory -------------------------------------------------------------------------
  virtual Buffer allocate(size_t bytes) = 0;  // zero-filled
  virtual Status copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual Status copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual Status fill(float* dst, float value, int64_t count) = 0;
  // Plain NCHW host data <-> a tensor in any layout (blocked padding is written as zeros).
  virtual Status upload_nchw(const float* host_nchw, const Tensor& dst) = 0;
  virtual Status download_nchw(const Tensor& src, float* host_nchw) = 0;
  // The layout this backend keeps activations with `channels` channels in between layers.
  virtual Layout activation_layout(int channels) const = 0;
  virtual Status synchronize() = 0;  // waits for queued work (no-op on CPU)

  // ---- device and precision (defaults fit a host backend that runs ops synchronously) ------
  // The compute precision of the ops (model/precision.h). Parameters, gradients, momentum, BN
  // statistics and every float* argument stay fp32 whatever it is; only activations differ.
  virtual Precision precision() const { return Precision::kFp32; }
  // The queue compute runs on (a cudaStream_t for CUDA), so a communicator can order its work after
  // the backward's with events recorded on it; nullptr when ops complete before they return.
  virtual void* native_stream() { return nullptr; }
  // Bytes an activation of these dims and layout occupies in this backend's storage type (padding
  // included): 4 per element, 2 on a bf16/fp16 device backend. Tensor::bytes() (4 per element) is
  // always enough; allocating this instead halves activation memory in reduced precision.
  virtual size_t activation_bytes(const Dims& dims, Layout layout) const {
    return size_t(padded_count(dims, layout)) * sizeof(float);
  }
  // *host_all_finite = no inf or NaN in data[0, count) (backend memory): the fp16 loss scaler's
  // overflow check of the gradient buffer before the SGD step. Waits for the work that writes data.
  virtual Status all_finite(const float* data, int64_t count, bool* host_all_finite);

  // ---- planned ops ----------------------------------------------------------------------
  virtual StatusOr<std::unique_ptr<ConvOp>> make_conv(const ConvDesc& desc) = 0;
  virtual StatusOr<std::unique_ptr<BatchNormOp>> make_batch_norm(const BatchNormDesc& desc) = 0;
  virtual StatusOr<std::unique_ptr<PoolOp>> make_pool(const PoolDesc& desc) = 0;
  virtual StatusOr<std::unique_ptr<LinearOp>> make_linear(const LinearDesc& desc) = 0;

  // ---- stateless ops ----------------------------------------------------------------------
  // y[n, c] = mean over H, W of x[n, c, :, :]; y is plain (N, C).
  virtual Status global_avg_pool_forward(const Tensor& x, float* y) = 0;
  // dx[n, c, h, w] = dy[n, c] / (H·W), overwrites dx.
  virtual Status global_avg_pool_backward(const float* dy, const Tensor& dx) = 0;

  // 2-D element-wise on plain float* of `count` values. Backward takes the forward output y.
  virtual Status relu_forward(const float* x, float* y, int64_t count) = 0;
  virtual Status relu_backward(const float* y, const float* dy, float* dx, int64_t count) = 0;
  virtual Status sigmoid_forward(const float* x, float* y, int64_t count) = 0;
  virtual Status sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) = 0;

  // Residual merge of a bottleneck: out = relu(x' · s[n, c] + shortcut'), x' = x_bn(x) and
  // shortcut' = shortcut_bn(shortcut) (deferred batch norms; identity when empty). s is plain (N, C),
  // or null for a plain ResNeXt (scale 1). x, shortcut and out share dims and layout.
  virtual Status scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out,
                                        ChannelAffine x_bn = {}, ChannelAffine shortcut_bn = {}) = 0;
  // Given dout and the forward out: dz = dout · [out > 0] is written to dshortcut (overwrite);
  // when s is not null, ds[n, c] = sum over H, W of dz · x_bn(x) (overwrite, plain (N, C)).
  virtual Status scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                         const Tensor& dshortcut, float* ds, ChannelAffine x_bn = {}) = 0;
  // scale_add_relu_backward of a merge whose branch (and projection shortcut) are deferred batch norms,
  // with those BNs' first backward pass folded in (BatchNormOp::backward_scaled_sums). dz as there; per
  // (n, c), plain (N, C) doubles: sums.dz = Σ_hw dz, sums.dz_x = Σ_hw dz·(x - x_bn.mean) and, when
  // shortcut_bn is set, sums.dz_shortcut = Σ_hw dz·(shortcut - shortcut_bn.mean); when s is not null,
  // ds = Σ_hw dz·x_bn(x) = x_bn.scale·sums.dz_x + x_bn.shift·sums.dz. x_bn must be set.
  struct MergeSums {
    double* dz = nullptr;
    double* dz_x = nullptr;
    double* dz_shortcut = nullptr;
  };
  virtual Status scale_add_relu_backward_sums(const Tensor& /*dout*/, const Tensor& /*out*/, const Tensor& /*x*/,
                                              ChannelAffine /*x_bn*/, const float* /*s*/, const Tensor& /*shortcut*/,
                                              ChannelAffine /*shortcut_bn*/, const Tensor& /*dshortcut*/,
                                              float* /*ds*/, const MergeSums& /*sums*/) {
    return Status::unimplemented("scale_add_relu_backward_sums");
  }
  // dx = dz · s[n, c] + (dmean ? dmean[n, c] / (H·W) : 0), overwrite. s null means 1.
  // Finishes the SE branch: dz is dshortcut from above, dmean the gradient of the SE pool input.
  virtual Status scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) = 0;
  // dst += src (same dims and layout): merges the two gradients of a block input.
  virtual Status add_into(const Tensor& dst, const Tensor& src) = 0;

  // Mean softmax cross-entropy over the batch, against labels (N ints) smoothed by
  // `label_smoothing` (target = (1-ε)·onehot + ε/K), or against soft targets (N, K) when
  // `soft_targets` is not null (labels then ignored). Writes dlogits = (softmax - target) / N · grad_scale,
  // and the mean loss to *host_loss (host memory).
  virtual Status softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets,
                                       int n, int k, float label_smoothing, float grad_scale, float* dlogits,
                                       float* host_loss) = 0;

  // Top-1 and top-5 hits of logits (N, K) against labels, added to *host_top1 / *host_top5.
  virtual Status count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                             int64_t* host_top5) = 0;

  // One fused pass of SGD over the flat buffers, segment by segment.
  virtual Status sgd_step(float* params, const float* grads, float* momentum_buf,
                          std::span<const SgdSegment> segments, const SgdHyper& hyper) = 0;

  // Number of layout conversions (reorders) executed so far; a test and the benchmark read it.
  virtual int64_t reorder_count() const = 0;

  // Inference: the caller promises that no parameter changes until freeze_weights(false), so ops may
  // keep weights converted to their own formats between forwards instead of converting them on
  // every call (sx_infer, the benchmark's inference loop). Each call starts a new promise: ops
  // convert once more after it. Writing parameters while frozen gives stale results.
  virtual void freeze_weights(bool frozen) { (void)frozen; }
};

struct BackendOptions {
  int threads = 0;  // 0 = leave the runtime's default
  // CPU: the highest instruction-set level of our own kernels (and of the activation layout); the
  // backend runs at min(this, what the CPU has, what oneDNN may use — ONEDNN_MAX_CPU_ISA). Lower it
  // to run the AVX2 or generic kernels on a bigger machine (tests, benchmarks).
  CpuIsa max_cpu_isa = CpuIsa::kAvx512;
};

// The oneDNN CPU backend (model/cpu/).
std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options = {});

}  // namespace sx::model
