// The gradient Communicator under real MPI (singleton, np=2, np=4): bucketed averages equal a
// double-precision reference, flat == hierarchical (bitwise for two ranks, to rounding for more),
// the bucket launch order cannot change the result, a bucket-plan mismatch fails on every rank
// with a clear message, and the small collectives of MpiEnv.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/mpi/mpi_test_env.h"
#include "worker/comm_buckets.h"
#include "worker/communicator.h"

namespace sx::worker {
namespace {

using test::mpi_env;

// Deterministic gradient value of (rank, step, i) in [-1, 1): every rank can rebuild every rank's data.
float grad_value(int rank, int step, int64_t i) {
  uint64_t x = (static_cast<uint64_t>(rank) << 48) ^ (static_cast<uint64_t>(step) << 40) ^ static_cast<uint64_t>(i);
  x += 0x9e3779b97f4a7c15ull;  // splitmix64
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<float>(static_cast<double>(x >> 40) / static_cast<double>(1ull << 23) - 1.0);
}

std::vector<float> make_grads(int rank, int step, int64_t n) {
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) g[static_cast<size_t>(i)] = grad_value(rank, step, i);
  return g;
}

// Fake 2-rank nodes when the world splits evenly into >1 of them, so hierarchical runs all 3 stages.
int fake_ranks_per_node() {
  const int world = mpi_env().world_size();
  return world >= 4 && world % 2 == 0 ? 2 : 0;
}

CommOptions options_for(CommAlgorithm algorithm, int64_t bucket_floats, bool overlap) {
  CommOptions o;
  o.algorithm = algorithm;
  o.bucket_bytes = bucket_floats * static_cast<int64_t>(sizeof(float));
  o.overlap = overlap;
  o.ranks_per_node = fake_ranks_per_node();
  return o;
}

// Every rank agrees (so no rank runs on into a collective the others skip).
bool all_ranks(bool ok) {
  int64_t bad = ok ? 0 : 1;
  EXPECT_TRUE(mpi_env().allreduce_sum(std::span<int64_t>(&bad, 1)).is_ok());
  return bad == 0;
}

// ---- bucket plan (no communication) -----------------------------------------------------------

TEST(BucketPlan, CoversBufferContiguously) {
  auto plan = make_bucket_plan(1001, 100);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  ASSERT_EQ(plan->buckets.size(), 11u);
  int64_t expect_begin = 0;
  for (const Bucket& b : plan->buckets) {
    EXPECT_EQ(b.begin, expect_begin);
    EXPECT_GT(b.count(), 0);
    EXPECT_LE(b.count(), 100);
    expect_begin = b.end;
  }
  EXPECT_EQ(expect_begin, 1001);
  EXPECT_TRUE(make_bucket_plan(0, 10)->buckets.empty());
  EXPECT_FALSE(make_bucket_plan(10, 0).is_ok());
}

TEST(BucketPlan, EndsFallOnTensorBoundaries) {
  // Tensors [0,30) [30,60) [60,200) [200,210) [210,250): the 140-float tensor exceeds the bucket.
  const std::vector<int64_t> ends = {30, 60, 200, 210, 250};
  auto plan = make_bucket_plan(250, 100, ends);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  std::vector<int64_t> got;
  for (const Bucket& b : plan->buckets) got.push_back(b.end);
  EXPECT_EQ(got, (std::vector<int64_t>{60, 200, 250}));
  const std::vector<int64_t> unsorted = {30, 20};
  EXPECT_FALSE(make_bucket_plan(250, 100, unsorted).is_ok());
}

TEST(BucketPlan, HashSeesEveryCut) {
  auto a = make_bucket_plan(1000, 100), b = make_bucket_plan(1000, 101), c = make_bucket_plan(1001, 100);
  EXPECT_NE(a->hash(), b->hash());
  EXPECT_NE(a->hash(), c->hash());
  EXPECT_EQ(a->hash(), make_bucket_plan(1000, 100)->hash());
}

// ---- MpiEnv -----------------------------------------------------------------------------------

TEST(MpiEnv, PlaceInJob) {
  const MpiEnv& env = mpi_env();
  EXPECT_GE(env.world_size(), 1);
  EXPECT_GE(env.rank(), 0);
  EXPECT_LT(env.rank(), env.world_size());
  EXPECT_GE(env.local_rank(), 0);
  EXPECT_LT(env.local_rank(), env.local_size());
  EXPECT_EQ(env.node_count(), 1);  // loopback: one machine
  EXPECT_GE(env.thread_level(), MPI_THREAD_SERIALIZED);
}

TEST(MpiEnv, SmallCollectives) {
  MpiEnv& env = mpi_env();
  const int world = env.world_size();
  // Eval counts as int64: sum of (rank + 1) and a value past 2^32.
  std::vector<int64_t> counts = {env.rank() + 1, int64_t{1} << 40};
  ASSERT_TRUE(env.allreduce_sum(counts).is_ok());
  EXPECT_EQ(counts[0], static_cast<int64_t>(world) * (world + 1) / 2);
  EXPECT_EQ(counts[1], static_cast<int64_t>(world) << 40);
  std::vector<double> metrics = {0.5 * env.rank()};
  ASSERT_TRUE(env.allreduce_sum(metrics).is_ok());
  EXPECT_DOUBLE_EQ(metrics[0], 0.25 * world * (world - 1));
  std::vector<double> slowest = {static_cast<double>(env.rank())};
  ASSERT_TRUE(env.allreduce_max(slowest).is_ok());
  EXPECT_EQ(slowest[0], world - 1);
  // Parameter broadcast at start: everyone gets rank 0's values.
  std::vector<float> params = make_grads(env.rank(), 7, 1003);
  ASSERT_TRUE(env.bcast(params).is_ok());
  EXPECT_EQ(params, make_grads(0, 7, 1003));
  EXPECT_FALSE(env.bcast(params, world).is_ok());
  ASSERT_TRUE(env.barrier().is_ok());
}

// ---- Communicator -----------------------------------------------------------------------------

// Reference: mean over ranks in double, and a per-element bound on float rounding of the sum.
struct Reference {
  std::vector<double> mean, bound;
};
Reference reference(int step, int64_t n) {
  const int world = mpi_env().world_size();
  Reference ref{std::vector<double>(static_cast<size_t>(n), 0.0), std::vector<double>(static_cast<size_t>(n), 0.0)};
  for (int r = 0; r < world; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      const double v = grad_value(r, step, i);
      ref.mean[static_cast<size_t>(i)] += v;
      ref.bound[static_cast<size_t>(i)] += std::fabs(v);
    }
  }
  // world - 1 float additions, each off by <= 2^-24 of a partial sum <= sum |v|; then one rounding of the mean.
  for (int64_t i = 0; i < n; ++i) {
    ref.mean[static_cast<size_t>(i)] /= world;
    ref.bound[static_cast<size_t>(i)] = (world * 0x1p-24) * ref.bound[static_cast<size_t>(i)] / world + 1e-30;
  }
  return ref;
}

