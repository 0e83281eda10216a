// ConvBn, PoolLayer, LinearLayer and the gradient slot pool.
#include "model/layers.h"

#include <cmath>

namespace sx::model {

StatusOr<Tensor> GradPool::acquire(const Dims& dims, Layout layout) {
  Tensor t{dims, layout, nullptr};
  if (t.padded_count() > slot_floats_)
    return Status::internal("GradPool: gradient " + dims.to_string() + " larger than the slot size " +
                            std::to_string(slot_floats_));
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!busy_[i]) {
      busy_[i] = true;
      t.data = static_cast<float*>(slots_[i].get());
      return t;
    }
  }
  if (slots_.size() >= 8) return Status::internal("GradPool: more than 8 live gradients (a slot is not released)");
  Buffer b = backend_.allocate(size_t(slot_floats_) * sizeof(float));
  if (!b) return Status::unavailable("out of memory allocating a gradient slot");
  t.data = static_cast<float*>(b.get());
  slots_.push_back(std::move(b));
  busy_.push_back(true);
  return t;
}

void GradPool::release(const Tensor& t) {
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].get() == t.data) busy_[i] = false;
}

StatusOr<Tensor> allocate_tensor(Backend& backend, const Dims& dims, Layout layout, std::vector<Buffer>& owner) {
  Tensor t{dims, layout, nullptr};
  Buffer b = backend.allocate(t.bytes());
  if (!b) return Status::unavailable("out of memory allocating an activation " + dims.to_string());
  t.data = static_cast<float*>(b.get());
  owner.push_back(std::move(b));
  return t;
}

StatusOr<float*> allocate_floats(Backend& backend, int64_t count, std::vector<Buffer>& owner) {
  Buffer b = backend.allocate(size_t(count) * sizeof(float));
  if (!b) return Status::unavailable("out of memory allocating " + std::to_string(count) + " floats");
  float* p = static_cast<float*>(b.get());
  owner.push_back(std::move(b));
  return p;
}

// ---- ConvBn -----------------------------------------------------------------------------------

StatusOr<std::unique_ptr<ConvBn>> ConvBn::make(Backend& backend, ParamStore& store, const Desc& d) {
  auto layer = std::make_unique<ConvBn>();
  layer->x_ = d.x;
  ConvDesc cd;
  cd.in = d.x.dims;
  cd.in_layout = d.x.layout;
  cd.oc = d.oc;
  cd.kh = cd.kw = d.kernel;
  cd.stride = d.stride;
  cd.pad = d.pad;
  cd.groups = d.groups;
  auto conv = backend.make_conv(cd);
  if (!conv.is_ok()) return conv.status().with_context(d.conv_name);
  layer->conv_ = std::move(conv).value();
  Dims out = layer->conv_->out_dims();
  Layout layout = layer->conv_->out_layout();

  BatchNormDesc bd;
  bd.dims = out;
  bd.layout = layout;
  bd.eps = d.bn_eps;
  bd.fuse_relu = d.relu;
  bd.reducer = d.bn_reducer;
  bd.impl = d.bn_impl;
  auto bn = backend.make_batch_norm(bd);
  if (!bn.is_ok()) return bn.status().with_context(d.bn_name);
  layer->bn_ = std::move(bn).value();

  SX_ASSIGN_OR_RETURN(layer->c_, allocate_tensor(backend, out, layout, layer->owned_));
  SX_ASSIGN_OR_RETURN(layer->y_, allocate_tensor(backend, out, layout, layer->owned_));
  SX_ASSIGN_OR_RETURN(layer->save_mean_, allocate_floats(backend, out.c, layer->owned_));
  SX_ASSIGN_OR_RETURN(layer->save_var_, allocate_floats(backend, out.c, layer->owned_));

  // Kaiming normal, fan_out = OC·KH·KW (PyTorch's definition: groups do not divide it).
  double fan_out = double(d.oc) * d.kernel * d.kernel;
  int64_t oc = d.oc, icg = d.x.dims.c / d.groups, k = d.kernel;
  layer->weight_ = store.declare(d.conv_name + ".weight", {oc, icg, k, k}, ParamKind::kConvWeight,
                                 InitRule::normal(std::sqrt(2.0 / fan_out)));
  layer->gamma_ = store.declare(d.bn_name + ".weight", {oc}, ParamKind::kBnGamma,
                                InitRule::constant(d.zero_gamma ? 0.0 : 1.0));
  layer->beta_ = store.declare(d.bn_name + ".bias", {oc}, ParamKind::kBnBeta, InitRule::constant(0));
  layer->mean_ = store.declare(d.bn_name + ".running_mean", {oc}, ParamKind::kBnRunningMean, InitRule::constant(0));
  layer->var_ = store.declare(d.bn_name + ".running_var", {oc}, ParamKind::kBnRunningVar, InitRule::constant(1));
  return layer;
}

