// CPU BatchNormOp against a double-precision reference: training forward (batch statistics,
// biased save_var, momentum-0.1 running update with the unbiased variance), eval forward
// (running statistics), backward (analytic reference over every element and central finite
// differences at sampled points), fused ReLU, accumulate — for the fused kernels and oneDNN's; the
// fused kernels' backward_scaled (dy = dz·s + dmean/(H·W) formed inside) against the same reference,
// also given its first pass's sums (backward_scaled_sums),
// and their pooled output (the SE block's mean over H, W taken in the forward's apply pass), and
// the deferred output (no y written; the affine a consumer applies, pooled means from the sums).
// SyncBN: two threads as two ranks, each with half the batch and a reducer that sums both halves'
// partials, reproduce BN over the whole batch. N batch, C channels, M = N·H·W.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "model/backend.h"
#include "tests/backend_test_util.h"
#include "tests/isa_test_util.h"

namespace sx::model {
namespace {

struct Case {
  std::string name;
  Dims dims;
  Layout layout;
  bool fuse_relu;
  BatchNormImpl impl = BatchNormImpl::kAuto;
  CpuIsa isa = CpuIsa::kAvx512;  // the backend's level (oneDNN cases: the machine's, as kAvx512 is capped)
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

using testing::DevTensor;
using testing::download;
using testing::make_tensor;

std::vector<float> random_vec(size_t n, uint32_t seed, float lo, float hi) {
  return testing::random_uniform(n, seed, lo, hi);
}

constexpr double kEps = 1e-5;

// Double-precision batch norm over NCHW host data.
struct Ref {
  Dims d;
  std::vector<double> mean, var;  // (C) batch mean, biased variance
  size_t idx(int n, int c, int hw) const { return (size_t(n) * d.c + c) * d.h * d.w + hw; }
  int m() const { return d.n * d.h * d.w; }

  void stats(const std::vector<float>& x) {
    mean.assign(size_t(d.c), 0);
    var.assign(size_t(d.c), 0);
    for (int c = 0; c < d.c; ++c) {
      for (int n = 0; n < d.n; ++n)
        for (int i = 0; i < d.h * d.w; ++i) mean[c] += x[idx(n, c, i)];
      mean[c] /= m();
      for (int n = 0; n < d.n; ++n)
        for (int i = 0; i < d.h * d.w; ++i) var[c] += std::pow(x[idx(n, c, i)] - mean[c], 2);
      var[c] /= m();
    }
  }
  std::vector<double> normalize(const std::vector<float>& x, const std::vector<float>& g, const std::vector<float>& b,
                                const std::vector<double>& mu, const std::vector<double>& v, bool relu) const {
    std::vector<double> y(x.size());
    for (int n = 0; n < d.n; ++n)
      for (int c = 0; c < d.c; ++c)
        for (int i = 0; i < d.h * d.w; ++i) {
          double val = g[c] * (x[idx(n, c, i)] - mu[c]) / std::sqrt(v[c] + kEps) + b[c];
          y[idx(n, c, i)] = relu ? std::max(0.0, val) : val;
        }
    return y;
  }
  // Training-mode backward; dy already masked by the ReLU when fused.
  void backward(const std::vector<float>& x, const std::vector<double>& dy, const std::vector<float>& g,
                std::vector<double>& dx, std::vector<double>& dg, std::vector<double>& db) const {
    dx.assign(x.size(), 0);
    dg.assign(size_t(d.c), 0);
    db.assign(size_t(d.c), 0);
    for (int c = 0; c < d.c; ++c) {
      const double inv = 1 / std::sqrt(var[c] + kEps);
      for (int n = 0; n < d.n; ++n)
        for (int i = 0; i < d.h * d.w; ++i) {
          db[c] += dy[idx(n, c, i)];
          dg[c] += dy[idx(n, c, i)] * (x[idx(n, c, i)] - mean[c]) * inv;
        }
      for (int n = 0; n < d.n; ++n)
        for (int i = 0; i < d.h * d.w; ++i) {
          const double xhat = (x[idx(n, c, i)] - mean[c]) * inv;
          dx[idx(n, c, i)] = g[c] * inv * (dy[idx(n, c, i)] - db[c] / m() - xhat * dg[c] / m());
        }
    }
  }
};

template <typename V>
void expect_close(const std::vector<float>& got, const V& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 1e-2;
  for (double v : want) scale = std::max(scale, std::abs(v));
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (std::abs(got[i] - double(want[i])) > tol * scale) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i] << " (scale " << scale << ")";
      ++bad;
    }
  }
}

