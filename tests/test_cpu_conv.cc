// CPU ConvOp against a naive double-precision reference (forward, backward-data, backward-weights
// over every element) and central finite differences of L = sum(y · r) at sampled points, at every
// instruction-set level (model/cpu/isa.h) this machine runs; plan assertions (no reorders, no slow
// oneDNN implementation, the fused shortcut merge) are stated for the level oneDNN runs at.
// N batch, C input channels, OC output channels, G groups, K kernel, S stride, P pad.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "model/backend.h"
#include "tests/backend_test_util.h"
#include "model/cpu/conv_plan.h"
#include "model/cpu/isa.h"
#include "tests/isa_test_util.h"

namespace sx::model {
namespace {

struct Case {
  std::string name;
  int n, c, h, w, oc, k, stride, pad, groups;
  Layout in_layout;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

using testing::DevTensor;
using testing::download;
using testing::make_tensor;

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.f) {
  return testing::random_uniform(n, seed, -scale, scale);
}

// Naive grouped convolution in double. x (N, C, H, W), w (OC, C/G, K, K), y (N, OC, OH, OW).
struct Ref {
  const Case& p;
  int oh, ow, cpg, opg;
  explicit Ref(const Case& c)
      : p(c), oh((c.h + 2 * c.pad - c.k) / c.stride + 1), ow((c.w + 2 * c.pad - c.k) / c.stride + 1),
        cpg(c.c / c.groups), opg(c.oc / c.groups) {}
  size_t xi(int n, int c, int h, int w) const { return ((size_t(n) * p.c + c) * p.h + h) * p.w + w; }
  size_t yi(int n, int o, int h, int w) const { return ((size_t(n) * p.oc + o) * oh + h) * ow + w; }
  size_t wi(int o, int ci, int kh, int kw) const { return ((size_t(o) * cpg + ci) * p.k + kh) * p.k + kw; }
  // Calls f(x index, w index, y index) for every multiply-add of the convolution.
  template <typename F>
  void for_each_mac(F f) const {
    for (int n = 0; n < p.n; ++n)
      for (int o = 0; o < p.oc; ++o) {
        const int g = o / opg;
        for (int y = 0; y < oh; ++y)
          for (int x = 0; x < ow; ++x)
            for (int ci = 0; ci < cpg; ++ci)
              for (int kh = 0; kh < p.k; ++kh) {
                const int ih = y * p.stride - p.pad + kh;
                if (ih < 0 || ih >= p.h) continue;
                for (int kw = 0; kw < p.k; ++kw) {
                  const int iw = x * p.stride - p.pad + kw;
                  if (iw < 0 || iw >= p.w) continue;
                  f(xi(n, g * cpg + ci, ih, iw), wi(o, ci, kh, kw), yi(n, o, y, x));
                }
              }
      }
  }
};

using testing::expect_close;

class ConvTest : public ::testing::TestWithParam<std::tuple<Case, CpuIsa>> {};

// In the cases below, kNChw16c stands for the level's blocked layout (nChw8c below AVX-512).
TEST_P(ConvTest, ForwardBackwardMatchReferenceAndFiniteDifferences) {
  const auto& [p, isa] = GetParam();
  SX_SKIP_UNLESS_RUNNABLE(isa);
  auto be = testing::make_backend_at(isa);
  const Layout in_layout = p.in_layout == Layout::kNChw16c ? testing::blocked_layout(isa) : p.in_layout;
  ConvDesc d{.in = {p.n, p.c, p.h, p.w}, .in_layout = in_layout, .oc = p.oc, .kh = p.k, .kw = p.k,
             .stride = p.stride, .pad = p.pad, .groups = p.groups};
  auto op_or = be->make_conv(d);
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;
  const Ref ref(p);
  ASSERT_EQ(op->out_dims(), (Dims{p.n, p.oc, ref.oh, ref.ow}));
  EXPECT_EQ(op->out_layout(), be->activation_layout(p.oc));

  const size_t wcount = size_t(p.oc) * ref.cpg * p.k * p.k;
  auto xh = random_vec(size_t(d.in.count()), 1);
  auto wh = random_vec(wcount, 2, 1.f / std::sqrt(float(ref.cpg * p.k * p.k)));
  auto rh = random_vec(size_t(op->out_dims().count()), 3);  // dL/dy for L = sum(y · r)

  auto x = make_tensor(*be, d.in, in_layout);
  auto y = make_tensor(*be, op->out_dims(), op->out_layout());
  auto dy = make_tensor(*be, op->out_dims(), op->out_layout());
  auto dx = make_tensor(*be, d.in, in_layout);
  Buffer wbuf = be->allocate(wcount * sizeof(float)), dwbuf = be->allocate(wcount * sizeof(float));
  float* w = static_cast<float*>(wbuf.get());
  float* dw = static_cast<float*>(dwbuf.get());
  std::copy(wh.begin(), wh.end(), w);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(rh.data(), dy.t).is_ok());

