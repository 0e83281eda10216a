#include "coordinator/request.h"

#include <unistd.h>

#include <chrono>
#include <sstream>

#include <zmq.hpp>

#include "coordinator/protocol.h"

namespace sx::coord {

Requester::Requester(zmq::context_t& ctx, std::string endpoint, CurveKeys keys)
    : ctx_(ctx), endpoint_(std::move(endpoint)), keys_(std::move(keys)), next_id_((static_cast<uint64_t>(getpid()) << 32) + 1) {}

Requester::~Requester() = default;

Status Requester::reset() {
  try {
    sock_.reset();
    sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    sock_->set(zmq::sockopt::linger, 0);
    sock_->set(zmq::sockopt::sndtimeo, 0);
    sock_->set(zmq::sockopt::reconnect_ivl, 100);
    sock_->set(zmq::sockopt::reconnect_ivl_max, 1000);
    if (keys_.client_ready()) apply_curve_client(*sock_, keys_);
    sock_->connect(endpoint_);
  } catch (const zmq::error_t& e) {
    sock_.reset();
    return Status::invalid_argument("cannot connect to '" + endpoint_ + "': " + e.what() +
                                    ". HINT: the endpoint looks like tcp://HOST:PORT");
  }
  return Status::ok();
}

StatusOr<Message> Requester::call(Message req, double timeout_s) {
  if (!sock_) SX_TRY(reset());
  req.request_id = next_id_++;
  std::string bytes = encode(req);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  try {
    // A fresh DEALER queues the message until the TCP connection is up, so dontwait does not drop it.
    if (!sock_->send(zmq::buffer(bytes), zmq::send_flags::dontwait)) {
      (void)reset();
      return Status::unavailable("could not queue a request to the coordinator at " + endpoint_);
    }
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t items[] = {{sock_->handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, left);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t msg;
      if (!sock_->recv(msg, zmq::recv_flags::dontwait)) continue;
      uint64_t id = 0;
      auto reply = decode(std::string_view(static_cast<const char*>(msg.data()), msg.size()), &id);
      if (id != req.request_id) continue;  // a late reply to an earlier request
      if (!reply.is_ok()) return reply.status().with_context("reply from " + endpoint_);
      if (reply->kind != MsgKind::kError) return reply;
      std::string what = "coordinator at " + endpoint_ + ": " + reply->error.message;
      switch (reply->error.code) {
        case ErrorCode::kUnknownRank: return Status::not_found(what);
        case ErrorCode::kBadRequest:
        case ErrorCode::kWrongJob:
        case ErrorCode::kBadFrame: return Status::invalid_argument(what);
        case ErrorCode::kBadVersion: return Status::unimplemented(what);
        case ErrorCode::kInternal: break;
      }
      return Status::internal(what);
    }
  } catch (const zmq::error_t& e) {
    (void)reset();
    return Status::unavailable("talking to the coordinator at " + endpoint_ + ": " + e.what());
  }
  (void)reset();
  std::ostringstream os;
  os << "no coordinator answered at " << endpoint_ << " within " << timeout_s
     << " s. HINT: is `sx_coord serve --job DIR --listen ...` running and reachable from this host?";
  return Status::unavailable(os.str());
}

StatusOr<Message> request_once(const std::string& endpoint, const Message& req, double timeout_s,
                               const CurveKeys& keys) {
  zmq::context_t ctx(1);
  Requester r(ctx, endpoint, keys);
  return r.call(req, timeout_s);
}

}  // namespace sx::coord
