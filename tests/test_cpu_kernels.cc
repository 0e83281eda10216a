// Tests of the CPU backend's own kernels (model/cpu/kernels.cc): every forward against a naive
// double-precision reference, every backward against central finite differences of that reference,
// in plain and blocked layouts (padded blocks included: padding must come out 0), and the SGD step
// against PyTorch's rule in double. Uses only allocate / upload / download / fill of the backend,
// no oneDNN op.
// N batch, C channels, H, W, K classes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/cpu/layout_view.h"
#include "tests/isa_test_util.h"

namespace sx::model {
namespace {

using Vec = std::vector<double>;

// A tensor in backend memory that owns its buffer.
struct DevTensor {
  Buffer buf;
  Tensor t;
};

class CpuKernels : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = make_cpu_backend(); }
  // The backend at an instruction-set level (our loops are built once per level), or a skip.
  void use_level(CpuIsa isa) {
    SX_SKIP_UNLESS_RUNNABLE(isa);
    backend_ = testing::make_backend_at(isa);
  }

  DevTensor make(const Dims& d, Layout layout) {
    DevTensor x;
    x.t.dims = d;
    x.t.layout = layout;
    x.buf = backend_->allocate(x.t.bytes());
    x.t.data = static_cast<float*>(x.buf.get());
    return x;
  }
  DevTensor make_from(const Vec& nchw, const Dims& d, Layout layout) {
    DevTensor x = make(d, layout);
    upload(nchw, x.t);
    return x;
  }
  void upload(const Vec& nchw, const Tensor& t) {
    std::vector<float> f(nchw.begin(), nchw.end());
    ASSERT_TRUE(backend_->upload_nchw(f.data(), t).is_ok());
  }
  Vec download(const Tensor& t) {
    std::vector<float> f(size_t(t.dims.count()));
    EXPECT_TRUE(backend_->download_nchw(t, f.data()).is_ok());
    return Vec(f.begin(), f.end());
  }
  // A plain float array in backend memory.
  struct DevArray {
    Buffer buf;
    float* p = nullptr;
  };
  DevArray make_array(const Vec& v) {
    DevArray a;
    a.buf = backend_->allocate(std::max<size_t>(v.size(), 1) * sizeof(float));
    a.p = static_cast<float*>(a.buf.get());
    std::vector<float> f(v.begin(), v.end());
    EXPECT_TRUE(backend_->copy_to_device(a.p, f.data(), f.size() * sizeof(float)).is_ok());
    return a;
  }
  Vec read_array(const float* p, size_t count) {
    std::vector<float> f(count);
    EXPECT_TRUE(backend_->copy_to_host(f.data(), p, count * sizeof(float)).is_ok());
    return Vec(f.begin(), f.end());
  }
  // Fills the whole buffer, padding included, with junk that a kernel must overwrite.
  void poison(const Tensor& t) { ASSERT_TRUE(backend_->fill(t.data, 123.f, t.padded_count()).is_ok()); }
  // +inf in the padded lanes of an input (relu would hide a NaN): kernels must still write 0 there
  // (add_into aside).
  void poison_padding(const Tensor& t) {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    cpu::LayoutView v = cpu::LayoutView::of(t);
    for (int n = 0; n < v.n; ++n)
      for (int j = 0; j < v.cb; ++j)
        for (int64_t p = 0; p < v.hw; ++p)
          for (int l = v.valid_lanes(j); l < v.b; ++l) v.block(n, j)[p * v.b + l] = kInf;
  }
  // Every padded lane of a blocked tensor is 0.
  void expect_padding_zero(const Tensor& t, const char* what) {
    cpu::LayoutView v = cpu::LayoutView::of(t);
    int bad = 0;
    for (int n = 0; n < v.n; ++n)
      for (int j = 0; j < v.cb; ++j)
        for (int64_t p = 0; p < v.hw; ++p)
          for (int l = v.valid_lanes(j); l < v.b; ++l) bad += v.block(n, j)[p * v.b + l] != 0.f;
    EXPECT_EQ(bad, 0) << what << ": nonzero padded lanes in " << layout_name(t.layout);
  }

  std::unique_ptr<Backend> backend_;
  std::mt19937 rng_{1234};
  Vec random(size_t count, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> u(lo, hi);
    Vec v(count);
    for (double& x : v) x = float(u(rng_));  // representable in float, so uploads are exact
    return v;
  }
};

