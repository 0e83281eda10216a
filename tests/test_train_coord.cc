// sx_worker with a real sx_coord (both child processes on 127.0.0.1):
//  - an LR override stored before the job starts (`sx_coord set-lr --from-step 20`) reaches rank 0,
//    is broadcast over MPI, and both ranks of `mpirun -np 2` switch at the same step; metrics.jsonl
//    shows the new LR from that step on and the scheduled one before; `status --json` lists both
//    ranks with the metrics they posted.
//  - a coordinator endpoint nobody listens on fails within coord.connect_timeout_s, naming the
//    endpoint; coord.endpoint=none trains without one.
#include <chrono>
#include <cmath>
#include <map>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "coordinator/keys.h"
#include "tests/test_coord_util.h"
#include "tests/test_train_util.h"

namespace sx::worker::testing {
namespace {

namespace ct = sx::coord::testing;

class TrainCoord : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(temp_dir("coord"));
    make_datasets(*root_);
  }
  static void TearDownTestSuite() {
    if (!std::getenv("SX_KEEP_TEST_DIRS")) fs::remove_all(*root_);
    delete root_;
  }
  static fs::path* root_;
};
fs::path* TrainCoord::root_ = nullptr;

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(p));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST_F(TrainCoord, OverrideSwitchesLrAtTheSameStepOnEveryRank) {
  ct::ServerProc srv(ct::fresh_job_dir("train_coord"), /*dead_after=*/10);
  ASSERT_TRUE(srv.start());
  int rc = 0;
  std::string out = ct::run_cli("set-lr --job " + srv.dir() + " --lr 0.001 --from-step 20", &rc);
  ASSERT_EQ(rc, 0) << out;

  // The run dir's last component is the coordinator's job name (coord.job's default).
  const fs::path run_dir = *root_ / fs::path(srv.dir()).filename();
  const fs::path log = run_dir.string() + ".log";
  // 256 samples / (2 ranks x 8) = 16 steps per epoch, 3 epochs = 48 steps; a train record every step.
  ASSERT_EQ(run(mpirun(2, worker_args(*root_, run_dir,
                                      {"coord.endpoint=" + srv.endpoint(), "coord.keys=" + srv.dir(), "coord.connect_timeout_s=10",
                                       "batch.per_rank=8", "log.every_steps=1", "eval.at_end=false",
                                       "eval.every_epochs=0", "checkpoint.every_epochs=0"})),
                log),
            0);
  const std::string text = read_text(log);

  // Every rank logs the switch, at the same step.
  std::map<int, int64_t> switch_step;
  const std::regex re(R"(rank (\d+): LR override #(\d+) -> ([0-9.eE+-]+) from step (\d+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    const int rank = std::stoi((*it)[1]);
    EXPECT_FALSE(switch_step.count(rank)) << "rank " << rank << " switched twice:\n" << text;
    switch_step[rank] = std::stoll((*it)[4]);
    EXPECT_DOUBLE_EQ(std::stod((*it)[3]), 0.001);
  }
  ASSERT_EQ(switch_step.size(), 2u) << text;
  EXPECT_EQ(switch_step[0], switch_step[1]) << text;
  const int64_t s = switch_step[0];
  // Stored before the start, the override comes with the first heartbeat reply, which rank 0 waits
  // for before step 0: it takes effect exactly at its from-step.
  EXPECT_EQ(s, 20) << text;

  // metrics.jsonl: train record k holds the LR of step k-1 (k steps done).
  int lr_records = 0, after = 0, before = 0;
  for (const nlohmann::json& r : read_jsonl(run_dir / "metrics.jsonl")) {
    const std::string kind = r.value("kind", "");
    if (kind == "lr_override") {
      ++lr_records;
      EXPECT_EQ(r["step"].get<int64_t>(), s);
      EXPECT_DOUBLE_EQ(r["lr"].get<double>(), 0.001);
      EXPECT_EQ(r["rank"].get<int>(), 0);
    }
    if (kind != "train") continue;
    const int64_t k = r["step"].get<int64_t>();
    const double lr = r["lr"].get<double>();
    if (k - 1 >= s) {
      ++after;
      EXPECT_DOUBLE_EQ(lr, 0.001) << "record step " << k;
    } else {
      ++before;
      EXPECT_GT(std::fabs(lr - 0.001), 1e-6) << "record step " << k << " switched early";
    }
  }
  EXPECT_EQ(lr_records, 1);
  EXPECT_EQ(before + after, 48);
  EXPECT_GT(after, 0);

  // The coordinator knew both ranks and got their metrics (they are dead or alive by now).
  out = ct::run_cli("status --json --job " + srv.dir(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const nlohmann::json st = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(st["world_size"].get<int>(), 2);
  ASSERT_EQ(st["ranks"].size(), 2u) << out;
  for (const nlohmann::json& r : st["ranks"]) {  // the final step: the link flushes it at the end
    EXPECT_EQ(r["step"].get<int64_t>(), 48) << out;
    EXPECT_DOUBLE_EQ(r["lr"].get<double>(), 0.001) << out;
    EXPECT_GT(r["mem_bytes"].get<int64_t>(), 0) << out;
  }
}

TEST_F(TrainCoord, UnreachableCoordinatorFailsWithinTheTimeoutNamingIt) {
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(ct::free_port());  // nobody listens
  const fs::path run_dir = *root_ / "dead_coord";
  const fs::path keys = *root_ / "dead_coord_keys";  // a job's keys, so only the endpoint is wrong
  fs::create_directories(keys);
  ASSERT_TRUE(sx::coord::load_or_create_job_keys(keys.string()).is_ok());
  const pid_t pid = spawn(worker_args(*root_, run_dir, {"coord.endpoint=" + endpoint, "coord.keys=" + keys.string(),
                                                        "coord.connect_timeout_s=2",
                                                        "max_steps=2"}),
                          run_dir.string() + ".log");
  // It gives up by itself (a worker that waited forever would still run at the generous deadline).
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (waitpid(pid, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (waitpid(pid, &status, WNOHANG) == 0 && kill(pid, 0) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "sx_worker still waits for an unreachable coordinator after 120 s";
  }
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  const std::string text = read_text(run_dir.string() + ".log");
  EXPECT_NE(rc, 0) << text;
  EXPECT_NE(text.find(endpoint), std::string::npos) << text;
  EXPECT_NE(text.find("coord.endpoint"), std::string::npos) << text;
  EXPECT_NE(text.find("none"), std::string::npos) << text;  // the hint: train without a coordinator
}

TEST_F(TrainCoord, NoCoordinatorTrainsNormally) {
  const fs::path run_dir = *root_ / "no_coord";
  ASSERT_EQ(run(worker_args(*root_, run_dir, {"coord.endpoint=none", "max_steps=4", "batch.per_rank=16",
                                              "eval.at_end=false", "eval.every_epochs=0"}),
                run_dir.string() + ".log"),
            0);
  EXPECT_TRUE(fs::exists(run_dir / "ckpt-00000004.h5"));
  EXPECT_EQ(read_text(run_dir.string() + ".log").find("LR override"), std::string::npos);
}

}  // namespace
}  // namespace sx::worker::testing
