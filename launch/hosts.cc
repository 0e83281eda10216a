#include "launch/hosts.h"

#include <fstream>
#include <future>
#include <sstream>

#include "launch/process.h"

namespace sx::launch {
namespace {

StatusOr<int> parse_slots(const std::string& text, const std::string& where) {
  int v = 0;
  try {
    size_t used = 0;
    v = std::stoi(text, &used);
    if (used != text.size()) v = 0;
  } catch (...) {
    v = 0;
  }
  if (v < 1) return Status::invalid_argument(where + ": slots must be a positive integer, got '" + text + "'");
  return v;
}

}  // namespace

StatusOr<std::vector<Host>> parse_host_list(const std::string& list, int slots) {
  std::vector<Host> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    Host h{item, slots};
    const size_t colon = item.find(':');
    if (colon != std::string::npos) {
      h.name = item.substr(0, colon);
      SX_ASSIGN_OR_RETURN(h.slots, parse_slots(item.substr(colon + 1), "--hosts '" + item + "'"));
    }
    if (h.name.empty()) return Status::invalid_argument("--hosts: empty host name in '" + list + "'");
    out.push_back(h);
  }
  if (out.empty()) return Status::invalid_argument("--hosts: no host in '" + list + "'");
  return out;
}

StatusOr<std::vector<Host>> read_hostfile(const std::string& path, int slots) {
  std::ifstream in(path);
  if (!in) return Status::not_found(path + ": cannot open the hostfile");
  std::vector<Host> out;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::stringstream ls(line);
    Host h{"", slots};
    if (!(ls >> h.name)) continue;
    for (std::string word; ls >> word;) {
      const std::string where = path + ":" + std::to_string(line_no);
      if (word.rfind("slots=", 0) == 0) {
        SX_ASSIGN_OR_RETURN(h.slots, parse_slots(word.substr(6), where));
      } else if (word.rfind("max_slots=", 0) != 0) {
        return Status::invalid_argument(where + ": expected `host [slots=N]`, got '" + word + "'");
      }
    }
    out.push_back(h);
  }
  if (out.empty()) return Status::invalid_argument(path + ": no host in the hostfile");
  return out;
}

std::string mpirun_host_arg(const std::vector<Host>& hosts) {
  std::string s;
  for (const Host& h : hosts) s += (s.empty() ? "" : ",") + h.name + ":" + std::to_string(h.slots);
  return s;
}

int total_slots(const std::vector<Host>& hosts) {
  int n = 0;
  for (const Host& h : hosts) n += h.slots;
  return n;
}

std::vector<bool> probe_hosts(const std::string& agent, const std::vector<Host>& hosts,
                              const std::vector<std::string>& command, double timeout_s) {
  std::vector<std::future<int>> runs;
  for (const Host& h : hosts) {
    std::vector<std::string> argv;
    if (!agent.empty()) {
      std::stringstream as(agent);  // the agent may carry options ("ssh -o BatchMode=yes")
      for (std::string w; as >> w;) argv.push_back(w);
      argv.push_back(h.name);
    }
    argv.insert(argv.end(), command.begin(), command.end());
    runs.push_back(std::async(std::launch::async, [argv, timeout_s] { return run_command(argv, timeout_s); }));
  }
  std::vector<bool> ok;
  for (auto& r : runs) ok.push_back(r.get() == 0);
  return ok;
}

}  // namespace sx::launch
