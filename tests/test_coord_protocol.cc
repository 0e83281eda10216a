// The coordinator's codec and bookkeeping without sockets: every message round-trips, hostile bytes
// are rejected with a Status (never a crash), the rank table / membership / override rules hold,
// and the state survives its JSON form.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "coordinator/client.h"
#include "coordinator/protocol.h"
#include "coordinator/state.h"

namespace sx::coord {
namespace {

RegisterRank reg(int rank, const std::string& host, int world = 3, int64_t pid = 0) {
  // Built in one go: assigning literals member by member trips GCC 12's false -Wrestrict.
  return RegisterRank{.job = std::string("j"), .host = host, .pid = pid ? pid : 1000 + rank, .rank = rank,
                      .world_size = world, .local_rank = 0, .device = std::string("cpu"), .steps_per_epoch = 100};
}

Message sample_status() {
  CoordState s("j", 5, 5);
  bool ch;
  (void)s.register_rank(reg(0, "a"), 0, &ch);
  (void)s.register_rank(reg(1, "b"), 0, &ch);
  (void)s.add_override(LrOverride{0, OverrideKind::kFactor, 0.1, 50, -1});
  (void)s.add_notice(Notice{0, NoticeKind::kDrain, 7, "maintenance"});
  Message m;
  m.kind = MsgKind::kStatusReply;
  m.request_id = 77;
  m.status = s.status(1.0);
  m.status.ranks[1].metrics = Metrics{12, 0.12, 2.5, 0.3, 0.1, 850.0, 1 << 20};
  return m;
}

TEST(CoordProtocol, EveryKindRoundTrips) {
  Message st = sample_status();
  auto d = decode(encode(st));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(d->kind, MsgKind::kStatusReply);
  EXPECT_EQ(d->request_id, 77u);
  EXPECT_EQ(d->status.job, "j");
  ASSERT_EQ(d->status.ranks.size(), 2u);
  EXPECT_EQ(d->status.ranks[1].host, "b");
  EXPECT_EQ(d->status.ranks[1].metrics.step, 12);
  EXPECT_DOUBLE_EQ(d->status.ranks[1].metrics.img_per_sec, 850.0);
  EXPECT_EQ(d->status.table.hosts.size(), 2u);
  ASSERT_EQ(d->status.overrides.size(), 1u);
  EXPECT_EQ(d->status.overrides[0].kind, OverrideKind::kFactor);
  EXPECT_EQ(d->status.overrides[0].from_step, 50);
  ASSERT_EQ(d->status.notices.size(), 1u);
  EXPECT_EQ(d->status.notices[0].reason, "maintenance");

  Message r;
  r.kind = MsgKind::kRegisterRank;
  r.register_rank = reg(2, "hostX", 4, 4242);
  d = decode(encode(r));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->register_rank.host, "hostX");
  EXPECT_EQ(d->register_rank.pid, 4242);
  EXPECT_EQ(d->register_rank.world_size, 4);
  EXPECT_EQ(d->register_rank.steps_per_epoch, 100);

  Message hb;
  hb.kind = MsgKind::kHeartbeat;
  hb.heartbeat = Heartbeat{"j", 3, 1, 99, Metrics{5, 1.5, 0.7, NAN, 0.2, 10, 5}};
  d = decode(encode(hb));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->heartbeat.generation, 3u);
  EXPECT_TRUE(std::isnan(d->heartbeat.metrics.accuracy));
  EXPECT_DOUBLE_EQ(d->heartbeat.metrics.loss, 0.7);

  for (MsgKind k : {MsgKind::kHello, MsgKind::kRankTableQuery, MsgKind::kStatusQuery, MsgKind::kHeartbeatReply,
                    MsgKind::kHelloReply, MsgKind::kRankTable, MsgKind::kSetOverride, MsgKind::kLrOverride,
                    MsgKind::kSendNotice, MsgKind::kNotice, MsgKind::kError}) {
    Message m;
    m.kind = k;
    m.request_id = 5;
    auto x = decode(encode(m));
    ASSERT_TRUE(x.is_ok()) << msg_kind_name(k);
    EXPECT_EQ(x->kind, k);
  }
  Message e = make_error(9, ErrorCode::kUnknownRank, "who?");
  d = decode(encode(e));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->error.code, ErrorCode::kUnknownRank);
  EXPECT_EQ(d->error.message, "who?");
}

TEST(CoordProtocol, OtherVersionIsRejectedButItsIdIsKept) {
  Message m;
  m.kind = MsgKind::kHello;
  m.version = 2;
  m.request_id = 1234;
  uint64_t id = 0;
  auto d = decode(encode(m), &id);
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(d.status().message().find("version 2"), std::string::npos);
  EXPECT_EQ(id, 1234u);
}

TEST(CoordProtocol, TruncatedAndEmptyFramesAreRejected) {
  std::string good = encode(sample_status());
  EXPECT_FALSE(decode("").is_ok());
  EXPECT_FALSE(decode(std::string(kMaxFrameBytes + 8, '\0')).is_ok());
  for (size_t n = 1; n < good.size(); n += (n < 64 ? 1 : 37)) {
    auto d = decode(std::string_view(good).substr(0, n));
    EXPECT_FALSE(d.is_ok()) << "truncated to " << n << " of " << good.size();
  }
}

