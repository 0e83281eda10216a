// The supervisor loop (see supervisor.h and launch/README.md for the rules it follows).
#include "launch/supervisor.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "coordinator/job_dir.h"
#include "coordinator/request.h"
#include "launch/blame.h"
#include "launch/elastic.h"
#include "launch/process.h"
#include "launch/restart_log.h"
#include "storage/checkpoint.h"
#include "storage/run_lock.h"
#include "worker/config.h"

namespace sx::launch {
namespace {

namespace fs = std::filesystem;
using coord::RankState;
using coord::StatusReport;

void say(const std::string& msg) {
  std::fprintf(stderr, "sx_launch: %s\n", msg.c_str());
  std::fflush(stderr);
}

std::string self_dir() { return fs::read_symlink("/proc/self/exe").parent_path().string(); }

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  return gethostname(buf, sizeof buf - 1) == 0 ? buf : "localhost";
}

// The worker's rule (coord_link.cc): coord.job, else the run dir's last component.
std::string job_name(const worker::JobConfig& c) {
  if (!c.coord.job.empty()) return c.coord.job;
  fs::path p = fs::path(c.run_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

StatusOr<StatusReport> query_status(const std::string& endpoint, double timeout_s, const coord::CurveKeys& keys) {
  coord::Message m;
  m.kind = coord::MsgKind::kStatusQuery;
  SX_ASSIGN_OR_RETURN(coord::Message r, coord::request_once(endpoint, m, timeout_s, keys));
  return r.status;
}

// This host's address on the route to `host` (a UDP connect sends nothing), "" when unknown.
std::string address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &res) != 0 || !res) return "";
  std::string out;
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in me{};
  socklen_t len = sizeof me;
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) == 0) {
    char buf[INET_ADDRSTRLEN] = {};
    if (inet_ntop(AF_INET, &me.sin_addr, buf, sizeof buf)) out = buf;
  }
  if (fd >= 0) ::close(fd);
  freeaddrinfo(res);
  return out;
}

// The last `train` record's step in the worker's metrics.jsonl (-1 when none).
int64_t last_train_step(const std::string& path) {
  std::ifstream in(path);
  int64_t step = -1;
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"train\"") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("kind", "") == "train") step = j.value("step", step);
  }
  return step;
}

// Step of the checkpoint a resume=auto would load first (0 when there is none).
int64_t latest_checkpoint_step(const std::string& dir) {
  auto latest = storage::find_latest(dir);
  if (!latest.is_ok()) return 0;
  auto v = storage::verify_checkpoint(*latest);
  return v.is_ok() ? v->meta.step : 0;
}

std::vector<std::string> names(const std::vector<Host>& hosts) {
  std::vector<std::string> out;
  for (const Host& h : hosts) out.push_back(h.name);
  return out;
}

RestartRecord record(int attempt, std::string event, std::string reason, const std::vector<Host>& hosts) {
  RestartRecord r;
  r.attempt = attempt;
  r.event = std::move(event);
  r.reason = std::move(reason);
  r.hosts = names(hosts);
  r.world = total_slots(hosts);
  return r;
}

// 128 random bits, hex.
std::string random_token() {
  std::ifstream in("/dev/urandom", std::ios::binary);
  unsigned char b[16] = {};
  in.read(reinterpret_cast<char*>(b), sizeof b);
  std::string out;
  char hex[3];
  for (unsigned char c : b) {
    std::snprintf(hex, sizeof hex, "%02x", c);
    out += hex;
  }
  return out + "-" + std::to_string(::getpid());
}

class Supervisor {
 public:
  Supervisor(const SupervisorOptions& o, const std::atomic<bool>& stop) : o_(o), stop_(stop) {}
  StatusOr<int> run();

 private:
  Status start_coord();
  Status check_hello() const;
  Status keep_coord_alive();
  std::vector<std::string> mpirun_argv(const std::vector<Host>& hosts, const BatchPlan& plan) const;
  std::vector<bool> probe(const std::vector<Host>& hosts) const;
  int finish(RestartRecord r, int code);