  // Forward and both backward passes against the reference, every element.
  std::vector<double> y_ref(rh.size()), dx_ref(xh.size()), dw_ref(wcount);
  ref.for_each_mac([&](size_t xi, size_t wi, size_t yi) {
    y_ref[yi] += double(xh[xi]) * wh[wi];
    dx_ref[xi] += double(rh[yi]) * wh[wi];
    dw_ref[wi] += double(rh[yi]) * xh[xi];
  });
  ASSERT_TRUE(op->forward(x.t, w, y.t).is_ok());
  expect_close(download(*be, y.t), y_ref, 1e-4, "y");
  ASSERT_TRUE(op->backward_data(dy.t, w, dx.t).is_ok());
  expect_close(download(*be, dx.t), dx_ref, 1e-4, "dx");

  // backward_data_accumulate (1x1 convs: the projection shortcut) adds dx to what is there.
  if (p.k == 1 && p.pad == 0 && p.groups == 1 && p.in_layout == Layout::kNChw16c && isa == cpu::cpu_isa_onednn()) {
    EXPECT_TRUE(op->accumulates_data()) << "1x1 conv on " << layout_name(in_layout)
                                        << " should fuse the shortcut gradient merge at " << cpu_isa_name(isa);
  }
  if (op->accumulates_data()) {
    auto base = random_vec(xh.size(), 4);
    auto dx_sum = make_tensor(*be, d.in, in_layout);
    ASSERT_TRUE(be->upload_nchw(base.data(), dx_sum.t).is_ok());
    std::vector<double> sum_ref(xh.size());
    for (size_t i = 0; i < xh.size(); ++i) sum_ref[i] = base[i] + dx_ref[i];
    ASSERT_TRUE(op->backward_data_accumulate(dy.t, w, dx_sum.t).is_ok());
    expect_close(download(*be, dx_sum.t), sum_ref, 1e-4, "dx accumulated");
    // Padding lanes of a blocked layout stay 0.
    const int64_t cpad = padded_channels(p.c, in_layout);
    if (cpad != p.c) {
      const int b = layout_channel_block(in_layout);
      const int64_t hw = int64_t(p.h) * p.w;
      for (int64_t i = 0; i < dx_sum.t.padded_count(); ++i) {
        const bool last_block = (i / (hw * b)) % (cpad / b) == cpad / b - 1;
        if (last_block && i % b >= p.c % b) {
          ASSERT_EQ(dx_sum.t.data[i], 0.f) << "padding at " << i;
        }
      }
    }
  }
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw, /*accumulate=*/false).is_ok());
  expect_close(std::vector<float>(dw, dw + wcount), dw_ref, 1e-4, "dw");

  // accumulate = true adds to what is there.
  std::vector<double> dw_twice(wcount);
  for (size_t i = 0; i < wcount; ++i) dw_twice[i] = 2 * dw_ref[i];
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw, /*accumulate=*/true).is_ok());
  expect_close(std::vector<float>(dw, dw + wcount), dw_twice, 1e-4, "dw accumulated");

  // Central finite differences of L at sampled inputs and weights (the op is linear in each, so
  // the difference quotient is exact up to float rounding).
  auto loss = [&]() {
    EXPECT_TRUE(op->forward(x.t, w, y.t).is_ok());
    auto yv = download(*be, y.t);
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += double(yv[i]) * rh[i];
    return l;
  };
  const float eps = 1e-2f;
  std::mt19937 rng(7);
  auto dxv = download(*be, dx.t);
  auto upload_x = [&] { ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok()); };
  for (int s = 0; s < 8; ++s) {
    const size_t i = rng() % xh.size();
    const double fd = testing::central_difference(xh.data(), i, eps, loss, upload_x);
    EXPECT_NEAR(fd, dxv[i], 2e-3 * std::max(1.0, std::abs(double(dxv[i])))) << "dx at " << i;
  }
  for (int s = 0; s < 8; ++s) {
    const size_t i = rng() % wcount;
    const double fd = testing::central_difference(w, i, eps, loss);
    const double analytic = dw[i] / 2;  // dw holds two accumulated copies
    EXPECT_NEAR(fd, analytic, 2e-3 * std::max(1.0, std::abs(analytic))) << "dw at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvTest,
    ::testing::Combine(::testing::Values(
        // SE-ResNeXt shapes, scaled down spatially.
        Case{"grouped32x4_3x3", 2, 128, 8, 8, 128, 3, 1, 1, 32, Layout::kNChw16c},
        Case{"grouped32x4_3x3_stride2", 2, 128, 9, 9, 128, 3, 2, 1, 32, Layout::kNChw16c},
        Case{"grouped32x8_3x3_stride2", 2, 256, 8, 8, 256, 3, 2, 1, 32, Layout::kNChw16c},
        Case{"grouped32x16_3x3", 2, 512, 5, 5, 512, 3, 1, 1, 32, Layout::kNChw16c},
        Case{"stem7x7s2_3ch", 2, 3, 20, 20, 64, 7, 2, 3, 1, Layout::kNCHW},
        Case{"downsample1x1s2", 2, 64, 8, 8, 256, 1, 2, 0, 1, Layout::kNChw16c},
        Case{"bottleneck1x1", 2, 256, 6, 6, 128, 1, 1, 0, 1, Layout::kNChw16c},
        Case{"downsample1x1s2_odd", 3, 32, 7, 7, 64, 1, 2, 0, 1, Layout::kNChw16c},
        Case{"downsample1x1s1", 2, 32, 5, 6, 64, 1, 1, 0, 1, Layout::kNChw16c},
        Case{"plain_in_1x1_s2", 2, 8, 7, 7, 16, 1, 2, 0, 1, Layout::kNCHW},
        Case{"padded_c24_1x1s2", 2, 24, 5, 5, 32, 1, 2, 0, 1, Layout::kNChw16c},
        // Plain inputs and the small model's shapes (8 groups of 4, 1 input channel).
        Case{"plain_in_1x1", 2, 8, 6, 6, 32, 1, 1, 0, 1, Layout::kNCHW},
        Case{"plain_in_3x3_groups2", 2, 8, 7, 5, 6, 3, 1, 1, 2, Layout::kNCHW},
        Case{"small_stem_1ch", 4, 1, 12, 12, 32, 3, 1, 1, 1, Layout::kNCHW},
        Case{"small_grouped8x4", 4, 32, 8, 8, 32, 3, 1, 1, 8, Layout::kNChw16c},
        Case{"small_grouped8x8_stride2", 4, 64, 8, 8, 64, 3, 2, 1, 8, Layout::kNChw16c}),
                       ::testing::ValuesIn(testing::all_isas())),
    [](const ::testing::TestParamInfo<std::tuple<Case, CpuIsa>>& info) {
      return std::get<0>(info.param).name + "_" + cpu_isa_name(std::get<1>(info.param));
    });