Status ConvBn::place(ParamStore& store) const {
  for (int id : {gamma_, beta_, mean_, var_, weight_}) SX_TRY(store.place(id));
  return Status::ok();
}

Status ConvBn::forward(LayerContext& ctx, bool train) {
  ParamStore& s = ctx.store;
  SX_TRY(conv_->forward(x_, s.param(weight_), c_));
  if (train)
    return bn_->forward_train(c_, s.param(gamma_), s.param(beta_), y_, save_mean_, save_var_, s.stat(mean_),
                              s.stat(var_), ctx.bn_momentum);
  return bn_->forward_eval(c_, s.param(gamma_), s.param(beta_), s.stat(mean_), s.stat(var_), y_);
}

bool ConvBn::defer_output() {
  if (!bn_->defer_output()) return false;
  std::erase_if(owned_, [&](const Buffer& b) { return b.get() == y_.data; });
  y_.data = nullptr;
  deferred_ = true;
  return true;
}

StatusOr<Tensor> ConvBn::backward(LayerContext& ctx, const Tensor& dy, bool want_dx) {
  return backward_impl(ctx, dy, want_dx, nullptr);
}

Status ConvBn::backward_add_dx(LayerContext& ctx, const Tensor& dy, const Tensor& add_dx_to) {
  return backward_impl(ctx, dy, true, &add_dx_to).status();
}

StatusOr<Tensor> ConvBn::backward_scaled(LayerContext& ctx, const Tensor& dz, const float* s, const float* dmean,
                                         const BnSums* sums) {
  const ScaledDy scaled{s, dmean, sums};
  return backward_impl(ctx, dz, true, nullptr, &scaled);
}

Status ConvBn::backward_add_dx_sums(LayerContext& ctx, const Tensor& dz, const Tensor& add_dx_to, const BnSums& sums) {
  const ScaledDy scaled{nullptr, nullptr, &sums};
  return backward_impl(ctx, dz, true, &add_dx_to, &scaled).status();
}

StatusOr<Tensor> ConvBn::backward_impl(LayerContext& ctx, const Tensor& dy, bool want_dx, const Tensor* add_dx_to,
                                       const ScaledDy* scaled) {
  ParamStore& s = ctx.store;
  SX_ASSIGN_OR_RETURN(Tensor dc, ctx.pool.acquire(c_.dims, c_.layout));
  if (scaled && scaled->sums) {
    SX_TRY(bn_->backward_scaled_sums(c_, dy, scaled->s, scaled->dmean, scaled->sums->dz, scaled->sums->dzx,
                                     s.param(gamma_), save_mean_, save_var_, dc, s.grad(gamma_), s.grad(beta_),
                                     ctx.accumulate));
  } else if (scaled) {
    SX_TRY(bn_->backward_scaled(c_, y_, dy, scaled->s, scaled->dmean, s.param(gamma_), save_mean_, save_var_, dc,
                                s.grad(gamma_), s.grad(beta_), ctx.accumulate));
  } else {
    SX_TRY(bn_->backward(c_, y_, dy, s.param(gamma_), save_mean_, save_var_, dc, s.grad(gamma_), s.grad(beta_),
                         ctx.accumulate));
    ctx.pool.release(dy);
  }
  SX_TRY(conv_->backward_weights(x_, dc, s.grad(weight_), ctx.accumulate));
  if (ctx.on_ready) ctx.on_ready(weight_);
  Tensor dx;
  if (add_dx_to != nullptr && conv_->accumulates_data()) {
    SX_TRY(conv_->backward_data_accumulate(dc, s.param(weight_), *add_dx_to));
  } else if (want_dx) {
    SX_ASSIGN_OR_RETURN(dx, ctx.pool.acquire(x_.dims, x_.layout));
    SX_TRY(conv_->backward_data(dc, s.param(weight_), dx));
    if (add_dx_to != nullptr) {
      SX_TRY(ctx.backend.add_into(*add_dx_to, dx));
      ctx.pool.release(dx);
      dx = Tensor{};
    }
  }
  ctx.pool.release(dc);
  return dx;
}

