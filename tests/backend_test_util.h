// defines: test helpers shared by the CPU backend's op tests — a tensor that owns its backend
// buffer, download to plain NCHW, seeded uniform random vectors.
#pragma once

#include <gtest/gtest.h>

#include <random>
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
