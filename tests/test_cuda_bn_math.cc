// The CUDA batch norm kernels' arithmetic (model/cuda/bn_math.h and the ew:: functions they call), run
// on the host in the kernels' exact order — each thread's rows of the reduce grid, its 8 row lanes
// added in order, then the splits — against the CPU backend's fused BN (the reference backend) on the
// same data: batch statistics, running statistics, y, and backward's dx, dgamma, dbeta, with and
// without the fused ReLU, a mean far from zero, several SM counts (different grids, same results).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/backend.h"
#include "model/cuda/bn_math.h"
#include "model/cuda/launch_math.h"
#include "tests/backend_test_util.h"

namespace sx::model::cuda {
namespace {

using model::testing::download;
using model::testing::expect_close;
using model::testing::make_tensor;
using model::testing::random_uniform;

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The kernels' reduction: sums[0, C) and [C, 2C) of partial(c, r0, step, &a, &b) over the reduce grid.
template <class Partial>
std::vector<double> emulate_reduction(int64_t rows, int64_t C, int sm, Partial partial) {
  const ReduceGrid g = reduce_grid(rows, C, sm);
  std::vector<double> partials(size_t(g.splits) * 2 * size_t(C), 0.0);
  for (int split = 0; split < g.splits; ++split)
    for (int tile = 0; tile < g.tiles; ++tile)
      for (int tx = 0; tx < kChannelLanes; ++tx) {
        const int64_t c = int64_t(tile) * kChannelLanes + tx;
        if (c >= C) continue;
        double t1 = 0.0, t2 = 0.0;
        for (int ty = 0; ty < kRowLanes; ++ty) {
          double a = 0.0, b = 0.0;
          partial(c, reduce_row_start(split, ty), reduce_row_step(g.splits), &a, &b);
          t1 += a, t2 += b;
        }
        partials[size_t(split) * 2 * C + size_t(c)] = t1;
        partials[size_t(split) * 2 * C + size_t(C + c)] = t2;
      }
  std::vector<double> sums(2 * size_t(C), 0.0);
  for (size_t j = 0; j < sums.size(); ++j)
    for (int split = 0; split < g.splits; ++split) sums[j] += partials[size_t(split) * 2 * C + j];
  return sums;
}

std::vector<float> to_nhwc(const std::vector<float>& v, const Dims& d) {
  std::vector<float> out(v.size());
  for (int64_t i = 0; i < int64_t(v.size()); ++i) out[size_t(nhwc_of_nchw(i, d.c, int64_t(d.h) * d.w))] = v[size_t(i)];
  return out;
}
std::vector<float> to_nchw(const std::vector<float>& v, const Dims& d) {
  std::vector<float> out(v.size());
  for (int64_t i = 0; i < int64_t(v.size()); ++i) out[size_t(nchw_of_nhwc(i, d.c, int64_t(d.h) * d.w))] = v[size_t(i)];
  return out;
}

struct BnCase {
  const char* name;
  Dims dims;
  bool relu;
  float mean_offset;  // added to x: |mean| >> σ tests the shifted sums
  int sm;
};

class BnMath : public ::testing::TestWithParam<BnCase> {};

TEST_P(BnMath, KernelArithmeticMatchesTheCpuFusedBatchNorm) {
  const BnCase& bc = GetParam();
  const Dims d = bc.dims;
  const int64_t C = d.c, rows = int64_t(d.n) * d.h * d.w;
  const size_t nc = size_t(C);
  const float eps = 1e-5f, momentum = 0.1f;
  std::vector<float> x = random_uniform(size_t(d.count()), 21, -2.f, 2.f);
  for (float& v : x) v += bc.mean_offset;
  const std::vector<float> dy = random_uniform(size_t(d.count()), 22, -1.f, 1.f);
  const std::vector<float> gamma = random_uniform(size_t(C), 23, 0.5f, 1.5f);
  const std::vector<float> beta = random_uniform(size_t(C), 24, -0.5f, 0.5f);
  std::vector<float> rmean = random_uniform(size_t(C), 25, -0.1f, 0.1f), rvar = random_uniform(size_t(C), 26, 0.5f, 2.f);
  for (float& v : rmean) v += bc.mean_offset * 0.9f;

  // CPU reference: host memory, so plain vectors are backend memory.
  auto cpu = make_cpu_backend({.threads = 2});
  const Layout layout = cpu->activation_layout(d.c);
  auto op = cpu->make_batch_norm({.dims = d, .layout = layout, .eps = eps, .fuse_relu = bc.relu,
                                  .impl = BatchNormImpl::kFused, .reducer = {}});
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  auto xt = make_tensor(*cpu, d, layout), yt = make_tensor(*cpu, d, layout);
  auto dyt = make_tensor(*cpu, d, layout), dxt = make_tensor(*cpu, d, layout);
  ASSERT_TRUE(cpu->upload_nchw(x.data(), xt.t).is_ok());
  ASSERT_TRUE(cpu->upload_nchw(dy.data(), dyt.t).is_ok());
  std::vector<float> save_mean(nc), save_var(nc), rm = rmean, rv = rvar;
  std::vector<float> dgamma(nc), dbeta(nc);
  ASSERT_TRUE((*op)->forward_train(xt.t, gamma.data(), beta.data(), yt.t, save_mean.data(), save_var.data(), rm.data(),
                                   rv.data(), momentum).is_ok());
  ASSERT_TRUE((*op)->backward(xt.t, yt.t, dyt.t, gamma.data(), save_mean.data(), save_var.data(), dxt.t, dgamma.data(),
                              dbeta.data(), false).is_ok());

  // The kernels' arithmetic on NHWC copies.
  const std::vector<float> xn = to_nhwc(x, d), dyn = to_nhwc(dy, d);
  const std::vector<double> stat = emulate_reduction(rows, C, bc.sm, [&](int64_t c, int64_t r0, int64_t step, double* a, double* b) {
    bn_stat_partial(xn.data(), C, c, rows, r0, step, rmean[size_t(c)], a, b);
  });
  std::vector<float> k_mean(nc), k_var(nc), k_scale(nc), k_rm(nc), k_rv(nc);
  for (int64_t c = 0; c < C; ++c) {
    const BnTrainChannel r = bn_train_channel(stat[size_t(c)], stat[size_t(C + c)], double(rows), rmean[size_t(c)],
                                              gamma[size_t(c)], eps, momentum, rvar[size_t(c)]);
    k_mean[size_t(c)] = r.mean, k_var[size_t(c)] = r.var, k_scale[size_t(c)] = r.scale;
    k_rm[size_t(c)] = r.running_mean, k_rv[size_t(c)] = r.running_var;
  }
  expect_close(k_mean, as_double(save_mean), 1e-6, "save_mean");
  expect_close(k_var, as_double(save_var), 1e-5, "save_var");
  expect_close(k_rm, as_double(rm), 1e-6, "running_mean");
  expect_close(k_rv, as_double(rv), 1e-5, "running_var");
  std::vector<float> y(xn.size());
  for (int64_t i = 0; i < int64_t(xn.size()); ++i) {
    const size_t c = size_t(i % C);
    y[size_t(i)] = ew::bn_output(xn[size_t(i)], k_mean[c], k_scale[c], beta[c], bc.relu);
  }
  expect_close(to_nchw(y, d), as_double(download(*cpu, yt.t)), 1e-5, "y");

  const std::vector<double> grad = emulate_reduction(rows, C, bc.sm, [&](int64_t c, int64_t r0, int64_t step, double* a, double* b) {
    bn_grad_partial(xn.data(), dyn.data(), C, c, rows, r0, step, k_mean[size_t(c)], k_scale[size_t(c)], beta[size_t(c)],
                    bc.relu, a, b);
  });
  std::vector<float> k_dgamma(nc), k_dbeta(nc), ka(nc), kb(nc), kc(nc);
  for (int64_t c = 0; c < C; ++c) {
    const BnGradChannel r = bn_grad_channel(grad[size_t(c)], grad[size_t(C + c)], grad[size_t(c)], grad[size_t(C + c)],
                                            double(rows), gamma[size_t(c)], k_var[size_t(c)], eps);
    k_dgamma[size_t(c)] = r.dgamma, k_dbeta[size_t(c)] = r.dbeta, ka[size_t(c)] = r.a, kb[size_t(c)] = r.b,
                 kc[size_t(c)] = r.c;
  }
  expect_close(k_dgamma, as_double(dgamma), 1e-5, "dgamma");
  expect_close(k_dbeta, as_double(dbeta), 1e-5, "dbeta");
  std::vector<float> dx(xn.size());
  for (int64_t i = 0; i < int64_t(xn.size()); ++i) {
    const size_t c = size_t(i % C);
    const float g = ew::bn_masked_grad(dyn[size_t(i)], xn[size_t(i)], k_mean[c], k_scale[c], beta[c], bc.relu);
    dx[size_t(i)] = ew::bn_input_grad(g, xn[size_t(i)], k_mean[c], ka[c], kb[c], kc[c]);
  }
  expect_close(to_nchw(dx, d), as_double(download(*cpu, dxt.t)), 1e-4, "dx");
}

const BnCase kBnCases[] = {
    {"stage1_bn2_relu", {2, 128, 14, 14}, true, 0.f, 108},
    {"stage3_bn3", {4, 64, 7, 7}, false, 0.f, 7},
    {"odd_channels_relu", {3, 40, 5, 9}, true, 0.f, 1},
    {"far_mean_1000_sigma", {2, 48, 9, 9}, false, 2000.f, 132},
    {"one_image_many_rows", {1, 32, 56, 56}, true, 0.f, 132},
};
INSTANTIATE_TEST_SUITE_P(Shapes, BnMath, ::testing::ValuesIn(kBnCases),
                         [](const ::testing::TestParamInfo<BnCase>& i) { return std::string(i.param.name); });

TEST(BnMath, GridResultIsIndependentOfTheSmCountUpToRounding) {
  // Different devices split the rows differently; the sums agree to the rounding of the fp32 chunks
  // (64 terms of |v| <= 2: a few 1e-7 of the summed magnitude).
  const Dims d{2, 40, 28, 28};
  const int64_t C = d.c, rows = int64_t(d.n) * d.h * d.w;
  const std::vector<float> x = random_uniform(size_t(d.count()), 31, 5.f, 9.f);
  std::vector<double> first;
  for (int sm : {1, 7, 108, 132}) {
    const std::vector<double> s = emulate_reduction(rows, C, sm, [&](int64_t c, int64_t r0, int64_t step, double* a, double* b) {
      bn_stat_partial(x.data(), C, c, rows, r0, step, 7.f, a, b);
    });
    if (first.empty()) first = s;
    for (size_t j = 0; j < s.size(); ++j) EXPECT_NEAR(s[j], first[j], 1e-6 * 4.0 * double(rows)) << sm << " " << j;
  }
}

TEST(BnMath, StatisticsFollowTheCpuConventions) {
  // Unbiased running variance, momentum as PyTorch's, biased variance for normalising.
  const BnTrainChannel r = bn_train_channel(/*Σ(x-k)*/ 4.0, /*Σ(x-k)²*/ 10.0, /*m*/ 4.0, /*k*/ 1.f, /*gamma*/ 2.f,
                                            /*eps*/ 0.f, /*momentum*/ 0.1f, /*running_var*/ 1.f);
  // Values relative to k: mean 1, E[v²] 2.5 -> var 1.5; mean = k + 1 = 2.
  EXPECT_FLOAT_EQ(r.mean, 2.f);
  EXPECT_FLOAT_EQ(r.var, 1.5f);
  EXPECT_FLOAT_EQ(r.scale, float(2.0 / std::sqrt(1.5)));
  EXPECT_FLOAT_EQ(r.running_mean, 0.9f * 1.f + 0.1f * 2.f);
  EXPECT_FLOAT_EQ(r.running_var, 0.9f * 1.f + 0.1f * 2.f);  // 1.5 · 4/3
}

}  // namespace
}  // namespace sx::model::cuda