  const SupervisorOptions& o_;
  const std::atomic<bool>& stop_;
  worker::JobConfig base_;
  std::string run_dir_, coord_dir_, job_, endpoint_, worker_endpoint_, coord_bin_, worker_bin_;
  std::string coord_listen_, keys_path_;
  coord::CurveKeys keys_;                   // the job's client key: every request to sx_coord carries it
  StatusOr<StatusReport> status(double timeout_s) const { return query_status(endpoint_, timeout_s, keys_); }
  std::unique_ptr<storage::RunLock> lock_;  // RUN_DIR/run.lock; rank 0 inherits it through lock_token_
  std::string lock_token_;
  std::unique_ptr<Child> coord_;
  std::unique_ptr<RestartLog> log_;
  std::optional<RestartRecord> pending_;  // the last restart, written once its first step is seen
  double pending_t_ = 0;                  // when that failure was acted on (steady clock)
  uint32_t known_gen_ = 0;                // newest rank-table generation seen
  int coord_restarts_ = 0;                // since the coordinator last ran 5 minutes in a row
  double coord_started_ = 0, next_coord_try_ = 0;
  std::map<int32_t, std::pair<int64_t, double>> pause_seen_;  // rank -> (step, first seen stalled there)
};

Status Supervisor::start_coord() {
  std::vector<std::string> argv = {coord_bin_, "serve", "--job", coord_dir_, "--job-name", job_, "--listen",
                                   coord_listen_, "--dead-after", std::to_string(o_.dead_after)};
  if (o_.stall_after > 0) argv.insert(argv.end(), {"--stall-after", std::to_string(o_.stall_after)});
  SX_ASSIGN_OR_RETURN(coord_, Child::start(argv, coord_dir_ + "/serve.log", /*echo=*/false));
  const double end = now_s() + 15;
  while (now_s() < end) {
    int code = 0;
    if (coord_->poll(&code))
      return Status::unavailable("sx_coord serve exited with code " + std::to_string(code) + "; see " + coord_dir_ +
                                 "/serve.log");
    if (!keys_.client_ready()) {  // serve makes the keys at its first start
      auto k = coord::read_client_keys(keys_path_);
      if (k.is_ok()) keys_ = std::move(k).value();
      else std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (status(0.5).is_ok()) {
      coord_started_ = now_s();
      return check_hello();
    }
  }
  coord_->stop(1.0);
  return Status::unavailable("sx_coord serve did not answer at " + endpoint_ + " within 15 s; see " + coord_dir_ +
                             "/serve.log");
}

// The coordinator on our endpoint must serve this job (not another job's that holds the port).
Status Supervisor::check_hello() const {
  coord::Message m;
  m.kind = coord::MsgKind::kHello;
  SX_ASSIGN_OR_RETURN(coord::Message r, coord::request_once(endpoint_, m, 2.0, keys_));
  if (r.hello_reply.job != job_)
    return Status::invalid_argument("the coordinator at " + endpoint_ + " serves job '" + r.hello_reply.job +
                                    "', not '" + job_ + "'. HINT: another job's coordinator has that port");
  return Status::ok();
}

// A coordinator that died (or was killed) is started again on the same job dir and port: it reloads the
// rank table and overrides from disk, and the workers' clients reconnect by themselves.
// Restarts back off (0.5 s doubling to 30 s) and are capped: an error once --max-coord-restarts are used.
Status Supervisor::keep_coord_alive() {
  if (!o_.coord.empty()) return Status::ok();  // someone else's coordinator
  int code = 0;
  if (coord_ && !coord_->poll(&code)) return Status::ok();
  const double now = now_s();
  if (coord_) {
    say("the coordinator exited (code " + std::to_string(code) + ")");
    coord_.reset();
    if (now - coord_started_ > 300) coord_restarts_ = 0;  // it ran a long while: a fresh budget
    next_coord_try_ = coord_restarts_ == 0 ? now : now + std::min(30.0, 0.5 * double(1 << std::min(coord_restarts_, 6)));
  }
  if (now < next_coord_try_) return Status::ok();
  if (coord_restarts_ >= o_.max_coord_restarts)
    return Status::unavailable("the coordinator could not be kept running: " + std::to_string(coord_restarts_) +
                               " restarts (--max-coord-restarts); see " + coord_dir_ + "/serve.log");
  ++coord_restarts_;
  say("restarting the coordinator on " + coord_listen_ + " (restart " + std::to_string(coord_restarts_) + " of at most " +
      std::to_string(o_.max_coord_restarts) + ")");
  Status s = start_coord();
  if (!s.is_ok()) {
    say("warning: coordinator restart failed: " + s.to_string());
    coord_.reset();
    next_coord_try_ = now_s() + std::min(30.0, 0.5 * double(1 << std::min(coord_restarts_, 6)));
  }
  return Status::ok();
}

std::vector<std::string> Supervisor::mpirun_argv(const std::vector<Host>& hosts, const BatchPlan& plan) const {
  std::vector<std::string> a = {o_.mpirun};
  if (geteuid() == 0) a.push_back("--allow-run-as-root");
  a.insert(a.end(), {"-np", std::to_string(total_slots(hosts)), "--host", mpirun_host_arg(hosts)});
  if (!o_.agent.empty()) a.insert(a.end(), {"--mca", "plm_rsh_agent", o_.agent, "--mca", "plm_rsh_no_tree_spawn", "1"});
  a.insert(a.end(), o_.mpirun_args.begin(), o_.mpirun_args.end());
  a.insert(a.end(), {"-x", "SX_RUN_LOCK_TOKEN"});  // rank 0 inherits the launcher's run-dir lock
  a.push_back(worker_bin_);
  if (!o_.config.empty()) a.insert(a.end(), {"-c", o_.config});
  auto add = [&a](const std::string& kv) { a.insert(a.end(), {"-o", kv}); };
  for (const std::string& kv : o_.overrides) add(kv);
  add("resume=auto");
  add("coord.endpoint=" + worker_endpoint_);
  add("coord.job=" + job_);
  add("coord.keys=" + keys_path_);
  for (const std::string& kv : plan.overrides) add(kv);
  return a;
}

// A host is reachable when it runs `sx_coord status` against the coordinator through the launch agent:
// that proves the agent gets in, our binaries run there and its network reaches the coordinator.
// This machine's own name (or localhost) is probed without the agent, as mpirun starts it without one.
std::vector<bool> Supervisor::probe(const std::vector<Host>& hosts) const {
  const std::string agent = o_.agent.empty() ? "ssh -o BatchMode=yes -o ConnectTimeout=3" : o_.agent;
  const std::vector<std::string> cmd = {coord_bin_, "status", "--endpoint", worker_endpoint_, "--keys", keys_path_,
                                        "--timeout", "2"};
  const std::string me = host_name();
  std::vector<Host> remote, local;
  for (const Host& h : hosts) (h.name == "localhost" || h.name == me ? local : remote).push_back(h);
  const std::vector<bool> r = probe_hosts(agent, remote, cmd, o_.probe_timeout);
  const std::vector<bool> l = probe_hosts("", local, cmd, o_.probe_timeout);
  std::vector<bool> out;
  size_t ir = 0, il = 0;
  for (const Host& h : hosts) out.push_back(h.name == "localhost" || h.name == me ? l[il++] : r[ir++]);
  return out;
}

int Supervisor::finish(RestartRecord r, int code) {
  if (pending_) {
    Status s = log_->write(*pending_);
    if (!s.is_ok()) say("warning: " + s.to_string());
    pending_.reset();
  }
  Status s = log_->write(r);
  if (!s.is_ok()) say("warning: " + s.to_string());
  if (coord_) coord_->stop(3.0);
  return code;
}

StatusOr<int> Supervisor::run() {
  SX_ASSIGN_OR_RETURN(base_, worker::load_job_config(o_.config, o_.overrides));
  run_dir_ = base_.run_dir;
  coord_dir_ = run_dir_ + "/coord";
  job_ = job_name(base_);
  std::error_code ec;
  fs::create_directories(coord_dir_, ec);
  if (ec) return Status::unavailable(coord_dir_ + ": cannot create: " + ec.message());
  // One job per run dir: held for the whole supervision; the workers' rank 0 inherits it (the token
  // travels in SX_RUN_LOCK_TOKEN), a rank 0 of any other job is refused.
  lock_token_ = random_token();
  SX_ASSIGN_OR_RETURN(lock_, storage::RunLock::acquire(run_dir_, "run.lock", "sx_launch", lock_token_));
  if (lock_->taken_over())
    say(lock_->path() + ": took over the lock left by " + lock_->taken_over()->describe() + " (no longer running)");
  ::setenv("SX_RUN_LOCK_TOKEN", lock_token_.c_str(), 1);
  log_ = std::make_unique<RestartLog>(run_dir_ + "/launch.jsonl");
  coord_bin_ = o_.coord_bin.empty() ? self_dir() + "/sx_coord" : o_.coord_bin;
  worker_bin_ = o_.worker.empty() ? self_dir() + "/sx_worker" : o_.worker;

  keys_path_ = o_.coord_keys.empty() ? coord::client_key_path(coord_dir_) : o_.coord_keys;
  coord_listen_ = o_.coord_listen;
  if (coord_listen_.empty()) {
    // Not every interface: loopback for a local job, else the one the job's hosts are reached through.
    std::string remote;
    for (const auto* list : {&o_.hosts, &o_.standby})
      for (const Host& h : *list)
        if (remote.empty() && h.name != "localhost" && h.name != host_name()) remote = h.name;
    const std::string addr = remote.empty() ? "127.0.0.1" : address_towards(remote);
    if (addr.empty()) return Status::unavailable("cannot tell this host's address towards " + remote +
                                                 ". HINT: pass --coord-listen tcp://ADDRESS:5555");
    coord_listen_ = "tcp://" + addr + ":5555";
  }
  if (o_.coord.empty()) {
    endpoint_ = coord::connectable_endpoint(coord_listen_);
    worker_endpoint_ = o_.coord_connect;
    if (worker_endpoint_.empty()) {
      worker_endpoint_ = coord_listen_;
      for (const char* wild : {"tcp://*:", "tcp://0.0.0.0:"})
        if (worker_endpoint_.rfind(wild, 0) == 0)
          worker_endpoint_ = "tcp://" + host_name() + ":" + worker_endpoint_.substr(std::string(wild).size());
    }
    SX_TRY(start_coord());
    say("coordinator for job '" + job_ + "' at " + worker_endpoint_ + " (state in " + coord_dir_ + ")");
  } else {
    endpoint_ = worker_endpoint_ = o_.coord;
    SX_ASSIGN_OR_RETURN(keys_, coord::read_client_keys(keys_path_));
    SX_TRY(check_hello());
  }

  const int base_world = total_slots(o_.hosts);
  std::vector<Host> hosts = o_.hosts, standby = o_.standby;
  for (int attempt = 0;; ++attempt) {
    const int world = total_slots(hosts);
    auto plan = plan_resize(base_, base_world, world);
    if (!plan.is_ok()) {
      return finish(record(attempt, "gave_up", plan.status().message(), hosts), 1);
    }
    if (pending_) pending_->batch = plan->describe();
    auto before = status(2.0);
    if (before.is_ok()) known_gen_ = std::max(known_gen_, before->table.generation);
    const uint32_t gen_before = known_gen_;  // this launch's ranks register as a later generation
    MpirunReport report;
    const std::vector<std::string> argv = mpirun_argv(hosts, *plan);
    say("launch " + std::to_string(attempt) + ": " + std::to_string(world) + " rank(s) on " +
        mpirun_host_arg(hosts) + ", " + plan->describe());
    SX_ASSIGN_OR_RETURN(
        std::unique_ptr<Child> job,
        Child::start(argv, run_dir_ + "/launch-" + std::to_string(attempt) + ".log", o_.echo,
                     [&report](const std::string& line) { report.on_line(line); }));
    const double t_launch = now_s();
    double last_answer = t_launch;  // the coordinator's last answer
    pause_seen_.clear();
    bool running = false;
    int64_t max_step = -1;
    std::string reason;
    std::vector<DeadRank> coord_dead;  // what the coordinator said at the failing poll
    double detect_s = NAN;

    while (reason.empty()) {
      if (stop_.load()) {
        job->stop(3.0);
        return finish(record(attempt, "interrupted", "signal", hosts), 130);
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(o_.poll_interval));
      if (Status cs = keep_coord_alive(); !cs.is_ok()) {
        job->stop(3.0);
        return finish(record(attempt, "gave_up", cs.message(), hosts), 1);
      }
      int code = 0;
      const bool exited = job->poll(&code);
      auto st = status(1.0);
      if (st.is_ok()) last_answer = now_s();
      else if (running && now_s() - last_answer > o_.coord_unreachable_after * o_.dead_after && reason.empty())
        reason = "the coordinator at " + endpoint_ + " has not answered for " +
                 std::to_string(int(now_s() - last_answer)) + " s (> " + std::to_string(o_.coord_unreachable_after) +
                 " x T): nobody watches the ranks";
      if (st.is_ok() && st->table.generation > gen_before && st->table.complete) {
        running = true;
        known_gen_ = std::max(known_gen_, st->table.generation);
        double worst_age = -1;
        const int64_t spe = st->table.steps_per_epoch;
        for (const coord::RankStatus& r : st->ranks) {
          max_step = std::max(max_step, r.metrics.step);
          if (r.state == RankState::kAlive) continue;
          if (r.state == RankState::kStalled && spe > 0 && r.metrics.step % spe == 0) {
            // At an epoch end the ranks evaluate and checkpoint without new steps: a longer pause is
            // normal there, up to --pause-timeout from when the stall was first seen.
            auto [it, fresh] = pause_seen_.try_emplace(r.rank, r.metrics.step, now_s());
            if (!fresh && it->second.first != r.metrics.step) it->second = {r.metrics.step, now_s()};
            if (now_s() - it->second.second < o_.pause_timeout) continue;
          }
          if (reason.empty() || (r.state == RankState::kDead && r.heartbeat_age > worst_age)) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "rank %d on %s %s (heartbeat age %.1fs, step %lld)", r.rank, r.host.c_str(),
                          coord::rank_state_name(r.state), r.heartbeat_age, static_cast<long long>(r.metrics.step));
            reason = buf;
            worst_age = r.state == RankState::kDead ? r.heartbeat_age : worst_age;
            detect_s = r.heartbeat_age;
          }
          if (r.state == RankState::kDead) coord_dead.push_back({r.host, r.heartbeat_age});
        }
        if (pending_ && max_step > pending_->resumed_step) {  // the relaunch made its first step
          pending_->restart_s = now_s() - pending_t_;
          Status s = log_->write(*pending_);
          if (!s.is_ok()) say("warning: " + s.to_string());
          pending_.reset();
        }
      }
      if (!reason.empty()) break;
      if (exited) {
        if (code == 0) {
          const int64_t last = std::max(max_step, last_train_step(run_dir_ + "/metrics.jsonl"));
          RestartRecord r = record(attempt, "completed", "mpirun exited 0 at step " + std::to_string(last), hosts);
          r.batch = plan->describe();
          return finish(r, 0);
        }
        const std::string line = report.first_line();
        reason = "mpirun exited with code " + std::to_string(code) + (line.empty() ? std::string() : ": " + line);
        detect_s = o_.poll_interval;
      } else if (!running && now_s() - t_launch > o_.start_timeout) {
        reason = "the ranks did not all register within " + std::to_string(int(o_.start_timeout)) + " s";
      }
    }

    // Abort what is left of the job (on a cut link MPI itself would wait much longer).
    const double t_fail = now_s();
    say("failure: " + reason + "; aborting the job");
    // Probe while the job is being aborted (mpirun may take its whole grace time over a cut link).
    auto probing = std::async(std::launch::async, [this, &hosts] { return probe(hosts); });
    // Deaths mpirun reports from here on are the ranks our own abort kills; a daemon it loses is news.
    std::vector<std::string> named = report.died();
    job->stop(3.0);
    job.reset();
    for (const std::string& h : report.lost()) named.push_back(h);
    const std::vector<std::string> blamed = blame_hosts(named, coord_dead);
    std::vector<std::string> dead;
    const std::vector<bool> reachable = probing.get();
    for (size_t i = 0; i < hosts.size(); ++i) {
      const bool is_blamed = std::find(blamed.begin(), blamed.end(), hosts[i].name) != blamed.end();
      if (!reachable[i] || is_blamed) dead.push_back(hosts[i].name);
      if (!reachable[i]) say("host " + hosts[i].name + " is unreachable (probe through the launch agent failed)");
      else if (is_blamed)
        say("host " + hosts[i].name + " is dropped: " +
            (std::find(named.begin(), named.end(), hosts[i].name) != named.end()
                 ? "mpirun reported it"
                 : "the coordinator heard from it the longest ago"));
    }
    // The coordinator's verdict on the dropped hosts' ranks (bounded by T + 1 s; the job is gone anyway).
    double confirm_s = NAN;
    const double confirm_end = now_s() + o_.dead_after + 1;
    while (!dead.empty() && now_s() < confirm_end) {
      auto st = status(1.0);
      bool all_dead = st.is_ok();
      if (st.is_ok())
        for (const coord::RankStatus& r : st->ranks)
          if (std::find(dead.begin(), dead.end(), r.host) != dead.end() && r.state != RankState::kDead) all_dead = false;
      if (all_dead) {
        confirm_s = now_s() - t_fail;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (pending_) {  // the previous relaunch failed before its first step
      Status s = log_->write(*pending_);
      if (!s.is_ok()) say("warning: " + s.to_string());
      pending_.reset();
    }

    std::vector<Host> next;
    for (const Host& h : hosts)
      if (std::find(dead.begin(), dead.end(), h.name) == dead.end()) next.push_back(h);
    for (size_t dropped = hosts.size() - next.size(); dropped > 0 && !standby.empty(); --dropped) {
      const std::vector<bool> ok = probe({standby.front()});
      if (ok[0]) next.push_back(standby.front());
      else say("standby host " + standby.front().name + " is unreachable; not used");
      standby.erase(standby.begin());
    }
    const int64_t resumed = latest_checkpoint_step(base_.checkpoint_dir());
    const int64_t last = std::max(max_step, last_train_step(run_dir_ + "/metrics.jsonl"));
    RestartRecord rec = record(attempt + 1, "restart", reason, next);
    rec.dead_hosts = dead;
    rec.resumed_step = resumed;
    rec.lost_steps = std::max<int64_t>(0, last - resumed);
    rec.detect_s = detect_s;
    rec.confirm_s = confirm_s;
    if (attempt + 1 > o_.max_restarts) {
      rec.event = "gave_up";
      rec.reason = reason + "; --max-restarts " + std::to_string(o_.max_restarts) + " reached";
      return finish(rec, 1);
    }
    if (int(next.size()) < std::max(1, o_.min_hosts)) {
      rec.event = "gave_up";
      rec.reason = reason + "; " + std::to_string(next.size()) + " host(s) left, --min-hosts " +
                   std::to_string(o_.min_hosts);
      return finish(rec, 1);
    }
    pending_ = rec;
    pending_t_ = t_fail;
    hosts = next;
  }
}

}  // namespace

StatusOr<int> run_supervisor(const SupervisorOptions& options, const std::atomic<bool>& stop) {
  Supervisor s(options, stop);
  return s.run();
}

}  // namespace sx::launch
