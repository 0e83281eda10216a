// sx_launch keeps its coordinator with a budget: a real sx_launch (localhost, a stand-in mpirun that
// just waits, so no rank ever registers) whose sx_coord is SIGKILLed again and again restarts it with
// a backoff, and once --max-coord-restarts are used it stops the job and gives up (exit 1, the reason
// in its log and launch.jsonl) instead of restarting forever. The coordinator it starts listens on
// loopback only, with the job's keys in RUN_DIR/coord (mode 0600).
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "coordinator/job_dir.h"
#include "tests/test_train_util.h"

namespace sx::launch {
namespace {

namespace fs = std::filesystem;
using sx::worker::testing::bin_dir;
using sx::worker::testing::read_text;
using sx::worker::testing::spawn;
using sx::worker::testing::temp_dir;

// The pid in RUN_DIR/coord/coord.json once it differs from `old` (0 when none came within `seconds`).
int64_t next_coord_pid(const fs::path& coord_dir, int64_t old, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    auto info = coord::read_server_info(coord_dir.string());
    if (info.is_ok() && info->pid > 0 && info->pid != old && ::kill(pid_t(info->pid), 0) == 0) return info->pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}

// Waits until the log says `text` and the coordinator answers the job's own status query (so the
// supervisor is done starting it), then a little longer for the supervisor's own hello.
bool wait_up(const fs::path& log, const std::string& text, const fs::path& coord_dir) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < end) {
    if (read_text(log).find(text) != std::string::npos &&
        std::system(((bin_dir() / "sx_coord").string() + " status --timeout 1 --job " + coord_dir.string() +
                     " >/dev/null 2>&1").c_str()) == 0) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(LaunchCoord, CoordinatorRestartsBackOffAndAreCapped) {
  const fs::path dir = temp_dir("launch_coord");
  const fs::path run = dir / "run";
  const fs::path fake = dir / "fake-mpirun";
  { std::ofstream(fake) << "#!/bin/sh\nexec sleep 600\n"; }
  fs::permissions(fake, fs::perms::owner_all);
  const std::string config = std::string(SX_TESTS_DIR) + "/../cluster-configs/fashion_mnist_local.yaml";
  const pid_t l = spawn({(bin_dir() / "sx_launch").string(), "-c", config, "-o", "run_dir=" + run.string(), "--hosts",
                         "localhost", "--mpirun", fake.string(), "--start-timeout", "600", "--max-coord-restarts", "2",
                         "--coord-listen", "tcp://127.0.0.1:" + std::to_string(20000 + ::getpid() % 20000)},
                        dir / "launch.log");
  ASSERT_TRUE(wait_up(dir / "launch.log", "launch 0:", run / "coord")) << read_text(dir / "launch.log");
  int64_t pid = next_coord_pid(run / "coord", 0, 120);
  ASSERT_GT(pid, 0) << read_text(dir / "launch.log");
  struct stat st;
  ASSERT_EQ(::stat((run / "coord" / "coord_client.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  for (int kill_no = 1; kill_no <= 2; ++kill_no) {  // two restarts are allowed
    ::kill(pid_t(pid), SIGKILL);
    pid = next_coord_pid(run / "coord", pid, 120);
    ASSERT_GT(pid, 0) << "no restart after kill " << kill_no << "\n" << read_text(dir / "launch.log");
    ASSERT_TRUE(wait_up(dir / "launch.log", "restart " + std::to_string(kill_no) + " of at most 2", run / "coord"))
        << read_text(dir / "launch.log");
  }
  ::kill(pid_t(pid), SIGKILL);  // the third death is one too many
  int status = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (::waitpid(l, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string log = read_text(dir / "launch.log");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 1) << log;
  EXPECT_NE(log.find("restart 2 of at most 2"), std::string::npos) << log;
  EXPECT_NE(log.find("the coordinator could not be kept running: 2 restarts"), std::string::npos) << log;
  EXPECT_NE(read_text(run / "launch.jsonl").find("could not be kept running"), std::string::npos);
  EXPECT_EQ(next_coord_pid(run / "coord", pid, 1), 0);  // nothing was started after that
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::launch
