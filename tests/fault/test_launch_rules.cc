// The pure parts of sx_launch: what a resize changes in the job (elastic.keep_global_batch on and off,
// a global batch that cannot be split, scale_by_batch), host lists / hostfiles, and which hosts a
// failure is pinned on.
#include <gtest/gtest.h>

#include <fstream>

#include "launch/blame.h"
#include "launch/elastic.h"
#include "launch/hosts.h"

namespace sx::launch {
namespace {

worker::JobConfig job(int per_rank, int global, int accumulate, bool keep) {
  worker::JobConfig c;
  c.batch.per_rank = per_rank;
  c.batch.global = global;
  c.batch.accumulate = accumulate;
  c.elastic.keep_global_batch = keep;
  c.optimizer.lr = 0.1;
  c.schedule.warmup_start_lr = 0.01;
  c.schedule.min_lr = 0.001;
  return c;
}

TEST(Resize, SameWorldChangesNothing) {
  auto p = plan_resize(job(32, 0, 1, true), 3, 3);
  ASSERT_TRUE(p.is_ok());
  EXPECT_TRUE(p->overrides.empty());
  EXPECT_EQ(p->global_batch, 96);
  EXPECT_EQ(p->per_rank, 32);
}

TEST(Resize, KeepGlobalBatchAccumulatesInsteadOfGrowingThePerRankBatch) {
  // 16/rank x 3 x 2 = 96 -> on 2 ranks: A = 1 (48) and A = 2 (24) exceed 16, A = 3 gives 16.
  auto p = plan_resize(job(16, 0, 2, true), 3, 2);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->global_batch, 96);
  EXPECT_EQ(p->per_rank, 16);
  EXPECT_EQ(p->accumulate, 3);
  EXPECT_DOUBLE_EQ(p->lr_factor, 1.0);
  EXPECT_EQ(p->overrides, (std::vector<std::string>{"batch.global=96", "batch.per_rank=0", "batch.accumulate=3"}));
  // 32/rank x 3 = 96 on 2 ranks: 48 > 32, so A = 2 with 24 per rank.
  auto q = plan_resize(job(32, 0, 1, true), 3, 2);
  ASSERT_TRUE(q.is_ok());
  EXPECT_EQ(q->per_rank, 24);
  EXPECT_EQ(q->accumulate, 2);
  // Growing 2 -> 4 ranks: 48/rank x 2 = 96 -> 24/rank, no accumulation.
  auto g = plan_resize(job(48, 0, 1, true), 2, 4);
  ASSERT_TRUE(g.is_ok());
  EXPECT_EQ(g->per_rank, 24);
  EXPECT_EQ(g->accumulate, 1);
}

TEST(Resize, KeepGlobalBatchThatCannotBeSplitIsAClearError) {
  auto bad = plan_resize(job(0, 96, 1, true), 3, 5);  // 96 is not a multiple of 5
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("cannot be split evenly over 5 ranks"), std::string::npos);
  EXPECT_NE(bad.status().message().find("HINT"), std::string::npos);
  EXPECT_FALSE(plan_resize(job(0, 60, 1, true), 3, 7).is_ok());
}

TEST(Resize, WithoutKeepTheLrScalesLinearly) {
  worker::JobConfig c = job(32, 0, 1, false);
  c.schedule.values = {0.1, 0.01};
  auto p = plan_resize(c, 3, 2);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->global_batch, 64);
  EXPECT_EQ(p->per_rank, 32);
  EXPECT_DOUBLE_EQ(p->lr_factor, 64.0 / 96.0);
  auto has = [&](const std::string& prefix, double want) {
    for (const std::string& o : p->overrides)
      if (o.rfind(prefix + "=", 0) == 0) return std::abs(std::stod(o.substr(prefix.size() + 1)) - want) < 1e-12;
    return false;
  };
  EXPECT_TRUE(has("optimizer.lr", 0.1 * 2 / 3));
  EXPECT_TRUE(has("schedule.warmup_start_lr", 0.01 * 2 / 3));
  EXPECT_TRUE(has("schedule.min_lr", 0.001 * 2 / 3));
  std::string values;
  for (const std::string& o : p->overrides)
    if (o.rfind("schedule.values=[", 0) == 0) values = o.substr(17);
  ASSERT_FALSE(values.empty());
  const size_t comma = values.find(',');
  EXPECT_NEAR(std::stod(values.substr(0, comma)), 0.1 * 2 / 3, 1e-15);
  EXPECT_NEAR(std::stod(values.substr(comma + 1)), 0.01 * 2 / 3, 1e-16);
  c.schedule.scale_by_batch = true;  // the worker rescales from the global batch itself
  auto q = plan_resize(c, 3, 2);
  ASSERT_TRUE(q.is_ok());
  for (const std::string& o : q->overrides) EXPECT_EQ(o.find("lr"), std::string::npos) << o;
}

