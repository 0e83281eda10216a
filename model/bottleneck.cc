// Bottleneck: wiring of the three ConvBn layers, the SE branch and the shortcut (see bottleneck.h).
#include "model/bottleneck.h"

namespace sx::model {

StatusOr<std::unique_ptr<Bottleneck>> Bottleneck::make(Backend& backend, ParamStore& store, const Desc& d) {
  auto b = std::make_unique<Bottleneck>();
  b->x_ = d.x;
  const int n = d.x.dims.n;
  auto conv_bn = [&](const std::string& conv, const std::string& bn, const Tensor& x, int oc, int k, int stride,
                     int pad, int groups, bool relu, bool zero_gamma) {
    ConvBn::Desc cd;
    cd.conv_name = d.name + "." + conv;
    cd.bn_name = d.name + "." + bn;
    cd.x = x;
    cd.oc = oc, cd.kernel = k, cd.stride = stride, cd.pad = pad, cd.groups = groups;
    cd.relu = relu;
    cd.zero_gamma = zero_gamma;
    cd.bn_eps = d.bn_eps;
    cd.bn_reducer = d.bn_reducer;
    cd.bn_impl = d.bn_impl;
    return ConvBn::make(backend, store, cd);
  };
  SX_ASSIGN_OR_RETURN(b->conv1_, conv_bn("conv1", "bn1", d.x, d.width, 1, 1, 0, 1, true, false));
  SX_ASSIGN_OR_RETURN(b->conv2_, conv_bn("conv2", "bn2", b->conv1_->out(), d.width, 3, d.stride, 1, d.groups, true,
                                         false));
  SX_ASSIGN_OR_RETURN(b->conv3_, conv_bn("conv3", "bn3", b->conv2_->out(), d.out, 1, 1, 0, 1, false,
                                         d.zero_init_last_bn));
  const Tensor& y3 = b->conv3_->out();

  if (d.se_channels > 0) {
    SX_ASSIGN_OR_RETURN(b->m_, allocate_floats(backend, int64_t(n) * d.out, b->owned_));
    SX_ASSIGN_OR_RETURN(b->fc1_, LinearLayer::make(backend, store, d.name + ".se.fc1", n, d.out, d.se_channels, b->m_));
    SX_ASSIGN_OR_RETURN(b->hr_, allocate_floats(backend, int64_t(n) * d.se_channels, b->owned_));
    SX_ASSIGN_OR_RETURN(b->fc2_, LinearLayer::make(backend, store, d.name + ".se.fc2", n, d.se_channels, d.out, b->hr_));
    SX_ASSIGN_OR_RETURN(b->s_, allocate_floats(backend, int64_t(n) * d.out, b->owned_));
    b->bn3_pools_ = b->conv3_->pool_output_into(b->m_);
  }
  if (d.se_channels == 0 || b->bn3_pools_) b->conv3_->defer_output();

  const Tensor* shortcut = &d.x;
  if (d.stride != 1 || d.x.dims.c != d.out) {
    Tensor in = d.x;
    int stride = d.stride;
    if (d.avg_down && d.stride != 1) {
      SX_ASSIGN_OR_RETURN(b->down_pool_, PoolLayer::make(backend, d.x, PoolKind::kAvg, 2, 2, 0, true));
      in = b->down_pool_->out();
      stride = 1;
    }
    SX_ASSIGN_OR_RETURN(b->down_, conv_bn("downsample.conv", "downsample.bn", in, d.out, 1, stride, 0, 1, false, false));
    b->down_->defer_output();
    shortcut = &b->down_->out();
  }
  if (shortcut->dims != y3.dims || shortcut->layout != y3.layout)
    return Status::internal(d.name + ": shortcut " + shortcut->dims.to_string() + " " + layout_name(shortcut->layout) +
                            " does not match the residual branch " + y3.dims.to_string() + " " +
                            layout_name(y3.layout));
  SX_ASSIGN_OR_RETURN(b->out_, allocate_tensor(backend, y3.dims, y3.layout, b->owned_));
  // The merge's backward pass takes the deferred BNs' per-plane sums too, when both BNs can use them.
  b->merge_sums_ = b->conv3_->deferred() && b->conv3_->takes_sums() &&
                   (!b->down_ || (b->down_->deferred() && b->down_->takes_sums()));
  if (b->merge_sums_) {
    auto planes_of_doubles = [&]() { return allocate_floats(backend, 2 * int64_t(n) * d.out, b->owned_); };
    SX_ASSIGN_OR_RETURN(float* dz, planes_of_doubles());
    SX_ASSIGN_OR_RETURN(float* dz3, planes_of_doubles());
    b->sum_dz_ = reinterpret_cast<double*>(dz);
    b->sum_dz3_ = reinterpret_cast<double*>(dz3);
    if (b->down_) {
      SX_ASSIGN_OR_RETURN(float* dzp, planes_of_doubles());
      b->sum_dzp_ = reinterpret_cast<double*>(dzp);
    }
  }
  return b;
}

Status Bottleneck::place(ParamStore& store) const {
  if (fc2_) {
    SX_TRY(fc2_->place(store));
    SX_TRY(fc1_->place(store));
  }
  SX_TRY(conv3_->place(store));
  SX_TRY(conv2_->place(store));
  SX_TRY(conv1_->place(store));
  if (down_) SX_TRY(down_->place(store));
  return Status::ok();
}

Status Bottleneck::forward(LayerContext& ctx, bool train) {
  Backend& be = ctx.backend;
  SX_TRY(conv1_->forward(ctx, train));
  SX_TRY(conv2_->forward(ctx, train));
  SX_TRY(conv3_->forward(ctx, train));
  const Tensor& y3 = branch();
  if (fc1_) {
    if (!bn3_pools_) SX_TRY(be.global_avg_pool_forward(y3, m_));
    SX_TRY(fc1_->forward(ctx));
    int64_t nr = int64_t(y3.dims.n) * fc1_->out_features();
    SX_TRY(be.relu_forward(fc1_->out(), hr_, nr));
    SX_TRY(fc2_->forward(ctx));
    SX_TRY(be.sigmoid_forward(fc2_->out(), s_, int64_t(y3.dims.n) * y3.dims.c));
  }
  if (down_pool_) SX_TRY(down_pool_->forward(ctx));
  if (down_) SX_TRY(down_->forward(ctx, train));
  return be.scale_add_relu_forward(y3, s_, shortcut(), out_, branch_bn(), shortcut_bn());
}

const Tensor& Bottleneck::shortcut() const {
  if (!down_) return x_;
  return down_->deferred() ? down_->bn_input() : down_->out();
}

StatusOr<Tensor> Bottleneck::backward(LayerContext& ctx, const Tensor& dout, float* se0, float* se1) {
  Backend& be = ctx.backend;
  const Tensor& y3 = branch();
  // dz in place of dout: the kernel reads each element before writing it, and writing lines it just
  // read saves the fetch a fresh slot costs (measured ~1-2 ms of the small model's step).
  const Tensor dz = dout;
  if (merge_sums_) {
    SX_TRY(be.scale_add_relu_backward_sums(dout, out_, y3, branch_bn(), fc1_ ? s_ : nullptr, shortcut(),
                                           shortcut_bn(), dz, fc1_ ? se0 : nullptr,
                                           Backend::MergeSums{sum_dz_, sum_dz3_, sum_dzp_}));
  } else {
    SX_TRY(be.scale_add_relu_backward(dout, out_, y3, s_, dz, fc1_ ? se0 : nullptr, branch_bn()));
  }

  const float* dmean = nullptr;
  if (fc1_) {
    // Ping-pong between the two scratch buffers: ds → dg → dhr → dh → dm.
    int64_t nc = int64_t(y3.dims.n) * y3.dims.c, nr = int64_t(y3.dims.n) * fc1_->out_features();
    SX_TRY(be.sigmoid_backward(s_, se0, se1, nc));          // dg in se1
    SX_TRY(fc2_->backward(ctx, se1, se0));                  // dhr in se0
    SX_TRY(be.relu_backward(hr_, se0, se1, nr));            // dh in se1
    SX_TRY(fc1_->backward(ctx, se1, se0));                  // dm in se0
    dmean = se0;
  }
  Tensor dy2;
  const ConvBn::BnSums sums3{sum_dz_, sum_dz3_}, sumsp{sum_dz_, sum_dzp_};
  if (conv3_->scales_dy()) {  // dy3 = dz·s + dmean/(H·W) is formed inside BN3's backward passes
    SX_ASSIGN_OR_RETURN(dy2, conv3_->backward_scaled(ctx, dz, s_, dmean, merge_sums_ ? &sums3 : nullptr));
  } else {
    SX_ASSIGN_OR_RETURN(Tensor dy3, ctx.pool.acquire(y3.dims, y3.layout));
    SX_TRY(be.scale_backward(dz, s_, dmean, dy3));
    SX_ASSIGN_OR_RETURN(dy2, conv3_->backward(ctx, dy3, true));
  }
  SX_ASSIGN_OR_RETURN(Tensor dy1, conv2_->backward(ctx, dy2, true));
  SX_ASSIGN_OR_RETURN(Tensor dx, conv1_->backward(ctx, dy1, true));
  if (!down_) {
    SX_TRY(be.add_into(dx, dz));
    ctx.pool.release(dz);
    return dx;
  }
  if (!down_pool_) {  // projection shortcut: its input gradient is added straight into dx
    if (merge_sums_) {
      SX_TRY(down_->backward_add_dx_sums(ctx, dz, dx, sumsp));
      ctx.pool.release(dz);
    } else {
      SX_TRY(down_->backward_add_dx(ctx, dz, dx));
    }
    return dx;
  }
  Tensor dshort;  // vd: then through the avg pool
  if (merge_sums_) {
    SX_ASSIGN_OR_RETURN(dshort, down_->backward_scaled(ctx, dz, nullptr, nullptr, &sumsp));
    ctx.pool.release(dz);
  } else {
    SX_ASSIGN_OR_RETURN(dshort, down_->backward(ctx, dz, true));
  }
  SX_ASSIGN_OR_RETURN(dshort, down_pool_->backward(ctx, dshort));
  SX_TRY(be.add_into(dx, dshort));
  ctx.pool.release(dshort);
  return dx;
}

}  // namespace sx::model
