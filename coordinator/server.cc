#include "coordinator/server.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iterator>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "coordinator/log.h"
#include "coordinator/protocol.h"
#include "storage/fs_util.h"

namespace sx::coord {
namespace {

const char* kWho = "sx_coord";

std::string default_pub(const std::string& listen) {
  if (listen.rfind("tcp://", 0) != 0) return listen + ".pub";
  auto colon = listen.rfind(':');
  std::string port = listen.substr(colon + 1);
  if (port == "*" || port == "0") return listen.substr(0, colon) + ":*";
  try {
    return listen.substr(0, colon) + ":" + std::to_string(std::stoi(port) + 1);
  } catch (const std::exception&) {
    return listen.substr(0, colon) + ":*";
  }
}

std::string base_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  auto slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Server::Server(ServerOptions opts, CoordState state)
    : opts_(std::move(opts)), state_(std::move(state)), files_{opts_.job_dir} {}

Server::~Server() {
  if (metrics_) std::fclose(metrics_);
}

StatusOr<std::unique_ptr<Server>> Server::open(ServerOptions opts) {
  if (opts.job_dir.empty()) return Status::invalid_argument("--job DIR is required");
  if (opts.dead_after <= 0) return Status::invalid_argument("the dead-after timeout must be > 0 seconds");
  if (opts.stall_after < 0) opts.stall_after = opts.dead_after;
  if (opts.job_name.empty()) opts.job_name = base_name(opts.job_dir);
  if (opts.pub.empty()) opts.pub = default_pub(opts.listen);
  if (::access(opts.job_dir.c_str(), W_OK) != 0)
    return Status::not_found("job dir " + opts.job_dir + " does not exist or is not writable. HINT: mkdir -p " + opts.job_dir);
  // One server per job dir (two would fight over the state file): DIR/coord.lock, held until exit.
  SX_ASSIGN_OR_RETURN(std::unique_ptr<storage::RunLock> lock,
                      storage::RunLock::acquire(opts.job_dir, "coord.lock", "sx_coord serve"));
  if (lock->taken_over())
    log_info(kWho, lock->path() + ": took over the lock left by " + lock->taken_over()->describe() + " (no longer running)");

  JobFiles files{opts.job_dir};
  CoordState state(opts.job_name, opts.dead_after, opts.stall_after);
  std::ifstream in(files.state());
  if (in) {
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return Status::data_loss(files.state() + " is not valid JSON. HINT: move it aside to start with an empty rank table");
    auto loaded = CoordState::from_json(j, opts.dead_after, opts.stall_after, monotonic_seconds());
    if (!loaded.is_ok()) return loaded.status().with_context(files.state());
    if (loaded->job() != opts.job_name)
      return Status::invalid_argument(files.state() + " belongs to job '" + loaded->job() + "', not '" + opts.job_name +
                                      "'. HINT: pass --job-name " + loaded->job());
    state = std::move(loaded).value();
    log_info(kWho, "recovered from " + files.state() + ": generation " + std::to_string(state.table().generation) + ", " +
                       std::to_string(state.table().ranks.size()) + "/" + std::to_string(state.table().world_size) +
                       " ranks, " + std::to_string(state.overrides().size()) + " overrides");
  }
  SX_ASSIGN_OR_RETURN(CurveKeys keys, load_or_create_job_keys(opts.job_dir));
  std::unique_ptr<Server> s(new Server(std::move(opts), std::move(state)));
  s->lock_ = std::move(lock);
  s->keys_ = std::move(keys);
  SX_TRY(s->bind());
  s->metrics_ = std::fopen(files.metrics().c_str(), "a");
  if (!s->metrics_) return Status::unavailable("cannot append to " + files.metrics());
  SX_TRY(write_server_info(s->opts_.job_dir, s->info_));
  log_info(kWho, "job '" + s->opts_.job_name + "': requests on " + s->info_.endpoint + ", broadcasts on " + s->info_.pub +
                     ", dead after " + num_str(s->opts_.dead_after) + " s, stalled after " +
                     num_str(s->opts_.stall_after) + " s");
  return s;
}

Status Server::bind() {
  try {
    ctx_ = std::make_unique<zmq::context_t>(1);
    router_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
    router_->set(zmq::sockopt::linger, 0);
    router_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(4 * kMaxFrameBytes));  // drops the peer, not us
    router_->set(zmq::sockopt::sndtimeo, 0);
    zap_ = std::make_unique<ZapAuthenticator>(*ctx_, keys_.client_public);
    apply_curve_server(*router_, keys_);
    router_->bind(opts_.listen);
    pub_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pub);
    pub_->set(zmq::sockopt::linger, 0);
    pub_->set(zmq::sockopt::sndtimeo, 0);
    apply_curve_server(*pub_, keys_);
    pub_->bind(opts_.pub);
    bound_pub_ = pub_->get(zmq::sockopt::last_endpoint);
    info_ = ServerInfo{connectable_endpoint(router_->get(zmq::sockopt::last_endpoint)), connectable_endpoint(bound_pub_),
                       opts_.job_name, static_cast<int64_t>(getpid())};
  } catch (const zmq::error_t& e) {
    return Status::unavailable("cannot bind " + opts_.listen + " / " + opts_.pub + ": " + e.what() +
                               ". HINT: is the port in use by another sx_coord? pick another with --listen");
  }
  return Status::ok();
}

