// Cap'n Proto codec for Message. decode() treats its input as hostile: size limits, an aligned
// copy, a traversal limit, and every kj::Exception turned into a Status.
#include "coordinator/protocol.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <exception>

#include "coordinator/protocol.capnp.h"

namespace sx::coord {
namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }

void put_metrics(wire::Metrics::Builder b, const Metrics& m) {
  b.setStep(m.step);
  b.setEpoch(m.epoch);
  b.setLoss(m.loss);
  b.setAccuracy(m.accuracy);
  b.setLr(m.lr);
  b.setImgPerSec(m.img_per_sec);
  b.setMemBytes(m.mem_bytes);
}
Metrics get_metrics(wire::Metrics::Reader r) {
  return Metrics{r.getStep(), r.getEpoch(), r.getLoss(), r.getAccuracy(), r.getLr(), r.getImgPerSec(), r.getMemBytes()};
}

void put_table(wire::RankTable::Builder b, const RankTable& t) {
  b.setGeneration(t.generation);
  b.setWorldSize(t.world_size);
  b.setComplete(t.complete);
  b.setStepsPerEpoch(t.steps_per_epoch);
  auto ranks = b.initRanks(static_cast<unsigned>(t.ranks.size()));
  for (size_t i = 0; i < t.ranks.size(); ++i) {
    auto e = ranks[static_cast<unsigned>(i)];
    e.setRank(t.ranks[i].rank);
    e.setHost(t.ranks[i].host);
    e.setPid(t.ranks[i].pid);
    e.setLocalRank(t.ranks[i].local_rank);
    e.setDevice(t.ranks[i].device);
  }
  auto hosts = b.initHosts(static_cast<unsigned>(t.hosts.size()));
  for (size_t i = 0; i < t.hosts.size(); ++i) {
    auto h = hosts[static_cast<unsigned>(i)];
    h.setHost(t.hosts[i].host);
    h.setLeader(t.hosts[i].leader);
    auto rs = h.initRanks(static_cast<unsigned>(t.hosts[i].ranks.size()));
    for (size_t j = 0; j < t.hosts[i].ranks.size(); ++j) rs.set(static_cast<unsigned>(j), t.hosts[i].ranks[j]);
  }
}
RankTable get_table(wire::RankTable::Reader r) {
  RankTable t;
  t.generation = r.getGeneration();
  t.world_size = r.getWorldSize();
  t.complete = r.getComplete();
  t.steps_per_epoch = r.getStepsPerEpoch();
  for (auto e : r.getRanks())
    t.ranks.push_back(RankEntry{e.getRank(), text(e.getHost()), e.getPid(), e.getLocalRank(), text(e.getDevice())});
  for (auto h : r.getHosts()) {
    HostRanks hr{text(h.getHost()), {}, h.getLeader()};
    for (int32_t x : h.getRanks()) hr.ranks.push_back(x);
    t.hosts.push_back(std::move(hr));
  }
  return t;
}

void put_override(wire::LrOverride::Builder b, const LrOverride& o) {
  b.setId(o.id);
  b.setKind(o.kind == OverrideKind::kFactor ? wire::LrOverride::Kind::FACTOR : wire::LrOverride::Kind::LR);
  b.setValue(o.value);
  b.setFromStep(o.from_step);
  b.setFromEpoch(o.from_epoch);
}
StatusOr<LrOverride> get_override(wire::LrOverride::Reader r) {
  LrOverride o{r.getId(), OverrideKind::kLr, r.getValue(), r.getFromStep(), r.getFromEpoch()};
  switch (r.getKind()) {
    case wire::LrOverride::Kind::LR: o.kind = OverrideKind::kLr; break;
    case wire::LrOverride::Kind::FACTOR: o.kind = OverrideKind::kFactor; break;
    default: return Status::invalid_argument("unknown override kind " + std::to_string(static_cast<int>(r.getKind())));
  }
  return o;
}

void put_notice(wire::Notice::Builder b, const Notice& n) {
  b.setId(n.id);
  b.setKind(n.kind == NoticeKind::kDrain ? wire::Notice::Kind::DRAIN : wire::Notice::Kind::STOP);
  b.setFromStep(n.from_step);
  b.setReason(n.reason);
}
StatusOr<Notice> get_notice(wire::Notice::Reader r) {
  Notice n{r.getId(), NoticeKind::kStop, r.getFromStep(), text(r.getReason())};
  switch (r.getKind()) {
    case wire::Notice::Kind::STOP: n.kind = NoticeKind::kStop; break;
    case wire::Notice::Kind::DRAIN: n.kind = NoticeKind::kDrain; break;
    default: return Status::invalid_argument("unknown notice kind " + std::to_string(static_cast<int>(r.getKind())));
  }
  return n;
}

