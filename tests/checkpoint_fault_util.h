// SIGKILL fault injection for checkpoint writing, shared by test_checkpoint_fault.cc and
// long_checkpoint_fault.cc: a forked child saves checkpoints in a loop, the parent kills it at a
// random moment and checks that `latest` still names a checkpoint that loads and verifies.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "storage/async_writer.h"
#include "storage/checkpoint.h"
#include "tests/checkpoint_test_util.h"

namespace sx::storage::testing_util {

// ~`mib` MiB of params + momentum + BN statistics with the real naming scheme.
inline Tensors fault_model(int mib) {
  Tensors m;
  const int64_t rows = 64 * mib;  // (rows, 1024) fp32 per pair of tensors = mib MiB in total
  m.add("params/stage2.block0.conv2.weight", {rows / 2, 32, 4, 4});  // (OC, C/G, KH, KW)
  m.add("params/fc.weight", {rows / 2, 512});
  m.add("momentum/stage2.block0.conv2.weight", {rows / 2, 32, 4, 4});
  m.add("momentum/fc.weight", {rows / 2, 512});
  m.add("bn_stats/stage2.block0.bn2.running_mean", {256});
  m.add("bn_stats/stage2.block0.bn2.running_var", {256});
  return m;
}

inline void fill_pattern(Tensors& m, int64_t step) {
  for (size_t t = 0; t < m.t.size(); ++t)
    for (size_t i = 0; i < m.t[t].data.size(); ++i) m.t[t].data[i] = pattern_value(step, t, i);
}

inline CheckpointMeta fault_meta(int64_t step) {
  CheckpointMeta meta;
  meta.step = step;
  meta.samples_seen = step * 64;
  meta.config_text = "fault test step " + std::to_string(step);
  meta.model_preset = "fault";
  return meta;
}

// The child: save steps start, start+1, ... until killed. Never returns.
[[noreturn]] inline void writer_child(const std::string& dir, int64_t start, int mib, bool async, int keep) {
  Tensors m = fault_model(mib);
  AsyncCheckpointWriter* writer = async ? new AsyncCheckpointWriter(dir, {.keep_last = keep}) : nullptr;
  for (int64_t step = start;; ++step) {
    fill_pattern(m, step);
    CheckpointState state{fault_meta(step), m.refs()};
    Status st = writer ? writer->submit(state) : save_checkpoint(dir, state, {.keep_last = keep});
    if (!st.is_ok()) {
      std::fprintf(stderr, "child: %s\n", st.to_string().c_str());
      _exit(3);
    }
  }
}

struct FaultStats {
  int trials = 0, no_checkpoint_yet = 0, killed_mid_write = 0, advanced = 0;
};

// Runs `trials` kill rounds against one directory. Returns the stats; failures are gtest failures.
inline FaultStats run_kill_trials(const std::string& dir, int trials, int mib, bool async, uint32_t seed) {
  const int keep = 2;
  // Calibrate the random kill delay on the time one save takes here.
  double save_seconds = 0;
  {
    Tensors m = fault_model(mib);
    fill_pattern(m, 0);
    const std::string scratch = dir + "_calibrate";
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(save_checkpoint(scratch, {fault_meta(0), m.refs()}).is_ok());
    save_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::error_code ec;
    std::filesystem::remove_all(scratch, ec);
  }
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> delay(0.0, 3.0 * save_seconds);
  FaultStats stats;
  int64_t last_step = -1;
  Tensors loaded = fault_model(mib);
  for (int trial = 0; trial < trials; ++trial) {
    const pid_t pid = ::fork();
    if (pid == 0) writer_child(dir, last_step + 1, mib, async, keep);
    EXPECT_GT(pid, 0);
    if (pid <= 0) return stats;
    std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ::waitpid(pid, &wstatus, 0);
    EXPECT_TRUE(WIFSIGNALED(wstatus)) << "writer child exited on its own (status " << wstatus << ")";
    ++stats.trials;

    int tmp = 0, ckpts = 0;
    for (const std::string& n : dir_names(dir)) {
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) ++tmp;
      else if (n.rfind("ckpt-", 0) == 0) ++ckpts;
    }
    if (tmp > 0) ++stats.killed_mid_write;
    EXPECT_LE(tmp, 2) << "stale .tmp files are not cleaned up";
    // keep, plus one renamed before `latest` moved to it or spared from retention by the kill.
    EXPECT_LE(ckpts, keep + 1) << "retention does not keep up";

    // Strict load: `latest` itself must load and verify; no fallback allowed.
    auto r = load_latest(dir, loaded.slots(), {.fallback = false});
    if (!r.is_ok() && r.status().code() == StatusCode::kNotFound && last_step < 0 &&
        !std::filesystem::exists(dir + "/latest")) {
      ++stats.no_checkpoint_yet;  // killed before the first save completed
      continue;
    }
    EXPECT_TRUE(r.is_ok()) << "trial " << trial << ": " << r.status().to_string();
    if (!r.is_ok()) return stats;
    EXPECT_GE(r->meta.step, last_step);
    EXPECT_EQ(r->meta, fault_meta(r->meta.step));
    Tensors expect = fault_model(mib);
    fill_pattern(expect, r->meta.step);
    for (size_t t = 0; t < expect.t.size(); ++t)
      EXPECT_TRUE(bits_equal(expect.t[t].data, loaded.t[t].data)) << "trial " << trial << " " << expect.t[t].name;
    if (r->meta.step > last_step) ++stats.advanced;
    last_step = r->meta.step;
    if (::testing::Test::HasFailure()) return stats;
  }
  return stats;
}

}  // namespace sx::storage::testing_util
