// defines: sx::model::GradPool, LayerContext, ConvBn, PoolLayer, LinearLayer — the layers the
// SE-ResNeXt builder wires together. Dimension letters: N batch, C channels, H, W, OC output channels.
//
// The graph is static: each layer is given its input view at build time, plans its backend ops
// once and allocates its forward outputs once. forward() reads the input view, writes out().
//
// Gradient rule: parameter gradients overwrite (ctx.accumulate false) or add (true) into the flat
// gradient buffer; activation gradients are overwritten. Activation gradients live in GradPool
// slots: backward(dy) releases dy's slot and returns dx in a newly acquired slot, so only a few
// gradient-sized buffers exist however deep the network is.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/backend.h"
#include "model/param_store.h"

namespace sx::model {

// Gradient scratch: slots as large as the largest activation, allocated on first use and kept.
class GradPool {
 public:
  GradPool(Backend& backend, int64_t slot_floats) : backend_(backend), slot_floats_(slot_floats) {}
  StatusOr<Tensor> acquire(const Dims& dims, Layout layout);
  void release(const Tensor& t);
  void release_all() { busy_.assign(busy_.size(), false); }
  int slots() const { return int(slots_.size()); }
  int64_t slot_floats() const { return slot_floats_; }

 private:
  Backend& backend_;
  int64_t slot_floats_;
  std::vector<Buffer> slots_;
  std::vector<bool> busy_;
};

// What layers need while running.
struct LayerContext {
  Backend& backend;
  ParamStore& store;
  GradPool& pool;
  bool accumulate = false;     // parameter gradients add instead of overwrite
  float bn_momentum = 0.1f;
  std::function<void(int id)> on_ready;  // gradient of parameter `id` (and all placed before it) final
};

// An activation buffer owned by a layer.
StatusOr<Tensor> allocate_tensor(Backend& backend, const Dims& dims, Layout layout, std::vector<Buffer>& owner);
StatusOr<float*> allocate_floats(Backend& backend, int64_t count, std::vector<Buffer>& owner);

// conv (no bias) → BN → optional ReLU (fused into the BN op).
class ConvBn {
 public:
  struct Desc {
    std::string conv_name, bn_name;  // "stage1.block0.conv2", "stage1.block0.bn2"
    Tensor x;                        // (N, C, H, W) input view
    int oc = 0, kernel = 1, stride = 1, pad = 0, groups = 1;
    bool relu = false;
    bool zero_gamma = false;
    float bn_eps = 1e-5f;
    BnReducer bn_reducer;            // SyncBN: sums BN's per-channel partials across ranks; empty = local
    BatchNormImpl bn_impl = BatchNormImpl::kAuto;
  };
  static StatusOr<std::unique_ptr<ConvBn>> make(Backend& backend, ParamStore& store, const Desc& desc);
  Status place(ParamStore& store) const;  // backward order: bn gamma, beta (+ stats), conv weight
  int last_param() const { return weight_; }

  Status forward(LayerContext& ctx, bool train);
  // dy: (N, OC, H', W') in out().layout, released. Returns dx (in the input layout) when want_dx.
  StatusOr<Tensor> backward(LayerContext& ctx, const Tensor& dy, bool want_dx);
  // The same, but adds dx into add_dx_to (a projection shortcut's share of its block input's
  // gradient), fused into the conv where the op can (ConvOp::accumulates_data).
  Status backward_add_dx(LayerContext& ctx, const Tensor& dy, const Tensor& add_dx_to);
  // backward() for dy = dz · s[n, c] + dmean[n, c] / (H'·W') (the SE block's scale backward), formed
  // inside the BN's backward; dz is read, not released. Only when scales_dy().
  bool scales_dy() const { return bn_->scales_dy(); }
  // out()'s mean over H', W' per (n, c) written to pooled by every forward (BatchNormOp::pool_output_into).
  bool pool_output_into(float* pooled) { return bn_->pool_output_into(pooled); }
  // With sums: the BN's first backward pass was taken by the caller (BatchNormOp::backward_scaled_sums;
  // only when takes_sums()): plain (N, OC) doubles Σ_hw dz and Σ_hw dz·(bn_input() - batch mean).
  struct BnSums {
    const double* dz;
    const double* dzx;
  };
  bool takes_sums() const { return bn_->takes_sums(); }
  StatusOr<Tensor> backward_scaled(LayerContext& ctx, const Tensor& dz, const float* s, const float* dmean,
                                   const BnSums* sums = nullptr);
  // backward_add_dx with the BN's first pass taken by the caller (dy = dz, read, not released).
  Status backward_add_dx_sums(LayerContext& ctx, const Tensor& dz, const Tensor& add_dx_to, const BnSums& sums);
  const Tensor& out() const { return y_; }
  // BatchNormOp::defer_output: from now on out() is never written (its memory is freed); the
  // consumer reads bn_input() through affine(). False when the BN op cannot.
  bool defer_output();
  bool deferred() const { return deferred_; }
  const Tensor& bn_input() const { return c_; }
  ChannelAffine affine() const { return bn_->output_affine(); }

 private:
  struct ScaledDy {
    const float* s;
    const float* dmean;
    const BnSums* sums = nullptr;
  };
  StatusOr<Tensor> backward_impl(LayerContext& ctx, const Tensor& dy, bool want_dx, const Tensor* add_dx_to,
                                 const ScaledDy* scaled = nullptr);

  std::unique_ptr<ConvOp> conv_;
  std::unique_ptr<BatchNormOp> bn_;
  int weight_ = -1, gamma_ = -1, beta_ = -1, mean_ = -1, var_ = -1;
  Tensor x_;
  Tensor c_;                 // conv output = BN input (N, OC, H', W')
  Tensor y_;                 // BN (+ReLU) output
  float* save_mean_ = nullptr;  // (OC) batch statistics kept for backward
  float* save_var_ = nullptr;
  bool deferred_ = false;
  std::vector<Buffer> owned_;
};

// Max or average pooling.
class PoolLayer {
 public:
  static StatusOr<std::unique_ptr<PoolLayer>> make(Backend& backend, const Tensor& x, PoolKind kind, int kernel,
                                                   int stride, int pad, bool ceil_mode);
  Status forward(LayerContext& ctx);
  StatusOr<Tensor> backward(LayerContext& ctx, const Tensor& dy);  // releases dy
  const Tensor& out() const { return y_; }

 private:
  std::unique_ptr<PoolOp> op_;
  Tensor x_, y_;
  std::vector<Buffer> owned_;
};

// y (N, OUT) = x (N, IN) · w^T + b, plain row-major 2-D activations.
class LinearLayer {
 public:
  static StatusOr<std::unique_ptr<LinearLayer>> make(Backend& backend, ParamStore& store, const std::string& name,
                                                     int n, int in, int out, const float* x);
  Status place(ParamStore& store) const;  // weight, bias
  int last_param() const { return bias_; }
  Status forward(LayerContext& ctx);
  // dy (N, OUT); dx (N, IN) overwritten when not null.
  Status backward(LayerContext& ctx, const float* dy, float* dx);
  float* out() const { return y_; }
  int out_features() const { return out_; }

 private:
  std::unique_ptr<LinearOp> op_;
  int weight_ = -1, bias_ = -1;
  int out_ = 0;
  const float* x_ = nullptr;
  float* y_ = nullptr;
  std::vector<Buffer> owned_;
};

}  // namespace sx::model
