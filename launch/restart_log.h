// defines: sx::launch::RestartRecord, RestartLog — one JSON line per restart (and one at the end) in
// RUN_DIR/launch.jsonl, plus a human line on stderr:
//   {t, attempt, event, reason, dead_hosts, hosts, world, batch, resumed_step, lost_steps,
//    detect_s, confirm_s, restart_s}
// detect_s: the failed rank's last heartbeat (or mpirun's exit) -> the supervisor acting;
// confirm_s: acting -> the coordinator reports the blamed ranks dead; restart_s: acting -> first step of
// the relaunched job seen by the coordinator (null when it never came).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::launch {

struct RestartRecord {
  int attempt = 0;          // the launch that starts with this record (1 = first relaunch)
  std::string event;        // restart | completed | gave_up | interrupted
  std::string reason;
  std::vector<std::string> dead_hosts, hosts;
  int world = 0;
  std::string batch;
  int64_t resumed_step = -1, lost_steps = -1;
  double detect_s = NAN, confirm_s = NAN, restart_s = NAN;
};

class RestartLog {
 public:
  explicit RestartLog(std::string path) : path_(std::move(path)) {}
  Status write(const RestartRecord& r);  // appends + fsyncs the line, prints the human line
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace sx::launch
