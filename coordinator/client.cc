#include "coordinator/client.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include <zmq.hpp>

#include "common/guard.h"
#include "coordinator/job_dir.h"
#include "coordinator/log.h"
#include "coordinator/protocol.h"
#include "coordinator/request.h"

namespace sx::coord {
namespace {

using Clock = std::chrono::steady_clock;

std::string join_ranks(const std::vector<int32_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

}  // namespace

struct CoordClient::SubSocket {
  zmq::socket_t sock;
};

Status verify_rank_table(const RankTable& t, const RegisterRank& me, const MpiView& mpi) {
  const std::string hint =
      " HINT: every rank must point at the same coordinator, and host names must be unique per node "
      "(check `hostname` on each node, or the netns setup)";
  if (t.world_size != mpi.world_size)
    return Status::invalid_argument("rank table mismatch: coordinator generation " + std::to_string(t.generation) +
                                    " has world size " + std::to_string(t.world_size) + ", MPI says " +
                                    std::to_string(mpi.world_size) + "." + hint);
  const RankEntry* e = t.find(mpi.rank);
  if (!e || e->host != me.host || e->pid != me.pid)
    return Status::invalid_argument(
        "rank table mismatch: rank " + std::to_string(mpi.rank) + " is held by " +
        (e ? "host '" + e->host + "' pid " + std::to_string(e->pid) : std::string("nobody")) + ", not by this process (host '" +
        me.host + "' pid " + std::to_string(me.pid) + "); two processes claim the same rank?" + hint);
  auto h = std::find_if(t.hosts.begin(), t.hosts.end(), [&](const HostRanks& x) { return x.host == me.host; });
  if (h == t.hosts.end()) return Status::internal("rank table has no entry for host '" + me.host + "'");
  auto pos = std::find(h->ranks.begin(), h->ranks.end(), mpi.rank) - h->ranks.begin();
  if (static_cast<int32_t>(h->ranks.size()) != mpi.local_size || h->leader != mpi.node_leader || pos != mpi.local_rank)
    return Status::invalid_argument(
        "rank table mismatch on host '" + me.host + "': the coordinator sees ranks [" + join_ranks(h->ranks) +
        "] (leader " + std::to_string(h->leader) + ", this rank at local index " + std::to_string(pos) +
        "), MPI's shared-memory communicator says local rank " + std::to_string(mpi.local_rank) + " of " +
        std::to_string(mpi.local_size) + " with leader " + std::to_string(mpi.node_leader) + "." + hint);
  return Status::ok();
}

double effective_lr(double scheduled_lr, int64_t step, const std::vector<LrOverride>& overrides) {
  const LrOverride* best = nullptr;
  for (const auto& o : overrides) {
    if (o.from_step > step) continue;
    if (!best || o.from_step > best->from_step || (o.from_step == best->from_step && o.id > best->id)) best = &o;
  }
  if (!best) return scheduled_lr;
  return best->kind == OverrideKind::kLr ? best->value : scheduled_lr * best->value;
}

StatusOr<std::unique_ptr<CoordClient>> CoordClient::connect(const std::string& endpoint, const std::string& job,
                                                            double timeout_s, ClientOptions opts) {
  std::unique_ptr<CoordClient> c(new CoordClient());
  c->opts_ = opts;
  c->job_ = job;
  if (endpoint.empty() || endpoint == "none") return c;
  c->enabled_ = true;
  c->endpoint_ = endpoint;
  c->ctx_ = std::make_unique<zmq::context_t>(1);
  c->req_ = std::make_unique<Requester>(*c->ctx_, endpoint, opts.keys);
  Message hello;
  hello.kind = MsgKind::kHello;
  auto reply = c->req_->call(hello, timeout_s);
  if (!reply.is_ok())
    return Status::unavailable("coordinator unreachable: " + reply.status().message() +
                               " (or set `coord: none` to train without a coordinator)");
  if (reply->kind != MsgKind::kHelloReply) return Status::internal("unexpected reply to hello from " + endpoint);
  if (!job.empty() && reply->hello_reply.job != job)
    return Status::invalid_argument("the coordinator at " + endpoint + " serves job '" + reply->hello_reply.job +
                                    "', not '" + job + "'. HINT: check the coord endpoint in the config");
  c->job_ = reply->hello_reply.job;
  c->connect_sub(reply->hello_reply.pub_endpoint);
  c->connected_ = true;
  return c;
}

CoordClient::~CoordClient() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  sub_.reset();
  req_.reset();
}

void CoordClient::log(const std::string& msg) const {
  if (!opts_.quiet) log_warn("coord-client rank " + std::to_string(me_.rank), msg);
}

void CoordClient::connect_sub(const std::string& pub) {
  std::string target = pub_endpoint_for(pub, endpoint_);
  if (target.empty() || target == sub_endpoint_) return;
  try {
    auto s = std::make_unique<SubSocket>(SubSocket{zmq::socket_t(*ctx_, zmq::socket_type::sub)});
    s->sock.set(zmq::sockopt::linger, 0);
    s->sock.set(zmq::sockopt::subscribe, "");
    if (opts_.keys.client_ready()) apply_curve_client(s->sock, opts_.keys);
    s->sock.connect(target);
    sub_ = std::move(s);
    sub_endpoint_ = target;
  } catch (const zmq::error_t& e) {
    log("cannot subscribe to " + target + ": " + e.what() + "; overrides still arrive with heartbeat replies");
  }
}

void CoordClient::drain_sub() {
  if (!sub_) return;
  try {
    zmq::message_t msg;
    while (sub_->sock.recv(msg, zmq::recv_flags::dontwait)) {
      auto m = decode(std::string_view(static_cast<const char*>(msg.data()), msg.size()));
      if (!m.is_ok()) continue;
      if (m->kind == MsgKind::kLrOverride) take({m->lr_override}, {});
      if (m->kind == MsgKind::kNotice) take({}, {m->notice});
    }
  } catch (const zmq::error_t&) {
  }
}

void CoordClient::take(const std::vector<LrOverride>& ovs, const std::vector<Notice>& nts) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& o : ovs)
    if (seen_overrides_.insert(o.id).second) new_overrides_.push_back(o);
  for (const auto& n : nts)
    if (seen_notices_.insert(n.id).second) new_notices_.push_back(n);
}