// One step: this rank's grads for `step`, all ready at once, then wait_all.
std::vector<float> reduce_once(Communicator& comm, std::vector<float>& grads, int step) {
  const std::vector<float> mine = make_grads(mpi_env().rank(), step, static_cast<int64_t>(grads.size()));
  std::copy(mine.begin(), mine.end(), grads.begin());
  Status s = comm.wait_all();
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return grads;
}

struct Case {
  CommAlgorithm algorithm;
  bool overlap;
  int64_t n, bucket_floats;
};

class CommAllreduce : public ::testing::TestWithParam<Case> {};

TEST_P(CommAllreduce, MatchesDoubleReferenceOverSteps) {
  const Case c = GetParam();
  std::vector<float> grads(static_cast<size_t>(c.n));
  auto comm = Communicator::create(mpi_env(), grads, options_for(c.algorithm, c.bucket_floats, c.overlap));
  ASSERT_TRUE(all_ranks(comm.is_ok())) << comm.status().to_string();
  EXPECT_EQ((*comm)->plan().buckets.size(), static_cast<size_t>((c.n + c.bucket_floats - 1) / c.bucket_floats));
  if (c.algorithm != CommAlgorithm::kAuto) {
    EXPECT_EQ((*comm)->algorithm(), c.algorithm);
  }
  for (int step = 0; step < 2; ++step) {  // the communicator is reused: step state must reset
    const std::vector<float> got = reduce_once(**comm, grads, step);
    const Reference ref = reference(step, c.n);
    int64_t bad = 0;
    for (int64_t i = 0; i < c.n; ++i) {
      const size_t k = static_cast<size_t>(i);
      if (std::fabs(got[k] - ref.mean[k]) > ref.bound[k] + 1e-7 * std::fabs(ref.mean[k])) {
        if (++bad <= 3) ADD_FAILURE() << "step " << step << " i " << i << ": " << got[k] << " vs " << ref.mean[k];
      }
    }
    EXPECT_EQ(bad, 0);
  }
  EXPECT_EQ((*comm)->last_step().reduce_s >= 0, true);
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, CommAllreduce,
    ::testing::Values(Case{CommAlgorithm::kFlat, true, 1, 1}, Case{CommAlgorithm::kFlat, true, 1001, 97},
                      Case{CommAlgorithm::kFlat, false, 100003, 16411}, Case{CommAlgorithm::kFlat, true, 100003, 16411},
                      Case{CommAlgorithm::kHierarchical, true, 7, 3}, Case{CommAlgorithm::kHierarchical, false, 100003, 16411},
                      Case{CommAlgorithm::kHierarchical, true, 100003, 16411}, Case{CommAlgorithm::kAuto, true, 65537, 8191}));