// At the level oneDNN runs at (the default backend), a dense conv between two blocked layers runs on
// the network's layouts: nChw16c with AVX-512, nChw8c with AVX2, all three passes without a reorder.
// At the generic level (oneDNN at SSE4.1) only the forward pass promises that: oneDNN's SSE4.1
// backward passes are gemm-based on plain layouts.
TEST(ConvLayout, DenseConvBetweenBlockedLayersDoesNotReorder) {
  auto be = make_cpu_backend({.threads = 2});
  const CpuIsa level = cpu::cpu_isa_available();
  const Layout blocked = testing::blocked_layout(level);
  ConvDesc d{.in = {2, 64, 8, 8}, .in_layout = be->activation_layout(64), .oc = 128, .kh = 3, .kw = 3, .stride = 1,
             .pad = 1};
  ASSERT_EQ(d.in_layout, blocked);
  auto op = be->make_conv(d);
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  ASSERT_EQ((*op)->out_layout(), blocked);
  auto x = make_tensor(*be, d.in, d.in_layout);
  auto y = make_tensor(*be, (*op)->out_dims(), blocked);
  auto dx = make_tensor(*be, d.in, d.in_layout);
  Buffer w = be->allocate(size_t(128) * 64 * 9 * sizeof(float)), dw = be->allocate(size_t(128) * 64 * 9 * sizeof(float));
  const int64_t before = be->reorder_count();
  ASSERT_TRUE((*op)->forward(x.t, static_cast<float*>(w.get()), y.t).is_ok());
  EXPECT_EQ(be->reorder_count(), before) << "forward at " << cpu_isa_name(level);
  ASSERT_TRUE((*op)->backward_data(y.t, static_cast<float*>(w.get()), dx.t).is_ok());
  ASSERT_TRUE((*op)->backward_weights(x.t, y.t, static_cast<float*>(dw.get()), false).is_ok());
  if (level >= CpuIsa::kAvx2) {
    EXPECT_EQ(be->reorder_count(), before) << "backward at " << cpu_isa_name(level);
  }
}