void expect_near_all(const Vec& got, const Vec& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int shown = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) continue;  // not sampled
    double err = std::abs(got[i] - want[i]);
    if (!(err <= tol * (1.0 + std::abs(want[i]))) && shown++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

// Central differences of a double function, at every element or at up to `max_points` of them
// spread over x (the others are set to NaN and skipped by expect_near_all).
Vec numeric_grad(const std::function<double(const Vec&)>& f, Vec x, double h = 1e-4, size_t max_points = 0) {
  Vec g(x.size(), std::nan(""));
  const size_t stride = max_points == 0 || x.size() <= max_points ? 1 : (x.size() + max_points - 1) / max_points;
  for (size_t i = 0; i < x.size(); i += stride) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---- reference SE-block pieces in double, NCHW ------------------------------------------------------

Vec gap_ref(const Vec& x, const Dims& d) {
  Vec y(size_t(d.n) * d.c, 0.0);
  const int64_t hw = int64_t(d.h) * d.w;
  for (int64_t nc = 0; nc < int64_t(d.n) * d.c; ++nc) {
    for (int64_t p = 0; p < hw; ++p) y[nc] += x[nc * hw + p];
    y[nc] /= double(hw);
  }
  return y;
}

// out = relu(x·s[n, c] + shortcut); empty s = 1.
Vec scale_add_relu_ref(const Vec& x, const Vec& s, const Vec& sc, const Dims& d) {
  Vec out(x.size());
  const int64_t hw = int64_t(d.h) * d.w;
  for (size_t i = 0; i < x.size(); ++i) {
    const double scale = s.empty() ? 1.0 : s[i / hw];
    out[i] = std::max(0.0, x[i] * scale + sc[i]);
  }
  return out;
}

// A layout case at one instruction-set level: the hand-written paths run for whole blocks of the
// level's width (16 lanes at avx512, 8 at avx2), the compiler's loops for everything else.
struct LayoutCase {
  Dims dims;
  Layout layout;
  CpuIsa isa = CpuIsa::kGeneric;
};
void PrintTo(const LayoutCase& c, std::ostream* os) {
  *os << c.dims.to_string() << " " << layout_name(c.layout) << " " << cpu_isa_name(c.isa);
}

class CpuKernelsLayout : public CpuKernels, public ::testing::WithParamInterface<LayoutCase> {
 protected:
  void SetUp() override { use_level(GetParam().isa); }
};

std::string case_name(const ::testing::TestParamInfo<LayoutCase>& info) {
  const Dims& d = info.param.dims;
  return std::string(layout_name(info.param.layout)) + "_C" + std::to_string(d.c) + "_" + std::to_string(d.h) + "x" +
         std::to_string(d.w) + "_" + cpu_isa_name(info.param.isa);
}

std::vector<LayoutCase> layout_cases() {
  const LayoutCase shapes[] = {{{2, 20, 3, 5}, Layout::kNCHW},      // C not a multiple of 16
                               {{2, 32, 4, 3}, Layout::kNChw16c},   // whole blocks
                               {{2, 32, 4, 3}, Layout::kNChw8c},    // whole blocks
                               {{2, 20, 3, 5}, Layout::kNChw16c},   // padded last block
                               {{3, 12, 2, 3}, Layout::kNChw8c},    // padded last block
                               {{2, 20, 3, 5}, Layout::kNHWC},      // runtime block = C
                               {{2, 16, 2, 2}, Layout::kNHWC},      // nhwc seen as one 16c block
                               {{2, 8, 2, 2}, Layout::kNHWC},       // nhwc seen as one 8c block
                               // Above the size where the loops go parallel:
                               {{4, 40, 16, 16}, Layout::kNCHW},
                               {{4, 40, 16, 16}, Layout::kNChw16c},
                               {{4, 40, 16, 16}, Layout::kNChw8c},
                               {{4, 40, 16, 16}, Layout::kNHWC}};
  std::vector<LayoutCase> out;
  for (CpuIsa isa : testing::all_isas())
    for (LayoutCase c : shapes) {
      c.isa = isa;
      out.push_back(c);
    }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Layouts, CpuKernelsLayout, ::testing::ValuesIn(layout_cases()), case_name);

// Tests of the loops that take no activation layout, at each level.
class CpuKernelsLevel : public CpuKernels, public ::testing::WithParamInterface<CpuIsa> {
 protected:
  void SetUp() override { use_level(GetParam()); }
};
INSTANTIATE_TEST_SUITE_P(Levels, CpuKernelsLevel, ::testing::ValuesIn(testing::all_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) { return cpu_isa_name(info.param); });

TEST_P(CpuKernelsLayout, GlobalAvgPoolForwardMatchesReference) {
  const auto [d, layout, isa] = GetParam();
  const Vec x = random(size_t(d.count()));
  DevTensor xt = make_from(x, d, layout);
  poison_padding(xt.t);
  DevArray y = make_array(Vec(size_t(d.n) * d.c, 7.0));
  ASSERT_TRUE(backend_->global_avg_pool_forward(xt.t, y.p).is_ok());
  expect_near_all(read_array(y.p, size_t(d.n) * d.c), gap_ref(x, d), 1e-6, "gap y");
}

TEST_P(CpuKernelsLayout, GlobalAvgPoolBackwardMatchesFiniteDifferences) {
  const auto [d, layout, isa] = GetParam();
  const Vec x = random(size_t(d.count()));
  const Vec w = random(size_t(d.n) * d.c);  // L = Σ w · gap(x)
  auto loss = [&](const Vec& xv) {
    Vec y = gap_ref(xv, d);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += w[i] * y[i];
    return l;
  };
  DevArray dy = make_array(w);
  DevTensor dx = make(d, layout);
  poison(dx.t);
  ASSERT_TRUE(backend_->global_avg_pool_backward(dy.p, dx.t).is_ok());
  expect_near_all(download(dx.t), numeric_grad(loss, x, 1e-4, 300), 1e-5, "gap dx");
  expect_padding_zero(dx.t, "gap dx");
}

TEST_P(CpuKernelsLayout, ScaleAddReluForwardMatchesReference) {
  const auto [d, layout, isa] = GetParam();
  const Vec x = random(size_t(d.count())), sc = random(size_t(d.count()));
  const Vec s = random(size_t(d.n) * d.c, 0.0, 1.0);
  DevTensor xt = make_from(x, d, layout), sct = make_from(sc, d, layout), out = make(d, layout);
  poison_padding(xt.t);
  poison_padding(sct.t);
  DevArray sd = make_array(s);
  for (bool with_se : {true, false}) {
    poison(out.t);
    ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, with_se ? sd.p : nullptr, sct.t, out.t).is_ok());
    expect_near_all(download(out.t), scale_add_relu_ref(x, with_se ? s : Vec{}, sc, d), 1e-6, "out");
    expect_padding_zero(out.t, "out");
  }
  // In place on the shortcut, as a block may do.
  ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, sd.p, sct.t, sct.t).is_ok());
  expect_near_all(download(sct.t), scale_add_relu_ref(x, s, sc, d), 1e-6, "out in place");
}

