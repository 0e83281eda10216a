// sx_launch: the elastic supervisor of an sxtrain job (see launch/README.md).
//   sx_launch -c job.yaml [-o key=value ...] --hosts h1,h2,h3 [--standby h4] [--max-restarts 3]
//             [--min-hosts 1] [--agent launch/netns-agent] [--coord-listen tcp://10.77.0.1:5555]
#include <csignal>
#include <cstdio>
#include <sstream>

#include <CLI/CLI.hpp>

#include "common/guard.h"
#include "launch/supervisor.h"

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

int fail(const sx::Status& s) {
  std::fprintf(stderr, "sx_launch: %s\n", s.to_string().c_str());
  return s.code() == sx::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

static int launch_main(int argc, char** argv) {
  CLI::App app{
      "sx_launch: runs sx_worker under mpirun over a host list with sx_coord watching it; when the job fails or "
      "hangs (a rank dead or stalled per the coordinator), aborts it, drops the failed or unreachable hosts (or "
      "takes standbys) and relaunches from the latest good checkpoint. Restarts are logged in RUN_DIR/launch.jsonl."};
  sx::launch::SupervisorOptions o;
  std::string hosts, hostfile, standby, mpirun_args;
  int slots = 1;
  app.add_option("-c,--config", o.config, "job YAML for sx_worker")->required();
  app.add_option("-o,--override", o.overrides, "sx_worker -o key=value (repeatable)");
  auto* hosts_opt = app.add_option("--hosts", hosts, "host list: h1,h2:2,h3 (NAME[:SLOTS])");
  auto* hostfile_opt = app.add_option("--hostfile", hostfile, "Open MPI hostfile (`host slots=N` lines)");
  hosts_opt->excludes(hostfile_opt);
  app.add_option("--slots", slots, "ranks per host when the list does not say")->capture_default_str();
  app.add_option("--standby", standby, "spare hosts taken, in order, for dropped ones: h4,h5");
  app.add_option("--max-restarts", o.max_restarts, "relaunches before giving up")->capture_default_str();
  app.add_option("--min-hosts", o.min_hosts, "give up rather than run on fewer hosts")->capture_default_str();
  app.add_option("--max-coord-restarts", o.max_coord_restarts,
                 "coordinator restarts (with backoff) before giving up; counted afresh after 5 min of uptime")
      ->capture_default_str();
  app.add_option("--coord-unreachable-after", o.coord_unreachable_after,
                 "N: abort (and relaunch) a running job whose coordinator has not answered for N x --dead-after")
      ->capture_default_str();
  app.add_option("--agent", o.agent,
                 "remote shell for mpirun (plm_rsh_agent) and for probing hosts, e.g. launch/netns-agent "
                 "(default: mpirun's ssh; probes use ssh -o BatchMode=yes)");
  app.add_option("--mpirun-args", mpirun_args, "extra mpirun options, one string (split on spaces)");
  app.add_option("--mpirun", o.mpirun, "mpirun program")->capture_default_str();
  app.add_option("--worker", o.worker, "sx_worker path (default: next to sx_launch)");
  app.add_option("--coord", o.coord, "use this running coordinator (tcp://HOST:PORT) instead of starting one");
  app.add_option("--coord-listen", o.coord_listen,
                 "where the started sx_coord listens (default: tcp://127.0.0.1:5555 for a local job, else this "
                 "host's address towards the first remote host, port 5555)");
  app.add_option("--coord-keys", o.coord_keys,
                 "the coordinator's client key file (default: RUN_DIR/coord/coord_client.key, made by sx_coord serve)");
  app.add_option("--coord-connect", o.coord_connect,
                 "endpoint the ranks connect to (default: --coord-listen, '*' replaced by this host's name)");
  app.add_option("--dead-after", o.dead_after, "T: a rank silent for T s is dead")->capture_default_str();
  app.add_option("--stall-after", o.stall_after,
                 "a rank whose step has not moved for this long is stalled (default T; a stall at an epoch end "
                 "gets --pause-timeout)");
  app.add_option("--pause-timeout", o.pause_timeout,
                 "a rank stalled at an epoch end (eval + checkpoint, no new steps) fails only after this many s")
      ->capture_default_str();
  app.add_option("--start-timeout", o.start_timeout, "seconds for all ranks of a launch to register")
      ->capture_default_str();
  app.add_option("--probe-timeout", o.probe_timeout, "seconds for one host probe")->capture_default_str();
  app.add_flag("!--quiet", o.echo, "do not copy mpirun's output to stderr (it is in RUN_DIR/launch-N.log)");
  CLI11_PARSE(app, argc, argv);

  auto list = !hostfile.empty() ? sx::launch::read_hostfile(hostfile, slots)
              : !hosts.empty()  ? sx::launch::parse_host_list(hosts, slots)
                                : sx::StatusOr<std::vector<sx::launch::Host>>(
                                     sx::Status::invalid_argument("give --hosts or --hostfile"));
  if (!list.is_ok()) return fail(list.status());
  o.hosts = *list;
  if (!standby.empty()) {
    auto s = sx::launch::parse_host_list(standby, slots);
    if (!s.is_ok()) return fail(s.status());
    o.standby = *s;
  }
  std::stringstream ss(mpirun_args);
  for (std::string w; ss >> w;) o.mpirun_args.push_back(w);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  auto rc = sx::launch::run_supervisor(o, g_stop);
  if (!rc.is_ok()) return fail(rc.status());
  return *rc;
}

int main(int argc, char** argv) {
  return sx::guarded_main("sx_launch", [&] { return launch_main(argc, argv); });
}
