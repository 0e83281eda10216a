#include "dataplane/sampler.h"

#include <numeric>
#include <string>
#include <utility>

namespace sx::dataplane {

uint64_t Rng::below(uint64_t bound) {
  // Lemire, "Fast random integer generation in an interval" (2019): exact, portable.
  uint64_t x = next();
  unsigned __int128 m = static_cast<unsigned __int128>(x) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      x = next();
      m = static_cast<unsigned __int128>(x) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

uint64_t stream_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t stream) {
  uint64_t k = Rng::mix(seed ^ 0x5851F42D4C957F2Dull);
  k = Rng::mix(k ^ Rng::mix(a + 0x9E3779B97F4A7C15ull));
  k = Rng::mix(k ^ Rng::mix(b + 0xD1B54A32D192ED03ull));
  return Rng::mix(k ^ Rng::mix(stream + 0x8CB92BA72F3D8DD7ull));
}

namespace {
constexpr uint64_t kStreamPermutation = 1;
constexpr uint64_t kStreamAugment = 2;
}  // namespace

std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> perm(size_t(n > 0 ? n : 0));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  Rng rng(stream_key(seed, uint64_t(epoch), 0, kStreamPermutation));
  // Fisher-Yates, from the back.
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = int64_t(rng.below(uint64_t(i) + 1));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  return perm;
}

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t sample_index) {
  return stream_key(seed, uint64_t(epoch), uint64_t(sample_index), kStreamAugment);
}

StatusOr<Sampler> Sampler::create(const SamplerConfig& config) {
  SX_CHECK_ARG(config.num_samples > 0, "sampler: dataset has no samples");
  SX_CHECK_ARG(config.world_size >= 1, "sampler: world_size must be >= 1");
  SX_CHECK_ARG(config.rank >= 0 && config.rank < config.world_size, "sampler: rank out of range");
  SX_CHECK_ARG(config.batch_size >= 1, "sampler: batch_size must be >= 1");
  return Sampler(config);
}

Status Sampler::set_epoch(int64_t epoch, int64_t start_offset) {
  SX_CHECK_ARG(epoch >= 0, "sampler: epoch must be >= 0");
  if (start_offset < 0 || start_offset > config_.num_samples)
    return Status::invalid_argument("sampler: start offset " + std::to_string(start_offset) +
                                    " outside the epoch [0, " + std::to_string(config_.num_samples) + "]");
  if (config_.shuffle && epoch != epoch_) perm_ = epoch_permutation(config_.seed, epoch, config_.num_samples);
  epoch_ = epoch;
  start_offset_ = start_offset;
  return Status::ok();
}

int64_t Sampler::num_steps() const {
  const int64_t left = config_.num_samples - start_offset_;
  const int64_t gb = global_batch();
  return config_.drop_last ? left / gb : (left + gb - 1) / gb;
}

int Sampler::rank_batch(int64_t step, std::span<int64_t> out) const {
  const int64_t first = first_position(step);
  int valid = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t pos = first + int64_t(i);
    if (pos >= 0 && pos < config_.num_samples) {
      out[i] = config_.shuffle ? perm_[size_t(pos)] : pos;
      ++valid;
    } else {
      out[i] = -1;
    }
  }
  return valid;
}

}  // namespace sx::dataplane