TEST_P(CpuKernelsLayout, ScaleAddReluBackwardMatchesReference) {
  const auto [d, layout, isa] = GetParam();
  const int64_t hw = int64_t(d.h) * d.w;
  const Vec x = random(size_t(d.count())), sc = random(size_t(d.count())), dout = random(size_t(d.count()));
  const Vec s = random(size_t(d.n) * d.c, 0.0, 1.0);
  const Vec out = scale_add_relu_ref(x, s, sc, d);
  Vec dz_ref(x.size()), ds_ref(s.size(), 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    dz_ref[i] = out[i] > 0 ? dout[i] : 0.0;
    ds_ref[i / hw] += dz_ref[i] * x[i];
  }
  DevTensor xt = make_from(x, d, layout), outt = make_from(out, d, layout), doutt = make_from(dout, d, layout);
  DevTensor dsc = make(d, layout);
  for (const Tensor* t : {&xt.t, &outt.t, &doutt.t}) poison_padding(*t);
  DevArray sd = make_array(s), ds = make_array(Vec(s.size(), 7.0));
  poison(dsc.t);
  ASSERT_TRUE(backend_->scale_add_relu_backward(doutt.t, outt.t, xt.t, sd.p, dsc.t, ds.p).is_ok());
  expect_near_all(download(dsc.t), dz_ref, 1e-6, "dshortcut");
  expect_near_all(read_array(ds.p, s.size()), ds_ref, 1e-5, "ds");
  expect_padding_zero(dsc.t, "dshortcut");

  // Without SE only the mask; ds untouched (null).
  poison(dsc.t);
  ASSERT_TRUE(backend_->scale_add_relu_backward(doutt.t, outt.t, xt.t, nullptr, dsc.t, nullptr).is_ok());
  expect_near_all(download(dsc.t), dz_ref, 1e-6, "dshortcut (no SE)");
  expect_padding_zero(dsc.t, "dshortcut (no SE)");
}

// A deferred batch norm's per-channel constants (ChannelAffine): v ↦ (v - mean[c])·scale[c] + shift[c].
struct AffineRef {
  Vec mean, scale, shift;
  double apply(double v, int64_t c) const { return (v - mean[size_t(c)]) * scale[size_t(c)] + shift[size_t(c)]; }
};

TEST_P(CpuKernelsLayout, ScaleAddReluAppliesDeferredBatchNorms) {
  const auto [d, layout, isa] = GetParam();
  const int64_t hw = int64_t(d.h) * d.w;
  const Vec x = random(size_t(d.count()), 1.0, 3.0), sc = random(size_t(d.count()), -2.0, 0.0),
            dout = random(size_t(d.count()));
  const Vec s = random(size_t(d.n) * d.c, 0.0, 1.0);
  const size_t c = size_t(d.c);
  const AffineRef xa{random(c, 1.0, 3.0), random(c, 0.5, 2.0), random(c)};
  const AffineRef sa{random(c, -2.0, 0.0), random(c, 0.5, 2.0), random(c)};
  DevArray xm = make_array(xa.mean), xs = make_array(xa.scale), xb = make_array(xa.shift);
  DevArray sm = make_array(sa.mean), ss = make_array(sa.scale), sb = make_array(sa.shift);
  const ChannelAffine x_bn{xm.p, xs.p, xb.p}, sc_bn{sm.p, ss.p, sb.p};
  // What the merge sees: the batch norms applied to x and the shortcut.
  Vec xn(x.size()), scn(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t ch = int64_t(i) / hw % d.c;
    xn[i] = xa.apply(x[i], ch);
    scn[i] = sa.apply(sc[i], ch);
  }
  const Vec out_ref = scale_add_relu_ref(xn, s, scn, d);
  DevTensor xt = make_from(x, d, layout), sct = make_from(sc, d, layout), out = make(d, layout);
  poison_padding(xt.t);
  poison_padding(sct.t);
  DevArray sd = make_array(s);
  poison(out.t);
  ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, sd.p, sct.t, out.t, x_bn, sc_bn).is_ok());
  expect_near_all(download(out.t), out_ref, 1e-5, "out with deferred BNs");
  expect_padding_zero(out.t, "out with deferred BNs");
  // Only the branch's BN: the shortcut is taken as is.
  poison(out.t);
  ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, sd.p, sct.t, out.t, x_bn).is_ok());
  expect_near_all(download(out.t), scale_add_relu_ref(xn, s, sc, d), 1e-5, "out with the branch BN only");

  // Backward: ds = Σ_hw dz · bn(x), the mask from out.
  Vec dz_ref(x.size()), ds_ref(s.size(), 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    dz_ref[i] = out_ref[i] > 0 ? dout[i] : 0.0;
    ds_ref[i / hw] += dz_ref[i] * xn[i];
  }
  DevTensor outt = make_from(out_ref, d, layout), doutt = make_from(dout, d, layout), dsc = make(d, layout);
  poison_padding(outt.t);
  poison_padding(doutt.t);
  poison(dsc.t);
  DevArray ds = make_array(Vec(s.size(), 7.0));
  ASSERT_TRUE(backend_->scale_add_relu_backward(doutt.t, outt.t, xt.t, sd.p, dsc.t, ds.p, x_bn).is_ok());
  expect_near_all(download(dsc.t), dz_ref, 1e-6, "dshortcut with deferred BN");
  expect_near_all(read_array(ds.p, s.size()), ds_ref, 1e-4, "ds with deferred BN");
  expect_padding_zero(dsc.t, "dshortcut with deferred BN");
}