TEST(Communicator, FlatEqualsHierarchical) {
  const int64_t n = 200001;
  std::vector<float> flat_grads(n), hier_grads(n);
  auto flat = Communicator::create(mpi_env(), flat_grads, options_for(CommAlgorithm::kFlat, 16384, true));
  auto hier = Communicator::create(mpi_env(), hier_grads, options_for(CommAlgorithm::kHierarchical, 16384, true));
  ASSERT_TRUE(all_ranks(flat.is_ok() && hier.is_ok()));
  const std::vector<float> a = reduce_once(**flat, flat_grads, 0);
  const std::vector<float> b = reduce_once(**hier, hier_grads, 0);
  if (mpi_env().world_size() <= 2) {
    // One addition per element, and a + b == b + a: identical bits whatever the algorithms' order.
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  } else {
    // (r0 + r1) + (r2 + r3) vs Open MPI's order (ring chunks start at different ranks): to rounding.
    const Reference ref = reference(0, n);
    int64_t bad = 0, differ = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      differ += a[i] != b[i];
      if (std::fabs(a[i] - b[i]) > 2 * ref.bound[i]) ++bad;
    }
    EXPECT_EQ(bad, 0);
    if (mpi_env().rank() == 0) std::printf("flat vs hierarchical: %lld of %lld elements differ in the last bits\n",
                                           static_cast<long long>(differ), static_cast<long long>(n));
  }
}

TEST(Communicator, DeferredAverageLeavesTheSum) {
  const int64_t n = 10007;
  std::vector<float> grads(n), summed(n);
  CommOptions o = options_for(CommAlgorithm::kAuto, 1000, true);
  auto averaged = Communicator::create(mpi_env(), grads, o);
  o.average = false;
  auto sum = Communicator::create(mpi_env(), summed, o);
  ASSERT_TRUE(all_ranks(averaged.is_ok() && sum.is_ok()));
  const std::vector<float> mean = reduce_once(**averaged, grads, 4);
  const std::vector<float> total = reduce_once(**sum, summed, 4);
  const int world = mpi_env().world_size();
  EXPECT_EQ((*averaged)->grad_scale(), 1.f);
  EXPECT_EQ((*sum)->grad_scale(), 1.f / static_cast<float>(world));
  for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(total[i] / static_cast<float>(world), mean[i]) << i;
}

