// CPU PoolOp (max / average excluding padding, ceil_mode, padding) and LinearOp against
// double-precision references, with central finite differences for every backward.
// N batch, C channels, H, W; linear: x (N, IN), w (OUT, IN), b (OUT), y (N, OUT).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "model/backend.h"
#include "tests/backend_test_util.h"

namespace sx::model {
namespace {

using testing::DevTensor;
using testing::download;
using testing::make_tensor;

std::vector<float> random_vec(size_t n, uint32_t seed) { return testing::random_uniform(n, seed, -1.f, 1.f); }

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (std::abs(got[i] - want[i]) > tol * std::max(1.0, std::abs(want[i]))) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

// ---- pooling ---------------------------------------------------------------------------------

struct PoolCase {
  std::string name;
  Dims in;
  Layout layout;
  PoolKind kind;
  int kernel, stride, pad;
  bool ceil_mode;
  int expect_out;  // PyTorch's output size (checked with torch.nn.functional.max_pool2d)
};

std::ostream& operator<<(std::ostream& os, const PoolCase& c) { return os << c.name; }

class PoolTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolTest, ForwardBackwardMatchReferenceAndFiniteDifferences) {
  const PoolCase& p = GetParam();
  auto be = make_cpu_backend({.threads = 2});
  auto op_or = be->make_pool({.in = p.in, .in_layout = p.layout, .kind = p.kind, .kernel = p.kernel,
                              .stride = p.stride, .pad = p.pad, .ceil_mode = p.ceil_mode});
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;
  const Dims od = op->out_dims();
  ASSERT_EQ(od, (Dims{p.in.n, p.in.c, p.expect_out, p.expect_out}));
  ASSERT_EQ(op->out_layout(), p.layout);

  // Distinct values 0.01 apart so that max pooling has no ties and small steps keep the argmax.
  std::vector<float> xh(size_t(p.in.count()));
  std::iota(xh.begin(), xh.end(), 0.f);
  std::shuffle(xh.begin(), xh.end(), std::mt19937(1));
  for (auto& v : xh) v = v * 0.01f - 1.f;
  auto rh = random_vec(size_t(od.count()), 2);  // dL/dy for L = sum(y · r)

  // Reference: windows clipped to the input; max ignores padding, average divides by the count.
  std::vector<double> y_ref(rh.size()), dx_ref(xh.size());
  for (int n = 0; n < p.in.n; ++n)
    for (int c = 0; c < p.in.c; ++c)
      for (int oy = 0; oy < od.h; ++oy)
        for (int ox = 0; ox < od.w; ++ox) {
          const size_t yi = ((size_t(n) * p.in.c + c) * od.h + oy) * od.w + ox;
          const int h0 = std::max(0, oy * p.stride - p.pad), h1 = std::min(p.in.h, oy * p.stride - p.pad + p.kernel);
          const int w0 = std::max(0, ox * p.stride - p.pad), w1 = std::min(p.in.w, ox * p.stride - p.pad + p.kernel);
          double acc = p.kind == PoolKind::kMax ? -1e30 : 0;
          size_t arg = 0;
          for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
              const size_t xi = ((size_t(n) * p.in.c + c) * p.in.h + h) * p.in.w + w;
              if (p.kind == PoolKind::kAvg) acc += xh[xi];
              else if (xh[xi] > acc) acc = xh[xi], arg = xi;
            }
          const int count = (h1 - h0) * (w1 - w0);
          ASSERT_GT(count, 0);
          if (p.kind == PoolKind::kMax) {
            y_ref[yi] = acc;
            dx_ref[arg] += rh[yi];
          } else {
            y_ref[yi] = acc / count;
            for (int h = h0; h < h1; ++h)
              for (int w = w0; w < w1; ++w) dx_ref[((size_t(n) * p.in.c + c) * p.in.h + h) * p.in.w + w] += rh[yi] / count;
          }
        }

  auto x = make_tensor(*be, p.in, p.layout), dx = make_tensor(*be, p.in, p.layout);
  auto y = make_tensor(*be, od, p.layout), dy = make_tensor(*be, od, p.layout);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(rh.data(), dy.t).is_ok());
  ASSERT_TRUE(be->fill(dx.t.data, 5.f, dx.t.padded_count()).is_ok());  // backward must overwrite
  ASSERT_TRUE(op->forward(x.t, y.t).is_ok());
  expect_close(download(*be, y.t), y_ref, 1e-6, "y");
  ASSERT_TRUE(op->backward(dy.t, dx.t).is_ok());
  auto dxv = download(*be, dx.t);
  expect_close(dxv, dx_ref, 1e-5, "dx");

  const float eps = 1e-3f;
  std::mt19937 rng(3);
  for (int s = 0; s < 10; ++s) {
    const size_t i = rng() % xh.size();
    double l[2];
    for (int side = 0; side < 2; ++side) {
      std::vector<float> xp = xh;
      xp[i] += side == 0 ? eps : -eps;
      EXPECT_TRUE(be->upload_nchw(xp.data(), x.t).is_ok());
      EXPECT_TRUE(op->forward(x.t, y.t).is_ok());
      auto yv = download(*be, y.t);
      l[side] = 0;
      for (size_t j = 0; j < yv.size(); ++j) l[side] += double(yv[j]) * rh[j];
    }
    EXPECT_NEAR((l[0] - l[1]) / (2 * eps), dxv[i], 2e-3) << "dx at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PoolTest,
    ::testing::Values(
        PoolCase{"stem_max3x3s2p1_blocked", {2, 32, 9, 9}, Layout::kNChw16c, PoolKind::kMax, 3, 2, 1, false, 5},
        PoolCase{"max3x3s2_ceil", {2, 5, 8, 8}, Layout::kNCHW, PoolKind::kMax, 3, 2, 0, true, 4},
        PoolCase{"max3x3s2p1_ceil", {1, 16, 6, 6}, Layout::kNChw16c, PoolKind::kMax, 3, 2, 1, true, 4},
        PoolCase{"avg2x2s2_ceil_vd", {2, 16, 7, 7}, Layout::kNChw16c, PoolKind::kAvg, 2, 2, 0, true, 4},
        PoolCase{"avg2x2s2p1_ceil_drops_last", {2, 3, 5, 5}, Layout::kNCHW, PoolKind::kAvg, 2, 2, 1, true, 3},
        PoolCase{"avg3x3s2p1_excludes_pad", {2, 4, 9, 9}, Layout::kNCHW, PoolKind::kAvg, 3, 2, 1, false, 5}),
    [](const ::testing::TestParamInfo<PoolCase>& info) { return info.param.name; });

