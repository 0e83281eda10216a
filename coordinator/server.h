// defines: sx::coord::ServerOptions, Server — `sx_coord serve`: a ROUTER socket for requests and a
// PUB socket for broadcasts, served by one thread with zmq::poll, state kept in the job dir.
#pragma once

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/job_dir.h"
#include "coordinator/keys.h"
#include "coordinator/state.h"
#include "storage/run_lock.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace sx::coord {

struct ServerOptions {
  std::string job_dir;
  std::string listen = "tcp://127.0.0.1:5555";  // "tcp://127.0.0.1:*" picks a free port; CURVE on every socket
  std::string pub;                      // empty: the listen port + 1 (or a free port for "*")
  std::string job_name;                 // empty: the job dir's base name
  double dead_after = 10;               // T: seconds without heartbeat -> dead
  double stall_after = -1;              // seconds with a frozen step -> stalled; < 0: same as T
  int poll_ms = 100;
};

class Server {
 public:
  // Loads DIR/coord_state.json when present (a restart), binds both sockets, writes DIR/coord.json.
  static StatusOr<std::unique_ptr<Server>> open(ServerOptions opts);
  ~Server();

  // Serves until `stop` becomes true; returns after at most poll_ms more.
  Status run(const std::atomic<bool>& stop);

  const std::string& endpoint() const { return info_.endpoint; }
  const std::string& pub_endpoint() const { return info_.pub; }
  const CoordState& state() const { return state_; }
  uint64_t bad_frames() const { return bad_frames_; }

 private:
  Server(ServerOptions opts, CoordState state);
  Status bind();
  void serve_one();                                        // one ROUTER message, never throws
  std::string handle(std::string_view payload);            // reply bytes
  Message dispatch(const Message& req, double now);
  void publish(const Message& msg);
  void persist();
  void log_metrics(const Heartbeat& hb);
  void reject(uint64_t request_id, ErrorCode code, const std::string& why, Message* reply);

  ServerOptions opts_;
  std::unique_ptr<storage::RunLock> lock_;  // DIR/coord.lock: one server per job dir
  CoordState state_;
  JobFiles files_;
  ServerInfo info_;
  std::string bound_pub_;
  std::unique_ptr<zmq::context_t> ctx_;
  CurveKeys keys_;                           // DIR/coord_server.key (made when absent)
  std::unique_ptr<class ZapAuthenticator> zap_;  // allows the job's client key only
  std::unique_ptr<zmq::socket_t> router_, pub_;
  std::FILE* metrics_ = nullptr;
  uint64_t bad_frames_ = 0;
};

double monotonic_seconds();

}  // namespace sx::coord