TEST_P(CpuKernelsLayout, ScaleAddReluBackwardSumsMatchReference) {
  const auto [d, layout, isa] = GetParam();
  const int64_t hw = int64_t(d.h) * d.w;
  const size_t c = size_t(d.c), planes = size_t(d.n) * c;
  const Vec x = random(size_t(d.count()), 1.0, 3.0), sc = random(size_t(d.count()), -2.0, 0.0),
            dout = random(size_t(d.count())), out = random(size_t(d.count()));  // out's sign is the mask
  const Vec s = random(planes, 0.0, 1.0);
  const AffineRef xa{random(c, 1.0, 3.0), random(c, 0.5, 2.0), random(c)};
  const AffineRef sa{random(c, -2.0, 0.0), random(c, 0.5, 2.0), random(c)};
  DevArray xm = make_array(xa.mean), xs = make_array(xa.scale), xb = make_array(xa.shift);
  DevArray sm = make_array(sa.mean), ss = make_array(sa.scale), sb = make_array(sa.shift);
  Vec dz_ref(x.size()), sdz(planes, 0.0), sx(planes, 0.0), ssc(planes, 0.0), ds_ref(planes, 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t ch = int64_t(i) / hw % d.c;
    const size_t pl = i / size_t(hw);
    dz_ref[i] = out[i] > 0 ? dout[i] : 0.0;
    sdz[pl] += dz_ref[i];
    sx[pl] += dz_ref[i] * (x[i] - float(xa.mean[size_t(ch)]));
    ssc[pl] += dz_ref[i] * (sc[i] - float(sa.mean[size_t(ch)]));
    ds_ref[pl] += dz_ref[i] * xa.apply(x[i], ch);
  }
  DevTensor xt = make_from(x, d, layout), sct = make_from(sc, d, layout), outt = make_from(out, d, layout),
            doutt = make_from(dout, d, layout), dsc = make(d, layout);
  for (const Tensor* t : {&xt.t, &sct.t, &outt.t, &doutt.t}) poison_padding(*t);
  DevArray sd = make_array(s), ds = make_array(Vec(planes, 7.0));
  std::vector<double> got_dz(planes, 7.0), got_x(planes, 7.0), got_sc(planes, 7.0);
  poison(dsc.t);
  ASSERT_TRUE(backend_
                  ->scale_add_relu_backward_sums(doutt.t, outt.t, xt.t, {xm.p, xs.p, xb.p}, sd.p, sct.t,
                                                 {sm.p, ss.p, sb.p}, dsc.t, ds.p,
                                                 {got_dz.data(), got_x.data(), got_sc.data()})
                  .is_ok());
  expect_near_all(download(dsc.t), dz_ref, 1e-6, "dshortcut");
  expect_padding_zero(dsc.t, "dshortcut");
  expect_near_all(got_dz, sdz, 1e-5, "sum dz");
  expect_near_all(got_x, sx, 1e-5, "sum dz·(x - m)");
  expect_near_all(got_sc, ssc, 1e-5, "sum dz·(shortcut - m)");
  expect_near_all(read_array(ds.p, planes), ds_ref, 1e-4, "ds");
  // Identity shortcut: no shortcut sums; and the shortcut sums without its BN are refused.
  std::fill(got_dz.begin(), got_dz.end(), 7.0);
  ASSERT_TRUE(backend_
                  ->scale_add_relu_backward_sums(doutt.t, outt.t, xt.t, {xm.p, xs.p, xb.p}, nullptr, sct.t, {}, dsc.t,
                                                 nullptr, {got_dz.data(), got_x.data(), nullptr})
                  .is_ok());
  expect_near_all(got_dz, sdz, 1e-5, "sum dz (identity shortcut)");
  EXPECT_FALSE(backend_
                   ->scale_add_relu_backward_sums(doutt.t, outt.t, xt.t, {xm.p, xs.p, xb.p}, nullptr, sct.t, {},
                                                  dsc.t, nullptr, {got_dz.data(), got_x.data(), got_sc.data()})
                   .is_ok());
}

