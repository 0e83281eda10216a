// defines: sx::model::InitRule, init_values — deterministic parameter initialisation.
// The generator is explicit (splitmix64 + Box-Muller in double), seeded from (seed, parameter name),
// so a parameter's initial values are the same on every machine and do not depend on the order in
// which parameters are created. std::normal_distribution is not used: its algorithm differs
// between standard libraries.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace sx::model {

struct InitRule {
  enum class Kind : uint8_t { kConstant, kNormal, kUniform };
  Kind kind = Kind::kConstant;
  double a = 0;  // constant value, normal std (mean 0), or uniform bound (±a)

  static InitRule constant(double v) { return {Kind::kConstant, v}; }
  static InitRule normal(double stddev) { return {Kind::kNormal, stddev}; }
  static InitRule uniform(double bound) { return {Kind::kUniform, bound}; }
};

// Fills `out` by `rule` from the stream of (seed, name).
void init_values(const InitRule& rule, uint64_t seed, std::string_view name, std::span<float> out);

}  // namespace sx::model