TEST(Communicator, LaunchOrderDoesNotChangeResult) {
  const int64_t n = 50021, bucket = 5003;
  const int rank = mpi_env().rank();
  std::vector<float> base_grads(n), grads(n);
  auto base = Communicator::create(mpi_env(), base_grads, options_for(CommAlgorithm::kAuto, bucket, true));
  auto comm = Communicator::create(mpi_env(), grads, options_for(CommAlgorithm::kAuto, bucket, true));
  ASSERT_TRUE(all_ranks(base.is_ok() && comm.is_ok()));
  const std::vector<float> expected = reduce_once(**base, base_grads, 3);

  const std::vector<float> mine = make_grads(rank, 3, n);
  std::copy(mine.begin(), mine.end(), grads.begin());
  // Each rank reports readiness differently: one bucket at a time, element by element, in random
  // jumps that go backwards and past the end, or not at all (wait_all launches everything).
  const BucketPlan& plan = (*comm)->plan();
  std::mt19937_64 rng(1234 + rank);
  switch (rank % 4) {
    case 0:
      for (size_t b = 0; b < plan.buckets.size(); ++b) {
        (*comm)->on_grads_ready(plan.buckets[b].end);
        EXPECT_EQ((*comm)->buckets_launched(), static_cast<int>(b + 1));
      }
      break;
    case 1:
      for (int64_t e = 0; e <= n; e += 17) (*comm)->on_grads_ready(e);
      break;
    case 2:
      for (int k = 0; k < 200; ++k) {
        const int64_t e = static_cast<int64_t>(rng() % static_cast<uint64_t>(n + n / 4));
        (*comm)->on_grads_ready(e);
        // Launched = buckets ending at or before the largest ready_end so far.
        EXPECT_LE((*comm)->buckets_launched(), static_cast<int>(plan.buckets.size()));
      }
      break;
    default:
      (*comm)->on_grads_ready(plan.buckets[0].end - 1);
      EXPECT_EQ((*comm)->buckets_launched(), 0);
      break;
  }
  Status s = (*comm)->wait_all();
  ASSERT_TRUE(all_ranks(s.is_ok())) << s.to_string();
  EXPECT_EQ(std::memcmp(grads.data(), expected.data(), grads.size() * sizeof(float)), 0);
  EXPECT_EQ((*comm)->buckets_launched(), 0);  // step state reset
}

TEST(Communicator, BucketsEndingOnTensorBoundaries) {
  // A parameter layout: ready_end values are tensor ends, as backward reports them.
  std::vector<int64_t> ends;
  for (int64_t e = 0, k = 1; e < 30000; ++k) ends.push_back(e = std::min<int64_t>(30000, e + 37 * k));
  std::vector<float> grads(30000);
  auto comm = Communicator::create(mpi_env(), grads, options_for(CommAlgorithm::kAuto, 4000, true), ends);
  ASSERT_TRUE(all_ranks(comm.is_ok())) << comm.status().to_string();
  const std::vector<float> mine = make_grads(mpi_env().rank(), 5, 30000);
  std::copy(mine.begin(), mine.end(), grads.begin());
  for (int64_t e : ends) (*comm)->on_grads_ready(e);
  ASSERT_TRUE(all_ranks((*comm)->wait_all().is_ok()));
  const Reference ref = reference(5, 30000);
  for (size_t i = 0; i < grads.size(); ++i) ASSERT_NEAR(grads[i], ref.mean[i], ref.bound[i] + 1e-7) << i;
}

