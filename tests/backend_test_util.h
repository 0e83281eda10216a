// defines: test helpers shared by the CPU backend's op tests — a tensor that owns its backend
// buffer, download to plain NCHW, seeded uniform random vectors.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "model/backend.h"

namespace sx::model::testing {

struct DevTensor {
  Buffer buf;
  Tensor t;
};

inline DevTensor make_tensor(Backend& be, const Dims& d, Layout l) {
  DevTensor r;
  r.t = Tensor{d, l, nullptr};
  r.buf = be.allocate(r.t.bytes());
  r.t.data = static_cast<float*>(r.buf.get());
  return r;
}

inline std::vector<float> download(Backend& be, const Tensor& t) {
  std::vector<float> h(size_t(t.dims.count()));
  EXPECT_TRUE(be.download_nchw(t, h.data()).is_ok());
  return h;
}

// n values uniform in [lo, hi), the same for the same seed.
inline std::vector<float> random_uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// got ≈ want within tol · max|want| (at least 1e-3 of scale); reports the first five misses.
inline void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 1e-3;
  for (double v : want) scale = std::max(scale, std::abs(v));
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (std::abs(got[i] - want[i]) > tol * scale) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i] << " (scale " << scale << ")";
      ++bad;
    }
  }
}

// Central difference of loss() in the host value v[i] (v: host memory loss() reads): v[i] ± eps, then restored. `refresh` puts v
// where loss() reads it (e.g. an upload into a backend tensor) after every change.
template <class Loss, class Refresh>
double central_difference(float* v, size_t i, float eps, Loss&& loss, Refresh&& refresh) {
  const float keep = v[i];
  v[i] = keep + eps;
  refresh();
  const double lp = loss();
  v[i] = keep - eps;
  refresh();
  const double lm = loss();
  v[i] = keep;
  refresh();
  return (lp - lm) / (2.0 * double(eps));
}
template <class Loss>
double central_difference(float* v, size_t i, float eps, Loss&& loss) {
  return central_difference(v, i, eps, loss, [] {});
}

}  // namespace sx::model::testing
