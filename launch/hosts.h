// defines: sx::launch::Host, parse_host_list ("a,b:2"), read_hostfile (Open MPI `host slots=N`),
// mpirun_host_arg, probe_hosts (each host runs a command through the launch agent, in parallel).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace sx::launch {

struct Host {
  std::string name;
  int slots = 1;  // ranks on this host
  bool operator==(const Host&) const = default;
};

// "h1,h2:2,h3" -> {h1,1},{h2,2},{h3,1}; `slots` is the default count.
StatusOr<std::vector<Host>> parse_host_list(const std::string& list, int slots);
// Lines `host [slots=N]`; '#' comments and blank lines skipped.
StatusOr<std::vector<Host>> read_hostfile(const std::string& path, int slots);
// "h1:1,h2:2" for mpirun --host.
std::string mpirun_host_arg(const std::vector<Host>& hosts);
int total_slots(const std::vector<Host>& hosts);

// Runs `agent HOST command...` for every host at once (agent "" = run the command locally), each
// killed after timeout_s; result[i] is true when host i's command exited 0 in time.
std::vector<bool> probe_hosts(const std::string& agent, const std::vector<Host>& hosts,
                              const std::vector<std::string>& command, double timeout_s);

}  // namespace sx::launch
