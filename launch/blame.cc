#include "launch/blame.h"

#include <algorithm>
#include <regex>

namespace sx::launch {
namespace {

void add_once(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

}  // namespace

void MpirunReport::on_line(const std::string& line) {
  static const std::regex died(R"(noticed that process rank \d+ with PID \d+ on node (\S+) exited on signal)");
  static const std::regex lost(R"(Remote daemon: *\S+ on node (\S+))");
  std::smatch m;
  const bool is_died = std::regex_search(line, m, died);
  if (!is_died && !std::regex_search(line, m, lost)) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (first_line_.empty()) first_line_ = line;
  add_once(is_died ? died_ : lost_, m[1]);
}

std::vector<std::string> MpirunReport::died() const {
  std::lock_guard<std::mutex> lock(mu_);
  return died_;
}

std::vector<std::string> MpirunReport::lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_;
}

std::string MpirunReport::first_line() const {
  std::lock_guard<std::mutex> lock(mu_);
  return first_line_;
}

std::vector<std::string> blame_hosts(const std::vector<std::string>& mpirun_named,
                                     const std::vector<DeadRank>& coord_dead) {
  std::vector<std::string> out;
  for (const std::string& h : mpirun_named) add_once(out, h);
  if (!out.empty() || coord_dead.empty()) return out;
  auto oldest = std::max_element(coord_dead.begin(), coord_dead.end(), [](const DeadRank& a, const DeadRank& b) {
    return a.heartbeat_age_s < b.heartbeat_age_s;
  });
  return {oldest->host};
}

}  // namespace sx::launch