class BatchNormTest : public ::testing::TestWithParam<Case> {};

TEST_P(BatchNormTest, TrainEvalBackwardMatchReference) {
  const Case& p = GetParam();
  if (p.impl == BatchNormImpl::kFused) SX_SKIP_UNLESS_RUNNABLE(p.isa);
  const Dims d = p.dims;
  const size_t nc = size_t(d.c);
  auto be = testing::make_backend_at(p.isa);
  BatchNormDesc desc{.dims = d, .layout = p.layout, .eps = 1e-5f, .fuse_relu = p.fuse_relu, .impl = p.impl, .reducer = {}};
  auto op_or = be->make_batch_norm(desc);
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;

  auto xh = random_vec(size_t(d.count()), 1, -1.f, 3.f);
  auto gamma = random_vec(nc, 2, 0.5f, 1.5f);
  auto beta = random_vec(nc, 3, -0.5f, 0.5f);
  auto rh = random_vec(size_t(d.count()), 4, -1.f, 1.f);  // dL/dy for L = sum(y · r)
  std::vector<float> save_mean(nc), save_var(nc), run_mean(nc, 0.25f), run_var(nc, 2.f);

  auto x = make_tensor(*be, d, p.layout), y = make_tensor(*be, d, p.layout);
  auto dy = make_tensor(*be, d, p.layout), dx = make_tensor(*be, d, p.layout);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(rh.data(), dy.t).is_ok());

  // Training forward: batch statistics, biased save_var, running update with unbiased variance.
  Ref ref{d, {}, {}};
  ref.stats(xh);
  ASSERT_TRUE(op->forward_train(x.t, gamma.data(), beta.data(), y.t, save_mean.data(), save_var.data(),
                                run_mean.data(), run_var.data(), 0.1f)
                  .is_ok());
  expect_close(download(*be, y.t), ref.normalize(xh, gamma, beta, ref.mean, ref.var, p.fuse_relu), 1e-5, "y train");
  expect_close(save_mean, ref.mean, 1e-5, "save_mean");
  expect_close(save_var, ref.var, 1e-5, "save_var (biased)");
  std::vector<double> want_rm(nc), want_rv(nc);
  for (size_t c = 0; c < nc; ++c) {
    want_rm[c] = 0.9 * 0.25 + 0.1 * ref.mean[c];
    want_rv[c] = 0.9 * 2.0 + 0.1 * ref.var[c] * ref.m() / (ref.m() - 1);
  }
  expect_close(run_mean, want_rm, 1e-5, "running_mean");
  expect_close(run_var, want_rv, 1e-5, "running_var (unbiased)");

  // Backward: analytic reference over every element; dgamma/dbeta overwrite, then accumulate.
  std::vector<double> y_ref = ref.normalize(xh, gamma, beta, ref.mean, ref.var, p.fuse_relu), dy_masked(rh.size());
  for (size_t i = 0; i < rh.size(); ++i) dy_masked[i] = (p.fuse_relu && y_ref[i] <= 0) ? 0 : rh[i];
  std::vector<double> dx_ref, dg_ref, db_ref;
  ref.backward(xh, dy_masked, gamma, dx_ref, dg_ref, db_ref);
  std::vector<float> dgamma(nc, 7.f), dbeta(nc, 7.f);  // garbage that overwrite must replace
  Status st = op->backward(x.t, y.t, dy.t, gamma.data(), save_mean.data(), save_var.data(), dx.t, dgamma.data(),
                           dbeta.data(), /*accumulate=*/false);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  auto dxv = download(*be, dx.t);
  expect_close(dxv, dx_ref, 1e-4, "dx");
  expect_close(dgamma, dg_ref, 1e-4, "dgamma");
  expect_close(dbeta, db_ref, 1e-4, "dbeta");
  ASSERT_TRUE(op->backward(x.t, y.t, dy.t, gamma.data(), save_mean.data(), save_var.data(), dx.t, dgamma.data(),
                           dbeta.data(), /*accumulate=*/true)
                  .is_ok());
  std::vector<double> dg2(nc), db2(nc);
  for (size_t c = 0; c < nc; ++c) dg2[c] = 2 * dg_ref[c], db2[c] = 2 * db_ref[c];
  expect_close(dgamma, dg2, 1e-4, "dgamma accumulated");
  expect_close(dbeta, db2, 1e-4, "dbeta accumulated");

  // The SE block's fused form: dy = dz·s[n, c] + dmean[n, c]/(H·W) built inside the backward passes.
  if (op->scales_dy()) {
    auto sh = random_vec(size_t(d.n) * nc, 11, 0.f, 1.f), dmh = random_vec(size_t(d.n) * nc, 12, -2.f, 2.f);
    std::vector<double> dy_scaled(rh.size());
    for (int n = 0; n < d.n; ++n)
      for (int c = 0; c < d.c; ++c)
        for (int i = 0; i < d.h * d.w; ++i) {
          const size_t e = ref.idx(n, c, i), nc_i = size_t(n) * nc + size_t(c);
          const double v = double(rh[e]) * sh[nc_i] + double(dmh[nc_i]) / (d.h * d.w);
          dy_scaled[e] = (p.fuse_relu && y_ref[e] <= 0) ? 0 : v;
        }
    std::vector<double> dxs_ref, dgs_ref, dbs_ref;
    ref.backward(xh, dy_scaled, gamma, dxs_ref, dgs_ref, dbs_ref);
    auto dx2 = make_tensor(*be, d, p.layout);
    std::vector<float> dgs(nc, 7.f), dbs(nc, 7.f);
    st = op->backward_scaled(x.t, y.t, dy.t, sh.data(), dmh.data(), gamma.data(), save_mean.data(), save_var.data(),
                             dx2.t, dgs.data(), dbs.data(), false);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    expect_close(download(*be, dx2.t), dxs_ref, 1e-4, "dx scaled");
    expect_close(dgs, dgs_ref, 1e-4, "dgamma scaled");
    expect_close(dbs, dbs_ref, 1e-4, "dbeta scaled");
    EXPECT_EQ(download(*be, dy.t), rh) << "dz must be read only";
    // Null s and dmean are 1 and 0: the plain backward.
    ASSERT_TRUE(op->backward_scaled(x.t, y.t, dy.t, nullptr, nullptr, gamma.data(), save_mean.data(), save_var.data(),
                                    dx2.t, dgs.data(), dbs.data(), false)
                    .is_ok());
    expect_close(download(*be, dx2.t), dx_ref, 1e-4, "dx scaled by null");

    // The same with the first pass's per-plane sums given (BNs without ReLU): Σ dz and Σ dz·(x - μ).
    if (!p.fuse_relu) {
      ASSERT_TRUE(op->takes_sums());
      std::vector<double> sum_dz(size_t(d.n) * nc, 0), sum_dzx(size_t(d.n) * nc, 0);
      for (int n = 0; n < d.n; ++n)
        for (int c = 0; c < d.c; ++c)
          for (int i = 0; i < d.h * d.w; ++i) {
            const size_t e = ref.idx(n, c, i), nc_i = size_t(n) * nc + size_t(c);
            sum_dz[nc_i] += rh[e];
            sum_dzx[nc_i] += double(rh[e]) * (double(xh[e]) - double(save_mean[size_t(c)]));
          }
      std::fill(dgs.begin(), dgs.end(), 7.f);
      std::fill(dbs.begin(), dbs.end(), 7.f);
      st = op->backward_scaled_sums(x.t, dy.t, sh.data(), dmh.data(), sum_dz.data(), sum_dzx.data(), gamma.data(),
                                    save_mean.data(), save_var.data(), dx2.t, dgs.data(), dbs.data(), false);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      expect_close(download(*be, dx2.t), dxs_ref, 1e-4, "dx scaled from sums");
      expect_close(dgs, dgs_ref, 1e-4, "dgamma scaled from sums");
      expect_close(dbs, dbs_ref, 1e-4, "dbeta scaled from sums");
    } else {
      EXPECT_FALSE(op->takes_sums()) << "a ReLU BN's sums need its mask";
    }
  } else {
    EXPECT_EQ(p.impl, BatchNormImpl::kOneDnn) << "the fused BN forms the SE-scaled dy itself";
  }

  // Central finite differences of L through the training forward (fresh running buffers).
  std::vector<float> sm(nc), sv(nc), rm(nc), rv(nc);
  auto loss = [&]() {
    EXPECT_TRUE(op->forward_train(x.t, gamma.data(), beta.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                    .is_ok());
    auto yv = download(*be, y.t);
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += double(yv[i]) * rh[i];
    return l;
  };
  // Small steps: with the fused ReLU a larger one lets outputs cross the kink.
  const float eps = 2e-3f;
  std::mt19937 rng(9);
  auto upload_x = [&] { ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok()); };
  for (int s = 0; s < 6; ++s) {
    const size_t i = rng() % xh.size();
    const double fd = testing::central_difference(xh.data(), i, eps, loss, upload_x);
    EXPECT_NEAR(fd, dxv[i], 5e-3 + 2e-2 * std::abs(dxv[i])) << "dx at " << i;
  }
  // Channels where a pre-ReLU value sits at the kink would measure the kink, not the gradient.
  const std::vector<double> pre = ref.normalize(xh, gamma, beta, ref.mean, ref.var, false);
  auto near_kink = [&](size_t c) {
    for (int n = 0; n < d.n; ++n)
      for (int i = 0; i < d.h * d.w; ++i)
        if (std::abs(pre[ref.idx(n, int(c), i)]) < 0.02) return true;
    return false;
  };
  int checked = 0;
  for (size_t c = 0; c < nc && checked < 4; ++c) {
    if (p.fuse_relu && near_kink(c)) continue;
    ++checked;
    for (auto* param : {&gamma, &beta}) {
      const float keep = (*param)[c];
      (*param)[c] = keep + eps;
      const double lp = loss();
      (*param)[c] = keep - eps;
      const double lm = loss();
      (*param)[c] = keep;
      const double analytic = (param == &gamma ? dgamma[c] : dbeta[c]) / 2;  // accumulated twice above
      EXPECT_NEAR((lp - lm) / (2 * eps), analytic, 5e-3 + 2e-2 * std::abs(analytic))
          << (param == &gamma ? "dgamma" : "dbeta") << " at " << c;
    }
  }
  EXPECT_GT(checked, 0);

  // Eval forward normalises with the running statistics, not the batch's.
  std::vector<float> em = random_vec(nc, 5, -0.5f, 0.5f), ev = random_vec(nc, 6, 0.5f, 2.f);
  ASSERT_TRUE(op->forward_eval(x.t, gamma.data(), beta.data(), em.data(), ev.data(), y.t).is_ok());
  std::vector<double> emd(em.begin(), em.end()), evd(ev.begin(), ev.end());
  expect_close(download(*be, y.t), ref.normalize(xh, gamma, beta, emd, evd, p.fuse_relu), 1e-5, "y eval");

  // The SE pooling folded into the forward: pooled[n, c] = mean over H, W of y, train and eval.
  std::vector<float> pooled(size_t(d.n) * nc, -1.f);
  if (!op->pool_output_into(pooled.data())) {
    EXPECT_EQ(p.impl, BatchNormImpl::kOneDnn) << "the fused BN pools its output itself";
    return;
  }
  auto mean_hw = [&](const std::vector<float>& yv) {
    std::vector<double> m(size_t(d.n) * nc, 0);
    for (int n = 0; n < d.n; ++n)
      for (int c = 0; c < d.c; ++c) {
        for (int i = 0; i < d.h * d.w; ++i) m[size_t(n) * nc + size_t(c)] += yv[ref.idx(n, c, i)];
        m[size_t(n) * nc + size_t(c)] /= d.h * d.w;
      }
    return m;
  };
  ASSERT_TRUE(op->forward_eval(x.t, gamma.data(), beta.data(), em.data(), ev.data(), y.t).is_ok());
  expect_close(pooled, mean_hw(download(*be, y.t)), 1e-5, "pooled eval");
  ASSERT_TRUE(op->forward_train(x.t, gamma.data(), beta.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                  .is_ok());
  expect_close(pooled, mean_hw(download(*be, y.t)), 1e-5, "pooled train");
  std::fill(pooled.begin(), pooled.end(), -1.f);
  ASSERT_TRUE(op->pool_output_into(nullptr));
  ASSERT_TRUE(op->forward_eval(x.t, gamma.data(), beta.data(), em.data(), ev.data(), y.t).is_ok());
  EXPECT_EQ(pooled, std::vector<float>(size_t(d.n) * nc, -1.f)) << "pooling after pool_output_into(nullptr)";

  // Deferred output (BNs without ReLU): y is left alone, output_affine() maps x to y, and the pooled
  // means come from the statistics pass (train) or a read-only pass (eval).
  if (p.fuse_relu) {
    EXPECT_FALSE(op->defer_output()) << "a ReLU BN cannot hand its output to an affine";
    return;
  }
  ASSERT_TRUE(op->defer_output());
  ASSERT_TRUE(op->pool_output_into(pooled.data()));
  auto affine_of = [&](const std::vector<float>& xv) {
    const ChannelAffine f = op->output_affine();
    EXPECT_TRUE(f);
    std::vector<double> out(xv.size());
    for (int n = 0; n < d.n; ++n)
      for (int c = 0; c < d.c; ++c)
        for (int i = 0; i < d.h * d.w; ++i) {
          const size_t k = ref.idx(n, c, i);
          out[k] = (double(xv[k]) - f.mean[c]) * f.scale[c] + f.shift[c];
        }
    return out;
  };
  auto as_float = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::vector<float> untouched(size_t(d.count()), 42.f);
  ASSERT_TRUE(be->upload_nchw(untouched.data(), y.t).is_ok());
  ASSERT_TRUE(op->forward_train(x.t, gamma.data(), beta.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                  .is_ok());
  const std::vector<double> y_train = ref.normalize(xh, gamma, beta, ref.mean, ref.var, false);
  expect_close(as_float(affine_of(xh)), y_train, 1e-5, "deferred y train");
  expect_close(pooled, mean_hw(as_float(y_train)), 1e-5, "deferred pooled train");
  EXPECT_EQ(download(*be, y.t), untouched) << "a deferred forward_train wrote y";
  ASSERT_TRUE(op->forward_eval(x.t, gamma.data(), beta.data(), em.data(), ev.data(), y.t).is_ok());
  const std::vector<double> y_eval = ref.normalize(xh, gamma, beta, emd, evd, false);
  expect_close(as_float(affine_of(xh)), y_eval, 1e-5, "deferred y eval");
  expect_close(pooled, mean_hw(as_float(y_eval)), 1e-5, "deferred pooled eval");
  EXPECT_EQ(download(*be, y.t), untouched) << "a deferred forward_eval wrote y";
}

// Every shape runs on both implementations: the fused kernels (default, at every instruction-set
// level: their loops are built once per level) and oneDNN's.
std::vector<Case> cases() {
  const std::vector<Case> shapes = {
      {"plain", {3, 6, 4, 5}, Layout::kNCHW, false},
      {"plain_relu", {3, 6, 4, 5}, Layout::kNCHW, true},
      {"blocked16", {2, 32, 5, 3}, Layout::kNChw16c, false},
      {"blocked16_relu", {2, 32, 5, 3}, Layout::kNChw16c, true},
      {"blocked16_padded_relu", {2, 20, 3, 3}, Layout::kNChw16c, true},  // last block 4 of 16 lanes
      {"blocked8_relu", {3, 16, 3, 2}, Layout::kNChw8c, true},
      {"blocked8", {2, 24, 5, 3}, Layout::kNChw8c, false},
      {"blocked8_padded", {2, 20, 3, 3}, Layout::kNChw8c, false},  // last block 4 of 8 lanes
      {"nhwc_relu", {2, 24, 3, 3}, Layout::kNHWC, true},
      {"nhwc_odd", {2, 5, 3, 3}, Layout::kNHWC, false},                 // runtime block size
      {"parallel", {4, 32, 16, 16}, Layout::kNChw16c, false},  // above the OpenMP threshold (no kink-free channel with ReLU)
      {"parallel8", {4, 32, 16, 16}, Layout::kNChw8c, false},
  };
  std::vector<Case> out;
  for (Case c : shapes) {
    c.impl = BatchNormImpl::kOneDnn;
    c.name += "_onednn";
    out.push_back(c);
  }
  for (CpuIsa isa : testing::all_isas())
    for (Case c : shapes) {
      c.impl = BatchNormImpl::kFused;
      c.isa = isa;
      c.name += std::string("_fused_") + cpu_isa_name(isa);
      out.push_back(c);
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(BatchNormRunningStats, MomentumUpdateAccumulatesOverSteps) {
  // Two steps on the same batch: running = 0.9·(0.9·r0 + 0.1·b) + 0.1·b.
  auto be = make_cpu_backend({.threads = 2});
  const Dims d{4, 2, 1, 1};  // M = 4
  auto op = be->make_batch_norm({.dims = d, .layout = Layout::kNCHW, .eps = 1e-5f, .fuse_relu = false,
                                 .impl = BatchNormImpl::kAuto, .reducer = {}});
  ASSERT_TRUE(op.is_ok());
  std::vector<float> xh = {1, 10, 2, 20, 3, 30, 6, 60};  // channel 0: 1 2 3 6; channel 1: ten times that
  auto x = make_tensor(*be, d, Layout::kNCHW), y = make_tensor(*be, d, Layout::kNCHW);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  std::vector<float> g = {1, 1}, b = {0, 0}, sm(2), sv(2), rm = {0, 0}, rv = {1, 1};
  for (int step = 0; step < 2; ++step)
    ASSERT_TRUE((*op)->forward_train(x.t, g.data(), b.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                    .is_ok());
  // channel 0: mean 3, biased var (4+1+0+9)/4 = 3.5, unbiased 14/3.
  EXPECT_NEAR(sm[0], 3.f, 1e-5);
  EXPECT_NEAR(sv[0], 3.5f, 1e-5);
  EXPECT_NEAR(rm[0], 0.9 * 0.1 * 3 + 0.1 * 3, 1e-5);
  EXPECT_NEAR(rv[0], 0.9 * (0.9 + 0.1 * 14.0 / 3) + 0.1 * 14.0 / 3, 1e-5);
  EXPECT_NEAR(rv[1], 0.9 * (0.9 + 0.1 * 1400.0 / 3) + 0.1 * 1400.0 / 3, 1e-3);
}

// Two ranks as two threads: reducer(r) sums the two callers' data like MPI_Allreduce(MPI_SUM).
class TwoRankSum {
 public:
  BnReducer reducer(int rank) {
    return [this, rank](double* data, int count) {
      slot_[rank].assign(data, data + count);
      barrier_.arrive_and_wait();
      for (int i = 0; i < count; ++i) data[i] = slot_[0][size_t(i)] + slot_[1][size_t(i)];
      barrier_.arrive_and_wait();  // both have read before either call overwrites a slot again
      return Status::ok();
    };
  }

 private:
  std::barrier<> barrier_{2};
  std::vector<double> slot_[2];
};

TEST(SyncBatchNorm, TwoHalfBatchesWithReducerEqualWholeBatch) {
  const Dims whole{6, 32, 5, 4}, half{3, 32, 5, 4};
  const Layout layout = Layout::kNChw16c;
  const size_t nc = size_t(whole.c), half_count = size_t(half.count());
  auto be = make_cpu_backend({.threads = 2});
  auto xh = random_vec(size_t(whole.count()), 11, -1.f, 3.f);
  auto rh = random_vec(size_t(whole.count()), 12, -1.f, 1.f);
  auto gamma = random_vec(nc, 13, 0.5f, 1.5f), beta = random_vec(nc, 14, -0.5f, 0.5f);

  TwoRankSum comm;
  struct Rank {
    std::unique_ptr<BatchNormOp> op;
    DevTensor x, y, dy, dx;
    std::vector<float> sm, sv, rm, rv, dg, db;
    Status fwd, bwd;
  } ranks[2];
  for (int r = 0; r < 2; ++r) {
    Rank& k = ranks[r];
    auto op = be->make_batch_norm({.dims = half, .layout = layout, .eps = 1e-5f, .fuse_relu = true,
                                   .impl = BatchNormImpl::kAuto, .reducer = comm.reducer(r)});
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    k.op = std::move(op).value();
    k.x = make_tensor(*be, half, layout), k.y = make_tensor(*be, half, layout);
    k.dy = make_tensor(*be, half, layout), k.dx = make_tensor(*be, half, layout);
    ASSERT_TRUE(be->upload_nchw(xh.data() + r * half_count, k.x.t).is_ok());  // images [3r, 3r + 3)
    ASSERT_TRUE(be->upload_nchw(rh.data() + r * half_count, k.dy.t).is_ok());
    k.sm.resize(nc), k.sv.resize(nc), k.rm.assign(nc, 0.25f), k.rv.assign(nc, 2.f);
    k.dg.assign(nc, 7.f), k.db.assign(nc, 7.f);
  }
  auto run = [&](int r) {
    Rank& k = ranks[r];
    k.fwd = k.op->forward_train(k.x.t, gamma.data(), beta.data(), k.y.t, k.sm.data(), k.sv.data(), k.rm.data(),
                                k.rv.data(), 0.1f);
    k.bwd = k.op->backward(k.x.t, k.y.t, k.dy.t, gamma.data(), k.sm.data(), k.sv.data(), k.dx.t, k.dg.data(),
                           k.db.data(), /*accumulate=*/false);
  };
  std::thread other(run, 1);
  run(0);
  other.join();
  ASSERT_TRUE(ranks[0].fwd.is_ok() && ranks[1].fwd.is_ok()) << ranks[0].fwd.to_string() << ranks[1].fwd.to_string();
  ASSERT_TRUE(ranks[0].bwd.is_ok() && ranks[1].bwd.is_ok()) << ranks[0].bwd.to_string() << ranks[1].bwd.to_string();

  // The whole batch in double precision.
  Ref ref{whole, {}, {}};
  ref.stats(xh);
  const std::vector<double> y_ref = ref.normalize(xh, gamma, beta, ref.mean, ref.var, true);
  std::vector<double> dy_masked(rh.size());
  for (size_t i = 0; i < rh.size(); ++i) dy_masked[i] = y_ref[i] <= 0 ? 0 : rh[i];
  std::vector<double> dx_ref, dg_ref, db_ref;
  ref.backward(xh, dy_masked, gamma, dx_ref, dg_ref, db_ref);
  std::vector<double> want_rm(nc), want_rv(nc);
  for (size_t c = 0; c < nc; ++c) {
    want_rm[c] = 0.9 * 0.25 + 0.1 * ref.mean[c];
    want_rv[c] = 0.9 * 2.0 + 0.1 * ref.var[c] * ref.m() / (ref.m() - 1);  // global M = 120
  }
  auto slice = [&](const std::vector<double>& v, int r) {
    return std::vector<double>(v.begin() + long(r * half_count), v.begin() + long((r + 1) * half_count));
  };
  for (int r = 0; r < 2; ++r) {
    const std::string tag = " rank " + std::to_string(r);
    expect_close(ranks[r].sm, ref.mean, 1e-6, "global mean" + tag);
    expect_close(ranks[r].sv, ref.var, 1e-6, "global var" + tag);
    expect_close(ranks[r].rm, want_rm, 1e-6, "running_mean" + tag);
    expect_close(ranks[r].rv, want_rv, 1e-6, "running_var" + tag);
    expect_close(download(*be, ranks[r].y.t), slice(y_ref, r), 1e-5, "y" + tag);
    expect_close(download(*be, ranks[r].dx.t), slice(dx_ref, r), 1e-4, "dx" + tag);
  }
  // Every rank holds the same statistics, bit for bit (the running stats must not drift apart).
  EXPECT_EQ(ranks[0].rm, ranks[1].rm);
  EXPECT_EQ(ranks[0].rv, ranks[1].rv);
  // dgamma/dbeta are each rank's share; the gradient allreduce adds them up to the whole batch's.
  std::vector<float> dg_sum(nc), db_sum(nc);
  for (size_t c = 0; c < nc; ++c) dg_sum[c] = ranks[0].dg[c] + ranks[1].dg[c], db_sum[c] = ranks[0].db[c] + ranks[1].db[c];
  expect_close(dg_sum, dg_ref, 1e-5, "dgamma rank sum");
  expect_close(db_sum, db_ref, 1e-5, "dbeta rank sum");
}

TEST(SyncBatchNorm, ReducerErrorIsReturned) {
  auto be = make_cpu_backend({.threads = 1});
  const Dims d{2, 16, 2, 2};
  auto op = be->make_batch_norm({.dims = d, .layout = Layout::kNChw16c, .eps = 1e-5f, .fuse_relu = false,
                                 .impl = BatchNormImpl::kAuto,
                                 .reducer = [](double*, int) { return Status::unavailable("rank 1 died"); }});
  ASSERT_TRUE(op.is_ok());
  auto x = make_tensor(*be, d, Layout::kNChw16c), y = make_tensor(*be, d, Layout::kNChw16c);
  std::vector<float> g(16, 1.f), b(16, 0.f), sm(16), sv(16), rm(16, 0.f), rv(16, 1.f);
  Status st = (*op)->forward_train(x.t, g.data(), b.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("rank 1 died"), std::string::npos) << st.to_string();
  // oneDNN's BN has no reducer: asking for one is an error, not a silently local BN.
  auto bad = be->make_batch_norm({.dims = d, .layout = Layout::kNChw16c, .eps = 1e-5f, .fuse_relu = false,
                                  .impl = BatchNormImpl::kOneDnn, .reducer = [](double*, int) { return Status::ok(); }});
  EXPECT_FALSE(bad.is_ok());
}

class BatchNormFusedLevel : public ::testing::TestWithParam<CpuIsa> {};
INSTANTIATE_TEST_SUITE_P(Levels, BatchNormFusedLevel, ::testing::ValuesIn(testing::all_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) { return cpu_isa_name(info.param); });

TEST_P(BatchNormFusedLevel, LargeTensorStreamingStoresMatchReference) {
  // 4 MiB output: the hand-written paths write y and dx with non-temporal stores.
  SX_SKIP_UNLESS_RUNNABLE(GetParam());
  auto be = testing::make_backend_at(GetParam());
  const Layout L = testing::blocked_layout(GetParam());
  const Dims d{8, 32, 64, 64};
  const size_t nc = size_t(d.c);
  auto xh = random_vec(size_t(d.count()), 31, -1.f, 3.f), rh = random_vec(size_t(d.count()), 32, -1.f, 1.f);
  auto g = random_vec(nc, 33, 0.5f, 1.5f), b = random_vec(nc, 34, -0.5f, 0.5f);
  auto x = make_tensor(*be, d, L), y = make_tensor(*be, d, L);
  auto dy = make_tensor(*be, d, L), dx = make_tensor(*be, d, L);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(rh.data(), dy.t).is_ok());
  auto op = be->make_batch_norm({.dims = d, .layout = L, .eps = 1e-5f, .fuse_relu = true,
                                 .impl = BatchNormImpl::kFused, .reducer = {}});
  ASSERT_TRUE(op.is_ok());
  std::vector<float> sm(nc), sv(nc), rm(nc, 0.f), rv(nc, 1.f), dg(nc), db(nc);
  ASSERT_TRUE((*op)->forward_train(x.t, g.data(), b.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                  .is_ok());
  ASSERT_TRUE((*op)->backward(x.t, y.t, dy.t, g.data(), sm.data(), sv.data(), dx.t, dg.data(), db.data(), false)
                  .is_ok());
  Ref ref{d, {}, {}};
  ref.stats(xh);
  const std::vector<double> y_ref = ref.normalize(xh, g, b, ref.mean, ref.var, true);
  std::vector<double> dy_masked(rh.size()), dx_ref, dg_ref, db_ref;
  for (size_t i = 0; i < rh.size(); ++i) dy_masked[i] = y_ref[i] <= 0 ? 0 : rh[i];
  ref.backward(xh, dy_masked, g, dx_ref, dg_ref, db_ref);
  expect_close(download(*be, y.t), y_ref, 1e-5, "y");
  expect_close(download(*be, dx.t), dx_ref, 1e-4, "dx");
  expect_close(dg, dg_ref, 1e-4, "dgamma");
  expect_close(db, db_ref, 1e-4, "dbeta");
}

TEST_P(BatchNormFusedLevel, LargeOffsetKeepsVarianceAccurate) {
  // x = 1000 + U(-1, 1): E[x²] - E[x]² would lose everything in fp32; shifted double sums do not.
  SX_SKIP_UNLESS_RUNNABLE(GetParam());
  auto be = testing::make_backend_at(GetParam());
  const Layout L = testing::blocked_layout(GetParam());
  const Dims d{8, 16, 8, 8};
  auto xh = random_vec(size_t(d.count()), 21, -1.f, 1.f);
  for (float& v : xh) v += 1000.f;
  auto x = make_tensor(*be, d, L), y = make_tensor(*be, d, L);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  auto op = be->make_batch_norm({.dims = d, .layout = L, .eps = 1e-5f, .fuse_relu = false,
                                 .impl = BatchNormImpl::kFused, .reducer = {}});
  ASSERT_TRUE(op.is_ok());
  Ref ref{d, {}, {}};
  ref.stats(xh);
  std::vector<float> g(16, 1.f), b(16, 0.f), sm(16), sv(16), rm(16, 0.f), rv(16, 1.f);
  for (int step = 0; step < 2; ++step) {  // step 0 unshifted (running mean 0), step 1 shifted by ~100
    ASSERT_TRUE((*op)->forward_train(x.t, g.data(), b.data(), y.t, sm.data(), sv.data(), rm.data(), rv.data(), 0.1f)
                    .is_ok());
    for (size_t c = 0; c < 16; ++c) EXPECT_NEAR(sv[c], ref.var[c], 1e-5 * ref.var[c]) << "step " << step << " c " << c;
  }
  expect_close(download(*be, y.t), ref.normalize(xh, g, b, ref.mean, ref.var, false), 1e-4, "y");
}

}  // namespace
}  // namespace sx::model
