// BatchNormOp on our own fused kernels over the blocked layouts (layout_view.h), split so the
// per-channel sums can be reduced across processes (SyncBN) between the passes:
//   forward_train: pass 1 partial sums Σ(x-k), Σ(x-k)² → [reducer] → statistics → pass 2 y
//                  (no pass 2 under defer_output: the consumer applies output_affine() itself,
//                  and the SE pool comes from pass 1's per-plane sums)
//   backward:      pass 1 partial sums Σdy, Σdy·(x-μ)  → [reducer] → pass 2 dx
// N batch, C channels, H, W; M = N·H·W values per channel (the global count under SyncBN).
//
// The passes run at the backend's instruction-set level (batch_norm_loops.cc, compiled per level).
// Numerics: each (image, channel block) plane is summed by one thread into its own double slot (the
// hand-written paths: fp32 over chunks of 64 pixels, then double), and the slots are added over the batch
// serially, so results do not depend on the thread count. Forward sums are taken relative to a
// shift (per plane: its first pixel, moved in double to the common k = the running mean, which is
// the same on every rank under SyncBN), so var = E[(x-k)²] - E[x-k]² does not cancel
// catastrophically (tested with |mean| = 1000·σ). The reducer carries the doubles (2C+1 values:
// sums and the count), so a sum of per-rank partials is as exact as one process's sum.
//
// The fused ReLU's mask is recomputed in backward from x and the forward's per-channel constants
// (same expression as forward), so no workspace is written or read.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/isa.h"
#include "model/cpu/kernels_isa.h"
#include "model/cpu/layout_view.h"

namespace sx::model::cpu {
namespace {

// Outputs at least this large are written with non-temporal stores (the hand-written paths): they
// skip the read-for-ownership of the destination, which made the op ~1.4x faster in an op-level
// benchmark (model/README.md). Smaller ones may still be in L2 when the next layer reads them.
constexpr size_t kStreamBytes = size_t(4) << 20;

class FusedBatchNormOp final : public BatchNormOp {
 public:
  FusedBatchNormOp(const BatchNormDesc& d, CpuIsa isa) : d_(d), isa_(isa) {
    Tensor probe{d.dims, d.layout, nullptr};
    const LayoutView v = LayoutView::of(probe);
    const size_t c = size_t(d.dims.c);
    cp_ = int64_t(v.cb) * v.b;
    part1_.resize(size_t(d.dims.n * cp_));
    part2_.resize(size_t(d.dims.n * cp_));
    sums_.resize(2 * c + 1);
    stream_ = probe.bytes() >= kStreamBytes;
    for (auto* a : {&shift_, &mean_, &scale_, &beta_, &bmean_, &ka_, &kb_, &kc_, &eval_mean_, &eval_scale_, &eval_beta_})
      a->assign(size_t(cp_), 0.f);
    const size_t planes = size_t(d.dims.n * cp_);
    ones_.assign(planes, 1.f);
    zeros_.assign(planes, 0.f);
    gs_.assign(planes, 0.f);
    gt_.assign(planes, 0.f);
  }