// ---- linear ----------------------------------------------------------------------------------

struct LinearCase {
  std::string name;
  int n, in, out;
  bool bias;
};

std::ostream& operator<<(std::ostream& os, const LinearCase& c) { return os << c.name; }

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, ForwardBackwardMatchReferenceAndFiniteDifferences) {
  const LinearCase& p = GetParam();
  auto be = make_cpu_backend({.threads = 2});
  auto op_or = be->make_linear({.n = p.n, .in = p.in, .out = p.out, .bias = p.bias});
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;
  auto x = random_vec(size_t(p.n) * p.in, 1), w = random_vec(size_t(p.out) * p.in, 2);
  auto b = random_vec(size_t(p.out), 3), r = random_vec(size_t(p.n) * p.out, 4);
  std::vector<float> y(r.size()), dx(x.size(), 9.f), dw(w.size(), 9.f), db(b.size(), 9.f);
  float* bp = p.bias ? b.data() : nullptr;
  float* dbp = p.bias ? db.data() : nullptr;

  std::vector<double> y_ref(y.size()), dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
  for (int i = 0; i < p.n; ++i)
    for (int o = 0; o < p.out; ++o) {
      const size_t yi = size_t(i) * p.out + o;
      double acc = p.bias ? b[o] : 0.0;
      for (int k = 0; k < p.in; ++k) {
        acc += double(x[size_t(i) * p.in + k]) * w[size_t(o) * p.in + k];
        dx_ref[size_t(i) * p.in + k] += double(r[yi]) * w[size_t(o) * p.in + k];
        dw_ref[size_t(o) * p.in + k] += double(r[yi]) * x[size_t(i) * p.in + k];
      }
      y_ref[yi] = acc;
      db_ref[o] += r[yi];
    }
  ASSERT_TRUE(op->forward(x.data(), w.data(), bp, y.data()).is_ok());
  expect_close(y, y_ref, 1e-4, "y");
  ASSERT_TRUE(op->backward_data(r.data(), w.data(), dx.data()).is_ok());
  expect_close(dx, dx_ref, 1e-4, "dx");
  ASSERT_TRUE(op->backward_weights(x.data(), r.data(), dw.data(), dbp, /*accumulate=*/false).is_ok());
  expect_close(dw, dw_ref, 1e-4, "dw");
  if (p.bias) expect_close(db, db_ref, 1e-4, "db");
  ASSERT_TRUE(op->backward_weights(x.data(), r.data(), dw.data(), dbp, /*accumulate=*/true).is_ok());
  std::vector<double> dw2(dw_ref), db2(db_ref);
  for (auto& v : dw2) v *= 2;
  for (auto& v : db2) v *= 2;
  expect_close(dw, dw2, 1e-4, "dw accumulated");
  if (p.bias) expect_close(db, db2, 1e-4, "db accumulated");

  auto loss = [&]() {
    EXPECT_TRUE(op->forward(x.data(), w.data(), bp, y.data()).is_ok());
    double l = 0;
    for (size_t j = 0; j < y.size(); ++j) l += double(y[j]) * r[j];
    return l;
  };
  const float eps = 1e-2f;
  std::mt19937 rng(5);
  struct Probe {
    std::vector<float>* v;
    const std::vector<float>* grad;
    double grad_scale;
    const char* name;
  };
  std::vector<Probe> probes = {{&x, &dx, 1, "dx"}, {&w, &dw, 0.5, "dw"}};
  if (p.bias) probes.push_back({&b, &db, 0.5, "db"});
  for (const Probe& pr : probes) {
    for (int s = 0; s < 6; ++s) {
      const size_t i = rng() % pr.v->size();
      const float keep = (*pr.v)[i];
      (*pr.v)[i] = keep + eps;
      const double lp = loss();
      (*pr.v)[i] = keep - eps;
      const double lm = loss();
      (*pr.v)[i] = keep;
      const double analytic = (*pr.grad)[i] * pr.grad_scale;
      EXPECT_NEAR((lp - lm) / (2 * eps), analytic, 2e-3 * std::max(1.0, std::abs(analytic))) << pr.name << " at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{"se_reduce", 16, 256, 16, true},
                                           LinearCase{"se_expand", 16, 16, 256, true},
                                           LinearCase{"classifier", 4, 2048, 1000, true},
                                           LinearCase{"odd_no_bias", 3, 7, 5, false}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return info.param.name; });

}  // namespace
}  // namespace sx::model