TEST(Communicator, PlanMismatchIsAClearErrorOnEveryRank) {
  const MpiEnv& env = mpi_env();
  if (env.world_size() < 2) GTEST_SKIP() << "needs two ranks";
  // The last rank has one more gradient: a different model, as far as the plan can tell.
  std::vector<float> grads(env.rank() == env.world_size() - 1 ? 1001 : 1000);
  auto comm = Communicator::create(env, grads, options_for(CommAlgorithm::kFlat, 100, true));
  ASSERT_FALSE(comm.is_ok());
  const std::string message = comm.status().message();
  EXPECT_EQ(comm.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("bucket plan differs across ranks"), std::string::npos) << message;
  EXPECT_NE(message.find("rank " + std::to_string(env.world_size() - 1) + " has 11 buckets over 1001 floats"),
            std::string::npos) << message;
  EXPECT_NE(message.find("HINT"), std::string::npos) << message;
  // The job is still usable afterwards.
  ASSERT_TRUE(mpi_env().barrier().is_ok());
}

TEST(Communicator, AutoPicksHierarchicalOnlyForSeveralNodesWithSeveralRanks) {
  std::vector<float> grads(10);
  CommOptions o;  // real topology: one machine
  auto real = Communicator::create(mpi_env(), grads, o);
  ASSERT_TRUE(all_ranks(real.is_ok()));
  EXPECT_EQ((*real)->node_count(), 1);
  EXPECT_EQ((*real)->algorithm(), CommAlgorithm::kFlat);
  o.ranks_per_node = 1;  // every rank its own node: nothing to gain from a node stage
  auto one_each = Communicator::create(mpi_env(), grads, o);
  ASSERT_TRUE(all_ranks(one_each.is_ok()));
  EXPECT_EQ((*one_each)->node_count(), mpi_env().world_size());
  EXPECT_EQ((*one_each)->algorithm(), CommAlgorithm::kFlat);
  if (fake_ranks_per_node() > 0) {
    o.ranks_per_node = fake_ranks_per_node();
    auto fake = Communicator::create(mpi_env(), grads, o);
    ASSERT_TRUE(all_ranks(fake.is_ok()));
    EXPECT_EQ((*fake)->node_count(), mpi_env().world_size() / 2);
    EXPECT_EQ((*fake)->algorithm(), CommAlgorithm::kHierarchical);
  }
  EXPECT_FALSE(parse_comm_algorithm("ring").is_ok());
  EXPECT_EQ(parse_comm_algorithm("hierarchical").value(), CommAlgorithm::kHierarchical);
}

TEST(Communicator, AllreduceOutsideSteps) {
  std::vector<float> grads(100);
  auto comm = Communicator::create(mpi_env(), grads, options_for(CommAlgorithm::kHierarchical, 25, true));
  ASSERT_TRUE(all_ranks(comm.is_ok()));
  // SyncBN-style statistics: sum, then mean.
  std::vector<float> stats = {1.f, static_cast<float>(mpi_env().rank())};
  ASSERT_TRUE((*comm)->allreduce_sum(stats).is_ok());
  const int world = mpi_env().world_size();
  EXPECT_EQ(stats[0], static_cast<float>(world));
  EXPECT_EQ(stats[1], static_cast<float>(world * (world - 1) / 2));
  std::vector<float> ones(5, 3.f);
  ASSERT_TRUE((*comm)->allreduce_mean(ones).is_ok());
  EXPECT_EQ(ones, std::vector<float>(5, 3.f));
  // Not while buckets are in flight on this rank (launch, refuse, then finish the step everywhere).
  (*comm)->on_grads_ready(25);
  EXPECT_FALSE((*comm)->allreduce_sum(stats).is_ok());
  ASSERT_TRUE((*comm)->wait_all().is_ok());
}

TEST(Communicator, RejectsBadOptionsBeforeAnyCollective) {
  std::vector<float> grads(10);
  CommOptions o;
  o.bucket_bytes = 2;  // less than one float
  EXPECT_FALSE(Communicator::create(mpi_env(), grads, o).is_ok());  // argument checks are local: no collective ran
}

}  // namespace
}  // namespace sx::worker