  Status forward_train(const Tensor& x, const float* gamma, const float* beta, const Tensor& y, float* save_mean,
                       float* save_var, float* running_mean, float* running_var, float momentum) override {
    SX_TRY(check(x, "bn forward x"));
    if (!deferred_) SX_TRY(check(y, "bn forward y"));
    const int C = d_.dims.c;
    const LayoutView xv = LayoutView::of(x);
    std::copy(running_mean, running_mean + C, shift_.begin());
    SX_ISA_CALL(isa_, bn_stat_partials)(xv, shift_.data(), part1_.data(), part2_.data());
    if (!d_.fuse_relu) fwd_part1_ = part1_;  // backward_scaled_sums' Σ(x - μ) per plane
    sum_over_batch(C);
    sums_[size_t(2 * C)] = double(d_.dims.n) * d_.dims.h * d_.dims.w;
    if (d_.reducer) SX_TRY(d_.reducer(sums_.data(), 2 * C + 1).with_context("SyncBN statistics"));
    const double m = sums_[size_t(2 * C)];
    const double unbias = m > 1 ? m / (m - 1) : 1.0;
    for (int c = 0; c < C; ++c) {
      const double d1 = sums_[size_t(c)] / m, d2 = sums_[size_t(C + c)] / m;
      const double var = std::max(0.0, d2 - d1 * d1);
      const double mean = double(running_mean[c]) + d1;
      save_mean[c] = float(mean);
      save_var[c] = float(var);
      mean_[size_t(c)] = float(mean);
      scale_[size_t(c)] = float(double(gamma[c]) / std::sqrt(var + double(d_.eps)));
      beta_[size_t(c)] = beta[c];
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * float(mean);
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * float(var * unbias);
    }
    affine_ = ChannelAffine{mean_.data(), scale_.data(), beta_.data()};
    if (deferred_) {
      // The SE pool from the statistics pass: mean over H, W of y = (plane mean - μ)·scale + β,
      // both means relative to the shift, in double.
      if (pooled_) pool_from_sums(C, [&](int c) { return sums_[size_t(c)] / m; });
      return Status::ok();
    }
    const LayoutView yv = LayoutView::of(y);
    SX_ISA_CALL(isa_, bn_apply)(xv, d_.fuse_relu, mean_.data(), scale_.data(), beta_.data(), yv, stream_, pooled_);
    return Status::ok();
  }

  Status forward_eval(const Tensor& x, const float* gamma, const float* beta, const float* running_mean,
                      const float* running_var, const Tensor& y) override {
    SX_TRY(check(x, "bn forward_eval x"));
    if (!deferred_) SX_TRY(check(y, "bn forward_eval y"));
    // Own constants: the training forward's stay for a backward that may follow.
    for (int c = 0; c < d_.dims.c; ++c) {
      eval_mean_[size_t(c)] = running_mean[c];
      eval_scale_[size_t(c)] = float(double(gamma[c]) / std::sqrt(double(running_var[c]) + double(d_.eps)));
      eval_beta_[size_t(c)] = beta[c];
    }
    const LayoutView xv = LayoutView::of(x), yv = LayoutView::of(y);
    affine_ = ChannelAffine{eval_mean_.data(), eval_scale_.data(), eval_beta_.data()};
    if (deferred_) {
      if (pooled_) {  // a read-only pass for the plane means (relative to the running mean)
        SX_ISA_CALL(isa_, bn_stat_partials)(xv, eval_mean_.data(), part1_.data(), part2_.data());
        pool_from_sums(d_.dims.c, [](int) { return 0.0; });
      }
      return Status::ok();
    }
    SX_ISA_CALL(isa_, bn_apply)(xv, d_.fuse_relu, eval_mean_.data(), eval_scale_.data(), eval_beta_.data(), yv,
                                stream_, pooled_);
    return Status::ok();
  }

  Status backward(const Tensor& x, const Tensor& /*y: the mask is recomputed from x*/, const Tensor& dy,
                  const float* gamma, const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                  float* dbeta, bool accumulate) override {
    SX_TRY(check(dy, "bn backward dy"));
    return backward_impl(x, BnGrad{LayoutView::of(dy), ones_.data(), zeros_.data()}, gamma, save_mean, save_var, dx,
                         dgamma, dbeta, accumulate);
  }

  bool scales_dy() const override { return true; }
  bool defer_output() override {
    if (d_.fuse_relu) return false;  // the consumer's affine has no ReLU
    deferred_ = true;
    return true;
  }
  ChannelAffine output_affine() const override { return affine_; }
  bool pool_output_into(float* pooled) override {
    pooled_ = pooled;
    return true;
  }
  Status backward_scaled(const Tensor& x, const Tensor& /*y*/, const Tensor& dz, const float* s, const float* dmean,
                         const float* gamma, const float* save_mean, const float* save_var, const Tensor& dx,
                         float* dgamma, float* dbeta, bool accumulate) override {
    return scaled_backward(x, dz, s, dmean, gamma, save_mean, save_var, dx, dgamma, dbeta, accumulate, nullptr);
  }
  bool takes_sums() const override { return !d_.fuse_relu; }
  Status backward_scaled_sums(const Tensor& x, const Tensor& dz, const float* s, const float* dmean,
                              const double* sum_dz, const double* sum_dzx, const float* gamma, const float* save_mean,
                              const float* save_var, const Tensor& dx, float* dgamma, float* dbeta,
                              bool accumulate) override {
    if (d_.fuse_relu) return Status::unimplemented("batch norm backward_scaled_sums with a fused ReLU");
    SX_CHECK_ARG(sum_dz != nullptr && sum_dzx != nullptr, "bn backward_scaled_sums: null sums");
    const Sums sums{sum_dz, sum_dzx};
    return scaled_backward(x, dz, s, dmean, gamma, save_mean, save_var, dx, dgamma, dbeta, accumulate, &sums);
  }

