// defines: sx::dataplane::Rng (splitmix64), epoch_permutation, sample_seed, Sampler — which samples
// this rank reads in each step of an epoch.
//
// Global batch semantics. P = epoch_permutation(seed, epoch) orders all N samples. With world size W
// and per-rank batch b, global step t (counted from the start offset o) covers permuted positions
// [o + t·W·b, o + (t+1)·W·b) and rank r takes the r-th slice of b. So np=2 at batch b sees exactly
// the samples np=1 at batch 2b sees in a step. Training (drop_last) has floor((N - o) / (W·b)) steps;
// eval has ceil((N - o) / (W·b)) steps and the tail is padded: positions >= N come out as index -1
// (every sample exactly once across ranks; the padded slots of a batch are masked, see Batch::valid).
// All randomness is portable: splitmix64 + Fisher-Yates with unbiased bounded draws, never
// std::shuffle / std::*_distribution (their output is implementation-defined).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace sx::dataplane {

// splitmix64 (Steele, Lea, Flood 2014): a counter-based generator; next() = mix(state += golden).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix(state_ += 0x9E3779B97F4A7C15ull); }
  // Uniform integer in [0, bound), unbiased (Lemire's multiply + rejection). bound > 0.
  uint64_t below(uint64_t bound);
  // Uniform double in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// Key of an independent random stream for (seed, a, b, stream): nested mixing, so nearby inputs
// give unrelated streams.
uint64_t stream_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t stream);

// The epoch permutation of [0, n): a pure function of (seed, epoch).
std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

// Seed of the augmentation randomness of one sample: a pure function of (seed, epoch, global sample
// index), so batches do not depend on thread count, rank or world size.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t sample_index);

struct SamplerConfig {
  int64_t num_samples = 0;  // N, the whole dataset
  int world_size = 1;       // W
  int rank = 0;             // r in [0, W)
  int batch_size = 1;       // b, per rank
  bool shuffle = true;      // false: identity order (eval)
  bool drop_last = true;    // true for training; false pads the last global step (eval)
  uint64_t seed = 0;
};

class Sampler {
 public:
  static StatusOr<Sampler> create(const SamplerConfig& config);

  // Selects the epoch and the global sample offset to start at (a position in the epoch's
  // permutation, 0 <= offset <= N; a multiple of W·b to stay on the step grid of an earlier run).
  Status set_epoch(int64_t epoch, int64_t start_offset = 0);

  int64_t epoch() const { return epoch_; }
  int64_t start_offset() const { return start_offset_; }
  int64_t global_batch() const { return int64_t(config_.world_size) * config_.batch_size; }
  // Steps from the start offset to the end of the epoch.
  int64_t num_steps() const;
  // Position in the permutation where this rank's slice of step t begins.
  int64_t first_position(int64_t step) const {
    return start_offset_ + step * global_batch() + int64_t(config_.rank) * config_.batch_size;
  }
  // Writes this rank's b global sample indices of step t (relative to the start offset) to out
  // (size b); positions past N are -1. Returns how many are real (the rest are padding, at the end).
  int rank_batch(int64_t step, std::span<int64_t> out) const;
  const SamplerConfig& config() const { return config_; }

 private:
  explicit Sampler(const SamplerConfig& config) : config_(config) {}
  SamplerConfig config_;
  int64_t epoch_ = -1;
  int64_t start_offset_ = 0;
  std::vector<int64_t> perm_;  // (N) position -> global sample index; empty when !shuffle
};

}  // namespace sx::dataplane
