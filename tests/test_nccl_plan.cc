// The hierarchical NCCL allreduce's arithmetic (worker/nccl_plan.h), on the host: shard boundaries
// for every split of uneven sizes, and the three stages + tail run on plain vectors equal a flat sum.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "worker/nccl_plan.h"

namespace sx::worker {
namespace {

TEST(NcclPlan, ShardsCoverTheBucketExactlyOnceForUnevenSizes) {
  for (int L : {1, 2, 3, 4, 7, 8})
    for (int64_t n : {0, 1, 2, 3, 7, 8, 9, 10, 63, 64, 65, 1000, 6553601}) {
      const NcclShardPlan p = plan_nccl_shards(n, L);
      SCOPED_TRACE("n=" + std::to_string(n) + " L=" + std::to_string(L));
      EXPECT_EQ(p.shard, n / L);
      EXPECT_EQ(p.tail_begin, p.shard * L);
      EXPECT_GE(p.tail, 0);
      EXPECT_LT(p.tail, L);
      EXPECT_EQ(p.tail_begin + p.tail, n);
      // Shards are consecutive, equal (NCCL's recvcount), and end where the tail begins.
      int64_t at = 0;
      for (int r = 0; r < L; ++r) {
        EXPECT_EQ(p.shard_begin(r), at);
        at += p.shard;
      }
      EXPECT_EQ(at, p.tail_begin);
    }
  const NcclShardPlan p = plan_nccl_shards(10, 4);  // [0,2) [2,4) [4,6) [6,8) + tail [8,10)
  EXPECT_EQ(p.shard, 2);
  EXPECT_EQ(p.shard_begin(3), 6);
  EXPECT_EQ(p.tail_begin, 8);
  EXPECT_EQ(p.tail, 2);
  const NcclShardPlan small = plan_nccl_shards(3, 8);  // smaller than the node: all tail
  EXPECT_EQ(small.shard, 0);
  EXPECT_EQ(small.tail, 3);
}

// Integer-valued floats add exactly in any order: the hierarchical plan must give the flat sum
// bit for bit, on every rank, for every layout including uneven buckets and one-rank nodes.
TEST(NcclPlan, HierarchicalPlanEqualsTheFlatSumOnEveryRank) {
  std::mt19937 rng(12);
  std::uniform_int_distribution<int> value(-1000, 1000);
  for (int nodes : {1, 2, 3})
    for (int L : {1, 2, 4, 8})
      for (int64_t n : {1, 5, 8, 13, 64, 257}) {
        SCOPED_TRACE(std::to_string(nodes) + " nodes x " + std::to_string(L) + ", n=" + std::to_string(n));
        const int world = nodes * L;
        std::vector<std::vector<float>> data(size_t(world), std::vector<float>(static_cast<size_t>(n), 0.f));
        std::vector<float> flat(size_t(n), 0.f);
        for (auto& d : data)
          for (int64_t i = 0; i < n; ++i) {
            d[size_t(i)] = float(value(rng));
            flat[size_t(i)] += d[size_t(i)];
          }
        run_nccl_plan_on_host(plan_nccl_shards(n, L), nodes, data);
        for (int r = 0; r < world; ++r) ASSERT_EQ(data[size_t(r)], flat) << "rank " << r;
      }
}

// General floats: the same sum up to the summation order (relative 1e-6 of the absolute sum).
TEST(NcclPlan, HierarchicalPlanMatchesTheFlatSumOnRandomFloats) {
  std::mt19937 rng(7);
  std::normal_distribution<float> value(0.f, 1.f);
  const int nodes = 2, L = 4;
  const int64_t n = 1001;
  std::vector<std::vector<float>> data(size_t(nodes * L), std::vector<float>(static_cast<size_t>(n), 0.f));
  std::vector<double> flat(size_t(n), 0.0), mag(size_t(n), 0.0);
  for (auto& d : data)
    for (int64_t i = 0; i < n; ++i) {
      d[size_t(i)] = value(rng);
      flat[size_t(i)] += d[size_t(i)];
      mag[size_t(i)] += std::fabs(d[size_t(i)]);
    }
  run_nccl_plan_on_host(plan_nccl_shards(n, L), nodes, data);
  for (const auto& d : data)
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(d[size_t(i)], flat[size_t(i)], 1e-6 * mag[size_t(i)] + 1e-7) << i;
}

TEST(NcclPlan, SplitColorsGroupNodesAndLocalRanks) {
  // 2 nodes x 4: node communicators {0..3}, {4..7}; cross communicators {0,4}, {1,5}, ...
  for (int node = 0; node < 2; ++node)
    for (int local = 0; local < 4; ++local) {
      const NcclSplitColors c = nccl_split_colors(node, local);
      EXPECT_EQ(c.node_color, node);
      EXPECT_EQ(c.cross_color, local);
      EXPECT_EQ(c.node_key, local);
      EXPECT_EQ(c.cross_key, node);
    }
}

}  // namespace
}  // namespace sx::worker
