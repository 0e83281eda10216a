// defines: sx::coord::Metrics, RankEntry, HostRanks, RankTable, RegisterRank, Heartbeat, LrOverride,
// Notice, RankStatus, StatusReport, ErrorInfo, Message — the plain C++ side of protocol.capnp.
// Everything above the codec (state, server, client, CLI) uses these; only protocol.cc sees capnp.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace sx::coord {

inline constexpr uint16_t kProtocolVersion = 1;

struct Metrics {
  int64_t step = -1;  // < 0: no metrics yet
  double epoch = 0;
  double loss = NAN;
  double accuracy = NAN;
  double lr = NAN;
  double img_per_sec = 0;
  int64_t mem_bytes = 0;
};

struct RankEntry {
  int32_t rank = -1;
  std::string host;
  int64_t pid = 0;
  int32_t local_rank = -1;
  std::string device;
};

struct HostRanks {
  std::string host;
  std::vector<int32_t> ranks;  // ascending
  int32_t leader = -1;         // lowest rank on the host
};

struct RankTable {
  uint32_t generation = 0;
  int32_t world_size = 0;
  bool complete = false;
  std::vector<RankEntry> ranks;  // ascending by rank; only registered ones
  std::vector<HostRanks> hosts;  // ordered by leader
  int64_t steps_per_epoch = 0;
  const RankEntry* find(int32_t rank) const {
    for (const auto& r : ranks)
      if (r.rank == rank) return &r;
    return nullptr;
  }
};

struct RegisterRank {
  std::string job, host;
  int64_t pid = 0;
  int32_t rank = -1, world_size = 0, local_rank = -1;
  std::string device;
  int64_t steps_per_epoch = 0;
};

struct Heartbeat {
  std::string job;
  uint32_t generation = 0;
  int32_t rank = -1;
  int64_t pid = 0;
  Metrics metrics;
};

enum class OverrideKind : uint8_t { kLr = 0, kFactor = 1 };

// A schedule override; trivially copyable so the worker leader can MPI_Bcast it as bytes.
struct LrOverride {
  uint64_t id = 0;
  OverrideKind kind = OverrideKind::kLr;
  double value = 0;
  int64_t from_step = -1;
  double from_epoch = -1;
};

enum class NoticeKind : uint8_t { kStop = 0, kDrain = 1 };

struct Notice {
  uint64_t id = 0;
  NoticeKind kind = NoticeKind::kStop;
  int64_t from_step = -1;
  std::string reason;
};

struct HeartbeatReply {
  uint32_t generation = 0;
  std::vector<LrOverride> overrides;
  std::vector<Notice> notices;
  std::string pub_endpoint;
};

struct HelloReply {
  std::string job, pub_endpoint;
  int64_t pid = 0;
};

enum class RankState : uint8_t { kAlive = 0, kDead = 1, kStalled = 2 };
const char* rank_state_name(RankState s);

struct RankStatus {
  int32_t rank = -1;
  std::string host;
  int64_t pid = 0;
  RankState state = RankState::kAlive;
  double heartbeat_age = 0;
  Metrics metrics;
};

struct StatusReport {
  std::string job;
  RankTable table;
  std::vector<RankStatus> ranks;
  std::vector<LrOverride> overrides;
  std::vector<Notice> notices;
  double dead_after = 0, stall_after = 0;
};

enum class ErrorCode : uint8_t { kBadFrame = 0, kBadVersion, kBadRequest, kUnknownRank, kWrongJob, kInternal };

struct ErrorInfo {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

enum class MsgKind : uint8_t {
  kHello, kHelloReply, kRegisterRank, kRankTableQuery, kRankTable, kHeartbeat, kHeartbeatReply,
  kStatusQuery, kStatusReply, kSetOverride, kLrOverride, kSendNotice, kNotice, kError
};
const char* msg_kind_name(MsgKind k);

// One protocol message. Only the member that matches `kind` is meaningful (a fat struct rather
// than a variant: messages are small and rare, and it keeps call sites plain).
struct Message {
  uint16_t version = kProtocolVersion;
  uint64_t request_id = 0;
  MsgKind kind = MsgKind::kHello;
  HelloReply hello_reply;
  RegisterRank register_rank;
  RankTable rank_table;
  Heartbeat heartbeat;
  HeartbeatReply heartbeat_reply;
  StatusReport status;
  LrOverride lr_override;  // setOverride and lrOverride
  Notice notice;           // sendNotice and notice
  ErrorInfo error;
};

}  // namespace sx::coord
