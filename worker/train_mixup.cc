#include "worker/train_mixup.h"

#include <cmath>
#include <vector>

#include "dataplane/sampler.h"

namespace sx::worker {
namespace {

// Marsaglia & Tsang (2000) Gamma(a, 1) for a >= 1; a < 1 via Gamma(a + 1) · U^(1/a).
double gamma_sample(double a, dataplane::Rng& rng) {
  if (a < 1) return gamma_sample(a + 1, rng) * std::pow(rng.uniform() + 1e-300, 1.0 / a);
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9 * d);
  while (true) {
    // Standard normal by Box-Muller.
    const double u1 = rng.uniform() + 1e-300, u2 = rng.uniform();
    const double x = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
    double v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const double u = rng.uniform() + 1e-300;
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

}  // namespace

float mixup_lambda(uint64_t seed, int64_t step, int micro, int rank, double alpha) {
  dataplane::Rng rng(dataplane::stream_key(seed, uint64_t(step), uint64_t(micro) * 65536 + uint64_t(rank),
                                           0x6d69787570ull /* "mixup" */));
  const double g1 = gamma_sample(alpha, rng), g2 = gamma_sample(alpha, rng);
  return float(g1 / (g1 + g2));
}

void mixup_batch(float* images, int64_t f, const int32_t* labels, int n, int k, float lam, float smoothing,
                 std::vector<float>* soft) {
  // Pairs (i, n-1-i) are mixed together from the originals, so each pair is done in one go.
  for (int i = 0; i < n / 2; ++i) {
    float* a = images + int64_t(i) * f;
    float* b = images + int64_t(n - 1 - i) * f;
    for (int64_t j = 0; j < f; ++j) {
      const float x = a[j], y = b[j];
      a[j] = lam * x + (1 - lam) * y;
      b[j] = lam * y + (1 - lam) * x;
    }
  }
  soft->assign(size_t(n) * k, 0.f);
  const float off = smoothing / float(k), on = 1.f - smoothing;
  for (int i = 0; i < n; ++i) {
    float* t = soft->data() + size_t(i) * k;
    for (int c = 0; c < k; ++c) t[c] = off;
    t[labels[i]] += lam * on;
    t[labels[n - 1 - i]] += (1 - lam) * on;
  }
}

}  // namespace sx::worker
