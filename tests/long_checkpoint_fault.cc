// Long version of test_checkpoint_fault.cc (label `long`): many more SIGKILL rounds, bigger files.
#include <gtest/gtest.h>

#include "tests/checkpoint_fault_util.h"

namespace sx::storage {
namespace {

using testing_util::FaultStats;
using testing_util::TempDir;

TEST(LongCheckpointFault, FiveHundredSyncKills) {
  TempDir dir("long_sigkill");
  const FaultStats s = testing_util::run_kill_trials(dir.path, 500, 8, /*async=*/false, 7);
  std::printf("[ info ] %d kills: %d left a .tmp, %d advanced latest\n", s.trials, s.killed_mid_write, s.advanced);
  EXPECT_EQ(s.trials, 500);
}

TEST(LongCheckpointFault, TwoHundredAsyncKills) {
  TempDir dir("long_sigkill_async");
  const FaultStats s = testing_util::run_kill_trials(dir.path, 200, 8, /*async=*/true, 8);
  std::printf("[ info ] %d kills: %d left a .tmp, %d advanced latest\n", s.trials, s.killed_mid_write, s.advanced);
  EXPECT_EQ(s.trials, 200);
}

}  // namespace
}  // namespace sx::storage
