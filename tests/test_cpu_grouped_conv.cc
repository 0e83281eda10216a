// The direct grouped 3x3 conv (model/cpu/grouped_conv_direct), at each instruction-set level that
// has one (AVX-512 on nChw16c, AVX2 on nChw8c), against a naive double-precision reference (forward,
// backward-data, backward-weights overwrite and accumulate, every element), central finite
// differences of L = sum(y · r), bit-identical results on 1 and 2 threads, and make_cpu_conv routing
// the SE-ResNeXt shapes to it without reorders. Levels this machine cannot run skip, saying why.
// N batch, C = OC channels, GS channels per group, S stride; pad 1, kernel 3x3.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "model/backend.h"
#include "tests/backend_test_util.h"
#include "model/cpu/conv_plan.h"
#include "model/cpu/grouped_conv_direct.h"
#include "model/cpu/isa.h"
#include "tests/isa_test_util.h"

namespace sx::model {
namespace {

using testing::blocked_layout;
using testing::make_backend_at;

// The levels with a direct kernel (the generic one has none: make_cpu_conv keeps oneDNN's path there,
// which test_cpu_conv covers).
const CpuIsa kDirectLevels[] = {CpuIsa::kAvx2, CpuIsa::kAvx512};

struct Case {
  std::string name;
  int n, c, h, w, gs, stride;
};

struct DevTensor {
  Buffer buf;
  Tensor t;
};

DevTensor make_tensor(Backend& be, const Dims& d, Layout l) {
  DevTensor r;
  r.t = Tensor{d, l, nullptr};
  r.buf = be.allocate(r.t.bytes());
  r.t.data = static_cast<float*>(r.buf.get());
  return r;
}

std::vector<float> download(Backend& be, const Tensor& t) {
  std::vector<float> h(size_t(t.dims.count()));
  EXPECT_TRUE(be.download_nchw(t, h.data()).is_ok());
  return h;
}

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Naive grouped 3x3 pad-1 convolution: f(x index, w index, y index) for every multiply-add.
// x (N, C, H, W), w (C, GS, 3, 3), y (N, C, OH, OW), all plain.
template <typename F>
void for_each_mac(const Case& p, int oh, int ow, F f) {
  for (int n = 0; n < p.n; ++n)
    for (int o = 0; o < p.c; ++o) {
      const int g = o / p.gs;
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ci = 0; ci < p.gs; ++ci)
            for (int kh = 0; kh < 3; ++kh) {
              const int ih = y * p.stride - 1 + kh;
              if (ih < 0 || ih >= p.h) continue;
              for (int kw = 0; kw < 3; ++kw) {
                const int iw = x * p.stride - 1 + kw;
                if (iw < 0 || iw >= p.w) continue;
                f(((size_t(n) * p.c + g * p.gs + ci) * p.h + ih) * p.w + iw, ((size_t(o) * p.gs + ci) * 3 + kh) * 3 + kw,
                  ((size_t(n) * p.c + o) * oh + y) * ow + x);
              }
            }
    }
}

using testing::expect_close;

ConvDesc desc_of(const Case& p, CpuIsa isa) {
  return ConvDesc{.in = {p.n, p.c, p.h, p.w}, .in_layout = blocked_layout(isa), .oc = p.c, .kh = 3, .kw = 3,
                  .stride = p.stride, .pad = 1, .groups = p.c / p.gs};
}

class GroupedConvDirectTest : public ::testing::TestWithParam<std::tuple<Case, CpuIsa>> {
 protected:
  void TearDown() override { omp_set_num_threads(2); }
};

TEST_P(GroupedConvDirectTest, MatchesReferenceFiniteDifferencesAndIsDeterministic) {
  const auto& [p, isa] = GetParam();
  SX_SKIP_UNLESS_RUNNABLE(isa);
  if (p.gs > cpu_isa_block(isa)) GTEST_SKIP() << p.gs << " channels per group do not fit the " << cpu_isa_name(isa) << " kernel's vector";
  auto be = make_backend_at(isa);
  const ConvDesc d = desc_of(p, isa);
  const Layout L = d.in_layout;
  ASSERT_TRUE(SX_ISA_CALL(isa, grouped_conv_direct_supports)(d));
  auto op_or = SX_ISA_CALL(isa, make_grouped_conv_direct)(d);
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;
  const int oh = (p.h - 1) / p.stride + 1, ow = (p.w - 1) / p.stride + 1;
  ASSERT_EQ(op->out_dims(), (Dims{p.n, p.c, oh, ow}));
  ASSERT_EQ(op->out_layout(), L);

  const size_t wcount = size_t(p.c) * p.gs * 9;
  auto xh = random_vec(size_t(d.in.count()), 1);
  auto wh = random_vec(wcount, 2, 1.f / std::sqrt(float(p.gs * 9)));
  auto rh = random_vec(size_t(op->out_dims().count()), 3);  // dL/dy for L = sum(y · r)
  auto x = make_tensor(*be, d.in, L);
  auto y = make_tensor(*be, op->out_dims(), L);
  auto dy = make_tensor(*be, op->out_dims(), L);
  auto dx = make_tensor(*be, d.in, L);
  std::vector<float> w(wh), dw(wcount, 123.f);  // dw starts as garbage: overwrite must ignore it
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(rh.data(), dy.t).is_ok());
  // Garbage in y and dx too: both are overwritten.
  ASSERT_TRUE(be->fill(y.t.data, 7.f, y.t.padded_count()).is_ok());
  ASSERT_TRUE(be->fill(dx.t.data, 7.f, dx.t.padded_count()).is_ok());