TEST_P(CpuKernelsLayout, ScaleBackwardMatchesReference) {
  const auto [d, layout, isa] = GetParam();
  const int64_t hw = int64_t(d.h) * d.w;
  const Vec dz = random(size_t(d.count()));
  const Vec s = random(size_t(d.n) * d.c, 0.0, 1.0), dmean = random(size_t(d.n) * d.c);
  DevTensor dzt = make_from(dz, d, layout), dx = make(d, layout);
  poison_padding(dzt.t);
  DevArray sd = make_array(s), dmd = make_array(dmean);
  for (int variant = 0; variant < 4; ++variant) {
    const bool use_s = variant & 1, use_dmean = variant & 2;
    Vec want(dz.size());
    for (size_t i = 0; i < dz.size(); ++i)
      want[i] = dz[i] * (use_s ? s[i / hw] : 1.0) + (use_dmean ? dmean[i / hw] / double(hw) : 0.0);
    poison(dx.t);
    ASSERT_TRUE(backend_->scale_backward(dzt.t, use_s ? sd.p : nullptr, use_dmean ? dmd.p : nullptr, dx.t).is_ok());
    expect_near_all(download(dx.t), want, 1e-6, "dx");
    expect_padding_zero(dx.t, "dx");
  }
}

TEST_P(CpuKernelsLayout, AddIntoMatchesReference) {
  const auto [d, layout, isa] = GetParam();
  const Vec a = random(size_t(d.count())), b = random(size_t(d.count()));
  DevTensor at = make_from(a, d, layout), bt = make_from(b, d, layout);
  ASSERT_TRUE(backend_->add_into(at.t, bt.t).is_ok());
  Vec want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
  expect_near_all(download(at.t), want, 1e-6, "dst");
  expect_padding_zero(at.t, "dst");
}

// An SE block's merge end to end, as the layers will compose the kernels:
//   m = gap(x); s = sigmoid(α[c]·m + β[c]); out = relu(x·s + shortcut); L = Σ w·out.
// Forward against the double reference; dx, ds, dshortcut against finite differences of L.
TEST_P(CpuKernelsLayout, SeBlockMergeGradientsMatchFiniteDifferences) {
  const auto [d, layout, isa] = GetParam();
  const int64_t hw = int64_t(d.h) * d.w;
  const size_t nc = size_t(d.n) * d.c;
  const Vec x = random(size_t(d.count())), w = random(size_t(d.count()));
  const Vec alpha = random(size_t(d.c), -3.0, 3.0), beta = random(size_t(d.c));
  auto se_scale = [&](const Vec& xv) {
    Vec m = gap_ref(xv, d), s(nc);
    for (size_t i = 0; i < nc; ++i) s[i] = sigmoid_ref(alpha[i % d.c] * m[i] + beta[i % d.c]);
    return s;
  };
  // Keep every pre-activation 0.1 away from the relu kink so finite differences are clean.
  Vec sc = random(size_t(d.count()));
  {
    const Vec s = se_scale(x);
    for (size_t i = 0; i < sc.size(); ++i) {
      const double pre = x[i] * s[i / hw] + sc[i];
      if (std::abs(pre) < 0.1) sc[i] = float(sc[i] + (pre >= 0 ? 0.2 : -0.2));
    }
  }
  auto loss_of = [&](const Vec& xv, const Vec& s, const Vec& scv) {
    const Vec out = scale_add_relu_ref(xv, s, scv, d);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += w[i] * out[i];
    return l;
  };
  const Vec s_ref = se_scale(x);

  // Forward on the backend.
  DevTensor xt = make_from(x, d, layout), sct = make_from(sc, d, layout), out = make(d, layout);
  DevArray m = make_array(Vec(nc, 0.0));
  ASSERT_TRUE(backend_->global_avg_pool_forward(xt.t, m.p).is_ok());
  Vec pre = read_array(m.p, nc);
  for (size_t i = 0; i < nc; ++i) pre[i] = float(alpha[i % d.c] * pre[i] + beta[i % d.c]);
  DevArray a = make_array(pre), s = make_array(Vec(nc, 0.0));
  ASSERT_TRUE(backend_->sigmoid_forward(a.p, s.p, int64_t(nc)).is_ok());
  expect_near_all(read_array(s.p, nc), s_ref, 1e-5, "s");
  poison(out.t);
  ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, s.p, sct.t, out.t).is_ok());
  expect_near_all(download(out.t), scale_add_relu_ref(x, s_ref, sc, d), 1e-5, "out");

  // Backward on the backend.
  DevTensor dout = make_from(w, d, layout), dsc = make(d, layout), dx = make(d, layout);
  DevArray ds = make_array(Vec(nc, 0.0)), da = make_array(Vec(nc, 0.0));
  poison(dsc.t);
  poison(dx.t);
  ASSERT_TRUE(backend_->scale_add_relu_backward(dout.t, out.t, xt.t, s.p, dsc.t, ds.p).is_ok());
  ASSERT_TRUE(backend_->sigmoid_backward(s.p, ds.p, da.p, int64_t(nc)).is_ok());
  Vec dmean = read_array(da.p, nc);
  for (size_t i = 0; i < nc; ++i) dmean[i] *= alpha[i % d.c];  // through α·m + β
  DevArray dm = make_array(dmean);
  ASSERT_TRUE(backend_->scale_backward(dsc.t, s.p, dm.p, dx.t).is_ok());

  const size_t points = 300;  // finite differences at up to 300 elements each
  const Vec dx_fd = numeric_grad([&](const Vec& xv) { return loss_of(xv, se_scale(xv), sc); }, x, 1e-4, points);
  const Vec dsc_fd = numeric_grad([&](const Vec& scv) { return loss_of(x, s_ref, scv); }, sc, 1e-4, points);
  const Vec ds_fd = numeric_grad([&](const Vec& sv) { return loss_of(x, sv, sc); }, s_ref, 1e-4, points);
  expect_near_all(download(dx.t), dx_fd, 1e-4, "dx");
  expect_near_all(download(dsc.t), dsc_fd, 1e-4, "dshortcut");
  expect_near_all(read_array(ds.p, nc), ds_fd, 1e-4, "ds");
  expect_padding_zero(dx.t, "dx");
  expect_padding_zero(dsc.t, "dshortcut");
}

