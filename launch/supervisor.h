// defines: sx::launch::SupervisorOptions, run_supervisor — the loop of sx_launch: start sx_coord (and
// restart it if it dies), run `mpirun ... sx_worker -o resume=auto` over the hosts, watch the job through
// the coordinator's status (a dead or stalled rank of the running generation) and mpirun's exit; on a
// failure abort the job, decide which hosts are gone, relaunch on the rest (plus standbys) from the
// latest good checkpoint, up to max_restarts and not below min_hosts. launch/README.md has the rules.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "common/status.h"
#include "launch/hosts.h"

namespace sx::launch {

struct SupervisorOptions {
  std::string config;                  // sx_worker -c
  std::vector<std::string> overrides;  // sx_worker -o, in order
  std::vector<Host> hosts, standby;
  std::string agent;                   // plm_rsh_agent and the probe's remote shell ("" = mpirun's ssh / "ssh")
  std::vector<std::string> mpirun_args;
  std::string mpirun = "mpirun";
  std::string worker, coord_bin;       // "" = next to sx_launch
  std::string coord;                   // an already running coordinator's endpoint ("" = start one)
  std::string coord_listen;            // "" = tcp://127.0.0.1:5555 for a local job, else this host's address
                                       // on the route to the first remote host, port 5555
  std::string coord_keys;              // the coordinator's client key ("" = RUN_DIR/coord/coord_client.key)
  std::string coord_connect;           // what ranks connect to ("" = coord_listen, '*' -> this host's name)
  double dead_after = 10, stall_after = -1;
  double start_timeout = 180;          // a launch whose ranks have not all registered by then failed
  double pause_timeout = 600;          // a stall at an epoch end (eval, checkpoint) is a failure only after this
  double probe_timeout = 6;
  double poll_interval = 0.25;
  int max_restarts = 3, min_hosts = 1;
  int max_coord_restarts = 10;         // coordinator restarts (backoff 0.5 s doubling to 30 s) before giving up;
                                       // the count starts again after 5 minutes of uptime
  double coord_unreachable_after = 3;  // N: a running job whose coordinator has not answered for N·T is aborted
  bool echo = true;                    // copy mpirun's output to stderr
};

// Returns the process exit code: 0 the job completed (or was drained/stopped), 1 gave up, 130
// interrupted (`stop` set, e.g. by SIGINT/SIGTERM).
StatusOr<int> run_supervisor(const SupervisorOptions& options, const std::atomic<bool>& stop);

}  // namespace sx::launch