 private:
  // Per-plane sums of backward's first pass taken by the caller (backward_scaled_sums), plain (N, C).
  struct Sums {
    const double* dz;   // Σ_hw dz
    const double* dzx;  // Σ_hw dz·(x - save_mean)
  };
  // backward_scaled, with the first pass's sums given (backward_scaled_sums) or taken here (null).
  Status scaled_backward(const Tensor& x, const Tensor& dz, const float* s, const float* dmean, const float* gamma,
                         const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                         float* dbeta, bool accumulate, const Sums* sums) {
    SX_TRY(check(dz, "bn backward dz"));
    // Per-plane constants of dy = dz·s + dmean/(H·W), zero on the padded lanes past C.
    const int C = d_.dims.c;
    const float inv_hw = 1.f / float(d_.dims.h * d_.dims.w);
    for (int n = 0; n < d_.dims.n; ++n)
      for (int c = 0; c < C; ++c) {
        const size_t i = size_t(n * cp_ + c), src = size_t(n) * C + c;
        gs_[i] = s ? s[src] : 1.f;
        gt_[i] = dmean ? dmean[src] * inv_hw : 0.f;
      }
    return backward_impl(x, BnGrad{LayoutView::of(dz), gs_.data(), gt_.data()}, gamma, save_mean, save_var, dx,
                         dgamma, dbeta, accumulate, sums);
  }

  Status backward_impl(const Tensor& x, const BnGrad& gv, const float* gamma, const float* save_mean,
                       const float* save_var, const Tensor& dx, float* dgamma, float* dbeta, bool accumulate,
                       const Sums* sums = nullptr) {
    SX_TRY(check(x, "bn backward x"));
    SX_TRY(check(dx, "bn backward dx"));
    const int C = d_.dims.c;
    const LayoutView xv = LayoutView::of(x), ov = LayoutView::of(dx);
    // save_mean is the forward's mean_, so the recomputed ReLU mask matches the forward's.
    std::copy(save_mean, save_mean + C, bmean_.begin());
    const float* mu = bmean_.data();
    if (sums) {
      // The first pass from the caller's sums: Σ dy = gs·Σdz + HW·gt and Σ dy·(x-μ) = gs·Σdz·(x-μ) +
      // gt·Σ(x-μ), the last from the forward's per-plane sums Σ(x-k) (k = shift_).
      const double hw = double(d_.dims.h) * d_.dims.w;
      for (int n = 0; n < d_.dims.n; ++n)
        for (int c = 0; c < C; ++c) {
          const size_t i = size_t(n * cp_ + c), src = size_t(n) * C + c;
          const double gs = gv.gs[i], gt = gv.gt[i];
          const double dev = fwd_part1_[i] - hw * (double(mu[c]) - double(shift_[size_t(c)]));
          part1_[i] = gs * sums->dz[src] + hw * gt;
          part2_[i] = gs * sums->dzx[src] + gt * dev;
        }
    } else {
      SX_ISA_CALL(isa_, bn_grad_partials)(xv, d_.fuse_relu, gv, mu, scale_.data(), beta_.data(), part1_.data(),
                                          part2_.data());
    }
    sum_over_batch(C);
    // This process's dgamma/dbeta: the gradient allreduce adds the other ranks' shares.
    for (int c = 0; c < C; ++c) {
      const double inv = 1.0 / std::sqrt(double(save_var[c]) + double(d_.eps));
      const float db = float(sums_[size_t(c)]), dg = float(sums_[size_t(C + c)] * inv);
      dgamma[c] = accumulate ? dgamma[c] + dg : dg;
      dbeta[c] = accumulate ? dbeta[c] + db : db;
    }
    sums_[size_t(2 * C)] = double(d_.dims.n) * d_.dims.h * d_.dims.w;
    if (d_.reducer) SX_TRY(d_.reducer(sums_.data(), 2 * C + 1).with_context("SyncBN gradient sums"));
    const double m = sums_[size_t(2 * C)];
    for (int c = 0; c < C; ++c) {
      // dx = γ/σ · (dy' - mean(dy') - x̂·mean(dy'·x̂)), x̂ = (x-μ)/σ, means over the (global) batch.
      const double inv = 1.0 / std::sqrt(double(save_var[c]) + double(d_.eps));
      const double a = double(gamma[c]) * inv;
      ka_[size_t(c)] = float(a);
      kb_[size_t(c)] = float(-a * inv * inv * sums_[size_t(C + c)] / m);
      kc_[size_t(c)] = float(-a * sums_[size_t(c)] / m);
    }
    SX_ISA_CALL(isa_, bn_grad_apply)(xv, d_.fuse_relu, gv, mu, scale_.data(), beta_.data(), ka_.data(), kb_.data(),
                                     kc_.data(), ov, stream_);
    return Status::ok();
  }