TEST_F(CpuKernels, LayoutMismatchIsInvalidArgument) {
  const Dims d{2, 16, 3, 3};
  DevTensor a = make(d, Layout::kNCHW), b = make(d, Layout::kNChw16c), c = make(Dims{2, 16, 3, 4}, Layout::kNCHW);
  Status st = backend_->add_into(a.t, b.t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  st = backend_->scale_add_relu_forward(a.t, nullptr, c.t, a.t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  st = backend_->scale_backward(a.t, nullptr, nullptr, b.t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
}

// A big blocked tensor exercises the threaded path and the level's inner loops at a real shape.
TEST_P(CpuKernelsLevel, ScaleAddReluAtStageShapeMatchesReference) {
  const Dims d{2, 64, 28, 28};
  const Layout L = testing::blocked_layout(GetParam());
  const int64_t hw = int64_t(d.h) * d.w;
  const Vec x = random(size_t(d.count())), sc = random(size_t(d.count())), dout = random(size_t(d.count()));
  const Vec s = random(size_t(d.n) * d.c, 0.0, 1.0);
  DevTensor xt = make_from(x, d, L), sct = make_from(sc, d, L);
  DevTensor out = make(d, L), doutt = make_from(dout, d, L);
  DevTensor dsc = make(d, L);
  DevArray sd = make_array(s), ds = make_array(Vec(s.size(), 0.0));
  ASSERT_TRUE(backend_->scale_add_relu_forward(xt.t, sd.p, sct.t, out.t).is_ok());
  const Vec out_ref = scale_add_relu_ref(x, s, sc, d);
  expect_near_all(download(out.t), out_ref, 1e-6, "out");
  ASSERT_TRUE(backend_->scale_add_relu_backward(doutt.t, out.t, xt.t, sd.p, dsc.t, ds.p).is_ok());
  Vec ds_ref(s.size(), 0.0);
  for (size_t i = 0; i < x.size(); ++i) ds_ref[i / hw] += (out_ref[i] > 0 ? dout[i] : 0.0) * x[i];
  expect_near_all(read_array(ds.p, s.size()), ds_ref, 1e-4, "ds");
}

// ---- 2-D element-wise -------------------------------------------------------------------------------------

TEST_P(CpuKernelsLevel, ReluAndSigmoidForwardMatchReference) {
  Vec x = random(1000, -10.0, 10.0);
  x.push_back(-200.0);  // sigmoid must saturate to 0 and 1, not NaN
  x.push_back(200.0);
  x.push_back(0.0);
  const size_t n = x.size();
  DevArray xd = make_array(x), y = make_array(Vec(n, 7.0));
  Vec relu_want(n), sig_want(n);
  for (size_t i = 0; i < n; ++i) {
    relu_want[i] = std::max(0.0, x[i]);
    sig_want[i] = sigmoid_ref(x[i]);
  }
  ASSERT_TRUE(backend_->relu_forward(xd.p, y.p, int64_t(n)).is_ok());
  expect_near_all(read_array(y.p, n), relu_want, 0.0, "relu");
  ASSERT_TRUE(backend_->sigmoid_forward(xd.p, y.p, int64_t(n)).is_ok());
  expect_near_all(read_array(y.p, n), sig_want, 1e-6, "sigmoid");
}

TEST_P(CpuKernelsLevel, ReluAndSigmoidBackwardMatchFiniteDifferences) {
  Vec x = random(300, -4.0, 4.0);
  for (double& v : x)
    if (std::abs(v) < 0.01) v = 0.5;  // away from the relu kink
  const Vec w = random(x.size());      // L = Σ w · f(x)
  const size_t n = x.size();
  auto relu_loss = [&](const Vec& xv) {
    double l = 0;
    for (size_t i = 0; i < n; ++i) l += w[i] * std::max(0.0, xv[i]);
    return l;
  };
  auto sigmoid_loss = [&](const Vec& xv) {
    double l = 0;
    for (size_t i = 0; i < n; ++i) l += w[i] * sigmoid_ref(xv[i]);
    return l;
  };
  DevArray xd = make_array(x), y = make_array(Vec(n, 0.0)), dy = make_array(w), dx = make_array(Vec(n, 7.0));
  ASSERT_TRUE(backend_->relu_forward(xd.p, y.p, int64_t(n)).is_ok());
  ASSERT_TRUE(backend_->relu_backward(y.p, dy.p, dx.p, int64_t(n)).is_ok());
  expect_near_all(read_array(dx.p, n), numeric_grad(relu_loss, x), 1e-6, "relu dx");
  ASSERT_TRUE(backend_->sigmoid_forward(xd.p, y.p, int64_t(n)).is_ok());
  ASSERT_TRUE(backend_->sigmoid_backward(y.p, dy.p, dx.p, int64_t(n)).is_ok());
  expect_near_all(read_array(dx.p, n), numeric_grad(sigmoid_loss, x), 1e-5, "sigmoid dx");
}

// ---- softmax cross-entropy ------------------------------------------------------------------------------

// Mean over rows of -Σ_k t[k]·log softmax(z)[k], in double.
double softmax_ce_ref(const Vec& z, const Vec& targets, int n, int k) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    double mx = z[size_t(i) * k];
    for (int c = 1; c < k; ++c) mx = std::max(mx, z[size_t(i) * k + c]);
    double sum = 0;
    for (int c = 0; c < k; ++c) sum += std::exp(z[size_t(i) * k + c] - mx);
    const double lse = mx + std::log(sum);
    for (int c = 0; c < k; ++c) total += targets[size_t(i) * k + c] * (lse - z[size_t(i) * k + c]);
  }
  return total / n;
}

Vec smoothed_targets(const std::vector<int32_t>& labels, int k, double eps) {
  Vec t(labels.size() * k, eps / k);
  for (size_t i = 0; i < labels.size(); ++i) t[i * k + labels[i]] += 1.0 - eps;
  return t;
}

TEST_F(CpuKernels, SoftmaxCrossEntropyMatchesReferenceAndFiniteDifferences) {
  const int n = 5, k = 7;
  const float grad_scale = 2.5f;
  const std::vector<int32_t> labels = {0, 6, 3, 3, 1};
  Vec soft = random(size_t(n) * k, 0.0, 1.0);
  for (int i = 0; i < n; ++i) {
    double sum = 0;
    for (int c = 0; c < k; ++c) sum += soft[size_t(i) * k + c];
    for (int c = 0; c < k; ++c) soft[size_t(i) * k + c] /= sum;
  }
  const Vec z = random(size_t(n) * k, -3.0, 3.0);
  DevArray zd = make_array(z), dz = make_array(Vec(z.size(), 7.0)), softd = make_array(soft);
  Buffer labels_buf = backend_->allocate(labels.size() * sizeof(int32_t));
  auto* labels_dev = static_cast<int32_t*>(labels_buf.get());
  ASSERT_TRUE(backend_->copy_to_device(labels_dev, labels.data(), labels.size() * sizeof(int32_t)).is_ok());

  struct Variant {
    const char* name;
    float eps;
    bool use_soft;
  };
  for (const Variant& v : {Variant{"hard", 0.f, false}, Variant{"smoothed", 0.1f, false}, Variant{"soft", 0.f, true}}) {
    SCOPED_TRACE(v.name);
    const Vec targets = v.use_soft ? soft : smoothed_targets(labels, k, double(v.eps));
    float loss = -1.f;
    ASSERT_TRUE(backend_->softmax_cross_entropy(zd.p, labels_dev, v.use_soft ? softd.p : nullptr, n, k, v.eps,
                                                grad_scale, dz.p, &loss).is_ok());
    EXPECT_NEAR(loss, softmax_ce_ref(z, targets, n, k), 1e-5);
    Vec want = numeric_grad([&](const Vec& zv) { return softmax_ce_ref(zv, targets, n, k); }, z);
    for (double& g : want) g *= grad_scale;
    expect_near_all(read_array(dz.p, z.size()), want, 1e-5, "dlogits");
  }
}

TEST_F(CpuKernels, SoftmaxCrossEntropyIsStableForHugeLogits) {
  const int n = 2, k = 3;
  const Vec z = {1000.0, 0.0, -1000.0, 50.0, 88.5, 89.0};
  const std::vector<int32_t> labels = {1, 2};
  const Vec targets = smoothed_targets(labels, k, 0.1);
  DevArray zd = make_array(z), dz = make_array(Vec(z.size(), 0.0));
  float loss = 0.f;
  ASSERT_TRUE(backend_->softmax_cross_entropy(zd.p, labels.data(), nullptr, n, k, 0.1f, 1.f, dz.p, &loss).is_ok());
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, softmax_ce_ref(z, targets, n, k), 1e-3);
  const Vec g = read_array(dz.p, z.size());
  for (double v : g) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(g[0], (1.0 - 0.1 / 3) / n, 1e-6);  // softmax ≈ onehot(0)
}