StatusOr<RankTable> CoordClient::register_rank(RegisterRank me, const MpiView& mpi) {
  if (!enabled_) return RankTable{};
  me.job = job_;
  me_ = me;
  auto deadline = Clock::now() + std::chrono::duration<double>(opts_.table_timeout_s);
  auto left = [&] { return std::max(0.05, std::chrono::duration<double>(deadline - Clock::now()).count()); };
  Message reg;
  reg.kind = MsgKind::kRegisterRank;
  reg.register_rank = me;
  SX_ASSIGN_OR_RETURN(Message reply, req_->call(reg, std::min(left(), 10.0)));
  RankTable table = reply.rank_table;
  while (!table.complete) {
    if (Clock::now() >= deadline) {
      std::vector<int32_t> missing;
      for (int32_t r = 0; r < table.world_size; ++r)
        if (!table.find(r)) missing.push_back(r);
      return Status::unavailable("rank table incomplete after " + num_str(opts_.table_timeout_s) + " s: " +
                                 std::to_string(table.ranks.size()) + " of " + std::to_string(table.world_size) +
                                 " ranks registered at " + endpoint_ + " (missing ranks " + join_ranks(missing) +
                                 "). HINT: is every rank pointed at the same coordinator and job?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Message q;
    q.kind = MsgKind::kRankTableQuery;
    SX_ASSIGN_OR_RETURN(reply, req_->call(q, std::min(left(), 10.0)));
    table = reply.rank_table;
    const RankEntry* mine = table.find(me.rank);
    if (!mine || mine->pid != me.pid || mine->host != me.host) {  // a new generation started without us
      SX_ASSIGN_OR_RETURN(reply, req_->call(reg, std::min(left(), 10.0)));
      table = reply.rank_table;
    }
  }
  SX_TRY(verify_rank_table(table, me, mpi));
  generation_ = table.generation;
  if (!thread_.joinable())
    thread_ = std::thread([this] {
      // The thread boundary: an exception ends the heartbeats with a line (the coordinator then sees
      // this rank go silent) instead of std::terminate.
      try {
        heartbeat_loop();
      } catch (...) {
        std::fprintf(stderr, "sx coord client: heartbeat thread stopped: %s\n", current_exception_text().c_str());
      }
    });
  return table;
}

void CoordClient::post_metrics(const Metrics& m) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  latest_ = m;
}

void CoordClient::post_metrics(int64_t step, double epoch, double loss, double lr, double img_per_sec,
                               int64_t mem_bytes, double accuracy) {
  post_metrics(Metrics{step, epoch, loss, accuracy, lr, img_per_sec, mem_bytes});
}

std::vector<LrOverride> CoordClient::poll_overrides() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LrOverride> out;
  out.swap(new_overrides_);
  return out;
}

std::vector<Notice> CoordClient::poll_notices() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Notice> out;
  out.swap(new_notices_);
  return out;
}

void CoordClient::heartbeat_loop() {
  auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opts_.heartbeat_interval_s));
  auto next = Clock::now();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Wake every 50 ms to pick up broadcasts; a broadcast can't wait for the next heartbeat.
      while (!stop_ && Clock::now() < next) {
        lock.unlock();
        drain_sub();
        lock.lock();
        cv_.wait_for(lock, std::min<Clock::duration>(std::chrono::milliseconds(50), next - Clock::now()),
                     [this] { return stop_; });
      }
      if (stop_) return;
    }
    next = std::max(next + interval, Clock::now());
    Message hb;
    hb.kind = MsgKind::kHeartbeat;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hb.heartbeat = Heartbeat{job_, generation_, me_.rank, me_.pid, latest_};
    }
    auto reply = req_->call(hb, opts_.request_timeout_s);
    if (!reply.is_ok() && reply.status().code() == StatusCode::kNotFound) {
      // The coordinator lost us (a new generation, or its state was wiped): register again.
      Message reg;
      reg.kind = MsgKind::kRegisterRank;
      reg.register_rank = me_;
      auto t = req_->call(reg, opts_.request_timeout_s);
      if (t.is_ok()) {
        generation_ = t->rank_table.generation;
        log("re-registered with the coordinator: generation " + std::to_string(generation_));
      }
      continue;
    }
    if (!reply.is_ok()) {
      if (connected_.exchange(false))
        log("lost the coordinator (" + reply.status().message() + "); training continues, retrying every " +
            num_str(opts_.heartbeat_interval_s) + " s");
      continue;
    }
    if (!connected_.exchange(true)) log("coordinator at " + endpoint_ + " is back");
    answered_++;
    take(reply->heartbeat_reply.overrides, reply->heartbeat_reply.notices);
    connect_sub(reply->heartbeat_reply.pub_endpoint);
  }
}

}  // namespace sx::coord
