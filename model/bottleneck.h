// defines: sx::model::Bottleneck — one SE-ResNeXt block. Dimension letters: N batch, C input
// channels, Wd bottleneck width, OC output channels, R = OC / se_reduction, H', W' output size.
//
//   y1 = relu(bn1(conv1 1x1 (x)))               (N, Wd, H, W)
//   y2 = relu(bn2(conv2 3x3/stride, G groups))  (N, Wd, H', W')
//   y3 = bn3(conv3 1x1)                         (N, OC, H', W')
//   s  = sigmoid(fc2(relu(fc1(mean_hw(y3)))))   (N, OC)       only with SE
//   out = relu(y3 · s + shortcut(x))            (N, OC, H', W')
// shortcut: x when stride 1 and C == OC; else bn(conv 1x1/stride (x)); with avg_down and stride 2,
// bn(conv 1x1 (avgpool 2x2/2 ceil (x))).
//
// bn3 and the shortcut's bn are applied inside the merge where the BN op can defer its output
// (BatchNormOp::defer_output): y3 and bn(conv(x)) are then never written, the merge reads the conv
// outputs through the BNs' per-channel affines, and the SE pool comes from BN3's statistics pass.
//
// Backward: the merge writes dz = dout·[out > 0] (the gradient of both y3·s and the shortcut);
// the SE branch and the residual branch run on dz, then the shortcut's gradient is added to dx.
#pragma once

#include <memory>
#include <string>

#include "model/layers.h"
#include "model/se_resnext.h"

namespace sx::model {

class Bottleneck {
 public:
  struct Desc {
    std::string name;  // "stage1.block0"
    Tensor x;          // (N, C, H, W) input view
    int width = 0, out = 0, stride = 1, groups = 1;
    int se_channels = 0;  // 0 = no SE
    bool avg_down = false;
    bool zero_init_last_bn = false;
    float bn_eps = 1e-5f;
    BnReducer bn_reducer;  // SyncBN (see NetworkOptions::bn_reducer); empty = local BN
    BatchNormImpl bn_impl = BatchNormImpl::kAuto;
  };
  static StatusOr<std::unique_ptr<Bottleneck>> make(Backend& backend, ParamStore& store, const Desc& desc);
  Status place(ParamStore& store) const;  // in backward order

  Status forward(LayerContext& ctx, bool train);
  // dout released; returns dx (the block input's gradient) in a pool slot. se_scratch0/1: two
  // (N, OC) buffers, shared by all blocks, for the SE branch's small gradients.
  StatusOr<Tensor> backward(LayerContext& ctx, const Tensor& dout, float* se_scratch0, float* se_scratch1);
  const Tensor& out() const { return out_; }

 private:
  Tensor x_, out_;
  std::unique_ptr<ConvBn> conv1_, conv2_, conv3_, down_;
  std::unique_ptr<PoolLayer> down_pool_;
  // SE: m = mean_hw(y3) (N, OC), h = fc1(m) (N, R), hr = relu(h), g = fc2(hr) (N, OC), s = sigmoid(g).
  std::unique_ptr<LinearLayer> fc1_, fc2_;
  float* m_ = nullptr;
  bool bn3_pools_ = false;  // BN3's forward writes m itself (ConvBn::pool_output_into)
  // The merge's inputs: y3 (or conv3's output and BN3's affine) and the shortcut (or the projection
  // conv's output and its BN's affine).
  const Tensor& branch() const { return conv3_->deferred() ? conv3_->bn_input() : conv3_->out(); }
  const Tensor& shortcut() const;
  ChannelAffine branch_bn() const { return conv3_->deferred() ? conv3_->affine() : ChannelAffine{}; }
  // Backend::scale_add_relu_backward_sums: the merge's backward takes BN3's (and the projection BN's)
  // first backward pass; plain (N, OC) doubles Σ dz, Σ dz·(c3 - μ3), Σ dz·(c_proj - μ_proj).
  bool merge_sums_ = false;
  double *sum_dz_ = nullptr, *sum_dz3_ = nullptr, *sum_dzp_ = nullptr;
  ChannelAffine shortcut_bn() const { return down_ && down_->deferred() ? down_->affine() : ChannelAffine{}; }
  float* hr_ = nullptr;
  float* s_ = nullptr;
  std::vector<Buffer> owned_;
};

}  // namespace sx::model
