// defines: sx::launch::MpirunReport (what mpirun's output says failed), DeadRank, blame_hosts (which
// hosts a failure is pinned on).
#pragma once

#include <mutex>
#include <string>
#include <vector>

namespace sx::launch {

// Reads mpirun's output line by line (from the child's reader thread) for the hosts it names.
class MpirunReport {
 public:
  void on_line(const std::string& line);
  // `died`: the process mpirun saw die first ("noticed that process rank N ... on node H exited on
  // signal"). `lost`: daemons it lost contact with ("Remote daemon: ... on node H").
  std::vector<std::string> died() const;
  std::vector<std::string> lost() const;
  std::string first_line() const;  // the first such line, for the failure reason

 private:
  mutable std::mutex mu_;
  std::vector<std::string> died_, lost_;
  std::string first_line_;
};

struct DeadRank {
  std::string host;
  double heartbeat_age_s = 0;  // how long the coordinator has not heard from it
};

// The hosts a failure is pinned on: the ones mpirun names, else the one host the coordinator has not
// heard from for the longest. Not every rank the coordinator calls dead: when one process dies, mpirun
// kills the others, they go silent a moment later, and a supervisor that polls late sees them all dead
// at once (which once dropped all three hosts after one SIGKILL). Heartbeat ages cannot tell "died
// together" from "killed 0.1 s later" (they are only as fine as the heartbeat interval), so a second
// host that really failed too is left to the probe (unreachable) or to the next attempt.
std::vector<std::string> blame_hosts(const std::vector<std::string>& mpirun_named,
                                     const std::vector<DeadRank>& coord_dead);

}  // namespace sx::launch
