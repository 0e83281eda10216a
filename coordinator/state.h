// defines: sx::coord::CoordState — the coordinator's bookkeeping without any sockets: rank table per
// generation, membership (alive / dead / stalled) from heartbeats, LR overrides and notices, and its
// JSON form on disk. Time is passed in (seconds on a monotonic clock) so tests can drive it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "coordinator/types.h"

namespace sx::coord {

struct MembershipChange {
  int32_t rank;
  RankState from, to;
};

class CoordState {
 public:
  // A rank silent for `dead_after` seconds is dead; one that heartbeats but whose step has not
  // moved for `stall_after` seconds is stalled.
  CoordState(std::string job, double dead_after, double stall_after);

  const std::string& job() const { return job_; }

  // Joins the current generation, or starts a new one when the world size changes or the rank's
  // slot is held by another process (a relaunch). Re-registering the same process is idempotent.
  StatusOr<RankTable> register_rank(const RegisterRank& req, double now, bool* changed);
  // *step_advanced is set when this heartbeat carries a new step (worth a metrics-log line).
  Status heartbeat(const Heartbeat& hb, double now, bool* step_advanced);
  // Fills id and from_step (from from_epoch and the registered steps per epoch).
  StatusOr<LrOverride> add_override(LrOverride req);
  StatusOr<Notice> add_notice(Notice req);

  const RankTable& table() const { return table_; }
  const std::vector<LrOverride>& overrides() const { return overrides_; }
  const std::vector<Notice>& notices() const { return notices_; }
  const std::vector<RankTable>& past_generations() const { return past_; }
  StatusReport status(double now) const;
  // Rank states that changed since the previous call (for the log).
  std::vector<MembershipChange> scan(double now);

  // Persistent part: tables (current and past), overrides, notices, id counters. Membership timers
  // restart at `now` after a load, so a restarted coordinator gives every rank a fresh T seconds.
  nlohmann::json to_json() const;
  static StatusOr<CoordState> from_json(const nlohmann::json& j, double dead_after, double stall_after, double now);

 private:
  struct Liveness {
    double last_seen = 0;     // last heartbeat or registration
    double step_changed = 0;  // when the step last moved
    Metrics metrics;
    RankState reported = RankState::kAlive;
  };
  RankState state_of(const Liveness& l, double now) const;
  void start_generation(int32_t world_size);
  void rebuild_hosts();

  std::string job_;
  double dead_after_, stall_after_;
  RankTable table_;
  std::vector<RankTable> past_;
  std::map<int32_t, Liveness> live_;
  std::vector<LrOverride> overrides_;
  std::vector<Notice> notices_;
  uint64_t next_id_ = 1;
};

}  // namespace sx::coord
