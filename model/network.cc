// Network::build: the stem, the bottleneck stages and the classifier wired from a ModelSpec, the
// flat buffers laid out in backward order, and one training step's forward / loss / backward / SGD.
// Dimension letters: N batch, C channels, H, W, K classes.
#include "model/network.h"

#include <algorithm>

#include "model/bottleneck.h"
#include "model/layers.h"
#include "model/param_store.h"

namespace sx::model {

namespace {

class NetworkImpl final : public Network {
 public:
  NetworkImpl(Backend& backend, const ModelSpec& spec, const NetworkOptions& options)
      : backend_(backend), spec_(spec), options_(options) {}

  Status init();

  const ModelSpec& spec() const override { return spec_; }
  Backend& backend() override { return backend_; }

  std::span<const ParamInfo> params() const override { return store_.params(); }
  std::span<const ParamInfo> bn_stats() const override { return store_.stats(); }
  int64_t param_count() const override { return store_.param_count(); }
  float* params_data() override { return store_.params_data(); }
  float* grads_data() override { return store_.grads_data(); }
  float* momentum_data() override { return store_.momentum_data(); }
  float* bn_stats_data() override { return store_.stats_data(); }
  int64_t bn_stats_count() const override { return store_.stat_count(); }

  Tensor input() override { return input_; }
  Status set_input(const float* host_nchw) override { return backend_.upload_nchw(host_nchw, input_); }
  Status set_labels(const int32_t* host_labels) override {
    return backend_.copy_to_device(labels_, host_labels, size_t(options_.batch) * sizeof(int32_t));
  }
  Status forward(bool train) override;
  const float* logits() const override { return fc_->out(); }
  StatusOr<StepResult> loss(float label_smoothing, const float* soft_targets, float loss_scale) override;
  Status backward(bool accumulate, const std::function<void(int64_t)>& on_grads_ready) override;
  std::vector<SgdSegment> sgd_segments(float weight_decay, float bn_bias_decay) const override;
  Status sgd_step(const SgdHyper& hyper, std::span<const SgdSegment> segments) override;
  StatusOr<StepResult> train_step(const SgdHyper& hyper, std::span<const SgdSegment> segments,
                                  float label_smoothing) override;

 private:
  Status build_stem(Tensor& x);
  Status build_stages(Tensor& x);
  void note(const Tensor& t) { max_activation_ = std::max(max_activation_, t.padded_count()); }
  LayerContext context(bool accumulate = false) {
    return LayerContext{backend_, store_, *grad_pool_, accumulate, options_.bn_momentum, {}};
  }

  Backend& backend_;
  ModelSpec spec_;
  NetworkOptions options_;
  ParamStore store_;
  std::vector<Buffer> owned_;

