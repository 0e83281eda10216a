// One job per run dir (storage/run_lock.h) with real processes: a forked holder, a SIGKILLed holder
// whose file stays behind, a file naming a live process without a flock, the launcher's token, the
// unique temporaries of write_file_atomic under two concurrent writers; and the binaries: a second
// `sx_coord serve`, an `sx_worker` and an `sx_launch` on a held dir exit at once naming the holder.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "storage/fs_util.h"
#include "storage/run_lock.h"
#include "test_train_util.h"

namespace sx::storage {
namespace {

namespace fs = std::filesystem;
using sx::worker::testing::bin_dir;
using sx::worker::testing::read_text;
using sx::worker::testing::spawn;
using sx::worker::testing::temp_dir;
using sx::worker::testing::wait_exit;

// A child process that takes DIR/NAME and then waits to be killed; returns once it holds the lock.
pid_t fork_holder(const fs::path& dir, const std::string& name, const std::string& token = "") {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    auto lock = RunLock::acquire(dir.string(), name, "test holder", token);
    const char ok = lock.is_ok() ? '1' : '0';
    (void)!::write(fds[1], &ok, 1);
    for (;;) ::pause();
  }
  ::close(fds[1]);
  char ok = 0;
  EXPECT_EQ(::read(fds[0], &ok, 1), 1);
  ::close(fds[0]);
  EXPECT_EQ(ok, '1');
  return pid;
}

void kill_wait(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// Waits (generously) for a child to exit; -1 if it did not within `seconds`.
int wait_exit_within(pid_t pid, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST(RunLock, SecondHolderIsRefusedNamingTheFirst) {
  const fs::path dir = temp_dir("lock_second");
  const pid_t holder = fork_holder(dir, "run.lock");
  auto second = RunLock::acquire(dir.string(), "run.lock", "me");
  ASSERT_FALSE(second.is_ok());
  const std::string msg = second.status().message();
  EXPECT_NE(msg.find((dir / "run.lock").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("test holder pid " + std::to_string(holder) + " on host " + this_host_name()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("another job uses this directory"), std::string::npos) << msg;
  // The refused attempt left the holder's file alone.
  auto h = read_lock_holder((dir / "run.lock").string());
  ASSERT_TRUE(h.is_ok()) << h.status().to_string();
  EXPECT_EQ(h->pid, holder);
  kill_wait(holder);
  fs::remove_all(dir);
}

TEST(RunLock, LockOfAKilledProcessIsTakenOver) {
  const fs::path dir = temp_dir("lock_stale");
  const pid_t holder = fork_holder(dir, "run.lock");
  kill_wait(holder);  // SIGKILL: the file stays, naming a process that is gone
  ASSERT_TRUE(fs::exists(dir / "run.lock"));
  auto lock = RunLock::acquire(dir.string(), "run.lock", "me");
  ASSERT_TRUE(lock.is_ok()) << lock.status().to_string();
  ASSERT_TRUE((*lock)->taken_over().has_value());
  EXPECT_EQ((*lock)->taken_over()->pid, holder);
  auto h = read_lock_holder((dir / "run.lock").string());
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->pid, ::getpid());
  EXPECT_EQ(h->program, "me");
  EXPECT_EQ(h->start_ticks, process_start_ticks(::getpid()));
  lock->reset();  // released: the file goes
  EXPECT_FALSE(fs::exists(dir / "run.lock"));
  fs::remove_all(dir);
}

// Where flock is not enforced (some network file systems), the file still protects: it names a
// process that runs on this host with the same start time, so it is not taken over.
TEST(RunLock, FileNamingALiveProcessIsNotTakenOver) {
  const fs::path dir = temp_dir("lock_live");
  const pid_t child = ::fork();
  if (child == 0) {
    for (;;) ::pause();
  }
  nlohmann::json j = {{"host", this_host_name()}, {"pid", child},        {"start_ticks", process_start_ticks(child)},
                      {"started_unix", 1},        {"program", "ghost"}, {"token", ""}};
  std::ofstream(dir / "run.lock") << j.dump();
  auto lock = RunLock::acquire(dir.string(), "run.lock", "me");
  ASSERT_FALSE(lock.is_ok());
  EXPECT_NE(lock.status().message().find("ghost pid " + std::to_string(child)), std::string::npos)
      << lock.status().message();
  // A reused pid (other start time) does not count as alive.
  j["start_ticks"] = process_start_ticks(child) + 12345;
  std::ofstream(dir / "run.lock", std::ios::trunc) << j.dump();
  auto again = RunLock::acquire(dir.string(), "run.lock", "me");
  EXPECT_TRUE(again.is_ok()) << again.status().to_string();
  kill_wait(child);
  fs::remove_all(dir);
}

TEST(RunLock, TheHoldersTokenInheritsOthersAreRefused) {
  const fs::path dir = temp_dir("lock_token");
  const pid_t holder = fork_holder(dir, "run.lock", "tok-123");
  auto inherited = RunLock::acquire(dir.string(), "run.lock", "rank 0", "", "tok-123");
  ASSERT_TRUE(inherited.is_ok()) << inherited.status().to_string();
  EXPECT_EQ(inherited->get(), nullptr);  // nothing to release: the holder keeps it
  EXPECT_FALSE(RunLock::acquire(dir.string(), "run.lock", "rank 0", "", "tok-999").is_ok());
  EXPECT_FALSE(RunLock::acquire(dir.string(), "run.lock", "rank 0").is_ok());
  kill_wait(holder);
  fs::remove_all(dir);
}

// Two processes replace the same file 300 times each: every read sees one whole version, every call
// succeeds, and no temporary is left (with one fixed `path.tmp` both wrote into the same file).
TEST(WriteFileAtomic, TwoWritersNeverMixAndLeaveNoTemporaries) {
  const fs::path dir = temp_dir("atomic_two");
  const std::string path = (dir / "state.json").string();
  const std::string a(20000, 'a'), b(30000, 'b');
  const pid_t child = ::fork();
  if (child == 0) {
    for (int i = 0; i < 300; ++i)
      if (!write_file_atomic(path, b).is_ok()) ::_exit(1);
    ::_exit(0);
  }
  int failures = 0, mixed = 0;
  for (int i = 0; i < 300; ++i) {
    if (!write_file_atomic(path, a).is_ok()) ++failures;
    const std::string now = read_text(path);
    if (now != a && now != b) ++mixed;
  }
  EXPECT_EQ(wait_exit(child), 0);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(mixed, 0);
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "state.json");
  fs::remove_all(dir);
}

TEST(OneJobPerDir, SecondCoordinatorExitsNamingTheFirst) {
  const fs::path dir = temp_dir("lock_coord");
  const std::string coord = (bin_dir() / "sx_coord").string();
  const pid_t first = spawn({coord, "serve", "--job", dir.string(), "--listen", "tcp://127.0.0.1:*"}, dir / "first.log");
  // Wait for the first to be up (it writes coord.json after taking the lock and binding).
  for (int i = 0; i < 1500 && !fs::exists(dir / "coord.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(dir / "coord.json")) << read_text(dir / "first.log");
  const std::string info_before = read_text(dir / "coord.json");
  const pid_t second = spawn({coord, "serve", "--job", dir.string(), "--listen", "tcp://127.0.0.1:*"}, dir / "second.log");
  const int rc = wait_exit_within(second, 60);
  const std::string log = read_text(dir / "second.log");
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, -1) << "the second sx_coord did not exit";
  EXPECT_NE(log.find("sx_coord serve pid " + std::to_string(first)), std::string::npos) << log;
  EXPECT_EQ(read_text(dir / "coord.json"), info_before);  // the first one's files are untouched
  ::kill(first, SIGTERM);
  EXPECT_EQ(wait_exit(first), 0);
  EXPECT_FALSE(fs::exists(dir / "coord.lock"));
  if (rc == -1) kill_wait(second);
  fs::remove_all(dir);
}

TEST(OneJobPerDir, WorkerOnAHeldRunDirExitsNamingTheHolder) {
  const fs::path dir = temp_dir("lock_worker");
  const fs::path run = dir / "run";
  fs::create_directories(run);
  const pid_t holder = fork_holder(run, "run.lock", "launcher-token");
  const std::vector<std::string> args = {(bin_dir() / "sx_worker").string(), "-o", "run_dir=" + run.string(),
                                         "-o", "data.train=" + (dir / "no-such-data").string(), "-o",
                                         "log.progress=off"};
  const pid_t w = spawn(args, dir / "worker.log");
  const int rc = wait_exit_within(w, 120);
  const std::string log = read_text(dir / "worker.log");
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, -1) << "sx_worker did not exit";
  EXPECT_NE(log.find("run.lock is held by test holder pid " + std::to_string(holder)), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(run / "config.yaml"));

  // With the holder's token (how sx_launch's rank 0 runs), the lock is inherited: the worker gets past
  // it and fails on the missing data instead.
  ::setenv("SX_RUN_LOCK_TOKEN", "launcher-token", 1);
  const pid_t w2 = spawn(args, dir / "worker2.log");
  ::unsetenv("SX_RUN_LOCK_TOKEN");
  const int rc2 = wait_exit_within(w2, 120);
  const std::string log2 = read_text(dir / "worker2.log");
  EXPECT_NE(rc2, 0);
  EXPECT_EQ(log2.find("run.lock"), std::string::npos) << log2;
  EXPECT_NE(log2.find("no-such-data"), std::string::npos) << log2;
  kill_wait(holder);
  fs::remove_all(dir);
}

TEST(OneJobPerDir, LauncherOnAHeldRunDirExitsBeforeStartingAnything) {
  const fs::path dir = temp_dir("lock_launch");
  const fs::path run = dir / "run";
  fs::create_directories(run);
  const pid_t holder = fork_holder(run, "run.lock");
  const std::string config = std::string(SX_TESTS_DIR) + "/../cluster-configs/fashion_mnist_local.yaml";
  const pid_t l = spawn({(bin_dir() / "sx_launch").string(), "-c", config, "-o", "run_dir=" + run.string(), "--hosts",
                         "localhost",
                         "--coord-listen", "tcp://127.0.0.1:*"},
                        dir / "launch.log");
  const int rc = wait_exit_within(l, 120);
  const std::string log = read_text(dir / "launch.log");
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, -1) << "sx_launch did not exit";
  EXPECT_NE(log.find("run.lock is held by test holder pid " + std::to_string(holder)), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(run / "coord" / "coord.json"));  // no coordinator was started
  EXPECT_FALSE(fs::exists(run / "launch-0.log"));          // no mpirun
  kill_wait(holder);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::storage