// Random bytes and bit-flipped valid frames: the decoder returns (ok or not), never crashes.
// Run under ASan/UBSan for the strongest version of this check.
TEST(CoordProtocol, FuzzRandomAndMutatedFrames) {
  std::mt19937_64 rng(42);
  std::vector<std::string> seeds = {encode(sample_status())};
  Message r;
  r.kind = MsgKind::kRegisterRank;
  r.register_rank = reg(1, "h");
  seeds.push_back(encode(r));
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string f;
    if (i % 2 == 0) {
      f.resize(rng() % 256);
      for (auto& c : f) c = static_cast<char>(rng());
      if (i % 4 == 0 && f.size() >= 8) {  // plausible segment table: 1 segment of small size
        uint32_t hdr[2] = {0, static_cast<uint32_t>(f.size() / 8 - 1)};
        std::memcpy(f.data(), hdr, 8);
      }
    } else {
      f = seeds[rng() % seeds.size()];
      int flips = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < flips; ++k) f[rng() % f.size()] ^= static_cast<char>(1u << (rng() % 8));
    }
    auto d = decode(f);
    if (!d.is_ok()) ++rejected;
  }
  EXPECT_GT(rejected, 10000);  // nearly all random frames are rejected
}

TEST(CoordState, ThreeRanksOnTwoHostsMakeOneGeneration) {
  CoordState s("j", 2, 2);
  bool changed = false;
  auto t = s.register_rank(reg(2, "b"), 0, &changed);
  ASSERT_TRUE(t.is_ok());
  EXPECT_TRUE(changed);
  EXPECT_EQ(t->generation, 1u);
  EXPECT_FALSE(t->complete);
  ASSERT_TRUE(s.register_rank(reg(0, "a"), 0, &changed).is_ok());
  t = s.register_rank(reg(1, "a"), 0, &changed);
  ASSERT_TRUE(t.is_ok());
  EXPECT_TRUE(t->complete);
  EXPECT_EQ(t->generation, 1u);
  ASSERT_EQ(t->hosts.size(), 2u);
  EXPECT_EQ(t->hosts[0].host, "a");
  EXPECT_EQ(t->hosts[0].ranks, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(t->hosts[0].leader, 0);
  EXPECT_EQ(t->hosts[1].host, "b");
  EXPECT_EQ(t->hosts[1].leader, 2);
  // The same process again: idempotent.
  t = s.register_rank(reg(1, "a"), 0, &changed);
  EXPECT_FALSE(changed);
  EXPECT_EQ(t->generation, 1u);
  // A new process for rank 0 (a relaunch) starts generation 2.
  t = s.register_rank(reg(0, "a", 3, 5555), 1, &changed);
  EXPECT_EQ(t->generation, 2u);
  EXPECT_EQ(t->ranks.size(), 1u);
  EXPECT_EQ(s.past_generations().size(), 1u);
  // Another world size: generation 3.
  t = s.register_rank(reg(0, "a", 2, 5555), 1, &changed);
  EXPECT_EQ(t->generation, 3u);
  EXPECT_EQ(t->world_size, 2);
  // Bad requests.
  EXPECT_FALSE(s.register_rank(reg(5, "a", 3), 1, &changed).is_ok());
  EXPECT_FALSE(s.register_rank(reg(0, "", 3), 1, &changed).is_ok());
}

TEST(CoordState, DeadAndStalledFromTheClock) {
  CoordState s("j", /*dead_after=*/2, /*stall_after=*/3);
  bool ch, adv;
  ASSERT_TRUE(s.register_rank(reg(0, "a", 2), 0, &ch).is_ok());
  ASSERT_TRUE(s.register_rank(reg(1, "a", 2), 0, &ch).is_ok());
  Heartbeat hb{"j", 1, 0, 1000, Metrics{}};
  for (int t = 0; t <= 10; ++t) {  // rank 0 advances every second, rank 1 heartbeats a frozen step
    hb.rank = 0, hb.pid = 1000, hb.metrics.step = t;
    ASSERT_TRUE(s.heartbeat(hb, t, &adv).is_ok());
    EXPECT_TRUE(adv);
    if (t <= 6) {
      hb.rank = 1, hb.pid = 1001, hb.metrics.step = 5;
      ASSERT_TRUE(s.heartbeat(hb, t, &adv).is_ok());
    }
    StatusReport r = s.status(t + 0.5);
    EXPECT_EQ(r.ranks[0].state, RankState::kAlive) << t;
    if (t <= 2) {
      EXPECT_EQ(r.ranks[1].state, RankState::kAlive) << t;  // frozen for < 3 s
    } else if (t <= 6) {
      EXPECT_EQ(r.ranks[1].state, RankState::kStalled) << t;  // heartbeats, same step
    } else if (t >= 9) {
      EXPECT_EQ(r.ranks[1].state, RankState::kDead) << t;  // silent > 2 s
    }
  }
  auto changes = s.scan(10.5);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].rank, 1);
  EXPECT_EQ(changes[0].to, RankState::kDead);
  EXPECT_TRUE(s.scan(10.6).empty());
  // Heartbeats for an unknown rank / pid / generation are refused.
  hb.rank = 1, hb.pid = 9;
  EXPECT_EQ(s.heartbeat(hb, 11, &adv).code(), StatusCode::kNotFound);
  hb.pid = 1001, hb.generation = 7;
  EXPECT_EQ(s.heartbeat(hb, 11, &adv).code(), StatusCode::kNotFound);
}