TEST_F(CpuKernels, SoftmaxCrossEntropyRejectsBadLabel) {
  const Vec z(6, 0.0);
  const std::vector<int32_t> labels = {0, 3};
  DevArray zd = make_array(z), dz = make_array(z);
  float loss = 0.f;
  Status st = backend_->softmax_cross_entropy(zd.p, labels.data(), nullptr, 2, 3, 0.f, 1.f, dz.p, &loss);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
}

// ---- top-k -------------------------------------------------------------------------------------------------

// Ties rule: an equal logit at a lower class index ranks ahead of the label (stable descending order).
TEST_F(CpuKernels, CountTopKOnHandMadeCase) {
  const int k = 6;
  const Vec z = {
      0.1, 0.9, 0.3, 0.2, 0.0, 0.5,  // label 1: the max -> top-1 and top-5
      0.1, 0.9, 0.3, 0.2, 0.0, 0.5,  // label 2: third -> top-5 only
      0.1, 0.9, 0.3, 0.2, 0.0, 0.5,  // label 4: last of six -> neither
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0,  // all tied, label 0: rank 0 -> both
      0.0, 0.0, 0.0, 0.0, 0.0, 0.0,  // all tied, label 5: rank 5 -> neither
      0.7, 0.1, 0.7, 0.2, 0.3, 0.4,  // label 2 ties the max with class 0: rank 1 -> top-5 only
  };
  const std::vector<int32_t> labels = {1, 2, 4, 0, 5, 2};
  DevArray zd = make_array(z);
  int64_t top1 = 10, top5 = 20;  // counters are added to
  ASSERT_TRUE(backend_->count_top_k(zd.p, labels.data(), int(labels.size()), k, &top1, &top5).is_ok());
  EXPECT_EQ(top1, 10 + 2);
  EXPECT_EQ(top5, 20 + 4);
}

