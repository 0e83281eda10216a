// defines: sx::coord::CurveKeys, create_job_keys, read_client_keys, read_server_keys, apply_curve_client,
// apply_curve_server, ZapAuthenticator — who may talk to a job's coordinator.
// Every socket of a job (ROUTER, PUB and the clients' DEALER/SUB) runs ZeroMQ CURVE: encrypted, and
// the server accepts only the job's client key (checked by its ZAP handler). The keys live in the
// job dir, mode 0600, made by `sx_coord serve` (or sx_launch through it) when absent:
//   DIR/coord_server.key  {"server_public", "server_secret", "client_public"}   (the server only)
//   DIR/coord_client.key  {"server_public", "client_public", "client_secret"}   (workers, CLI verbs)
// A client without the client key cannot complete the handshake: no request reaches the state, no
// reply and no broadcast reaches it.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace sx::coord {

struct CurveKeys {  // Z85 text, 40 characters each
  std::string server_public, server_secret, client_public, client_secret;
  bool client_ready() const { return !server_public.empty() && !client_public.empty() && !client_secret.empty(); }
};

std::string server_key_path(const std::string& job_dir);
std::string client_key_path(const std::string& job_dir);

// Server side: reads both files, or makes new keys (mode 0600) when neither exists.
StatusOr<CurveKeys> load_or_create_job_keys(const std::string& job_dir);
// Client side: DIR/coord_client.key, or a key file path. Refuses a file others can read.
StatusOr<CurveKeys> read_client_keys(const std::string& job_dir_or_file);

void apply_curve_client(zmq::socket_t& sock, const CurveKeys& keys);  // before connect
void apply_curve_server(zmq::socket_t& sock, const CurveKeys& keys);  // before bind

// The ZAP handler (inproc://zeromq.zap.01 on the server's context): allows exactly the job's client
// key. Call handle() when its socket is readable (poll it beside the ROUTER).
class ZapAuthenticator {
 public:
  ZapAuthenticator(zmq::context_t& ctx, std::string allowed_client_public);
  ~ZapAuthenticator();
  void* handle() const;       // for zmq::poll
  void serve_pending();       // answers every queued ZAP request
  uint64_t refused() const { return refused_; }

 private:
  std::unique_ptr<zmq::socket_t> sock_;
  std::string allowed_;       // 32 raw bytes
  uint64_t refused_ = 0;
};

}  // namespace sx::coord