  Tensor input_;                                  // (N, C_in, H, W)
  int32_t* labels_ = nullptr;                     // (N)
  std::vector<std::unique_ptr<ConvBn>> stem_;     // forward order
  std::unique_ptr<PoolLayer> stem_pool_;          // imagenet and vd stems
  std::vector<std::unique_ptr<Bottleneck>> blocks_;
  float* pooled_ = nullptr;                       // (N, C_last) global average of the last block
  std::unique_ptr<LinearLayer> fc_;               // logits (N, K)
  float* dlogits_ = nullptr;                      // (N, K)
  float* dpooled_ = nullptr;                      // (N, C_last)
  float* se_scratch_[2] = {nullptr, nullptr};     // (N, max OC) each
  int64_t max_activation_ = 0;
  std::unique_ptr<GradPool> grad_pool_;
};

Status NetworkImpl::build_stem(Tensor& x) {
  auto add = [&](const std::string& i, int oc, int k, int stride, int pad) -> Status {
    ConvBn::Desc d;
    d.conv_name = "stem.conv" + i;
    d.bn_name = "stem.bn" + i;
    d.x = x;
    d.oc = oc, d.kernel = k, d.stride = stride, d.pad = pad;
    d.relu = true;
    d.bn_eps = options_.bn_eps;
    d.bn_reducer = options_.bn_reducer;
    d.bn_impl = options_.bn_impl;
    SX_ASSIGN_OR_RETURN(auto layer, ConvBn::make(backend_, store_, d));
    x = layer->out();
    note(x);
    stem_.push_back(std::move(layer));
    return Status::ok();
  };
  const int c = spec_.stem_channels;
  switch (spec_.stem) {
    case Stem::kImageNet:
      SX_TRY(add("1", c, 7, 2, 3));
      break;
    case Stem::kVd:
      SX_TRY(add("1", c / 2, 3, 2, 1));
      SX_TRY(add("2", c / 2, 3, 1, 1));
      SX_TRY(add("3", c, 3, 1, 1));
      break;
    case Stem::kSmall:
      SX_TRY(add("1", c, 3, 1, 1));
      break;
  }
  if (spec_.stem != Stem::kSmall) {
    SX_ASSIGN_OR_RETURN(stem_pool_, PoolLayer::make(backend_, x, PoolKind::kMax, 3, 2, 1, false));
    x = stem_pool_->out();
    note(x);
  }
  return Status::ok();
}

Status NetworkImpl::build_stages(Tensor& x) {
  for (int s = 0; s < spec_.stage_count(); ++s) {
    for (int b = 0; b < spec_.blocks[size_t(s)]; ++b) {
      Bottleneck::Desc d;
      d.name = "stage" + std::to_string(s) + ".block" + std::to_string(b);
      d.x = x;
      d.width = spec_.width(s);
      d.out = spec_.out_channels(s);
      d.stride = b == 0 ? spec_.stride(s) : 1;
      d.groups = spec_.cardinality;
      d.se_channels = spec_.se_channels(s);
      d.avg_down = spec_.avg_down;
      d.zero_init_last_bn = spec_.zero_init_last_bn;
      d.bn_eps = options_.bn_eps;
      d.bn_reducer = options_.bn_reducer;
      d.bn_impl = options_.bn_impl;
      if (x.dims.h < 1 || x.dims.w < 1)
        return Status::invalid_argument("image " + std::to_string(options_.image_h) + "x" +
                                        std::to_string(options_.image_w) + " is too small for " + spec_.name +
                                        ": nothing left at " + d.name);
      SX_ASSIGN_OR_RETURN(auto block, Bottleneck::make(backend_, store_, d));
      x = block->out();
      note(x);
      blocks_.push_back(std::move(block));
    }
  }
  return Status::ok();
}

Status NetworkImpl::init() {
  SX_TRY(spec_.validate());
  SX_CHECK_ARG(options_.batch >= 1, "NetworkOptions.batch must be >= 1");
  SX_CHECK_ARG(options_.image_h >= 1 && options_.image_w >= 1, "NetworkOptions.image_h/image_w must be >= 1");
  const int n = options_.batch;
  Dims in_dims{n, spec_.in_channels, options_.image_h, options_.image_w};
  SX_ASSIGN_OR_RETURN(input_, allocate_tensor(backend_, in_dims, backend_.activation_layout(in_dims.c), owned_));
  SX_ASSIGN_OR_RETURN(float* labels, allocate_floats(backend_, n, owned_));  // int32 and float are both 4 bytes
  labels_ = reinterpret_cast<int32_t*>(labels);

  Tensor x = input_;
  SX_TRY(build_stem(x));
  SX_TRY(build_stages(x));

  const int c = x.dims.c, k = spec_.num_classes;
  SX_ASSIGN_OR_RETURN(pooled_, allocate_floats(backend_, int64_t(n) * c, owned_));
  SX_ASSIGN_OR_RETURN(fc_, LinearLayer::make(backend_, store_, "fc", n, c, k, pooled_));
  SX_ASSIGN_OR_RETURN(dlogits_, allocate_floats(backend_, int64_t(n) * k, owned_));
  SX_ASSIGN_OR_RETURN(dpooled_, allocate_floats(backend_, int64_t(n) * c, owned_));
  int max_oc = 0;
  for (int s = 0; s < spec_.stage_count(); ++s) max_oc = std::max(max_oc, spec_.out_channels(s));
  for (float*& p : se_scratch_) {
    SX_ASSIGN_OR_RETURN(p, allocate_floats(backend_, int64_t(n) * max_oc, owned_));
  }

  // Backward finishes with the classifier first and the stem last.
  SX_TRY(fc_->place(store_));
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) SX_TRY((*it)->place(store_));
  for (auto it = stem_.rbegin(); it != stem_.rend(); ++it) SX_TRY((*it)->place(store_));
  SX_TRY(store_.finalize(backend_, options_.seed));
  grad_pool_ = std::make_unique<GradPool>(backend_, max_activation_);
  return Status::ok();
}

Status NetworkImpl::forward(bool train) {
  LayerContext ctx = context();
  for (auto& layer : stem_) SX_TRY(layer->forward(ctx, train));
  if (stem_pool_) SX_TRY(stem_pool_->forward(ctx));
  for (auto& block : blocks_) SX_TRY(block->forward(ctx, train));
  const Tensor& last = blocks_.back()->out();
  SX_TRY(backend_.global_avg_pool_forward(last, pooled_));
  return fc_->forward(ctx);
}

StatusOr<StepResult> NetworkImpl::loss(float label_smoothing, const float* soft_targets, float loss_scale) {
  StepResult r;
  SX_TRY(backend_.softmax_cross_entropy(fc_->out(), labels_, soft_targets, options_.batch, spec_.num_classes,
                                        label_smoothing, loss_scale, dlogits_, &r.loss));
  return r;
}

Status NetworkImpl::backward(bool accumulate, const std::function<void(int64_t)>& on_grads_ready) {
  LayerContext ctx = context(accumulate);
  grad_pool_->release_all();  // slots left busy by a backward that failed half-way
  int64_t reported = 0;
  if (on_grads_ready) {
    ctx.on_ready = [&](int id) {
      int64_t end = store_.end(id);
      if (end > reported) {
        reported = end;
        on_grads_ready(end);
      }
    };
  }
  SX_TRY(fc_->backward(ctx, dlogits_, dpooled_));
  const Tensor& last = blocks_.back()->out();
  SX_ASSIGN_OR_RETURN(Tensor d, grad_pool_->acquire(last.dims, last.layout));
  SX_TRY(backend_.global_avg_pool_backward(dpooled_, d));
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
    SX_ASSIGN_OR_RETURN(d, (*it)->backward(ctx, d, se_scratch_[0], se_scratch_[1]));
  }
  if (stem_pool_) {
    SX_ASSIGN_OR_RETURN(d, stem_pool_->backward(ctx, d));
  }
  for (size_t i = stem_.size(); i-- > 0;) {
    SX_ASSIGN_OR_RETURN(d, stem_[i]->backward(ctx, d, /*want_dx=*/i > 0));  // no gradient for the images
  }
  if (on_grads_ready && reported != store_.param_count())
    return Status::internal("backward reported gradients ready up to " + std::to_string(reported) + " of " +
                            std::to_string(store_.param_count()));
  return Status::ok();
}

