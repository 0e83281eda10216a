// defines: sx::coord::Requester — request/reply over a DEALER socket with a timeout on every call
// (the "lazy pirate" pattern: after a timeout the socket is thrown away and made afresh, so a
// restarted coordinator is reached again and no stale request is delivered late). Not thread-safe:
// one owner at a time.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/keys.h"
#include "coordinator/types.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace sx::coord {

class Requester {
 public:
  // With keys (client_ready()), the socket runs CURVE as the job's client; without, plain (refused by
  // every sx_coord, which requires CURVE: only tests of that refusal use it).
  Requester(zmq::context_t& ctx, std::string endpoint, CurveKeys keys = {});
  ~Requester();
  Requester(const Requester&) = delete;
  Requester& operator=(const Requester&) = delete;

  // Sends `req` (its request id is assigned here) and waits up to timeout_s for the matching reply.
  // An error reply becomes a Status (unknown rank -> kNotFound, bad request / wrong job ->
  // kInvalidArgument, other version -> kUnimplemented); no reply -> kUnavailable naming the endpoint.
  StatusOr<Message> call(Message req, double timeout_s);

  const std::string& endpoint() const { return endpoint_; }

 private:
  Status reset();
  zmq::context_t& ctx_;
  std::string endpoint_;
  CurveKeys keys_;
  std::unique_ptr<zmq::socket_t> sock_;
  uint64_t next_id_;
};

// One call on a fresh context, for CLI verbs.
StatusOr<Message> request_once(const std::string& endpoint, const Message& req, double timeout_s,
                               const CurveKeys& keys = {});

}  // namespace sx::coord