  std::vector<double> y_ref(rh.size()), dx_ref(xh.size()), dw_ref(wcount);
  for_each_mac(p, oh, ow, [&](size_t xi, size_t wi, size_t yi) {
    y_ref[yi] += double(xh[xi]) * wh[wi];
    dx_ref[xi] += double(rh[yi]) * wh[wi];
    dw_ref[wi] += double(rh[yi]) * xh[xi];
  });
  ASSERT_TRUE(op->forward(x.t, w.data(), y.t).is_ok());
  expect_close(download(*be, y.t), y_ref, 1e-5, "y");
  ASSERT_TRUE(op->backward_data(dy.t, w.data(), dx.t).is_ok());
  expect_close(download(*be, dx.t), dx_ref, 1e-5, "dx");
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw.data(), /*accumulate=*/false).is_ok());
  expect_close(dw, dw_ref, 1e-5, "dw");
  std::vector<double> dw_twice(wcount);
  for (size_t i = 0; i < wcount; ++i) dw_twice[i] = 2 * dw_ref[i];
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw.data(), /*accumulate=*/true).is_ok());
  expect_close(dw, dw_twice, 1e-5, "dw accumulated");

  // One thread gives the same bits as two.
  const auto y2 = download(*be, y.t), dx2 = download(*be, dx.t);
  std::vector<float> dw2(wcount);
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw2.data(), false).is_ok());
  omp_set_num_threads(1);
  ASSERT_TRUE(op->forward(x.t, w.data(), y.t).is_ok());
  ASSERT_TRUE(op->backward_data(dy.t, w.data(), dx.t).is_ok());
  std::vector<float> dw1(wcount);
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw1.data(), false).is_ok());
  omp_set_num_threads(2);
  EXPECT_EQ(download(*be, y.t), y2);
  EXPECT_EQ(download(*be, dx.t), dx2);
  EXPECT_EQ(dw1, dw2);

  // Central finite differences of L at sampled inputs and weights (exact up to rounding: linear).
  auto loss = [&]() {
    EXPECT_TRUE(op->forward(x.t, w.data(), y.t).is_ok());
    auto yv = download(*be, y.t);
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += double(yv[i]) * rh[i];
    return l;
  };
  const float eps = 1e-2f;
  std::mt19937 rng(7);
  auto upload_x = [&] { ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok()); };
  for (int s = 0; s < 4; ++s) {
    const size_t i = rng() % xh.size();
    const double fd = testing::central_difference(xh.data(), i, eps, loss, upload_x);
    EXPECT_NEAR(fd, dx2[i], 2e-3 * std::max(1.0, std::abs(double(dx2[i])))) << "dx at " << i;
  }
  for (int s = 0; s < 4; ++s) {
    const size_t i = rng() % wcount;
    const double fd = testing::central_difference(w.data(), i, eps, loss);
    EXPECT_NEAR(fd, dw2[i], 2e-3 * std::max(1.0, std::abs(double(dw2[i])))) << "dw at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GroupedConvDirectTest,
    ::testing::Combine(::testing::Values(Case{"gs4_s1_9x7_n3", 3, 32, 9, 7, 4, 1}, Case{"gs4_s2_9x7_n3", 3, 32, 9, 7, 4, 2},
                      Case{"gs4_s1_15x15_n1", 1, 48, 15, 15, 4, 1}, Case{"gs4_s2_15x15_n1", 1, 48, 15, 15, 4, 2},
                      Case{"gs8_s1_9x7_n3", 3, 32, 9, 7, 8, 1}, Case{"gs8_s2_8x10_n3", 3, 32, 8, 10, 8, 2},
                      Case{"gs8_s1_15x15_n1", 1, 64, 15, 15, 8, 1}, Case{"gs8_s2_15x15_n1", 1, 64, 15, 15, 8, 2},
                      Case{"gs16_s1_7x7_n3", 3, 32, 7, 7, 16, 1}, Case{"gs16_s2_9x9_n1", 1, 32, 9, 9, 16, 2},
                      // One-pixel and wide rows: edge taps only, and several register blocks per row.
                      Case{"gs4_s1_1x1_n1", 1, 16, 1, 1, 4, 1}, Case{"gs8_s2_2x33_n1", 1, 16, 2, 33, 8, 2},
                      Case{"gs4_s1_3x31_n2", 2, 16, 3, 31, 4, 1}, Case{"gs8_s1_20x4_n1", 1, 16, 20, 4, 8, 1}),
                       ::testing::ValuesIn(kDirectLevels)),
    [](const ::testing::TestParamInfo<std::tuple<Case, CpuIsa>>& info) {
      return std::get<0>(info.param).name + "_" + cpu_isa_name(std::get<1>(info.param));
    });

