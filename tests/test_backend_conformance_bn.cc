// Backend conformance, part 3: batch norm — training forward (batch statistics, running statistics
// with PyTorch's momentum and unbiased variance), inference, backward (dx, dgamma/dbeta overwritten
// and accumulated), with and without the fused ReLU, SyncBN's reducer (called with the double sums and
// the count, its error reported) — on SE-ResNeXt-50 BN shapes, against double-precision loops.
#include <cmath>
#include <string>
#include <vector>

#include "tests/test_backend_conformance_util.h"

namespace sx::model::testing {
namespace {

struct BnCase {
  const char* name;
  Dims dims;
  bool relu;
  float mean_offset;
};

const BnCase kBnCases[] = {
    {"stem_bn1_relu", {2, 64, 112, 112}, true, 0.f},
    {"stage1_bn2_relu", {2, 128, 56, 56}, true, 0.f},
    {"stage1_bn3", {2, 256, 56, 56}, false, 0.f},
    {"stage4_bn3", {4, 2048, 7, 7}, false, 0.f},
    {"far_mean", {2, 96, 14, 14}, false, 1000.f},
};

// Double-precision batch norm over NCHW host data.
struct BnRef {
  std::vector<double> mean, var, y, y_eval, dx, dgamma, dbeta, running_mean, running_var;
  BnRef(const Dims& d, bool relu, const std::vector<float>& x, const std::vector<float>& dy,
        const std::vector<float>& gamma, const std::vector<float>& beta, const std::vector<float>& rm,
        const std::vector<float>& rv, float eps, float momentum, double count_scale = 1.0) {
    const int64_t hw = int64_t(d.h) * d.w, m = int64_t(d.n) * hw;
    const size_t C = size_t(d.c);
    mean.assign(C, 0), var.assign(C, 0), dgamma.assign(C, 0), dbeta.assign(C, 0);
    running_mean.assign(C, 0), running_var.assign(C, 0);
    y.assign(x.size(), 0), y_eval.assign(x.size(), 0), dx.assign(x.size(), 0);
    auto at = [&](int n, size_t c, int64_t p) { return (size_t(n) * C + c) * size_t(hw) + size_t(p); };
    for (size_t c = 0; c < C; ++c) {
      double s = 0, q = 0;
      for (int n = 0; n < d.n; ++n)
        for (int64_t p = 0; p < hw; ++p) s += x[at(n, c, p)];
      mean[c] = s / double(m);
      for (int n = 0; n < d.n; ++n)
        for (int64_t p = 0; p < hw; ++p) q += (x[at(n, c, p)] - mean[c]) * (x[at(n, c, p)] - mean[c]);
      var[c] = q / double(m);
      const double mm = double(m) * count_scale;  // the count SyncBN's reducer reports
      running_mean[c] = (1.0 - momentum) * rm[c] + momentum * mean[c];
      running_var[c] = (1.0 - momentum) * rv[c] + momentum * var[c] * mm / (mm - 1.0);
      const double inv = 1.0 / std::sqrt(var[c] + eps), inv_eval = 1.0 / std::sqrt(double(rv[c]) + eps);
      double sg = 0, sgx = 0;
      for (int n = 0; n < d.n; ++n)
        for (int64_t p = 0; p < hw; ++p) {
          const size_t i = at(n, c, p);
          const double pre = gamma[c] * (x[i] - mean[c]) * inv + beta[c];
          y[i] = relu ? std::max(0.0, pre) : pre;
          const double pre_eval = gamma[c] * (x[i] - rm[c]) * inv_eval + beta[c];
          y_eval[i] = relu ? std::max(0.0, pre_eval) : pre_eval;
          const double g = relu && !(pre > 0) ? 0.0 : double(dy[i]);
          sg += g;
          sgx += g * (x[i] - mean[c]) * inv;
        }
      dbeta[c] = sg;
      dgamma[c] = sgx;
      for (int n = 0; n < d.n; ++n)
        for (int64_t p = 0; p < hw; ++p) {
          const size_t i = at(n, c, p);
          const double pre = gamma[c] * (x[i] - mean[c]) * inv + beta[c];
          const double g = relu && !(pre > 0) ? 0.0 : double(dy[i]);
          const double xh = (x[i] - mean[c]) * inv;
          dx[i] = gamma[c] * inv * (g - sg / double(m) - xh * sgx / double(m));
        }
    }
  }
};

class BnConformance : public BackendConformance {
 protected:
  struct Params {
    Floats gamma, beta, rm, rv, save_mean, save_var, dgamma, dbeta;
  };
  Params params(const std::vector<float>& gamma, const std::vector<float>& beta, const std::vector<float>& rm,
                const std::vector<float>& rv) {
    const size_t C = gamma.size();
    return Params{floats(gamma), floats(beta), floats(rm), floats(rv), zeros(C), zeros(C),
                  floats(std::vector<float>(C, 3.f)), floats(std::vector<float>(C, -2.f))};
  }
};

TEST_P(BnConformance, TrainEvalBackwardMatchTheDoubleReference) {
  for (const BnCase& bc : kBnCases) {
    SCOPED_TRACE(bc.name);
    const Dims d = bc.dims;
    const size_t C = size_t(d.c);
    const float eps = 1e-5f, momentum = 0.1f;
    std::vector<float> xr = random_uniform(size_t(d.count()), 41, -2.f, 2.f);
    for (float& v : xr) v += bc.mean_offset;
    const std::vector<float> x = stored(d, xr), dy = stored(d, random_uniform(size_t(d.count()), 42, -1.f, 1.f));
    const std::vector<float> gamma = random_uniform(C, 43, 0.5f, 1.5f), beta = random_uniform(C, 44, -0.5f, 0.5f);
    std::vector<float> rm = random_uniform(C, 45, -0.2f, 0.2f), rv = random_uniform(C, 46, 0.5f, 2.f);
    for (float& v : rm) v += bc.mean_offset;
    const BnRef ref(d, bc.relu, x, dy, gamma, beta, rm, rv, eps, momentum);

    auto op = be().make_batch_norm({.dims = d, .layout = be().activation_layout(d.c), .eps = eps,
                                    .fuse_relu = bc.relu, .impl = BatchNormImpl::kAuto, .reducer = {}});
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    Params p = params(gamma, beta, rm, rv);
    DevTensor xt = tensor(d, x), dyt = tensor(d, dy), yt = empty_tensor(d), dxt = empty_tensor(d);
    // Eval first (it reads the running statistics the training forward then updates).
    ASSERT_TRUE((*op)->forward_eval(xt.t, p.gamma.data, p.beta.data, p.rm.data, p.rv.data, yt.t).is_ok());
    // x - mean in fp32 carries the rounding of |x| (ulp(1000) = 6e-5 against σ ≈ 1): a far-off mean
    // loosens every fp32 tolerance by that much.
    const double far = 1.0 + bc.mean_offset / 100.0;
    expect_close(download(be(), yt.t), ref.y_eval, tol(1e-5 * far), "y eval");
    ASSERT_TRUE((*op)->forward_train(xt.t, p.gamma.data, p.beta.data, yt.t, p.save_mean.data, p.save_var.data,
                                     p.rm.data, p.rv.data, momentum).is_ok());
    expect_close(download(be(), yt.t), ref.y, tol(1e-5 * far), "y");
    expect_close(host(p.save_mean), ref.mean, 1e-6, "save_mean");
    expect_close(host(p.save_var), ref.var, 1e-5, "save_var");
    expect_close(host(p.rm), ref.running_mean, 1e-6, "running_mean");
    expect_close(host(p.rv), ref.running_var, 1e-5, "running_var");
    ASSERT_TRUE((*op)->backward(xt.t, yt.t, dyt.t, p.gamma.data, p.save_mean.data, p.save_var.data, dxt.t,
                                p.dgamma.data, p.dbeta.data, false).is_ok());
    expect_close(download(be(), dxt.t), ref.dx, tol(1e-4 * far), "dx");
    expect_close(host(p.dgamma), ref.dgamma, tol(1e-5 * far), "dgamma");
    expect_close(host(p.dbeta), ref.dbeta, tol(1e-5), "dbeta");
    ASSERT_TRUE((*op)->backward(xt.t, yt.t, dyt.t, p.gamma.data, p.save_mean.data, p.save_var.data, dxt.t,
                                p.dgamma.data, p.dbeta.data, true).is_ok());
    std::vector<double> twice_g(ref.dgamma), twice_b(ref.dbeta);
    for (double& v : twice_g) v *= 2;
    for (double& v : twice_b) v *= 2;
    expect_close(host(p.dgamma), twice_g, tol(1e-5 * far), "dgamma accumulated");
    expect_close(host(p.dbeta), twice_b, tol(1e-5), "dbeta accumulated");
  }
}

TEST_P(BnConformance, SyncBnReducerSeesTheDoubleSumsAndTheCount) {
  // A reducer that adds an identical second rank (doubles every sum and the count): the statistics and
  // dx stay those of one rank, the running variance takes the global count's unbiasing, dgamma/dbeta
  // stay this rank's share.
  const Dims d{2, 64, 14, 14};
  const size_t C = size_t(d.c);
  const float eps = 1e-5f, momentum = 0.1f;
  const std::vector<float> x = stored(d, random_uniform(size_t(d.count()), 51, -2.f, 2.f));
  const std::vector<float> dy = stored(d, random_uniform(size_t(d.count()), 52, -1.f, 1.f));
  const std::vector<float> gamma = random_uniform(C, 53, 0.5f, 1.5f), beta = random_uniform(C, 54, -0.5f, 0.5f);
  const std::vector<float> rm(C, 0.f), rv(C, 1.f);
  const BnRef ref(d, true, x, dy, gamma, beta, rm, rv, eps, momentum, /*count_scale=*/2.0);
  std::vector<int> calls;
  double count_seen = 0;
  BnReducer reducer = [&](double* data, int count) -> Status {
    calls.push_back(count);
    count_seen = data[count - 1];
    for (int i = 0; i < count; ++i) data[i] *= 2.0;
    return Status::ok();
  };
  auto op = be().make_batch_norm({.dims = d, .layout = be().activation_layout(d.c), .eps = eps, .fuse_relu = true,
                                  .impl = BatchNormImpl::kAuto, .reducer = reducer});
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  Params p = params(gamma, beta, rm, rv);
  DevTensor xt = tensor(d, x), dyt = tensor(d, dy), yt = empty_tensor(d), dxt = empty_tensor(d);
  ASSERT_TRUE((*op)->forward_train(xt.t, p.gamma.data, p.beta.data, yt.t, p.save_mean.data, p.save_var.data,
                                   p.rm.data, p.rv.data, momentum).is_ok());
  ASSERT_EQ(calls, std::vector<int>{int(2 * C + 1)});
  EXPECT_EQ(count_seen, double(d.n) * d.h * d.w);
  expect_close(download(be(), yt.t), ref.y, tol(1e-5), "y");
  expect_close(host(p.rv), ref.running_var, 1e-5, "running_var (global count)");
  ASSERT_TRUE((*op)->backward(xt.t, yt.t, dyt.t, p.gamma.data, p.save_mean.data, p.save_var.data, dxt.t,
                              p.dgamma.data, p.dbeta.data, false).is_ok());
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1], int(2 * C + 1));
  expect_close(download(be(), dxt.t), ref.dx, tol(1e-4), "dx");
  expect_close(host(p.dgamma), ref.dgamma, tol(1e-5), "dgamma (local share)");
  expect_close(host(p.dbeta), ref.dbeta, tol(1e-5), "dbeta (local share)");
}

TEST_P(BnConformance, ReducerErrorsAreReportedWithContext) {
  const Dims d{1, 32, 4, 4};
  BnReducer failing = [](double*, int) { return Status::unavailable("rank 3 is gone"); };
  auto op = be().make_batch_norm({.dims = d, .layout = be().activation_layout(d.c), .eps = 1e-5f, .fuse_relu = false,
                                  .impl = BatchNormImpl::kAuto, .reducer = failing});
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  Params p = params(std::vector<float>(32, 1.f), std::vector<float>(32, 0.f), std::vector<float>(32, 0.f),
                    std::vector<float>(32, 1.f));
  DevTensor xt = tensor(d, random_uniform(size_t(d.count()), 1, -1.f, 1.f)), yt = empty_tensor(d);
  const Status st = (*op)->forward_train(xt.t, p.gamma.data, p.beta.data, yt.t, p.save_mean.data, p.save_var.data,
                                         p.rm.data, p.rv.data, 0.1f);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "SyncBN statistics: rank 3 is gone");
}

INSTANTIATE_TEST_SUITE_P(Backends, BnConformance, ::testing::ValuesIn(all_backend_cases()), case_name);

}  // namespace
}  // namespace sx::model::testing