// ---- PoolLayer --------------------------------------------------------------------------------

StatusOr<std::unique_ptr<PoolLayer>> PoolLayer::make(Backend& backend, const Tensor& x, PoolKind kind, int kernel,
                                                     int stride, int pad, bool ceil_mode) {
  auto layer = std::make_unique<PoolLayer>();
  layer->x_ = x;
  PoolDesc pd;
  pd.in = x.dims;
  pd.in_layout = x.layout;
  pd.kind = kind;
  pd.kernel = kernel;
  pd.stride = stride;
  pd.pad = pad;
  pd.ceil_mode = ceil_mode;
  SX_ASSIGN_OR_RETURN(layer->op_, backend.make_pool(pd));
  SX_ASSIGN_OR_RETURN(layer->y_, allocate_tensor(backend, layer->op_->out_dims(), layer->op_->out_layout(),
                                                 layer->owned_));
  return layer;
}

Status PoolLayer::forward(LayerContext&) { return op_->forward(x_, y_); }

StatusOr<Tensor> PoolLayer::backward(LayerContext& ctx, const Tensor& dy) {
  SX_ASSIGN_OR_RETURN(Tensor dx, ctx.pool.acquire(x_.dims, x_.layout));
  SX_TRY(op_->backward(dy, dx));
  ctx.pool.release(dy);
  return dx;
}

// ---- LinearLayer ------------------------------------------------------------------------------

StatusOr<std::unique_ptr<LinearLayer>> LinearLayer::make(Backend& backend, ParamStore& store,
                                                         const std::string& name, int n, int in, int out,
                                                         const float* x) {
  auto layer = std::make_unique<LinearLayer>();
  layer->x_ = x;
  layer->out_ = out;
  LinearDesc ld;
  ld.n = n;
  ld.in = in;
  ld.out = out;
  ld.bias = true;
  auto op = backend.make_linear(ld);
  if (!op.is_ok()) return op.status().with_context(name);
  layer->op_ = std::move(op).value();
  SX_ASSIGN_OR_RETURN(layer->y_, allocate_floats(backend, int64_t(n) * out, layer->owned_));
  // PyTorch's default for nn.Linear (and 1x1 nn.Conv2d): weight and bias uniform(±1/sqrt(fan_in)).
  double bound = 1.0 / std::sqrt(double(in));
  layer->weight_ = store.declare(name + ".weight", {out, in}, ParamKind::kLinearWeight, InitRule::uniform(bound));
  layer->bias_ = store.declare(name + ".bias", {out}, ParamKind::kBias, InitRule::uniform(bound));
  return layer;
}

Status LinearLayer::place(ParamStore& store) const {
  SX_TRY(store.place(weight_));
  return store.place(bias_);
}

Status LinearLayer::forward(LayerContext& ctx) {
  return op_->forward(x_, ctx.store.param(weight_), ctx.store.param(bias_), y_);
}

Status LinearLayer::backward(LayerContext& ctx, const float* dy, float* dx) {
  ParamStore& s = ctx.store;
  SX_TRY(op_->backward_weights(x_, dy, s.grad(weight_), s.grad(bias_), ctx.accumulate));
  if (ctx.on_ready) ctx.on_ready(bias_);
  if (dx != nullptr) SX_TRY(op_->backward_data(dy, s.param(weight_), dx));
  return Status::ok();
}

}  // namespace sx::model