class GroupedConvDirectLevel : public ::testing::TestWithParam<CpuIsa> {};
INSTANTIATE_TEST_SUITE_P(Levels, GroupedConvDirectLevel, ::testing::ValuesIn(kDirectLevels),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) { return cpu_isa_name(info.param); });

TEST_P(GroupedConvDirectLevel, RejectsUnsupportedShapesAndWrongTensors) {
  const CpuIsa isa = GetParam();
  SX_SKIP_UNLESS_RUNNABLE(isa);
  const auto supports = SX_ISA_CALL(isa, grouped_conv_direct_supports);
  ConvDesc d = desc_of(Case{"", 1, 32, 8, 8, 4, 1}, isa);
  EXPECT_TRUE(supports(d));
  ConvDesc bad = d;
  bad.in_layout = Layout::kNCHW;
  EXPECT_FALSE(supports(bad));
  bad = d;
  bad.in_layout = isa == CpuIsa::kAvx512 ? Layout::kNChw8c : Layout::kNChw16c;  // the other level's block
  EXPECT_FALSE(supports(bad));
  bad = d;
  bad.groups = 16;  // 2 channels per group
  EXPECT_FALSE(supports(bad));
  bad = d;
  bad.oc = 64;
  EXPECT_FALSE(supports(bad));
  bad = d;
  bad.stride = 3;
  EXPECT_FALSE(supports(bad));
  EXPECT_FALSE(SX_ISA_CALL(isa, make_grouped_conv_direct)(bad).is_ok());
  EXPECT_FALSE(cpu::generic::grouped_conv_direct_supports(d)) << "the generic level has no direct kernel";

  auto be = make_backend_at(isa);
  auto op = SX_ISA_CALL(isa, make_grouped_conv_direct)(d);
  ASSERT_TRUE(op.is_ok());
  auto x = make_tensor(*be, d.in, Layout::kNCHW);
  auto y = make_tensor(*be, (*op)->out_dims(), d.in_layout);
  std::vector<float> w(32 * 4 * 9);
  EXPECT_FALSE((*op)->forward(x.t, w.data(), y.t).is_ok());
}

// make_cpu_conv sends the SE-ResNeXt-50 and small-model narrow-group shapes (4 and 8 channels per
// group; batch reduced) to the direct op, which runs forward and both backwards without reorders.
TEST_P(GroupedConvDirectLevel, MakeConvRoutesNarrowGroupsWithoutReorders) {
  const CpuIsa isa = GetParam();
  SX_SKIP_UNLESS_RUNNABLE(isa);
  auto be = make_backend_at(isa);
  const std::string name = isa == CpuIsa::kAvx512 ? "direct_avx512_grouped" : "direct_avx2_grouped";
  const Case routed[] = {{"r50_stage0", 2, 128, 56, 56, 4, 1}, {"r50_stage1_first", 2, 256, 56, 56, 8, 2},
                         {"r50_stage1", 2, 256, 28, 28, 8, 1}, {"small_stage0", 4, 32, 28, 28, 4, 1},
                         {"small_stage1", 4, 64, 28, 28, 8, 2}};
  for (const Case& p : routed) {
    const ConvDesc d = desc_of(p, isa);
    ASSERT_EQ(d.in_layout, be->activation_layout(p.c));
    auto op = be->make_conv(d);
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    auto* info = dynamic_cast<cpu::CpuConv*>(op->get());
    ASSERT_NE(info, nullptr) << p.name;
    EXPECT_EQ(info->impl_info().rfind(name, 0), 0u) << p.name << ": " << info->impl_info();
    auto x = make_tensor(*be, d.in, d.in_layout);
    auto y = make_tensor(*be, (*op)->out_dims(), (*op)->out_layout());
    auto dx = make_tensor(*be, d.in, d.in_layout);
    std::vector<float> w(size_t(p.c) * p.gs * 9, 0.1f), dw(w.size());
    const int64_t before = be->reorder_count();
    ASSERT_TRUE((*op)->forward(x.t, w.data(), y.t).is_ok());
    ASSERT_TRUE((*op)->backward_data(y.t, w.data(), dx.t).is_ok());
    ASSERT_TRUE((*op)->backward_weights(x.t, y.t, dw.data(), false).is_ok());
    EXPECT_EQ(be->reorder_count(), before) << p.name;
  }
  // 16 channels per group keeps oneDNN's jit kernel (faster there).
  auto op = be->make_conv(desc_of(Case{"", 2, 128, 7, 7, 16, 1}, isa));
  ASSERT_TRUE(op.is_ok());
  auto* info = dynamic_cast<cpu::CpuConv*>(op->get());
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->impl_info().find("direct_"), std::string::npos) << info->impl_info();
}

}  // namespace
}  // namespace sx::model