// freeze_weights: while frozen, a forward keeps the weights it converted in this freeze (writing
// them anyway shows the old ones: the conversion really is skipped); every freeze_weights call
// starts over, so weights changed before a freeze (a training step, then eval) are never stale.
TEST(ConvLayout, FrozenWeightsAreConvertedOncePerFreeze) {
  auto be = make_cpu_backend({.threads = 2});
  ConvDesc d{.in = {2, 32, 6, 6}, .in_layout = be->activation_layout(32), .oc = 64, .kh = 1, .kw = 1};
  auto op = be->make_conv(d);
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  auto x = make_tensor(*be, d.in, d.in_layout);
  auto y = make_tensor(*be, (*op)->out_dims(), (*op)->out_layout());
  std::vector<float> xh(size_t(d.in.count()));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : xh) v = u(rng);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  const size_t wn = size_t(64) * 32;
  Buffer wbuf = be->allocate(wn * sizeof(float));
  float* w = static_cast<float*>(wbuf.get());
  auto set_weights = [&](float scale) {
    std::mt19937 g(5);
    for (size_t i = 0; i < wn; ++i) w[i] = scale * u(g);
  };
  auto run = [&] {
    EXPECT_TRUE((*op)->forward(x.t, w, y.t).is_ok());
    return download(*be, y.t);
  };
  set_weights(1.f);
  const std::vector<float> y1 = run();  // not frozen: converts
  set_weights(2.f);
  const std::vector<float> y2 = run();
  ASSERT_NE(y1, y2);

  be->freeze_weights(true);  // weights changed before the freeze: converted again
  EXPECT_EQ(run(), y2);
  set_weights(1.f);          // breaks the promise: the frozen forward keeps the converted weights
  EXPECT_EQ(run(), y2);
  be->freeze_weights(true);  // a new promise: converts once more
  EXPECT_EQ(run(), y1);
  be->freeze_weights(false);
  set_weights(2.f);
  EXPECT_EQ(run(), y2);
}

