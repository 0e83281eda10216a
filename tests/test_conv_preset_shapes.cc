// Every convolution shape the presets use — channels, kernel, stride, groups and input layout as the
// network builds them (the 7x7/2 ImageNet stem, the vd stem's 3x3s, the small stem, each stage's 1x1,
// grouped 3x3 with and without stride 2 at 4/8/16/32 channels per group, the projection shortcut
// with its stride or after the vd average pool) — against a naive double-precision convolution:
// forward, backward-data and backward-weights, every element. Only the spatial size is small
// (5x5, or 7x7 / 13x13 where the stride is 2), so the reference stays cheap; the backend picks the
// same implementation as it does for the network (direct grouped kernel, oneDNN, ...).
// N batch, C input channels, OC output channels, G groups, K kernel.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "model/backend.h"
#include "model/se_resnext.h"
#include "tests/backend_test_util.h"

namespace sx::model {
namespace {

struct Shape {
  int c, oc, k, stride, groups;
  bool image_input;  // the stem's first conv reads plain NCHW images
  std::string where;  // first preset and layer that uses it
  auto key() const { return std::tie(c, oc, k, stride, groups, image_input); }
};

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.where; }

// The distinct conv shapes of all presets, in the order the builder creates them.
std::vector<Shape> preset_shapes() {
  std::vector<Shape> out;
  std::set<std::tuple<int, int, int, int, int, bool>> seen;
  auto add = [&](Shape s) {
    if (seen.insert(s.key()).second) out.push_back(std::move(s));
  };
  for (const std::string& name : preset_names()) {
    ModelSpec spec = preset(name).value();
    const int c0 = spec.stem_channels;
    switch (spec.stem) {
      case Stem::kImageNet:
        add({spec.in_channels, c0, 7, 2, 1, true, name + "_stem_7x7s2"});
        break;
      case Stem::kVd:
        add({spec.in_channels, c0 / 2, 3, 2, 1, true, name + "_stem_conv1_3x3s2"});
        add({c0 / 2, c0 / 2, 3, 1, 1, false, name + "_stem_conv2"});
        add({c0 / 2, c0, 3, 1, 1, false, name + "_stem_conv3"});
        break;
      case Stem::kSmall:
        add({spec.in_channels, c0, 3, 1, 1, true, name + "_stem_3x3"});
        break;
    }
    int in = c0;
    for (int s = 0; s < spec.stage_count(); ++s) {
      for (int b = 0; b < spec.blocks[size_t(s)]; ++b) {
        const int stride = b == 0 ? spec.stride(s) : 1, width = spec.width(s), out_c = spec.out_channels(s);
        const std::string at = name + "_stage" + std::to_string(s) + "_block" + std::to_string(b) + "_";
        add({in, width, 1, 1, 1, false, at + "conv1"});
        add({width, width, 3, stride, spec.cardinality, false, at + "conv2_g" + std::to_string(width / spec.cardinality)});
        add({width, out_c, 1, 1, 1, false, at + "conv3"});
        if (stride != 1 || in != out_c)
          add({in, out_c, 1, spec.avg_down ? 1 : stride, 1, false, at + "downsample"});
        in = out_c;
      }
    }
  }
  return out;
}

class PresetConvShape : public ::testing::TestWithParam<Shape> {};

TEST_P(PresetConvShape, MatchesDoubleReference) {
  const Shape& p = GetParam();
  auto be = make_cpu_backend({.threads = 2});
  const int n = 2, hw = p.k == 7 ? 13 : p.stride == 2 ? 7 : 5, pad = p.k / 2;
  const Layout in_layout = p.image_input ? Layout::kNCHW : be->activation_layout(p.c);
  ConvDesc d{.in = {n, p.c, hw, hw}, .in_layout = in_layout, .oc = p.oc, .kh = p.k, .kw = p.k,
             .stride = p.stride, .pad = pad, .groups = p.groups};
  auto op_or = be->make_conv(d);
  ASSERT_TRUE(op_or.is_ok()) << op_or.status().to_string();
  auto& op = *op_or;
  const int o_hw = (hw + 2 * pad - p.k) / p.stride + 1, cpg = p.c / p.groups, opg = p.oc / p.groups;
  ASSERT_EQ(op->out_dims(), (Dims{n, p.oc, o_hw, o_hw}));

  const size_t wcount = size_t(p.oc) * cpg * p.k * p.k;
  auto xh = testing::random_uniform(size_t(d.in.count()), 1, -1.f, 1.f);
  const float wscale = 1.f / std::sqrt(float(cpg * p.k * p.k));
  auto wh = testing::random_uniform(wcount, 2, -wscale, wscale);
  auto dyh = testing::random_uniform(size_t(op->out_dims().count()), 3, -1.f, 1.f);

  std::vector<double> y_ref(dyh.size()), dx_ref(xh.size()), dw_ref(wcount);
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < p.oc; ++o)
      for (int oy = 0; oy < o_hw; ++oy)
        for (int ox = 0; ox < o_hw; ++ox) {
          const size_t yi = ((size_t(b) * p.oc + o) * o_hw + oy) * o_hw + ox;
          for (int ci = 0; ci < cpg; ++ci)
            for (int ky = 0; ky < p.k; ++ky)
              for (int kx = 0; kx < p.k; ++kx) {
                const int iy = oy * p.stride - pad + ky, ix = ox * p.stride - pad + kx;
                if (iy < 0 || iy >= hw || ix < 0 || ix >= hw) continue;
                const size_t xi = ((size_t(b) * p.c + (o / opg) * cpg + ci) * hw + iy) * hw + ix;
                const size_t wi = ((size_t(o) * cpg + ci) * p.k + ky) * p.k + kx;
                y_ref[yi] += double(xh[xi]) * wh[wi];
                dx_ref[xi] += double(dyh[yi]) * wh[wi];
                dw_ref[wi] += double(dyh[yi]) * xh[xi];
              }
        }

