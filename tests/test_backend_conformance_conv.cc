// Backend conformance, part 2: grouped convolutions (forward, backward-data, backward-weights with the
// accumulate/overwrite rule) on the layer shapes of SE-ResNeXt-50 32x4d, against a naive double loop.
// N batch, C input channels, OC output channels, G groups, K kernel, S stride, P pad.
#include <string>
#include <vector>

#include "tests/test_backend_conformance_util.h"

namespace sx::model::testing {
namespace {

struct ConvCase {
  const char* name;
  int n, c, h, w, oc, k, stride, pad, groups;
};

// Real layers of SE-ResNeXt-50 32x4d at 224 px (batch reduced to keep the double reference quick).
const ConvCase kCases[] = {
    {"stem_7x7s2", 1, 3, 224, 224, 64, 7, 2, 3, 1},
    {"stage1_conv1_1x1", 1, 64, 56, 56, 128, 1, 1, 0, 1},
    {"stage1_conv2_3x3g32", 1, 128, 56, 56, 128, 3, 1, 1, 32},
    {"stage2_conv2_3x3g32s2", 1, 256, 56, 56, 256, 3, 2, 1, 32},
    {"stage2_downsample_1x1s2", 1, 256, 56, 56, 512, 1, 2, 0, 1},
    {"stage3_conv3_1x1", 1, 512, 14, 14, 1024, 1, 1, 0, 1},
    {"stage4_conv2_3x3g32s2", 2, 1024, 14, 14, 1024, 3, 2, 1, 32},
};

// y = conv(x, w), dx = conv^T(dy, w), dw = corr(x, dy), all in double, NCHW / (OC, C/G, K, K).
struct ConvRef {
  std::vector<double> y, dx, dw;
  int oh = 0, ow = 0;
  ConvRef(const ConvCase& p, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy) {
    oh = (p.h + 2 * p.pad - p.k) / p.stride + 1;
    ow = (p.w + 2 * p.pad - p.k) / p.stride + 1;
    const int cpg = p.c / p.groups, opg = p.oc / p.groups;
    y.assign(size_t(p.n) * p.oc * oh * ow, 0.0);
    dx.assign(x.size(), 0.0);
    dw.assign(w.size(), 0.0);
    for (int n = 0; n < p.n; ++n)
      for (int o = 0; o < p.oc; ++o) {
        const int g = o / opg;
        for (int i = 0; i < oh; ++i)
          for (int j = 0; j < ow; ++j) {
            const size_t yi = ((size_t(n) * p.oc + o) * oh + i) * ow + j;
            double acc = 0.0;
            const double g_out = dy[yi];
            for (int ci = 0; ci < cpg; ++ci)
              for (int kh = 0; kh < p.k; ++kh) {
                const int ih = i * p.stride - p.pad + kh;
                if (ih < 0 || ih >= p.h) continue;
                for (int kw = 0; kw < p.k; ++kw) {
                  const int iw = j * p.stride - p.pad + kw;
                  if (iw < 0 || iw >= p.w) continue;
                  const size_t xi = ((size_t(n) * p.c + g * cpg + ci) * p.h + ih) * p.w + iw;
                  const size_t wi = ((size_t(o) * cpg + ci) * p.k + kh) * p.k + kw;
                  acc += double(x[xi]) * w[wi];
                  dx[xi] += g_out * w[wi];
                  dw[wi] += g_out * x[xi];
                }
              }
            y[yi] = acc;
          }
      }
  }
};

class ConvConformance : public BackendConformance {};

TEST_P(ConvConformance, RealLayerShapesMatchTheDoubleReference) {
  for (const ConvCase& p : kCases) {
    SCOPED_TRACE(p.name);
    const Dims in{p.n, p.c, p.h, p.w};
    const ConvDesc d{.in = in, .in_layout = be().activation_layout(p.c), .oc = p.oc, .kh = p.k, .kw = p.k,
                     .stride = p.stride, .pad = p.pad, .groups = p.groups};
    auto op = be().make_conv(d);
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    const Dims out = (*op)->out_dims();
    ASSERT_EQ((*op)->out_layout(), be().activation_layout(p.oc));
    const size_t wcount = size_t(p.oc) * (p.c / p.groups) * p.k * p.k;
    const std::vector<float> x = stored(in, random_uniform(size_t(in.count()), 11, -1.f, 1.f));
    const std::vector<float> dy = stored(out, random_uniform(size_t(out.count()), 12, -1.f, 1.f));
    const std::vector<float> w = random_uniform(wcount, 13, -0.2f, 0.2f);
    const ConvRef ref(p, x, w, dy);
    ASSERT_EQ(out, (Dims{p.n, p.oc, ref.oh, ref.ow}));

    DevTensor xt = tensor(in, x), dyt = tensor(out, dy), yt = empty_tensor(out), dxt = empty_tensor(in);
    Floats wd = floats(w);
    ASSERT_TRUE((*op)->forward(xt.t, wd.data, yt.t).is_ok());
    expect_close(download(be(), yt.t), ref.y, conv_tol(), "y");
    ASSERT_TRUE((*op)->backward_data(dyt.t, wd.data, dxt.t).is_ok());
    expect_close(download(be(), dxt.t), ref.dx, conv_tol(), "dx");
    // Weight gradients overwrite, then accumulate onto what is there.
    Floats dw = floats(std::vector<float>(wcount, 7.f));
    ASSERT_TRUE((*op)->backward_weights(xt.t, dyt.t, dw.data, false).is_ok());
    expect_close(host(dw), ref.dw, conv_tol(), "dw");
    ASSERT_TRUE((*op)->backward_weights(xt.t, dyt.t, dw.data, true).is_ok());
    std::vector<double> twice(ref.dw);
    for (double& v : twice) v *= 2.0;
    expect_close(host(dw), twice, conv_tol(), "dw accumulated");
  }
}

TEST_P(ConvConformance, RejectsTensorsOfTheWrongShape) {
  const Dims in{2, 64, 8, 8};
  auto op = be().make_conv({.in = in, .in_layout = be().activation_layout(64), .oc = 64, .kh = 3, .kw = 3,
                            .stride = 1, .pad = 1, .groups = 32});
  ASSERT_TRUE(op.is_ok()) << op.status().to_string();
  DevTensor x = empty_tensor(in), wrong = empty_tensor({2, 64, 4, 4});
  Floats w = zeros(64 * 2 * 9);
  const Status st = (*op)->forward(x.t, w.data, wrong.t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  // Groups must divide the channels.
  EXPECT_FALSE(be().make_conv({.in = in, .in_layout = be().activation_layout(64), .oc = 64, .groups = 3}).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, ConvConformance, ::testing::ValuesIn(all_backend_cases()), case_name);

}  // namespace
}  // namespace sx::model::testing