// ---- SGD --------------------------------------------------------------------------------------------------

// PyTorch's SGD (dampening 0) in double: g' = g + wd·w; v = g' on the first step, m·v + g' after;
// w -= lr·(nesterov ? g' + m·v : v).
struct SgdRef {
  Vec w, v;
  bool first = true;
  void step(const Vec& g, const std::vector<SgdSegment>& segs, double lr, double m, bool nesterov,
            double grad_scale = 1.0) {
    for (const SgdSegment& s : segs) {
      for (int64_t i = s.offset; i < s.offset + s.count; ++i) {
        const double gd = grad_scale * g[i] + double(s.weight_decay) * w[i];
        v[i] = first ? gd : m * v[i] + gd;
        w[i] -= lr * (nesterov ? gd + m * v[i] : v[i]);
      }
    }
    first = false;
  }
};

TEST_P(CpuKernelsLevel, SgdStepMatchesPyTorchRule) {
  const int64_t count = 50021;  // odd size: the static split leaves remainders
  // Two decayed segments with different weight decay, one without, and a gap [30000, 30021) no segment covers.
  const std::vector<SgdSegment> segs = {{0, 20000, 0.05f}, {20000, 10000, 0.f}, {30021, 20000, 1e-3f}};
  const float lr = 0.1f, m = 0.9f;
  for (bool nesterov : {false, true}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "plain");
    SgdRef ref{random(size_t(count)), Vec(size_t(count), 0.0)};
    DevArray w = make_array(ref.w), v = make_array(ref.v), g = make_array(Vec(size_t(count), 0.0));
    for (int step = 0; step < 5; ++step) {
      const Vec grad = random(size_t(count));
      ASSERT_TRUE(backend_->copy_to_device(g.p, std::vector<float>(grad.begin(), grad.end()).data(),
                                           size_t(count) * sizeof(float)).is_ok());
      ASSERT_TRUE(backend_->sgd_step(w.p, g.p, v.p, segs, SgdHyper{lr, m, nesterov}).is_ok());
      ref.step(grad, segs, lr, m, nesterov);
    }
    expect_near_all(read_array(w.p, size_t(count)), ref.w, 1e-5, "w");
    expect_near_all(read_array(v.p, size_t(count)), ref.v, 1e-5, "v");
  }
}

// grad_scale folds an allreduce's 1/world (and 1/A of accumulation) into the update: scaling the
// gradient buffer by 1/6 beforehand and passing grad_scale = 1/6 must agree.
TEST_P(CpuKernelsLevel, SgdStepAppliesGradScale) {
  const int64_t count = 4099;
  const std::vector<SgdSegment> segs = {{0, 3000, 5e-4f}, {3000, 1099, 0.f}};
  const float lr = 0.05f, m = 0.9f, scale = 1.f / 6.f;
  SgdRef ref{random(size_t(count)), Vec(size_t(count), 0.0)};
  DevArray w = make_array(ref.w), v = make_array(ref.v), g = make_array(Vec(size_t(count), 0.0));
  for (int step = 0; step < 3; ++step) {
    const Vec grad = random(size_t(count));
    ASSERT_TRUE(backend_->copy_to_device(g.p, std::vector<float>(grad.begin(), grad.end()).data(),
                                         size_t(count) * sizeof(float)).is_ok());
    SgdHyper hyper{lr, m, true};
    hyper.grad_scale = scale;
    ASSERT_TRUE(backend_->sgd_step(w.p, g.p, v.p, segs, hyper).is_ok());
    ref.step(grad, segs, lr, m, true, 1.0 / 6.0);
  }
  expect_near_all(read_array(w.p, size_t(count)), ref.w, 1e-5, "w");
  expect_near_all(read_array(v.p, size_t(count)), ref.v, 1e-5, "v");
}

TEST_F(CpuKernels, SgdStepRejectsOverlappingSegments) {
  DevArray w = make_array(Vec(10, 1.0)), v = make_array(Vec(10, 0.0)), g = make_array(Vec(10, 1.0));
  const std::vector<SgdSegment> segs = {{5, 5, 0.f}, {0, 6, 0.f}};
  Status st = backend_->sgd_step(w.p, g.p, v.p, segs, SgdHyper{});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  expect_near_all(read_array(w.p, 10), Vec(10, 1.0), 0.0, "w untouched");
}

}  // namespace
}  // namespace sx::model