TEST(ConvLayout, RejectsWrongTensorLayout) {
  auto be = make_cpu_backend({.threads = 2});
  ConvDesc d{.in = {1, 16, 4, 4}, .in_layout = be->activation_layout(16), .oc = 16};
  auto op = be->make_conv(d);
  ASSERT_TRUE(op.is_ok());
  auto x = make_tensor(*be, d.in, Layout::kNCHW);
  auto y = make_tensor(*be, (*op)->out_dims(), (*op)->out_layout());
  Buffer w = be->allocate(16 * 16 * sizeof(float));
  EXPECT_FALSE((*op)->forward(x.t, static_cast<float*>(w.get()), y.t).is_ok());
}

// Every SE-ResNeXt-50 / small-model convolution (real sizes, batch 16) plans onto jit kernels or our
// direct grouped conv at the level oneDNN runs at: oneDNN's ref:any and gemm paths are 10-100x
// slower. At the generic level (oneDNN at SSE4.1, the fallback for CPUs without AVX2) the promise
// is only "no ref": oneDNN has no SSE4.1 jit backward convolutions nor grouped ones, so those run
// on its gemm. Planning only, nothing is executed.
TEST(ConvPlan, RealShapesAvoidReferenceAndGemmImplementations) {
  auto be = make_cpu_backend({.threads = 2});
  const bool jit_promised = cpu::cpu_isa_available() >= CpuIsa::kAvx2;
  struct S { int c, h, oc, k, stride, pad, groups; };
  const S shapes[] = {{3, 224, 64, 7, 2, 3, 1},     {64, 56, 128, 1, 1, 0, 1},    {128, 56, 128, 3, 1, 1, 32},
                      {128, 56, 256, 1, 1, 0, 1},   {256, 56, 256, 3, 2, 1, 32},  {256, 28, 256, 3, 1, 1, 32},
                      {256, 56, 512, 1, 2, 0, 1},   {512, 28, 512, 3, 2, 1, 32},  {512, 14, 512, 3, 1, 1, 32},
                      {1024, 14, 1024, 3, 2, 1, 32}, {1024, 7, 1024, 3, 1, 1, 32}, {1024, 7, 2048, 1, 1, 0, 1},
                      {1, 28, 32, 3, 1, 1, 1},      {32, 28, 32, 3, 1, 1, 8},     {64, 28, 64, 3, 2, 1, 8},
                      {128, 14, 128, 3, 2, 1, 8}};
  for (const S& s : shapes) {
    ConvDesc d{.in = {16, s.c, s.h, s.h}, .in_layout = be->activation_layout(s.c), .oc = s.oc, .kh = s.k, .kw = s.k,
               .stride = s.stride, .pad = s.pad, .groups = s.groups};
    auto op = be->make_conv(d);
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    auto* conv = dynamic_cast<cpu::CpuConv*>(op->get());
    ASSERT_NE(conv, nullptr);
    std::string info = conv->impl_info();
    const auto first = info.find(" | "), last = info.rfind(" | ");
    if (s.c < 16 && first != std::string::npos) info = info.substr(0, first) + info.substr(last);  // input grad unused
    EXPECT_EQ(info.find("ref"), std::string::npos) << d.in.to_string() << " g" << s.groups << ": " << info;
    if (jit_promised) {
      EXPECT_EQ(info.find("gemm"), std::string::npos) << d.in.to_string() << " g" << s.groups << ": " << info;
    }
  }
}

}  // namespace
}  // namespace sx::model