TEST(CoordState, OverridesByEpochAndJsonRoundTrip) {
  CoordState s("j", 2, 2);
  EXPECT_FALSE(s.add_override(LrOverride{0, OverrideKind::kLr, 0.01, -1, 3}).is_ok());  // no steps/epoch yet
  bool ch;
  ASSERT_TRUE(s.register_rank(reg(0, "a", 2), 0, &ch).is_ok());
  ASSERT_TRUE(s.register_rank(reg(1, "b", 2), 0, &ch).is_ok());
  auto o = s.add_override(LrOverride{0, OverrideKind::kLr, 0.01, -1, 3});
  ASSERT_TRUE(o.is_ok());
  EXPECT_EQ(o->from_step, 300);
  EXPECT_EQ(o->id, 1u);
  auto o2 = s.add_override(LrOverride{0, OverrideKind::kFactor, 0.5, 450, -1});
  ASSERT_TRUE(o2.is_ok());
  EXPECT_EQ(o2->id, 2u);
  EXPECT_FALSE(s.add_override(LrOverride{0, OverrideKind::kLr, NAN, 5, -1}).is_ok());
  ASSERT_TRUE(s.add_notice(Notice{0, NoticeKind::kStop, -1, "bye"}).is_ok());

  auto back = CoordState::from_json(nlohmann::json::parse(s.to_json().dump()), 2, 2, 100);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->table().generation, 1u);
  EXPECT_TRUE(back->table().complete);
  EXPECT_EQ(back->table().hosts.size(), 2u);
  ASSERT_EQ(back->overrides().size(), 2u);
  EXPECT_EQ(back->overrides()[0].from_step, 300);
  EXPECT_EQ(back->notices().size(), 1u);
  // Ids continue after a reload; membership timers restart at the load time.
  auto o3 = back->add_override(LrOverride{0, OverrideKind::kLr, 0.1, 10, -1});
  EXPECT_EQ(o3->id, 4u);
  EXPECT_EQ(back->status(101).ranks[0].state, RankState::kAlive);
  EXPECT_EQ(back->status(103).ranks[0].state, RankState::kDead);
  EXPECT_FALSE(CoordState::from_json(nlohmann::json{{"format", "x"}}, 2, 2, 0).is_ok());
  EXPECT_FALSE(CoordState::from_json(nlohmann::json{{"format", "sx_coord_state"}, {"version", 1}}, 2, 2, 0).is_ok());
}

TEST(CoordClientLogic, EffectiveLrTakesTheLatestStartedOverride) {
  std::vector<LrOverride> ovs = {{1, OverrideKind::kLr, 0.01, 100, -1}, {2, OverrideKind::kFactor, 0.5, 200, -1}};
  EXPECT_DOUBLE_EQ(effective_lr(0.1, 99, ovs), 0.1);
  EXPECT_DOUBLE_EQ(effective_lr(0.1, 100, ovs), 0.01);
  EXPECT_DOUBLE_EQ(effective_lr(0.1, 199, ovs), 0.01);
  EXPECT_DOUBLE_EQ(effective_lr(0.08, 200, ovs), 0.04);
  EXPECT_DOUBLE_EQ(effective_lr(0.1, 5, {}), 0.1);
}

TEST(CoordClientLogic, RankTableMismatchWithMpiIsAClearError) {
  CoordState s("j", 2, 2);
  bool ch;
  (void)s.register_rank(reg(0, "a"), 0, &ch);
  (void)s.register_rank(reg(1, "a"), 0, &ch);
  auto t = s.register_rank(reg(2, "b"), 0, &ch);
  ASSERT_TRUE(t->complete);
  RegisterRank me = reg(1, "a");
  EXPECT_TRUE(verify_rank_table(*t, me, MpiView{1, 3, 1, 2, 0}).is_ok());
  Status wrong_world = verify_rank_table(*t, me, MpiView{1, 4, 1, 2, 0});
  EXPECT_NE(wrong_world.message().find("world size 3, MPI says 4"), std::string::npos) << wrong_world.message();
  Status wrong_local = verify_rank_table(*t, me, MpiView{1, 3, 0, 3, 0});  // MPI thinks all 3 share a node
  EXPECT_FALSE(wrong_local.is_ok());
  EXPECT_NE(wrong_local.message().find("host 'a'"), std::string::npos) << wrong_local.message();
  me.pid = 1;
  EXPECT_FALSE(verify_rank_table(*t, me, MpiView{1, 3, 1, 2, 0}).is_ok());
}

}  // namespace
}  // namespace sx::coord
