// Backend conformance, part 4: pooling (max with its argmax, average without padding, ceil mode), the
// global average pool, the SE residual merge and its gradients (with the deferred BN affines),
// scale_backward, add_into, 2-D ReLU/sigmoid, softmax cross-entropy (label smoothing, soft targets, bad
// labels), top-1/top-5 (ties, NaN), fused SGD over segments and the linear layer — on SE-ResNeXt-50
// shapes, against double-precision loops.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "model/elementwise.h"
#include "tests/test_backend_conformance_util.h"

namespace sx::model::testing {
namespace {

class OpsConformance : public BackendConformance {};

size_t nchw(const Dims& d, int n, int c, int h, int w) { return ((size_t(n) * d.c + c) * d.h + h) * d.w + w; }

// ---- pooling ----------------------------------------------------------------------------------------

struct PoolCase {
  const char* name;
  Dims in;
  PoolKind kind;
  int k, s, p;
  bool ceil_mode;
};

TEST_P(OpsConformance, PoolingMatchesTheReference) {
  const PoolCase cases[] = {
      {"stem_max3x3s2p1", {2, 64, 112, 112}, PoolKind::kMax, 3, 2, 1, false},
      {"vd_avg2x2s2_ceil", {2, 256, 56, 56}, PoolKind::kAvg, 2, 2, 0, true},
      {"avg2x2s2_ceil_odd", {1, 24, 7, 9}, PoolKind::kAvg, 2, 2, 0, true},
      {"max3x3s2p1_ceil_odd", {1, 16, 9, 8}, PoolKind::kMax, 3, 2, 1, true},
  };
  for (const PoolCase& pc : cases) {
    SCOPED_TRACE(pc.name);
    auto op = be().make_pool({.in = pc.in, .in_layout = be().activation_layout(pc.in.c), .kind = pc.kind,
                              .kernel = pc.k, .stride = pc.s, .pad = pc.p, .ceil_mode = pc.ceil_mode});
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    const Dims out = (*op)->out_dims();
    // PyTorch's size: ceil mode rounds up unless the last window would start in the right padding.
    auto size = [&](int in) {
      const int span = in + 2 * pc.p - pc.k;
      int o = (pc.ceil_mode ? (span + pc.s - 1) / pc.s : span / pc.s) + 1;
      if (pc.ceil_mode && (o - 1) * pc.s >= in + pc.p) --o;
      return o;
    };
    ASSERT_EQ(out, (Dims{pc.in.n, pc.in.c, size(pc.in.h), size(pc.in.w)}));
    const std::vector<float> x = stored(pc.in, random_uniform(size_t(pc.in.count()), 61, -3.f, 3.f));
    const std::vector<float> dy = stored(out, random_uniform(size_t(out.count()), 62, -1.f, 1.f));
    std::vector<double> y(size_t(out.count())), dx(x.size(), 0.0);
    for (int n = 0; n < out.n; ++n)
      for (int c = 0; c < out.c; ++c)
        for (int i = 0; i < out.h; ++i)
          for (int j = 0; j < out.w; ++j) {
            const int h0 = std::max(0, i * pc.s - pc.p), h1 = std::min(pc.in.h, i * pc.s - pc.p + pc.k);
            const int w0 = std::max(0, j * pc.s - pc.p), w1 = std::min(pc.in.w, j * pc.s - pc.p + pc.k);
            double best = -1e300, sum = 0;
            size_t at = 0;
            for (int h = h0; h < h1; ++h)
              for (int w = w0; w < w1; ++w) {
                const size_t xi = nchw(pc.in, n, c, h, w);
                if (x[xi] > best) best = x[xi], at = xi;
                sum += x[xi];
              }
            const size_t yi = nchw(out, n, c, i, j);
            const double cnt = double((h1 - h0) * (w1 - w0));
            y[yi] = pc.kind == PoolKind::kMax ? best : sum / cnt;
            if (pc.kind == PoolKind::kMax) {
              dx[at] += dy[yi];
            } else {
              for (int h = h0; h < h1; ++h)
                for (int w = w0; w < w1; ++w) dx[nchw(pc.in, n, c, h, w)] += dy[yi] / cnt;
            }
          }
    DevTensor xt = tensor(pc.in, x), dyt = tensor(out, dy), yt = empty_tensor(out), dxt = empty_tensor(pc.in);
    ASSERT_TRUE((*op)->forward(xt.t, yt.t).is_ok());
    expect_close(download(be(), yt.t), y, tol(1e-6), "y");
    ASSERT_TRUE((*op)->backward(dyt.t, dxt.t).is_ok());
    expect_close(download(be(), dxt.t), dx, tol(1e-6), "dx");
  }
}

// ---- global average pool, SE merge, scale_backward, add_into -----------------------------------------

TEST_P(OpsConformance, GlobalAveragePoolBothWays) {
  for (const Dims d : {Dims{2, 2048, 7, 7}, Dims{2, 256, 56, 56}, Dims{3, 40, 5, 3}}) {
    SCOPED_TRACE(d.to_string());
    const std::vector<float> x = stored(d, random_uniform(size_t(d.count()), 71, -2.f, 2.f));
    const std::vector<float> dyv = random_uniform(size_t(d.n) * d.c, 72, -1.f, 1.f);
    const int64_t hw = int64_t(d.h) * d.w;
    std::vector<double> y(size_t(d.n) * d.c, 0.0), dx(x.size());
    for (int n = 0; n < d.n; ++n)
      for (int c = 0; c < d.c; ++c) {
        for (int64_t p = 0; p < hw; ++p) y[size_t(n) * d.c + c] += x[(size_t(n) * d.c + c) * hw + p] / double(hw);
        for (int64_t p = 0; p < hw; ++p) dx[(size_t(n) * d.c + c) * hw + p] = dyv[size_t(n) * d.c + c] / double(hw);
      }
    DevTensor xt = tensor(d, x), dxt = empty_tensor(d);
    Floats yd = zeros(y.size()), dy = floats(dyv);
    ASSERT_TRUE(be().global_avg_pool_forward(xt.t, yd.data).is_ok());
    expect_close(host(yd), y, 1e-5, "y");  // fp32 output from stored inputs
    ASSERT_TRUE(be().global_avg_pool_backward(dy.data, dxt.t).is_ok());
    expect_close(download(be(), dxt.t), dx, tol(1e-6), "dx");
  }
}

TEST_P(OpsConformance, ResidualMergeForwardAndBackward) {
  const Dims d{2, 256, 56, 56};
  const size_t C = size_t(d.c), count = size_t(d.count());
  const int64_t hw = int64_t(d.h) * d.w;
  const std::vector<float> x = stored(d, random_uniform(count, 81, -2.f, 2.f));
  const std::vector<float> sc = stored(d, random_uniform(count, 82, -2.f, 2.f));
  const std::vector<float> dout = stored(d, random_uniform(count, 83, -1.f, 1.f));
  const std::vector<float> s = random_uniform(size_t(d.n) * C, 84, 0.f, 1.f);
  // Deferred BN affines: (v - mean)·scale + shift per channel.
  const std::vector<float> xm = random_uniform(C, 85, -0.5f, 0.5f), xa = random_uniform(C, 86, 0.5f, 1.5f),
                           xs = random_uniform(C, 87, -0.5f, 0.5f), sm = random_uniform(C, 88, -0.5f, 0.5f),
                           sa = random_uniform(C, 89, 0.5f, 1.5f), ss = random_uniform(C, 90, -0.5f, 0.5f);
  for (const bool with_bn : {false, true}) {
    for (const bool with_s : {true, false}) {
      SCOPED_TRACE(std::string(with_bn ? "deferred BNs" : "plain") + (with_s ? ", SE scale" : ", no scale"));
      std::vector<double> out(count), dz(count), ds(size_t(d.n) * C, 0.0);
      for (int n = 0; n < d.n; ++n)
        for (size_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < hw; ++p) {
            const size_t i = (size_t(n) * C + c) * size_t(hw) + size_t(p);
            const double xb = with_bn ? (x[i] - xm[c]) * double(xa[c]) + xs[c] : x[i];
            const double sb = with_bn ? (sc[i] - sm[c]) * double(sa[c]) + ss[c] : sc[i];
            const double v = xb * (with_s ? s[size_t(n) * C + c] : 1.0) + sb;
            out[i] = std::max(0.0, v);
          }
      DevTensor xt = tensor(d, x), sct = tensor(d, sc), outt = empty_tensor(d), doutt = tensor(d, dout),
                dzt = empty_tensor(d);
      Floats sd = floats(s), dsd = zeros(ds.size());
      Floats fxm = floats(xm), fxa = floats(xa), fxs = floats(xs), fsm = floats(sm), fsa = floats(sa), fss = floats(ss);
      const ChannelAffine xbn = with_bn ? ChannelAffine{fxm.data, fxa.data, fxs.data} : ChannelAffine{};
      const ChannelAffine sbn = with_bn ? ChannelAffine{fsm.data, fsa.data, fss.data} : ChannelAffine{};
      ASSERT_TRUE(be().scale_add_relu_forward(xt.t, with_s ? sd.data : nullptr, sct.t, outt.t, xbn, sbn).is_ok());
      const std::vector<float> got_out = download(be(), outt.t);
      expect_close(got_out, out, tol(1e-5), "out");
      // Backward from the backend's own out (its ReLU mask): dz = dout·[out > 0], ds = Σ dz·x_bn(x).
      for (int n = 0; n < d.n; ++n)
        for (size_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < hw; ++p) {
            const size_t i = (size_t(n) * C + c) * size_t(hw) + size_t(p);
            dz[i] = got_out[i] > 0.f ? double(dout[i]) : 0.0;
            const double xb = with_bn ? (x[i] - xm[c]) * double(xa[c]) + xs[c] : x[i];
            ds[size_t(n) * C + c] += dz[i] * xb;
          }
      ASSERT_TRUE(be().scale_add_relu_backward(doutt.t, outt.t, xt.t, with_s ? sd.data : nullptr, dzt.t,
                                               with_s ? dsd.data : nullptr, xbn).is_ok());
      expect_close(download(be(), dzt.t), dz, 1e-6, "dz");
      if (with_s) expect_close(host(dsd), ds, tol(1e-5), "ds");
      // In place: dshortcut may be dout.
      ASSERT_TRUE(be().scale_add_relu_backward(doutt.t, outt.t, xt.t, nullptr, doutt.t, nullptr, {}).is_ok());
      expect_close(download(be(), doutt.t), dz, 1e-6, "dz in place");
    }
  }
}

TEST_P(OpsConformance, ScaleBackwardAndAddInto) {
  const Dims d{2, 512, 28, 28};
  const size_t count = size_t(d.count()), nc = size_t(d.n) * d.c;
  const int64_t hw = int64_t(d.h) * d.w;
  const std::vector<float> dz = stored(d, random_uniform(count, 91, -1.f, 1.f));
  const std::vector<float> other = stored(d, random_uniform(count, 92, -1.f, 1.f));
  const std::vector<float> s = random_uniform(nc, 93, 0.f, 1.f), dmean = random_uniform(nc, 94, -5.f, 5.f);
  DevTensor dzt = tensor(d, dz), dxt = empty_tensor(d), ot = tensor(d, other);
  Floats sd = floats(s), dm = floats(dmean);
  for (const bool with_s : {true, false}) {
    for (const bool with_dmean : {true, false}) {
      std::vector<double> want(count);
      for (size_t i = 0; i < count; ++i) {
        const size_t k = i / size_t(hw);  // n·C + c
        want[i] = dz[i] * (with_s ? s[k] : 1.0) + (with_dmean ? dmean[k] / double(hw) : 0.0);
      }
      ASSERT_TRUE(be().scale_backward(dzt.t, with_s ? sd.data : nullptr, with_dmean ? dm.data : nullptr, dxt.t).is_ok());
      expect_close(download(be(), dxt.t), want, tol(1e-6), "dx");
    }
  }
  std::vector<double> sum(count);
  for (size_t i = 0; i < count; ++i) sum[i] = double(dz[i]) + other[i];
  ASSERT_TRUE(be().add_into(dzt.t, ot.t).is_ok());
  expect_close(download(be(), dzt.t), sum, tol(1e-6), "add_into");
  DevTensor wrong = empty_tensor({2, 512, 14, 14});
  EXPECT_EQ(be().add_into(dzt.t, wrong.t).code(), StatusCode::kInvalidArgument);
}

TEST_P(OpsConformance, ReluAndSigmoidOnPlainFloats) {
  const size_t n = 4 * 2048 + 5;
  const std::vector<float> x = random_uniform(n, 101, -100.f, 100.f), dy = random_uniform(n, 102, -1.f, 1.f);
  Floats xd = floats(x), yd = zeros(n), dyd = floats(dy), dxd = zeros(n);
  std::vector<double> relu(n), drelu(n), sig(n), dsig(n);
  for (size_t i = 0; i < n; ++i) {
    relu[i] = std::max(0.f, x[i]);
    drelu[i] = x[i] > 0 ? dy[i] : 0.0;
    sig[i] = 1.0 / (1.0 + std::exp(-double(x[i])));
    dsig[i] = dy[i] * sig[i] * (1.0 - sig[i]);
  }
  ASSERT_TRUE(be().relu_forward(xd.data, yd.data, int64_t(n)).is_ok());
  expect_close(host(yd), relu, 0.0, "relu");
  ASSERT_TRUE(be().relu_backward(yd.data, dyd.data, dxd.data, int64_t(n)).is_ok());
  expect_close(host(dxd), drelu, 0.0, "relu backward");
  ASSERT_TRUE(be().sigmoid_forward(xd.data, yd.data, int64_t(n)).is_ok());
  expect_close(host(yd), sig, 1e-6, "sigmoid");
  ASSERT_TRUE(be().sigmoid_backward(yd.data, dyd.data, dxd.data, int64_t(n)).is_ok());
  expect_close(host(dxd), dsig, 1e-6, "sigmoid backward");
}

// ---- loss and metrics -------------------------------------------------------------------------------

struct CeRef {
  double loss = 0;
  std::vector<double> dlogits;
};
CeRef ce_ref(const std::vector<float>& z, const std::vector<int32_t>& labels, const std::vector<float>* soft, int n,
             int k, double eps, double grad_scale) {
  CeRef r;
  r.dlogits.resize(z.size());
  for (int i = 0; i < n; ++i) {
    double mx = -1e300, sum = 0;
    for (int c = 0; c < k; ++c) mx = std::max(mx, double(z[size_t(i) * k + c]));
    for (int c = 0; c < k; ++c) sum += std::exp(z[size_t(i) * k + c] - mx);
    const double lse = mx + std::log(sum);
    for (int c = 0; c < k; ++c) {
      const size_t j = size_t(i) * k + c;
      const double t = soft ? (*soft)[j] : (c == labels[size_t(i)] ? 1 - eps : 0) + eps / k;
      r.loss += t * (lse - z[j]) / n;
      r.dlogits[j] = (std::exp(z[j] - lse) - t) * grad_scale / n;
    }
  }
  return r;
}

TEST_P(OpsConformance, SoftmaxCrossEntropyLabelsSmoothingSoftTargets) {
  const int n = 8, k = 1000;
  const std::vector<float> z = random_uniform(size_t(n) * k, 111, -8.f, 8.f);
  const std::vector<int32_t> labels = {0, 999, 5, 17, 500, 3, 3, 998};
  std::vector<float> soft(size_t(n) * k, 0.f);  // mixup of two labels per row
  for (int i = 0; i < n; ++i) soft[size_t(i) * k + size_t(labels[size_t(i)])] += 0.7f, soft[size_t(i) * k + size_t(i)] += 0.3f;
  Floats zd = floats(z), dz = zeros(z.size()), softd = floats(soft);
  Buffer lb = be().allocate(labels.size() * sizeof(int32_t));
  auto* ld = static_cast<int32_t*>(lb.get());
  ASSERT_TRUE(be().copy_to_device(ld, labels.data(), labels.size() * sizeof(int32_t)).is_ok());
  for (const float eps : {0.f, 0.1f}) {
    float loss = 0;
    ASSERT_TRUE(be().softmax_cross_entropy(zd.data, ld, nullptr, n, k, eps, 128.f, dz.data, &loss).is_ok());
    const CeRef r = ce_ref(z, labels, nullptr, n, k, eps, 128.0);
    EXPECT_NEAR(loss, r.loss, 1e-5 * r.loss) << "eps " << eps;
    expect_close(host(dz), r.dlogits, 1e-5, "dlogits");
  }
  float loss = 0;
  ASSERT_TRUE(be().softmax_cross_entropy(zd.data, nullptr, softd.data, n, k, 0.f, 1.f, dz.data, &loss).is_ok());
  const CeRef r = ce_ref(z, labels, &soft, n, k, 0.0, 1.0);
  EXPECT_NEAR(loss, r.loss, 1e-5 * r.loss);
  expect_close(host(dz), r.dlogits, 1e-5, "dlogits soft");
  // In place: dlogits may be logits.
  ASSERT_TRUE(be().softmax_cross_entropy(zd.data, ld, nullptr, n, k, 0.f, 1.f, zd.data, &loss).is_ok());
  expect_close(host(zd), ce_ref(z, labels, nullptr, n, k, 0.0, 1.0).dlogits, 1e-5, "dlogits in place");
}

TEST_P(OpsConformance, BadLabelIsNamed) {
  const int n = 4, k = 10;
  Floats zd = floats(random_uniform(size_t(n) * k, 121, -1.f, 1.f)), dz = zeros(size_t(n) * k);
  const std::vector<int32_t> labels = {1, 2, 10, -1};
  Buffer lb = be().allocate(labels.size() * sizeof(int32_t));
  auto* ld = static_cast<int32_t*>(lb.get());
  ASSERT_TRUE(be().copy_to_device(ld, labels.data(), labels.size() * sizeof(int32_t)).is_ok());
  float loss = 0;
  Status st = be().softmax_cross_entropy(zd.data, ld, nullptr, n, k, 0.f, 1.f, dz.data, &loss);
  EXPECT_EQ(st.message(), "softmax_cross_entropy: label 10 of sample 2 is outside [0, 10)");
  int64_t t1 = 0, t5 = 0;
  st = be().count_top_k(zd.data, ld, n, k, &t1, &t5);
  EXPECT_EQ(st.message(), "count_top_k: label 10 of sample 2 is outside [0, 10)");
}

TEST_P(OpsConformance, TopKCountsTiesInIndexOrderAndNanAsMiss) {
  const int k = 8;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Row 0: label best -> top-1. Row 1: label 3rd -> top-5 only. Row 2: tie with a lower index ranks below
  // it -> label 4 behind 2 (equal) -> rank 1: top-5 only. Row 3: tie with a higher index -> rank 0.
  // Row 4: NaN label logit -> miss. Row 5: label 7th -> miss.
  const std::vector<float> z = {9, 1, 2, 3, 4, 5, 6, 7,  1, 9, 8, 7, 0, 0, 0, 0,  0, 0, 5, 0, 5, 0, 0, 0,
                                5, 0, 0, 0, 5, 0, 0, 0,  1, nan, 2, 3, 4, 5, 6, 7,  7, 6, 5, 4, 3, 2, 1, 0};
  const std::vector<int32_t> labels = {0, 3, 4, 0, 1, 6};
  Floats zd = floats(z);
  Buffer lb = be().allocate(labels.size() * sizeof(int32_t));
  auto* ld = static_cast<int32_t*>(lb.get());
  ASSERT_TRUE(be().copy_to_device(ld, labels.data(), labels.size() * sizeof(int32_t)).is_ok());
  int64_t t1 = 100, t5 = 200;  // added to
  ASSERT_TRUE(be().count_top_k(zd.data, ld, int(labels.size()), k, &t1, &t5).is_ok());
  EXPECT_EQ(t1, 100 + 2);
  EXPECT_EQ(t5, 200 + 4);
}

// ---- optimizer and linear ---------------------------------------------------------------------------------

TEST_P(OpsConformance, SgdOverSegmentsMatchesPyTorchSemantics) {
  const size_t total = 100000;
  const std::vector<float> w0 = random_uniform(total, 131, -1.f, 1.f), g = random_uniform(total, 132, -1.f, 1.f),
                           v0 = random_uniform(total, 133, -0.1f, 0.1f);
  // Segments out of order, one empty, a gap that must stay untouched.
  const std::vector<SgdSegment> segs = {{60000, 40000, 0.f}, {0, 30000, 1e-4f}, {30000, 0, 0.5f}, {35000, 25000, 5e-5f}};
  for (const bool nesterov : {false, true}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "momentum");
    Floats w = floats(w0), gd = floats(g), v = floats(v0);
    const SgdHyper hyper{.lr = 0.1f, .momentum = 0.9f, .nesterov = nesterov, .grad_scale = 0.25f};
    for (int step = 0; step < 2; ++step) ASSERT_TRUE(be().sgd_step(w.data, gd.data, v.data, segs, hyper).is_ok());
    std::vector<double> ww(w0.begin(), w0.end()), vv(v0.begin(), v0.end());
    for (int step = 0; step < 2; ++step)
      for (const SgdSegment& s : segs)
        for (int64_t i = s.offset; i < s.offset + s.count; ++i) {
          const double gdv = double(g[size_t(i)]) * 0.25 + double(s.weight_decay) * ww[size_t(i)];
          vv[size_t(i)] = 0.9 * vv[size_t(i)] + gdv;
          ww[size_t(i)] -= 0.1 * (nesterov ? gdv + 0.9 * vv[size_t(i)] : vv[size_t(i)]);
        }
    expect_close(host(w), ww, 1e-6, "w");
    expect_close(host(v), vv, 1e-6, "v");
    const std::vector<float> got = host(w);
    for (size_t i = 30000; i < 35000; ++i) ASSERT_EQ(got[i], w0[i]) << "the gap between segments is untouched";
  }
  Floats w = floats(w0), gd = floats(g), v = floats(v0);
  const std::vector<SgdSegment> overlap = {{0, 10, 0.f}, {5, 10, 0.f}};
  EXPECT_EQ(be().sgd_step(w.data, gd.data, v.data, overlap, {}).code(), StatusCode::kInvalidArgument);
}

TEST_P(OpsConformance, LinearMatchesTheReference) {
  struct L {
    int n, in, out;
  };
  for (const L l : {L{8, 256, 16}, L{8, 16, 256}, L{4, 2048, 1000}}) {  // SE fc1, fc2 of stage 1; the classifier
    SCOPED_TRACE(std::to_string(l.in) + " -> " + std::to_string(l.out));
    auto op = be().make_linear({.n = l.n, .in = l.in, .out = l.out, .bias = true});
    ASSERT_TRUE(op.is_ok()) << op.status().to_string();
    const std::vector<float> x = random_uniform(size_t(l.n) * l.in, 141, -1.f, 1.f),
                             w = random_uniform(size_t(l.out) * l.in, 142, -0.1f, 0.1f),
                             b = random_uniform(size_t(l.out), 143, -1.f, 1.f),
                             dy = random_uniform(size_t(l.n) * l.out, 144, -1.f, 1.f);
    std::vector<double> y(size_t(l.n) * l.out), dx(x.size(), 0.0), dw(w.size(), 0.0), db(b.size(), 0.0);
    for (int i = 0; i < l.n; ++i)
      for (int o = 0; o < l.out; ++o) {
        double acc = b[size_t(o)];
        const double g = dy[size_t(i) * l.out + o];
        for (int j = 0; j < l.in; ++j) {
          acc += double(x[size_t(i) * l.in + j]) * w[size_t(o) * l.in + j];
          dx[size_t(i) * l.in + j] += g * w[size_t(o) * l.in + j];
          dw[size_t(o) * l.in + j] += g * x[size_t(i) * l.in + j];
        }
        y[size_t(i) * l.out + o] = acc;
        db[size_t(o)] += g;
      }
    Floats xd = floats(x), wd = floats(w), bd = floats(b), yd = zeros(y.size()), dyd = floats(dy), dxd = zeros(x.size()),
           dwd = zeros(w.size()), dbd = zeros(b.size());
    ASSERT_TRUE((*op)->forward(xd.data, wd.data, bd.data, yd.data).is_ok());
    expect_close(host(yd), y, 1e-5, "y");
    ASSERT_TRUE((*op)->backward_data(dyd.data, wd.data, dxd.data).is_ok());
    expect_close(host(dxd), dx, 1e-5, "dx");
    for (const bool acc : {false, true}) {
      ASSERT_TRUE((*op)->backward_weights(xd.data, dyd.data, dwd.data, dbd.data, acc).is_ok());
      std::vector<double> wdw(dw), wdb(db);
      if (acc)
        for (auto* v : {&wdw, &wdb})
          for (double& e : *v) e *= 2;
      expect_close(host(dwd), wdw, 1e-5, acc ? "dw accumulated" : "dw");
      expect_close(host(dbd), wdb, 1e-5, acc ? "db accumulated" : "db");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, OpsConformance, ::testing::ValuesIn(all_backend_cases()), case_name);

}  // namespace
}  // namespace sx::model::testing