template <typename ListB>
void put_overrides(ListB list, const std::vector<LrOverride>& v) {
  for (size_t i = 0; i < v.size(); ++i) put_override(list[static_cast<unsigned>(i)], v[i]);
}
template <typename ListB>
void put_notices(ListB list, const std::vector<Notice>& v) {
  for (size_t i = 0; i < v.size(); ++i) put_notice(list[static_cast<unsigned>(i)], v[i]);
}
template <typename ListR>
Status get_overrides(ListR list, std::vector<LrOverride>* out) {
  for (auto r : list) {
    SX_ASSIGN_OR_RETURN(auto o, get_override(r));
    out->push_back(o);
  }
  return Status::ok();
}
template <typename ListR>
Status get_notices(ListR list, std::vector<Notice>* out) {
  for (auto r : list) {
    SX_ASSIGN_OR_RETURN(auto n, get_notice(r));
    out->push_back(std::move(n));
  }
  return Status::ok();
}

wire::Error::Code wire_code(ErrorCode c) {
  switch (c) {
    case ErrorCode::kBadFrame: return wire::Error::Code::BAD_FRAME;
    case ErrorCode::kBadVersion: return wire::Error::Code::BAD_VERSION;
    case ErrorCode::kBadRequest: return wire::Error::Code::BAD_REQUEST;
    case ErrorCode::kUnknownRank: return wire::Error::Code::UNKNOWN_RANK;
    case ErrorCode::kWrongJob: return wire::Error::Code::WRONG_JOB;
    case ErrorCode::kInternal: break;
  }
  return wire::Error::Code::INTERNAL;
}

StatusOr<Message> decode_body(wire::Message::Reader m) {
  Message out;
  out.version = m.getVersion();
  out.request_id = m.getRequestId();
  auto body = m.getBody();
  switch (body.which()) {
    case wire::Message::Body::HELLO: out.kind = MsgKind::kHello; break;
    case wire::Message::Body::HELLO_REPLY: {
      auto r = body.getHelloReply();
      out.kind = MsgKind::kHelloReply;
      out.hello_reply = HelloReply{text(r.getJob()), text(r.getPubEndpoint()), r.getPid()};
      break;
    }
    case wire::Message::Body::REGISTER_RANK: {
      auto r = body.getRegisterRank();
      out.kind = MsgKind::kRegisterRank;
      out.register_rank = RegisterRank{text(r.getJob()), text(r.getHost()),   r.getPid(),
                                       r.getRank(),      r.getWorldSize(),    r.getLocalRank(),
                                       text(r.getDevice()), r.getStepsPerEpoch()};
      break;
    }
    case wire::Message::Body::RANK_TABLE_QUERY: out.kind = MsgKind::kRankTableQuery; break;
    case wire::Message::Body::RANK_TABLE:
      out.kind = MsgKind::kRankTable;
      out.rank_table = get_table(body.getRankTable());
      break;
    case wire::Message::Body::HEARTBEAT: {
      auto r = body.getHeartbeat();
      out.kind = MsgKind::kHeartbeat;
      out.heartbeat = Heartbeat{text(r.getJob()), r.getGeneration(), r.getRank(), r.getPid(), get_metrics(r.getMetrics())};
      break;
    }
    case wire::Message::Body::HEARTBEAT_REPLY: {
      auto r = body.getHeartbeatReply();
      out.kind = MsgKind::kHeartbeatReply;
      out.heartbeat_reply.generation = r.getGeneration();
      out.heartbeat_reply.pub_endpoint = text(r.getPubEndpoint());
      SX_TRY(get_overrides(r.getOverrides(), &out.heartbeat_reply.overrides));
      SX_TRY(get_notices(r.getNotices(), &out.heartbeat_reply.notices));
      break;
    }
    case wire::Message::Body::STATUS_QUERY: out.kind = MsgKind::kStatusQuery; break;
    case wire::Message::Body::STATUS_REPLY: {
      auto r = body.getStatusReply();
      out.kind = MsgKind::kStatusReply;
      StatusReport& s = out.status;
      s.job = text(r.getJob());
      s.table = get_table(r.getTable());
      s.dead_after = r.getDeadAfter();
      s.stall_after = r.getStallAfter();
      for (auto rs : r.getRanks()) {
        RankStatus x{rs.getRank(), text(rs.getHost()), rs.getPid(), RankState::kAlive, rs.getHeartbeatAge(),
                     get_metrics(rs.getMetrics())};
        switch (rs.getState()) {
          case wire::RankStatus::State::ALIVE: x.state = RankState::kAlive; break;
          case wire::RankStatus::State::DEAD: x.state = RankState::kDead; break;
          case wire::RankStatus::State::STALLED: x.state = RankState::kStalled; break;
          default: return Status::invalid_argument("unknown rank state");
        }
        s.ranks.push_back(std::move(x));
      }
      SX_TRY(get_overrides(r.getOverrides(), &s.overrides));
      SX_TRY(get_notices(r.getNotices(), &s.notices));
      break;
    }
    case wire::Message::Body::SET_OVERRIDE:
    case wire::Message::Body::LR_OVERRIDE: {
      bool set = body.which() == wire::Message::Body::SET_OVERRIDE;
      out.kind = set ? MsgKind::kSetOverride : MsgKind::kLrOverride;
      SX_ASSIGN_OR_RETURN(out.lr_override, get_override(set ? body.getSetOverride() : body.getLrOverride()));
      break;
    }
    case wire::Message::Body::SEND_NOTICE:
    case wire::Message::Body::NOTICE: {
      bool send = body.which() == wire::Message::Body::SEND_NOTICE;
      out.kind = send ? MsgKind::kSendNotice : MsgKind::kNotice;
      SX_ASSIGN_OR_RETURN(out.notice, get_notice(send ? body.getSendNotice() : body.getNotice()));
      break;
    }
    case wire::Message::Body::ERROR: {
      auto r = body.getError();
      out.kind = MsgKind::kError;
      out.error.message = text(r.getMessage());
      auto c = static_cast<uint16_t>(r.getCode());
      out.error.code = c <= static_cast<uint16_t>(ErrorCode::kInternal) ? static_cast<ErrorCode>(c) : ErrorCode::kInternal;
      break;
    }
    default:
      return Status::invalid_argument("unknown message body " + std::to_string(static_cast<int>(body.which())) +
                                      " (a newer protocol?)");
  }
  return out;
}

}  // namespace

