// The CUDA pooling kernels' per-element work (model/cuda/pool_math.h: one output of the forward, one
// input's gathered gradient) run on the host over whole NHWC tensors, against the CPU backend's pooling
// (the reference backend) on the same data: max and average (padding excluded), ceil mode, the stem's
// 3x3/2 and the vd shortcut's 2x2/2. The kernels call exactly these functions.
#include <gtest/gtest.h>

#include <vector>

#include "model/backend.h"
#include "model/cuda/launch_math.h"
#include "model/cuda/pool_math.h"
#include "tests/backend_test_util.h"

namespace sx::model::cuda {
namespace {

using model::testing::download;
using model::testing::expect_close;
using model::testing::make_tensor;
using model::testing::random_uniform;

struct PoolCase {
  const char* name;
  Dims in;
  PoolKind kind;
  int k, s, p;
  bool ceil_mode;
};

std::vector<float> nchw_to_nhwc(const std::vector<float>& v, const Dims& d) {
  std::vector<float> out(v.size());
  const int64_t hw = int64_t(d.h) * d.w;
  for (int64_t i = 0; i < int64_t(v.size()); ++i) out[size_t(nhwc_of_nchw(i, d.c, hw))] = v[size_t(i)];
  return out;
}
std::vector<double> nhwc_to_nchw(const std::vector<float>& v, const Dims& d) {
  std::vector<double> out(v.size());
  const int64_t hw = int64_t(d.h) * d.w;
  for (int64_t i = 0; i < int64_t(v.size()); ++i) out[size_t(nchw_of_nhwc(i, d.c, hw))] = v[size_t(i)];
  return out;
}

template <bool Max>
void emulate(const PoolGeo& g, const std::vector<float>& x, const std::vector<float>& dy, std::vector<float>& y,
             std::vector<float>& dx) {
  const int64_t in_image = int64_t(g.h) * g.w * g.c, out_image = int64_t(g.oh) * g.ow * g.c;
  std::vector<int32_t> argmax(dy.size(), -1);
  y.assign(dy.size(), 0.f);
  dx.assign(x.size(), 0.f);
  for (int64_t n = 0; n < g.n; ++n)
    for (int oh = 0; oh < g.oh; ++oh)
      for (int ow = 0; ow < g.ow; ++ow)
        for (int64_t c = 0; c < g.c; ++c) {
          const int64_t o = n * out_image + (int64_t(oh) * g.ow + ow) * g.c + c;
          y[size_t(o)] = pool_output<float, Max>(g, x.data() + n * in_image, oh, ow, c, &argmax[size_t(o)]);
        }
  for (int64_t n = 0; n < g.n; ++n)
    for (int ih = 0; ih < g.h; ++ih)
      for (int iw = 0; iw < g.w; ++iw)
        for (int64_t c = 0; c < g.c; ++c)
          dx[size_t(n * in_image + (int64_t(ih) * g.w + iw) * g.c + c)] = pool_input_grad<float, Max>(
              g, dy.data() + n * out_image, Max ? argmax.data() + n * out_image : nullptr, ih, iw, c);
}

class PoolMath : public ::testing::TestWithParam<PoolCase> {};

TEST_P(PoolMath, KernelArithmeticMatchesTheCpuBackend) {
  const PoolCase& pc = GetParam();
  auto cpu = make_cpu_backend({.threads = 2});
  const Layout layout = cpu->activation_layout(pc.in.c);
  auto op = cpu->make_pool({.in = pc.in, .in_layout = layout, .kind = pc.kind, .kernel = pc.k, .stride = pc.s,
                            .pad = pc.p, .ceil_mode = pc.ceil_mode});
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  const Dims out = (*op)->out_dims();
  EXPECT_EQ(out.h, pooled_size(pc.in.h, pc.k, pc.s, pc.p, pc.ceil_mode));
  EXPECT_EQ(out.w, pooled_size(pc.in.w, pc.k, pc.s, pc.p, pc.ceil_mode));

  const std::vector<float> x = random_uniform(size_t(pc.in.count()), 5, -3.f, 3.f);
  const std::vector<float> dy = random_uniform(size_t(out.count()), 6, -1.f, 1.f);
  auto xt = make_tensor(*cpu, pc.in, layout), yt = make_tensor(*cpu, out, layout);
  auto dyt = make_tensor(*cpu, out, layout), dxt = make_tensor(*cpu, pc.in, layout);
  ASSERT_TRUE(cpu->upload_nchw(x.data(), xt.t).is_ok());
  ASSERT_TRUE(cpu->upload_nchw(dy.data(), dyt.t).is_ok());
  ASSERT_TRUE((*op)->forward(xt.t, yt.t).is_ok());
  ASSERT_TRUE((*op)->backward(dyt.t, dxt.t).is_ok());
  std::vector<double> want_y, want_dx;
  for (float v : download(*cpu, yt.t)) want_y.push_back(v);
  for (float v : download(*cpu, dxt.t)) want_dx.push_back(v);

  PoolGeo g;
  g.n = pc.in.n, g.c = pc.in.c, g.h = pc.in.h, g.w = pc.in.w, g.oh = out.h, g.ow = out.w;
  g.k = pc.k, g.s = pc.s, g.p = pc.p;
  std::vector<float> y, dx;
  if (pc.kind == PoolKind::kMax)
    emulate<true>(g, nchw_to_nhwc(x, pc.in), nchw_to_nhwc(dy, out), y, dx);
  else
    emulate<false>(g, nchw_to_nhwc(x, pc.in), nchw_to_nhwc(dy, out), y, dx);
  std::vector<float> yf, dxf;
  for (double v : nhwc_to_nchw(y, out)) yf.push_back(float(v));
  for (double v : nhwc_to_nchw(dx, pc.in)) dxf.push_back(float(v));
  expect_close(yf, want_y, 1e-6, "y");
  expect_close(dxf, want_dx, 1e-6, "dx");
}

const PoolCase kPoolCases[] = {
    {"stem_max3x3s2p1", {2, 64, 28, 28}, PoolKind::kMax, 3, 2, 1, false},
    {"max3x3s2p1_odd", {2, 16, 15, 13}, PoolKind::kMax, 3, 2, 1, false},
    {"max2x2s2_ceil_odd", {1, 24, 7, 9}, PoolKind::kMax, 2, 2, 0, true},
    {"vd_avg2x2s2_ceil_odd", {2, 32, 15, 15}, PoolKind::kAvg, 2, 2, 0, true},
    {"vd_avg2x2s2_even", {2, 32, 14, 14}, PoolKind::kAvg, 2, 2, 0, true},
    {"avg3x3s2p1_ceil", {1, 20, 9, 10}, PoolKind::kAvg, 3, 2, 1, true},
    {"avg3x3s1p1", {1, 8, 5, 6}, PoolKind::kAvg, 3, 1, 1, false},
};
INSTANTIATE_TEST_SUITE_P(Shapes, PoolMath, ::testing::ValuesIn(kPoolCases),
                         [](const ::testing::TestParamInfo<PoolCase>& i) { return std::string(i.param.name); });

TEST(PoolMath, Bf16StorageReadsTheRoundedValues) {
  // The same function on Bf16 storage computes what it computes on the rounded floats.
  PoolGeo g;
  g.n = 1, g.c = 3, g.h = 5, g.w = 5, g.oh = 3, g.ow = 3, g.k = 3, g.s = 2, g.p = 1;
  const std::vector<float> x = random_uniform(75, 9, -2.f, 2.f);
  std::vector<ew::Bf16> xb;
  std::vector<float> xr;
  for (float v : x) xb.push_back(ew::to_bf16(v)), xr.push_back(ew::to_float(ew::to_bf16(v)));
  for (int oh = 0; oh < 3; ++oh)
    for (int ow = 0; ow < 3; ++ow)
      for (int c = 0; c < 3; ++c) {
        int32_t a = 0, b = 0;
        EXPECT_EQ((pool_output<ew::Bf16, true>(g, xb.data(), oh, ow, c, &a)),
                  (pool_output<float, true>(g, xr.data(), oh, ow, c, &b)));
        EXPECT_EQ(a, b);
        EXPECT_EQ((pool_output<ew::Bf16, false>(g, xb.data(), oh, ow, c, &a)),
                  (pool_output<float, false>(g, xr.data(), oh, ow, c, &b)));
      }
}

}  // namespace
}  // namespace sx::model::cuda