Status Server::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    zmq::pollitem_t items[] = {{router_->handle(), 0, ZMQ_POLLIN, 0}, {zap_->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(opts_.poll_ms));
      if (items[1].revents & ZMQ_POLLIN) {
        const uint64_t before = zap_->refused();
        zap_->serve_pending();  // CURVE handshakes: only the job's client key gets in
        const uint64_t now = zap_->refused();
        if (now != before && (now <= 10 || now / 1000 != before / 1000))
          log_warn(kWho, "refused a connection without this job's client key (" + std::to_string(now) + " so far)");
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return Status::internal(std::string("zmq::poll: ") + e.what());
    }
    // Bounded batch so membership scans keep running under a flood.
    for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN); ++i) {
      if (router_->get(zmq::sockopt::events) & ZMQ_POLLIN) serve_one();
      else break;
    }
    for (const auto& c : state_.scan(monotonic_seconds()))
      log_warn(kWho, "rank " + std::to_string(c.rank) + ": " + rank_state_name(c.from) + " -> " + rank_state_name(c.to));
  }
  log_info(kWho, "stopping");
  return Status::ok();
}

void Server::serve_one() {
  try {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(*router_, std::back_inserter(parts), zmq::recv_flags::dontwait)) return;
    // [identity] [empty delimiter from REQ peers]? [payload]
    size_t first = 1;
    if (parts.size() >= 3 && parts[1].size() == 0) first = 2;
    std::string reply;
    if (parts.size() != first + 1) {
      std::string why = "expected exactly one payload frame, got " + std::to_string(parts.size() - first);
      reply = encode(make_error(0, ErrorCode::kBadFrame, why));
      if (++bad_frames_ <= 10 || bad_frames_ % 1000 == 0)
        log_warn(kWho, "rejected message: " + why + " (" + std::to_string(bad_frames_) + " bad frames so far)");
    } else {
      reply = handle(std::string_view(static_cast<const char*>(parts[first].data()), parts[first].size()));
    }
    std::vector<zmq::const_buffer> out;
    out.push_back(zmq::buffer(parts[0].data(), parts[0].size()));
    if (first == 2) out.push_back(zmq::const_buffer());
    out.push_back(zmq::buffer(reply));
    (void)zmq::send_multipart(*router_, out, zmq::send_flags::dontwait);  // a vanished peer is not our problem
  } catch (const std::exception& e) {
    log_error(kWho, std::string("while serving a request: ") + e.what());
  }
}

void Server::reject(uint64_t request_id, ErrorCode code, const std::string& why, Message* reply) {
  *reply = make_error(request_id, code, why);
}

std::string Server::handle(std::string_view payload) {
  uint64_t request_id = 0;
  auto req = decode(payload, &request_id);
  if (!req.is_ok()) {
    bool version = req.status().code() == StatusCode::kUnimplemented;
    if (++bad_frames_ <= 10 || bad_frames_ % 1000 == 0)
      log_warn(kWho, "rejected frame of " + std::to_string(payload.size()) + " bytes: " + req.status().message() + " (" +
                         std::to_string(bad_frames_) + " bad frames so far)");
    return encode(make_error(request_id, version ? ErrorCode::kBadVersion : ErrorCode::kBadFrame, req.status().message()));
  }
  Message reply;
  try {
    reply = dispatch(*req, monotonic_seconds());
  } catch (const std::exception& e) {
    reply = make_error(request_id, ErrorCode::kInternal, e.what());
    log_error(kWho, std::string("internal error: ") + e.what());
  }
  reply.request_id = request_id;
  return encode(reply);
}