TEST(Hosts, ListAndHostfile) {
  auto h = parse_host_list("a,b:2,c", 1);
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(*h, (std::vector<Host>{{"a", 1}, {"b", 2}, {"c", 1}}));
  EXPECT_EQ(mpirun_host_arg(*h), "a:1,b:2,c:1");
  EXPECT_EQ(total_slots(*h), 4);
  EXPECT_FALSE(parse_host_list("a,b:x", 1).is_ok());
  EXPECT_FALSE(parse_host_list(",", 1).is_ok());
  const std::string path = ::testing::TempDir() + "/hosts_test";
  std::ofstream(path) << "# cluster\nn1 slots=2\n\nn2   # spare\n";
  auto f = read_hostfile(path, 1);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(*f, (std::vector<Host>{{"n1", 2}, {"n2", 1}}));
  std::ofstream(path) << "n1 cpus=2\n";
  auto bad = read_hostfile(path, 1);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find(":1"), std::string::npos);
}

TEST(Hosts, ProbeRunsTheCommandPerHost) {
  // agent "" runs the command locally; `sh -c 'exit 3'` fails, `true` succeeds, a sleeper times out.
  std::vector<Host> hosts = {{"x", 1}};
  EXPECT_EQ(probe_hosts("", hosts, {"true"}, 5), std::vector<bool>{true});
  EXPECT_EQ(probe_hosts("", hosts, {"sh", "-c", "exit 3"}, 5), std::vector<bool>{false});
  EXPECT_EQ(probe_hosts("", hosts, {"sleep", "10"}, 0.3), std::vector<bool>{false});
  // With an agent the host name comes first: `echo HOST cmd` succeeds.
  EXPECT_EQ(probe_hosts("env", {{"A=1", 1}}, {"true"}, 5), std::vector<bool>{true});
}

}  // namespace
}  // namespace sx::launch

namespace sx::launch {

TEST(Blame, MpirunsFirstDeathWinsOverEveryRankTheCoordinatorCallsDead) {
  MpirunReport report;
  report.on_line("Primary job  terminated normally, but 1 process returned");
  report.on_line("mpirun noticed that process rank 1 with PID 26145 on node sxf2 exited on signal 9 (Killed).");
  EXPECT_EQ(report.died(), std::vector<std::string>{"sxf2"});
  EXPECT_TRUE(report.lost().empty());
  EXPECT_NE(report.first_line().find("rank 1"), std::string::npos);
  // A late poll: the ranks mpirun killed while aborting are dead too, a moment younger (or older: ages
  // are only as fine as the heartbeat interval).
  const std::vector<DeadRank> all = {{"sxf1", 2.4}, {"sxf2", 2.2}, {"sxf3", 2.1}};
  EXPECT_EQ(blame_hosts(report.died(), all), std::vector<std::string>{"sxf2"});
}

TEST(Blame, WithoutMpirunTheLongestSilentHostOnly) {
  const std::vector<DeadRank> dead = {{"b", 2.1}, {"a", 3.0}, {"a", 2.9}, {"c", 2.05}};
  EXPECT_EQ(blame_hosts({}, dead), std::vector<std::string>{"a"});
  EXPECT_TRUE(blame_hosts({}, {}).empty());
}

TEST(Blame, LostDaemonsAreReportedSeparately) {
  MpirunReport report;
  report.on_line("  HNP daemon   : [[1234,0],0] on node sxf1");
  report.on_line("  Remote daemon: [[1234,0],2] on node sxf3");
  EXPECT_TRUE(report.died().empty());
  EXPECT_EQ(report.lost(), std::vector<std::string>{"sxf3"});
  EXPECT_EQ(blame_hosts(report.lost(), {{"sxf1", 5}}), std::vector<std::string>{"sxf3"});
}

}  // namespace sx::launch

namespace sx::launch {
namespace {

// cluster-configs/hosts-Nx8: N hosts of 8 slots, read the way sx_launch (and Open MPI) read them.
TEST(Hosts, ClusterConfigHostfiles) {
  for (int n : {1, 2, 4, 8}) {
    const std::string path = std::string(SX_SOURCE_DIR) + "/cluster-configs/hosts-" + std::to_string(n) + "x8";
    auto hosts = read_hostfile(path, 1);
    ASSERT_TRUE(hosts.is_ok()) << hosts.status().to_string();
    ASSERT_EQ(hosts->size(), size_t(n)) << path;
    EXPECT_EQ(total_slots(*hosts), 8 * n) << path;
    for (const Host& h : *hosts) EXPECT_EQ(h.slots, 8) << path << ": " << h.name;
  }
}

}  // namespace
}  // namespace sx::launch