std::vector<SgdSegment> NetworkImpl::sgd_segments(float weight_decay, float bn_bias_decay) const {
  std::vector<SgdSegment> segments;
  for (const ParamInfo& p : store_.params()) {
    bool weight = p.kind == ParamKind::kConvWeight || p.kind == ParamKind::kLinearWeight;
    float decay = weight ? weight_decay : bn_bias_decay;
    if (!segments.empty() && segments.back().weight_decay == decay &&
        segments.back().offset + segments.back().count == p.offset) {
      segments.back().count += p.count;
    } else {
      segments.push_back(SgdSegment{p.offset, p.count, decay});
    }
  }
  return segments;
}

Status NetworkImpl::sgd_step(const SgdHyper& hyper, std::span<const SgdSegment> segments) {
  return backend_.sgd_step(store_.params_data(), store_.grads_data(), store_.momentum_data(), segments, hyper);
}

StatusOr<StepResult> NetworkImpl::train_step(const SgdHyper& hyper, std::span<const SgdSegment> segments,
                                             float label_smoothing) {
  SX_TRY(forward(true));
  SX_ASSIGN_OR_RETURN(StepResult r, loss(label_smoothing, nullptr, 1.f));
  SX_TRY(backward(false, {}));
  SX_TRY(sgd_step(hyper, segments));
  return r;
}

}  // namespace

StatusOr<std::unique_ptr<Network>> Network::build(Backend& backend, const ModelSpec& spec,
                                                  const NetworkOptions& options) {
  auto net = std::make_unique<NetworkImpl>(backend, spec, options);
  SX_TRY(net->init().with_context("building " + (spec.name.empty() ? std::string("model") : spec.name)));
  return std::unique_ptr<Network>(std::move(net));
}

}  // namespace sx::model
