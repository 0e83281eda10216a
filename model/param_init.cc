// Deterministic initialisation: splitmix64 stream per (seed, name), doubles, then rounded to float.
#include "model/param_init.h"

#include <cmath>
#include <numbers>

namespace sx::model {

namespace {
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : s) h = (h ^ uint8_t(ch)) * 1099511628211ull;
  return h;
}

struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform01() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};
}  // namespace

void init_values(const InitRule& rule, uint64_t seed, std::string_view name, std::span<float> out) {
  SplitMix64 rng{seed * 0xD1B54A32D192ED03ull ^ fnv1a(name)};
  switch (rule.kind) {
    case InitRule::Kind::kConstant:
      for (float& v : out) v = float(rule.a);
      break;
    case InitRule::Kind::kUniform:
      for (float& v : out) v = float(rule.a * (2.0 * rng.uniform01() - 1.0));
      break;
    case InitRule::Kind::kNormal:
      // Box-Muller, both outputs used.
      for (size_t i = 0; i < out.size(); i += 2) {
        double u1 = 1.0 - rng.uniform01();  // (0, 1]: log is finite
        double u2 = rng.uniform01();
        double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = float(rule.a * r * std::cos(2.0 * std::numbers::pi * u2));
        if (i + 1 < out.size()) out[i + 1] = float(rule.a * r * std::sin(2.0 * std::numbers::pi * u2));
      }
      break;
  }
}

}  // namespace sx::model