const char* rank_state_name(RankState s) {
  switch (s) {
    case RankState::kAlive: return "alive";
    case RankState::kDead: return "dead";
    case RankState::kStalled: return "stalled";
  }
  return "?";
}

const char* msg_kind_name(MsgKind k) {
  static const char* names[] = {"hello",     "helloReply",     "registerRank", "rankTableQuery", "rankTable",
                                "heartbeat", "heartbeatReply", "statusQuery",  "statusReply",    "setOverride",
                                "lrOverride", "sendNotice",    "notice",       "error"};
  auto i = static_cast<size_t>(k);
  return i < sizeof(names) / sizeof(names[0]) ? names[i] : "?";
}

std::string encode(const Message& msg) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<wire::Message>();
  m.setVersion(msg.version);
  m.setRequestId(msg.request_id);
  auto body = m.initBody();
  switch (msg.kind) {
    case MsgKind::kHello: body.setHello(); break;
    case MsgKind::kHelloReply: {
      auto r = body.initHelloReply();
      r.setJob(msg.hello_reply.job);
      r.setPubEndpoint(msg.hello_reply.pub_endpoint);
      r.setPid(msg.hello_reply.pid);
      break;
    }
    case MsgKind::kRegisterRank: {
      const RegisterRank& x = msg.register_rank;
      auto r = body.initRegisterRank();
      r.setJob(x.job);
      r.setHost(x.host);
      r.setPid(x.pid);
      r.setRank(x.rank);
      r.setWorldSize(x.world_size);
      r.setLocalRank(x.local_rank);
      r.setDevice(x.device);
      r.setStepsPerEpoch(x.steps_per_epoch);
      break;
    }
    case MsgKind::kRankTableQuery: body.setRankTableQuery(); break;
    case MsgKind::kRankTable: put_table(body.initRankTable(), msg.rank_table); break;
    case MsgKind::kHeartbeat: {
      auto r = body.initHeartbeat();
      r.setJob(msg.heartbeat.job);
      r.setGeneration(msg.heartbeat.generation);
      r.setRank(msg.heartbeat.rank);
      r.setPid(msg.heartbeat.pid);
      put_metrics(r.initMetrics(), msg.heartbeat.metrics);
      break;
    }
    case MsgKind::kHeartbeatReply: {
      const HeartbeatReply& x = msg.heartbeat_reply;
      auto r = body.initHeartbeatReply();
      r.setGeneration(x.generation);
      r.setPubEndpoint(x.pub_endpoint);
      put_overrides(r.initOverrides(static_cast<unsigned>(x.overrides.size())), x.overrides);
      put_notices(r.initNotices(static_cast<unsigned>(x.notices.size())), x.notices);
      break;
    }
    case MsgKind::kStatusQuery: body.setStatusQuery(); break;
    case MsgKind::kStatusReply: {
      const StatusReport& s = msg.status;
      auto r = body.initStatusReply();
      r.setJob(s.job);
      put_table(r.initTable(), s.table);
      r.setDeadAfter(s.dead_after);
      r.setStallAfter(s.stall_after);
      auto ranks = r.initRanks(static_cast<unsigned>(s.ranks.size()));
      for (size_t i = 0; i < s.ranks.size(); ++i) {
        auto b = ranks[static_cast<unsigned>(i)];
        const RankStatus& x = s.ranks[i];
        b.setRank(x.rank);
        b.setHost(x.host);
        b.setPid(x.pid);
        b.setState(x.state == RankState::kDead      ? wire::RankStatus::State::DEAD
                   : x.state == RankState::kStalled ? wire::RankStatus::State::STALLED
                                                    : wire::RankStatus::State::ALIVE);
        b.setHeartbeatAge(x.heartbeat_age);
        put_metrics(b.initMetrics(), x.metrics);
      }
      put_overrides(r.initOverrides(static_cast<unsigned>(s.overrides.size())), s.overrides);
      put_notices(r.initNotices(static_cast<unsigned>(s.notices.size())), s.notices);
      break;
    }
    case MsgKind::kSetOverride: put_override(body.initSetOverride(), msg.lr_override); break;
    case MsgKind::kLrOverride: put_override(body.initLrOverride(), msg.lr_override); break;
    case MsgKind::kSendNotice: put_notice(body.initSendNotice(), msg.notice); break;
    case MsgKind::kNotice: put_notice(body.initNotice(), msg.notice); break;
    case MsgKind::kError: {
      auto r = body.initError();
      r.setCode(wire_code(msg.error.code));
      r.setMessage(msg.error.message);
      break;
    }
  }
  kj::Array<capnp::word> words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

