#include "launch/restart_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace sx::launch {
namespace {

nlohmann::json num_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ",") + x;
  return s.empty() ? "-" : s;
}

std::string secs(double v) {
  if (!std::isfinite(v)) return "?";
  char b[32];
  std::snprintf(b, sizeof b, "%.2fs", v);
  return b;
}

}  // namespace

Status RestartLog::write(const RestartRecord& r) {
  const double t = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  nlohmann::ordered_json j = {{"t", t},
                              {"attempt", r.attempt},
                              {"event", r.event},
                              {"reason", r.reason},
                              {"dead_hosts", r.dead_hosts},
                              {"hosts", r.hosts},
                              {"world", r.world},
                              {"batch", r.batch},
                              {"resumed_step", r.resumed_step},
                              {"lost_steps", r.lost_steps},
                              {"detect_s", num_or_null(r.detect_s)},
                              {"confirm_s", num_or_null(r.confirm_s)},
                              {"restart_s", num_or_null(r.restart_s)}};
  const std::string line = j.dump() + "\n";
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::unavailable(path_ + ": cannot append the restart log");
  const bool ok = ::write(fd, line.data(), line.size()) == ssize_t(line.size());
  ::fsync(fd);
  ::close(fd);
  if (r.event == "restart")
    std::fprintf(stderr,
                 "sx_launch: restart %d: %s; dropped %s; now %s (%d ranks, %s); resumed at step %lld, lost %lld "
                 "step(s); detect %s, confirm %s, restart %s\n",
                 r.attempt, r.reason.c_str(), join(r.dead_hosts).c_str(), join(r.hosts).c_str(), r.world,
                 r.batch.c_str(), static_cast<long long>(r.resumed_step), static_cast<long long>(r.lost_steps),
                 secs(r.detect_s).c_str(), secs(r.confirm_s).c_str(), secs(r.restart_s).c_str());
  else
    std::fprintf(stderr, "sx_launch: %s after %d restart(s): %s\n", r.event.c_str(), r.attempt, r.reason.c_str());
  return ok ? Status::ok() : Status::unavailable(path_ + ": short write");
}

}  // namespace sx::launch
