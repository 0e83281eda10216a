// Sampler: the epoch permutation, per-rank slicing of global steps, eval padding, resume offsets.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "dataplane/sampler.h"

namespace sx::dataplane {
namespace {

Sampler make(int64_t n, int world, int rank, int b, bool drop_last = true, bool shuffle = true, uint64_t seed = 7) {
  SamplerConfig c;
  c.num_samples = n;
  c.world_size = world;
  c.rank = rank;
  c.batch_size = b;
  c.drop_last = drop_last;
  c.shuffle = shuffle;
  c.seed = seed;
  StatusOr<Sampler> s = Sampler::create(c);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return std::move(s).value();
}

std::vector<int64_t> batch_of(const Sampler& s, int64_t step) {
  std::vector<int64_t> out(static_cast<size_t>(s.config().batch_size));
  (void)s.rank_batch(step, out);
  return out;
}

TEST(Rng, SplitMix64ReferenceVector) {
  // First outputs of Vigna's splitmix64.c for seed 1234567: the generator is portable by construction.
  Rng rng(1234567);
  const uint64_t want[] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                           4593380528125082431ull, 16408922859458223821ull};
  for (uint64_t w : want) EXPECT_EQ(rng.next(), w);
}

TEST(Rng, BelowIsInRangeAndRoughlyUniform) {
  Rng rng(99);
  const int k = 10, draws = 100000;
  std::vector<int> count(k, 0);
  for (int i = 0; i < draws; ++i) {
    uint64_t v = rng.below(k);
    ASSERT_LT(v, uint64_t(k));
    ++count[size_t(v)];
  }
  double chi2 = 0;
  for (int c : count) chi2 += (c - draws / k) * double(c - draws / k) / (draws / k);
  EXPECT_LT(chi2, 30.0);  // 9 degrees of freedom: p ~ 4e-4
  for (int i = 0; i < 1000; ++i) {
    double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(Permutation, IsAPermutationAndAPureFunctionOfSeedAndEpoch) {
  const int64_t n = 1001;
  std::vector<int64_t> p = epoch_permutation(5, 3, n);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(static_cast<size_t>(n));
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_EQ(p, epoch_permutation(5, 3, n));  // same inputs, same order
  EXPECT_NE(p, epoch_permutation(5, 4, n));  // next epoch reshuffles
  EXPECT_NE(p, epoch_permutation(6, 3, n));  // other seed
  EXPECT_NE(p, iota);
  // Position 0 is not biased toward any value: over epochs the first element takes many values.
  std::set<int64_t> firsts;
  for (int e = 0; e < 200; ++e) firsts.insert(epoch_permutation(5, e, 10)[0]);
  EXPECT_EQ(firsts.size(), 10u);
  EXPECT_TRUE(epoch_permutation(1, 0, 0).empty());
  EXPECT_EQ(epoch_permutation(1, 0, 1), std::vector<int64_t>{0});
}

TEST(Permutation, SampleSeedDependsOnEachInput) {
  const uint64_t s = sample_seed(1, 2, 3);
  EXPECT_EQ(s, sample_seed(1, 2, 3));
  EXPECT_NE(s, sample_seed(2, 2, 3));
  EXPECT_NE(s, sample_seed(1, 3, 3));
  EXPECT_NE(s, sample_seed(1, 2, 4));
  EXPECT_NE(sample_seed(0, 1, 0), sample_seed(0, 0, 1));  // inputs are not interchangeable
}

TEST(Sampler, RanksPartitionEachTrainingEpoch) {
  const int64_t n = 1003;
  const int world = 3, b = 7;
  for (int64_t epoch : {0, 1}) {
    std::vector<int64_t> seen;
    int64_t steps = -1;
    for (int r = 0; r < world; ++r) {
      Sampler s = make(n, world, r, b);
      ASSERT_TRUE(s.set_epoch(epoch).is_ok());
      steps = s.num_steps();
      for (int64_t t = 0; t < s.num_steps(); ++t) {
        std::vector<int64_t> idx(static_cast<size_t>(b));
        ASSERT_EQ(s.rank_batch(t, idx), b);
        seen.insert(seen.end(), idx.begin(), idx.end());
      }
    }
    EXPECT_EQ(steps, n / (world * b));  // drop_last
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "a sample was seen twice";
    EXPECT_EQ(int64_t(seen.size()), steps * world * b);
    // The dropped samples are exactly the tail of the epoch's permutation.
    std::vector<int64_t> p = epoch_permutation(7, epoch, n);
    std::vector<int64_t> kept(p.begin(), p.begin() + steps * world * b);
    std::sort(kept.begin(), kept.end());
    EXPECT_EQ(kept, sorted);
  }
}

TEST(Sampler, EvalSeesEverySampleOnceAcrossRanksWithPadding) {
  const int64_t n = 50;
  const int world = 3, b = 4;  // 12 per global step: 5 steps, last has 2 real samples
  std::vector<int> count(size_t(n), 0);
  for (int r = 0; r < world; ++r) {
    Sampler s = make(n, world, r, b, /*drop_last=*/false, /*shuffle=*/false);
    ASSERT_TRUE(s.set_epoch(0).is_ok());
    ASSERT_EQ(s.num_steps(), 5);
    for (int64_t t = 0; t < s.num_steps(); ++t) {
      std::vector<int64_t> idx(static_cast<size_t>(b));
      const int valid = s.rank_batch(t, idx);
      for (int i = 0; i < b; ++i) {
        if (i < valid) {
          ++count[size_t(idx[size_t(i)])];
        } else {
          EXPECT_EQ(idx[size_t(i)], -1) << "padding comes after the real samples";
        }
      }
      if (t == 4) {
        EXPECT_EQ(valid, r == 0 ? 2 : 0);
      }
    }
  }
  for (int64_t g = 0; g < n; ++g) EXPECT_EQ(count[size_t(g)], 1) << "sample " << g;
}

TEST(Sampler, TwoRanksAtBatchBSeeWhatOneRankAtBatch2BSees) {
  const int64_t n = 500;
  const int b = 8;
  Sampler one = make(n, 1, 0, 2 * b);
  Sampler r0 = make(n, 2, 0, b), r1 = make(n, 2, 1, b);
  for (Sampler* s : {&one, &r0, &r1}) ASSERT_TRUE(s->set_epoch(2).is_ok());
  ASSERT_EQ(one.num_steps(), r0.num_steps());
  for (int64_t t = 0; t < one.num_steps(); ++t) {
    std::vector<int64_t> both = batch_of(r0, t), second = batch_of(r1, t);
    both.insert(both.end(), second.begin(), second.end());
    EXPECT_EQ(both, batch_of(one, t)) << "step " << t;
  }
}

TEST(Sampler, ResumeFromAnOffsetContinuesTheSameSequence) {
  const int64_t n = 300;
  const int world = 2, b = 5;
  for (int r = 0; r < world; ++r) {
    Sampler full = make(n, world, r, b);
    ASSERT_TRUE(full.set_epoch(4).is_ok());
    const int64_t k = 7;  // resume after 7 global steps
    Sampler resumed = make(n, world, r, b);
    ASSERT_TRUE(resumed.set_epoch(4, k * world * b).is_ok());
    ASSERT_EQ(resumed.num_steps(), full.num_steps() - k);
    for (int64_t t = 0; t < resumed.num_steps(); ++t) EXPECT_EQ(batch_of(resumed, t), batch_of(full, t + k));
  }
  // An offset off the step grid (e.g. after a world-size change) still continues the same order.
  Sampler off = make(n, 1, 0, 4);
  ASSERT_TRUE(off.set_epoch(4, 13).is_ok());
  std::vector<int64_t> p = epoch_permutation(7, 4, n);
  EXPECT_EQ(batch_of(off, 0), std::vector<int64_t>(p.begin() + 13, p.begin() + 17));
  EXPECT_EQ(off.num_steps(), (n - 13) / 4);
}

TEST(Sampler, RejectsBadArguments) {
  SamplerConfig c;
  c.num_samples = 10;
  c.world_size = 2;
  c.rank = 2;
  EXPECT_FALSE(Sampler::create(c).is_ok());
  c.rank = 0;
  c.batch_size = 0;
  EXPECT_FALSE(Sampler::create(c).is_ok());
  c.batch_size = 2;
  StatusOr<Sampler> s = Sampler::create(c);
  ASSERT_TRUE(s.is_ok());
  EXPECT_FALSE(s->set_epoch(0, 11).is_ok());
  EXPECT_FALSE(s->set_epoch(0, -1).is_ok());
  EXPECT_FALSE(s->set_epoch(-1).is_ok());
  ASSERT_TRUE(s->set_epoch(0, 10).is_ok());
  EXPECT_EQ(s->num_steps(), 0);
}

}  // namespace
}  // namespace sx::dataplane
