// defines: sx::model::Network — an SE-ResNeXt built from a ModelSpec on a Backend, with its flat
// parameter / gradient / momentum buffers, forward, backward, loss and SGD step.
//
// Flat buffers: every parameter is an (offset, count) view of one fp32 buffer, laid out in the
// order backward finishes with them (classifier first, stem last), so "gradients ready" is always
// a prefix [0, ready_end) of the gradient buffer and an allreduce bucket is one contiguous slice.
// BN running statistics live in their own buffer (not reduced every step).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/backend.h"
#include "model/se_resnext.h"

namespace sx::model {

enum class ParamKind : uint8_t { kConvWeight, kLinearWeight, kBias, kBnGamma, kBnBeta, kBnRunningMean, kBnRunningVar };

struct ParamInfo {
  std::string name;              // stable, e.g. "stage2.block0.conv2.weight", "fc.bias", "stem.bn1.running_var"
  std::vector<int64_t> shape;    // plain layout, e.g. (OC, C/G, KH, KW)
  ParamKind kind = ParamKind::kConvWeight;
  int64_t offset = 0, count = 0; // into params/grads/momentum, or into bn_stats for running stats
};

struct NetworkOptions {
  int batch = 1;                 // per-step batch on this process
  int image_h = 224, image_w = 224;
  uint64_t seed = 0;             // parameter initialisation
  float bn_momentum = 0.1f;
  float bn_eps = 1e-5f;
  // SyncBN: every BN layer's training statistics (forward) and gradient sums (backward) are summed
  // across the ranks by this callback (an allreduce the worker provides), so BN normalises over the
  // global batch. Called in layer order on every rank; empty = each rank's own batch.
  BnReducer bn_reducer;
  // Which BN kernels (backend.h); kAuto = the backend's choice. For side-by-side benchmarks.
  BatchNormImpl bn_impl = BatchNormImpl::kAuto;
};

struct StepResult {
  float loss = 0.f;              // mean over the batch
};

class Network {
 public:
  static StatusOr<std::unique_ptr<Network>> build(Backend& backend, const ModelSpec& spec,
                                                  const NetworkOptions& options);
  virtual ~Network() = default;

  virtual const ModelSpec& spec() const = 0;
  virtual Backend& backend() = 0;

  // ---- buffers -----------------------------------------------------------------------------
  virtual std::span<const ParamInfo> params() const = 0;     // trainable, in flat-buffer order
  virtual std::span<const ParamInfo> bn_stats() const = 0;   // running mean/var, in bn_stats buffer order
  virtual int64_t param_count() const = 0;
  virtual float* params_data() = 0;                          // backend memory
  virtual float* grads_data() = 0;
  virtual float* momentum_data() = 0;
  virtual float* bn_stats_data() = 0;
  virtual int64_t bn_stats_count() const = 0;

  // ---- one step ------------------------------------------------------------------------------
  virtual Tensor input() = 0;                                // (N, C, H, W) in the backend's layout
  virtual Status set_input(const float* host_nchw) = 0;      // uploads and converts a host batch
  virtual Status set_labels(const int32_t* host_labels) = 0; // N labels
  virtual Status forward(bool train) = 0;                    // train: batch BN stats, running stats updated
  virtual const float* logits() const = 0;                   // (N, K) backend memory, after forward
  // Loss of the last forward against the labels, and dlogits for backward. loss_scale multiplies
  // dlogits (and so every gradient) for fp16 loss scaling (model/loss_scaler.h); the reported loss
  // is unscaled and the SGD step divides the scale out (SgdHyper::grad_scale).
  virtual StatusOr<StepResult> loss(float label_smoothing, const float* soft_targets = nullptr,
                                    float loss_scale = 1.f) = 0;
  // Backward from the dlogits of loss(). Parameter gradients overwrite (accumulate=false) or add.
  // on_grads_ready(ready_end) is called as soon as grads [0, ready_end) are final, last layer first.
  virtual Status backward(bool accumulate, const std::function<void(int64_t ready_end)>& on_grads_ready = {}) = 0;
  // Weight decay per parameter: `weight_decay` for conv/linear weights, `bn_bias_decay` for BN and biases.
  virtual std::vector<SgdSegment> sgd_segments(float weight_decay, float bn_bias_decay) const = 0;
  virtual Status sgd_step(const SgdHyper& hyper, std::span<const SgdSegment> segments) = 0;

  // Convenience for tests and benchmarks: forward(train) + loss + backward + sgd_step.
  virtual StatusOr<StepResult> train_step(const SgdHyper& hyper, std::span<const SgdSegment> segments,
                                          float label_smoothing = 0.f) = 0;
};

}  // namespace sx::model