  auto x = testing::make_tensor(*be, d.in, in_layout);
  auto y = testing::make_tensor(*be, op->out_dims(), op->out_layout());
  auto dy = testing::make_tensor(*be, op->out_dims(), op->out_layout());
  auto dx = testing::make_tensor(*be, d.in, in_layout);
  Buffer wbuf = be->allocate(wcount * sizeof(float)), dwbuf = be->allocate(wcount * sizeof(float));
  float* w = static_cast<float*>(wbuf.get());
  float* dw = static_cast<float*>(dwbuf.get());
  std::copy(wh.begin(), wh.end(), w);
  ASSERT_TRUE(be->upload_nchw(xh.data(), x.t).is_ok());
  ASSERT_TRUE(be->upload_nchw(dyh.data(), dy.t).is_ok());

  ASSERT_TRUE(op->forward(x.t, w, y.t).is_ok());
  testing::expect_close(testing::download(*be, y.t), y_ref, 1e-4, "y");
  if (!p.image_input) {  // the network asks no image gradient of the stem
    ASSERT_TRUE(op->backward_data(dy.t, w, dx.t).is_ok());
    testing::expect_close(testing::download(*be, dx.t), dx_ref, 1e-4, "dx");
  }
  ASSERT_TRUE(op->backward_weights(x.t, dy.t, dw, /*accumulate=*/false).is_ok());
  testing::expect_close(std::vector<float>(dw, dw + wcount), dw_ref, 1e-4, "dw");
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetConvShape, ::testing::ValuesIn(preset_shapes()),
                         [](const ::testing::TestParamInfo<Shape>& info) { return info.param.where; });

// The list above really covers the shapes the issue names: stage 2's stride-2 grouped 3x3 with 16
// channels per group, stage 3's with 32, and the 7x7 stem.
TEST(PresetConvShape, CoversTheDeepGroupedConvsAndTheStem) {
  bool g16_s2 = false, g32 = false, stem7 = false;
  for (const Shape& s : preset_shapes()) {
    g16_s2 |= s.k == 3 && s.groups == 32 && s.c / s.groups == 16 && s.stride == 2;
    g32 |= s.k == 3 && s.groups == 32 && s.c / s.groups == 32;
    stem7 |= s.k == 7 && s.stride == 2 && s.image_input;
  }
  EXPECT_TRUE(g16_s2);
  EXPECT_TRUE(g32);
  EXPECT_TRUE(stem7);
}

}  // namespace
}  // namespace sx::model
