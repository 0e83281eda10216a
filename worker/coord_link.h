// defines: sx::worker::CoordLink — the trainer's tie to sx_coord (coordinator/client.h): every rank
// registers and checks the coordinator's rank table against MPI's view; metrics go to the client's
// background heartbeat (storing them never blocks); LR overrides reach rank 0 and are broadcast over
// MPI at a collective point of the loop, so every rank switches LR at the same global step.
// Stop/drain notices travel the same way and become one StopPlan step for every rank.
// With coord.endpoint = none every call is a no-op on every rank (no MPI traffic either).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/client.h"
#include "worker/comm_env.h"
#include "worker/config.h"

namespace sx::worker {

// An override that became the active one at `step` (for the metrics record).
struct LrSwitch {
  uint64_t id = 0;  // 0: no switch at this step
  int64_t step = 0;
  double lr = 0;
};

// A stop or drain notice turned into the step every rank leaves at (decided by rank 0, broadcast).
// drain: finish step `step` - 1, write a checkpoint, exit 0. stop: leave before step `step`, no checkpoint.
struct StopPlan {
  uint64_t id = 0;  // 0: none
  coord::NoticeKind kind = coord::NoticeKind::kStop;
  int64_t step = -1;
  std::string reason;  // rank 0 only (not broadcast)
};

class CoordLink {
 public:
  // Collective (every rank, same point): connects within coord.connect_timeout_s (the error names
  // the endpoint), registers (host, pid, local rank), verifies the rank table against MPI.
  static StatusOr<std::unique_ptr<CoordLink>> open(const JobConfig& config, MpiEnv& env, int64_t steps_per_epoch);

  // Waits up to ~2.5 s for a heartbeat carrying the last posted metrics (the final step).
  ~CoordLink();
  CoordLink(const CoordLink&) = delete;
  CoordLink& operator=(const CoordLink&) = delete;

  bool enabled() const { return client_ && client_->enabled(); }

  // Collective when enabled: call on every rank before training step `step`. Every
  // coord.check_every_steps steps rank 0 drains the client's new overrides and broadcasts them (count +
  // POD records); each takes effect at max(its from_step, step), identically on all ranks.
  Status sync_overrides(int64_t step);

  // Collective when enabled, same cadence as sync_overrides: rank 0 turns new stop/drain notices into a
  // StopPlan at max(from_step, step) (the earliest wins) and broadcasts it. Notices already stored when
  // this launch registered are stale unless their from_step lies ahead of the step it resumed at.
  Status sync_notices(int64_t step);
  // The plan when every rank must leave before training step `step` (same answer on every rank).
  const StopPlan* stop_before(int64_t step) const { return plan_.id != 0 && step >= plan_.step ? &plan_ : nullptr; }

  // The LR of step `step` (overrides applied to `scheduled`); when a different override becomes active
  // at this step, prints `rank R: LR override #id -> X from step S` and fills *sw (else sw->id = 0).
  double lr_at(double scheduled, int64_t step, LrSwitch* sw);

  // Non-blocking: the heartbeat thread sends the latest values.
  void post_metrics(int64_t step, double epoch, double loss, double lr, double img_per_sec);

  const std::vector<coord::LrOverride>& overrides() const { return overrides_; }

 private:
  CoordLink() = default;
  std::unique_ptr<coord::CoordClient> client_;
  MpiEnv* env_ = nullptr;
  int64_t every_ = 1, steps_per_epoch_ = 0;
  std::vector<coord::LrOverride> overrides_;  // same list on every rank, from_step resolved
  uint64_t active_id_ = 0;
  int64_t last_posted_ = -1;
  uint64_t posted_at_ = 0;  // heartbeats answered when the last metrics were posted
  std::vector<coord::Notice> initial_notices_;  // rank 0: stored before this launch (judged at the first sync)
  bool notices_synced_ = false;
  StopPlan plan_;
};

}  // namespace sx::worker