StatusOr<Message> decode(std::string_view bytes, uint64_t* request_id) {
  if (request_id) *request_id = 0;
  if (bytes.empty()) return Status::invalid_argument("empty frame");
  if (bytes.size() > kMaxFrameBytes)
    return Status::invalid_argument("frame of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                                    std::to_string(kMaxFrameBytes));
  if (bytes.size() % sizeof(capnp::word) != 0)
    return Status::invalid_argument("frame of " + std::to_string(bytes.size()) +
                                    " bytes is not a whole number of 8-byte words (truncated or not Cap'n Proto)");
  // ZeroMQ buffers carry no alignment promise; capnp wants 8-byte words.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  capnp::ReaderOptions options;
  // A well-formed frame never reads more words than it holds; the limit also charges one word per
  // element of a zero-size-struct list, which bounds the decode's memory amplification.
  options.traversalLimitInWords = words.size() + 64;
  options.nestingLimit = 16;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    auto m = reader.getRoot<wire::Message>();
    if (request_id) *request_id = m.getRequestId();
    if (m.getVersion() != kProtocolVersion)
      return Status::unimplemented("protocol version " + std::to_string(m.getVersion()) +
                                      " is not supported (this side speaks version " +
                                      std::to_string(kProtocolVersion) + ")");
    return decode_body(m);
  } catch (const kj::Exception& e) {
    return Status::invalid_argument(std::string("malformed Cap'n Proto frame: ") + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Status::invalid_argument(std::string("malformed frame: ") + e.what());
  } catch (...) {
    return Status::invalid_argument("malformed frame");
  }
}

Message make_error(uint64_t request_id, ErrorCode code, std::string message) {
  Message m;
  m.request_id = request_id;
  m.kind = MsgKind::kError;
  m.error = ErrorInfo{code, std::move(message)};
  return m;
}

}  // namespace sx::coord