Message Server::dispatch(const Message& req, double now) {
  Message reply;
  reply.request_id = req.request_id;
  auto job_ok = [&](const std::string& job) {
    if (job == state_.job()) return true;
    reject(req.request_id, ErrorCode::kWrongJob,
           "this coordinator serves job '" + state_.job() + "', not '" + job + "'. HINT: check the coord endpoint", &reply);
    return false;
  };
  switch (req.kind) {
    case MsgKind::kHello:
      reply.kind = MsgKind::kHelloReply;
      reply.hello_reply = HelloReply{state_.job(), bound_pub_, info_.pid};
      break;
    case MsgKind::kRegisterRank: {
      if (!job_ok(req.register_rank.job)) break;
      bool was_complete = state_.table().complete;
      uint32_t gen = state_.table().generation;
      bool changed = false;
      auto t = state_.register_rank(req.register_rank, now, &changed);
      if (!t.is_ok()) {
        reject(req.request_id, ErrorCode::kBadRequest, t.status().message(), &reply);
        break;
      }
      if (t->generation != gen) log_info(kWho, "generation " + std::to_string(t->generation) + " started (world size " +
                                                   std::to_string(t->world_size) + ")");
      if (changed) persist();
      reply.kind = MsgKind::kRankTable;
      reply.rank_table = *t;
      if (t->complete && (!was_complete || t->generation != gen)) {
        log_info(kWho, "generation " + std::to_string(t->generation) + " complete: " + std::to_string(t->world_size) +
                           " ranks on " + std::to_string(t->hosts.size()) + " hosts");
        Message b;
        b.kind = MsgKind::kRankTable;
        b.rank_table = *t;
        publish(b);
      }
      break;
    }
    case MsgKind::kRankTableQuery:
      reply.kind = MsgKind::kRankTable;
      reply.rank_table = state_.table();
      break;
    case MsgKind::kHeartbeat: {
      if (!job_ok(req.heartbeat.job)) break;
      bool advanced = false;
      Status s = state_.heartbeat(req.heartbeat, now, &advanced);
      if (!s.is_ok()) {
        reject(req.request_id, ErrorCode::kUnknownRank, s.message(), &reply);
        break;
      }
      if (advanced) log_metrics(req.heartbeat);
      reply.kind = MsgKind::kHeartbeatReply;
      reply.heartbeat_reply = HeartbeatReply{state_.table().generation, state_.overrides(), state_.notices(), bound_pub_};
      break;
    }
    case MsgKind::kStatusQuery:
      reply.kind = MsgKind::kStatusReply;
      reply.status = state_.status(now);
      break;
    case MsgKind::kSetOverride: {
      auto o = state_.add_override(req.lr_override);
      if (!o.is_ok()) {
        reject(req.request_id, ErrorCode::kBadRequest, o.status().message(), &reply);
        break;
      }
      persist();
      log_info(kWho, "override #" + std::to_string(o->id) + ": " + (o->kind == OverrideKind::kLr ? "lr = " : "lr *= ") +
                         num_str(o->value) + " from step " + std::to_string(o->from_step));
      reply.kind = MsgKind::kLrOverride;
      reply.lr_override = *o;
      Message b = reply;
      b.request_id = 0;
      publish(b);
      break;
    }
    case MsgKind::kSendNotice: {
      auto n = state_.add_notice(req.notice);
      if (!n.is_ok()) {
        reject(req.request_id, ErrorCode::kBadRequest, n.status().message(), &reply);
        break;
      }
      persist();
      log_info(kWho, std::string("notice #") + std::to_string(n->id) + ": " +
                         (n->kind == NoticeKind::kDrain ? "drain" : "stop") + " (" + n->reason + ")");
      reply.kind = MsgKind::kNotice;
      reply.notice = *n;
      Message b = reply;
      b.request_id = 0;
      publish(b);
      break;
    }
    default:
      reject(req.request_id, ErrorCode::kBadRequest,
             std::string("'") + msg_kind_name(req.kind) + "' is a reply or broadcast, not a request", &reply);
      break;
  }
  return reply;
}

void Server::publish(const Message& msg) {
  try {
    std::string bytes = encode(msg);
    (void)pub_->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    log_warn(kWho, std::string("publish failed: ") + e.what());
  }
}

void Server::persist() {
  Status s = storage::write_file_atomic(files_.state(), state_.to_json().dump(1) + "\n");
  if (!s.is_ok()) log_error(kWho, "could not save state (a restart would lose the latest change): " + s.to_string());
}

void Server::log_metrics(const Heartbeat& hb) {
  const RankEntry* e = state_.table().find(hb.rank);
  const Metrics& m = hb.metrics;
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  nlohmann::json j = {{"t", static_cast<double>(std::time(nullptr))},
                      {"gen", hb.generation},
                      {"rank", hb.rank},
                      {"host", e ? e->host : ""},
                      {"step", m.step},
                      {"epoch", num(m.epoch)},
                      {"loss", num(m.loss)},
                      {"acc", num(m.accuracy)},
                      {"lr", num(m.lr)},
                      {"img_s", num(m.img_per_sec)},
                      {"mem", m.mem_bytes},
                      {"spe", state_.table().steps_per_epoch}};
  std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), metrics_);
  std::fflush(metrics_);
}

}  // namespace sx::coord
