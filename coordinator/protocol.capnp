@0x92a9b06093dfce06;
# The sx_coord wire protocol. Every ZeroMQ frame (ROUTER requests and replies, PUB broadcasts) is
# one Message. A Message whose version is not `protocolVersion` is answered with an Error (code
# badVersion) and logged; so is a frame that does not decode. Add fields at the end of a struct
# (capnp keeps old readers working); bump protocolVersion only when the meaning of a field changes.
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sx::coord::wire");

const protocolVersion :UInt16 = 1;

struct Metrics {
  step @0 :Int64;        # global step; < 0 means "no metrics yet"
  epoch @1 :Float64;     # may be fractional
  loss @2 :Float64;
  accuracy @3 :Float64;  # NaN when unknown
  lr @4 :Float64;
  imgPerSec @5 :Float64;
  memBytes @6 :Int64;
}

struct RankEntry {
  rank @0 :Int32;
  host @1 :Text;
  pid @2 :Int64;
  localRank @3 :Int32;
  device @4 :Text;
}

struct HostRanks {
  host @0 :Text;
  ranks @1 :List(Int32);  # ascending
  leader @2 :Int32;       # node leader = lowest rank on the host
}

struct RankTable {
  generation @0 :UInt32;
  worldSize @1 :Int32;
  complete @2 :Bool;      # all worldSize ranks registered
  ranks @3 :List(RankEntry);
  hosts @4 :List(HostRanks);
  stepsPerEpoch @5 :Int64;
}

struct RegisterRank {
  job @0 :Text;
  host @1 :Text;
  pid @2 :Int64;
  rank @3 :Int32;
  worldSize @4 :Int32;
  localRank @5 :Int32;
  device @6 :Text;
  stepsPerEpoch @7 :Int64;  # 0 when unknown; used to turn --from-epoch into a step
}

struct Heartbeat {
  job @0 :Text;
  generation @1 :UInt32;
  rank @2 :Int32;
  pid @3 :Int64;
  metrics @4 :Metrics;
}

struct LrOverride {
  enum Kind { lr @0; factor @1; }
  id @0 :UInt64;          # assigned by the coordinator; clients dedupe by it (0 in a request)
  kind @1 :Kind;
  value @2 :Float64;      # the LR, or the factor applied to the scheduled LR
  fromStep @3 :Int64;     # effective from this global step (-1 in a request given by epoch)
  fromEpoch @4 :Float64;  # as requested; -1 when given by step
}

struct Notice {
  enum Kind { stop @0; drain @1; }
  id @0 :UInt64;
  kind @1 :Kind;
  fromStep @2 :Int64;     # -1: as soon as possible
  reason @3 :Text;
}

struct HeartbeatReply {
  generation @0 :UInt32;
  overrides @1 :List(LrOverride);  # all of them, so a reconnected client catches up
  notices @2 :List(Notice);
  pubEndpoint @3 :Text;
}

struct HelloReply {
  job @0 :Text;
  pubEndpoint @1 :Text;
  pid @2 :Int64;
}

struct RankStatus {
  enum State { alive @0; dead @1; stalled @2; }
  rank @0 :Int32;
  host @1 :Text;
  pid @2 :Int64;
  state @3 :State;
  heartbeatAge @4 :Float64;  # seconds since the last heartbeat (or registration)
  metrics @5 :Metrics;
}

struct StatusReply {
  job @0 :Text;
  table @1 :RankTable;
  ranks @2 :List(RankStatus);
  overrides @3 :List(LrOverride);
  notices @4 :List(Notice);
  deadAfter @5 :Float64;
  stallAfter @6 :Float64;
}

struct Error {
  enum Code { badFrame @0; badVersion @1; badRequest @2; unknownRank @3; wrongJob @4; internal @5; }
  code @0 :Code;
  message @1 :Text;
}

struct Message {
  version @0 :UInt16;
  requestId @1 :UInt64;   # echoed in the reply
  body :union {
    hello @2 :Void;                  # -> helloReply (also used as a ping)
    helloReply @3 :HelloReply;
    registerRank @4 :RegisterRank;   # -> rankTable
    rankTableQuery @5 :Void;         # -> rankTable
    rankTable @6 :RankTable;         # reply; also broadcast when a generation completes
    heartbeat @7 :Heartbeat;         # -> heartbeatReply
    heartbeatReply @8 :HeartbeatReply;
    statusQuery @9 :Void;            # -> statusReply
    statusReply @10 :StatusReply;
    setOverride @11 :LrOverride;     # -> lrOverride (stored, with id and step); broadcast too
    lrOverride @12 :LrOverride;
    sendNotice @13 :Notice;          # -> notice; broadcast too
    notice @14 :Notice;
    error @15 :Error;
  }
}