  Status check(const Tensor& t, const char* what) const { return check_bn_tensor(d_, t, what); }
  // pooled_[n, c] = (part1_[n, c]/(H·W) - centre(c))·scale + β with affine_'s constants: the mean
  // over H, W of y from the per-plane sums part1_ (taken relative to the same shift as centre).
  template <class Centre>
  void pool_from_sums(int C, Centre centre) {
    const double inv_hw = 1.0 / (double(d_.dims.h) * d_.dims.w);
    for (int n = 0; n < d_.dims.n; ++n)
      for (int c = 0; c < C; ++c) {
        const double dev = part1_[size_t(n * cp_ + c)] * inv_hw - centre(c);
        pooled_[size_t(n) * C + c] = float(dev * double(affine_.scale[c]) + double(affine_.shift[c]));
      }
  }
  // sums_[c] = Σ_n part1_[n][c], sums_[C + c] = Σ_n part2_[n][c], in batch order.
  void sum_over_batch(int C) {
    for (int c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int n = 0; n < d_.dims.n; ++n) {
        s1 += part1_[size_t(n * cp_ + c)];
        s2 += part2_[size_t(n * cp_ + c)];
      }
      sums_[size_t(c)] = s1;
      sums_[size_t(C + c)] = s2;
    }
  }

  BatchNormDesc d_;
  CpuIsa isa_;
  bool stream_ = false;
  int64_t cp_ = 0;                            // padded channels CB·B
  std::vector<double> part1_, part2_;         // (N, CP) per-plane partial sums
  std::vector<double> fwd_part1_;             // (N, CP) the last forward_train's Σ(x - shift_) (no ReLU only)
  std::vector<double> sums_;                  // (2C + 1): the two sums per channel and the count M
  // Per-channel constants, (CP) each, zero past C.
  std::vector<float> shift_;                  // running mean at the forward: the sums' shift k
  std::vector<float> mean_, scale_, beta_;    // the last training forward's (and its ReLU mask's)
  std::vector<float> bmean_;                  // backward's save_mean
  std::vector<float> ka_, kb_, kc_;           // backward's dx constants
  std::vector<float> eval_mean_, eval_scale_, eval_beta_;  // forward_eval's
  // (N, CP) per-plane maps of the incoming gradient (Grad): identity, and backward_scaled's.
  std::vector<float> ones_, zeros_, gs_, gt_;
  float* pooled_ = nullptr;  // pool_output_into's (N, C) destination
  bool deferred_ = false;    // defer_output(): forwards write no y
  ChannelAffine affine_;     // the last forward's y = affine(x)
};

}  // namespace

StatusOr<std::unique_ptr<BatchNormOp>> make_fused_batch_norm(const BatchNormDesc& desc, CpuIsa isa) {
  return std::unique_ptr<BatchNormOp>(std::make_unique<FusedBatchNormOp>(desc, isa));
}

}  // namespace sx::model::cpu
