// The control plane is authenticated (coordinator/keys.h): a real `sx_coord serve` on 127.0.0.1
// makes its keys (mode 0600); a client without the job's client key — no key at all, or a key pair of
// its own that knows the server's public key — gets no reply and changes nothing: a forged stop,
// set-lr, register (another world size) and heartbeat (for a rank that died) leave the generation,
// the rank table, the overrides, the notices and the dead rank as they were; a subscriber without the
// key receives no broadcast. The job's own client and CLI verbs keep working.
#include <sys/stat.h>

#include <future>

#include <gtest/gtest.h>
#include <zmq.h>
#include <zmq.hpp>

#include "coordinator/client.h"
#include "coordinator/keys.h"
#include "coordinator/protocol.h"
#include "coordinator/request.h"
#include "tests/test_coord_util.h"

namespace sx::coord {
namespace {

using namespace sx::coord::testing;

template <typename Pred>
bool wait_for(Pred pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

StatusReport status_of(const ServerProc& srv) {
  Message q;
  q.kind = MsgKind::kStatusQuery;
  auto keys = read_client_keys(srv.dir());
  EXPECT_TRUE(keys.is_ok()) << keys.status().to_string();
  auto r = request_once(srv.endpoint(), q, 5, keys.is_ok() ? *keys : CurveKeys{});
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? r->status : StatusReport{};
}

// Every forged request, from one sender; each must go unanswered.
void send_forgeries(const std::string& endpoint, const CurveKeys& keys, const std::string& job, uint32_t gen) {
  std::vector<Message> forged;
  Message stop;
  stop.kind = MsgKind::kSendNotice;
  stop.notice.kind = NoticeKind::kStop;
  stop.notice.reason = "forged";
  forged.push_back(stop);
  Message lr;
  lr.kind = MsgKind::kSetOverride;
  lr.lr_override.kind = OverrideKind::kLr;
  lr.lr_override.value = 99;
  lr.lr_override.from_step = 0;
  forged.push_back(lr);
  Message reg;
  reg.kind = MsgKind::kRegisterRank;
  reg.register_rank = RegisterRank{job, "evil", 4242, 0, 7, 0, "cpu:0", 10};
  forged.push_back(reg);
  Message hb;
  hb.kind = MsgKind::kHeartbeat;
  hb.heartbeat = Heartbeat{job, gen, 0, 7000, Metrics{}};
  hb.heartbeat.metrics.step = 5;
  forged.push_back(hb);
  Message status;
  status.kind = MsgKind::kStatusQuery;  // no data either
  forged.push_back(status);
  for (int round = 0; round < 3; ++round)
    for (const Message& m : forged) {
      auto r = request_once(endpoint, m, 0.7, keys);
      EXPECT_FALSE(r.is_ok()) << msg_kind_name(m.kind) << " got a reply";
      if (!r.is_ok()) EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
    }
}

TEST(CoordAuth, RequestsWithoutTheJobsKeyChangeNothingAndGetNoData) {
  ServerProc srv(fresh_job_dir("auth"), /*dead_after=*/1.0);
  ASSERT_TRUE(srv.start());
  const std::string job = std::filesystem::path(srv.dir()).filename().string();
  for (const char* f : {"coord_server.key", "coord_client.key"}) {
    struct stat st;
    ASSERT_EQ(::stat((srv.dir() + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  auto keys = read_client_keys(srv.dir());
  ASSERT_TRUE(keys.is_ok()) << keys.status().to_string();

  // The job's one rank registers, then dies (its heartbeats stop).
  ClientOptions o;
  o.heartbeat_interval_s = 0.2;
  o.request_timeout_s = 0.5;
  o.quiet = true;
  o.keys = *keys;
  {
    auto c = CoordClient::connect(srv.endpoint(), job, 5, o);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    RegisterRank me{job, "solo", 7000, 0, 1, 0, "cpu:0", 10};
    ASSERT_TRUE((*c)->register_rank(me, MpiView{}).is_ok());
  }
  ASSERT_TRUE(wait_for([&] { auto s = status_of(srv); return !s.ranks.empty() && s.ranks[0].state == RankState::kDead; },
                       60.0));
  const StatusReport before = status_of(srv);
  ASSERT_EQ(before.table.world_size, 1);

  // A subscriber without the key, to see whether broadcasts reach it.
  zmq::context_t ctx(1);
  auto info = read_server_info(srv.dir());
  ASSERT_TRUE(info.is_ok());
  zmq::socket_t spy(ctx, zmq::socket_type::sub);
  spy.set(zmq::sockopt::linger, 0);
  spy.set(zmq::sockopt::subscribe, "");
  spy.connect(info->pub);

  // 1. No key at all (plain ZeroMQ). 2. A key pair of its own, knowing the server's public key.
  send_forgeries(srv.endpoint(), CurveKeys{}, job, before.table.generation);
  char pub[41], sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  CurveKeys own{keys->server_public, "", pub, sec};
  send_forgeries(srv.endpoint(), own, job, before.table.generation);

  const StatusReport after = status_of(srv);
  EXPECT_EQ(after.table.generation, before.table.generation);
  EXPECT_EQ(after.table.world_size, 1);
  ASSERT_EQ(after.ranks.size(), 1u);
  EXPECT_EQ(after.ranks[0].host, "solo");
  EXPECT_EQ(after.ranks[0].state, RankState::kDead);  // the forged heartbeats did not revive it
  EXPECT_TRUE(after.overrides.empty());
  EXPECT_TRUE(after.notices.empty());

  // The job's own verbs work, and their broadcast does not reach the spy.
  int rc = 0;
  std::string out = run_cli("set-lr --job " + srv.dir() + " --lr 0.5 --from-step 3", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(status_of(srv).overrides.size(), 1u);
  zmq::message_t msg;
  zmq::pollitem_t items[] = {{spy.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, std::chrono::milliseconds(1500));
  EXPECT_FALSE(items[0].revents & ZMQ_POLLIN) << "a subscriber without the key received a broadcast";
  // --endpoint without a key is refused before anything is sent.
  out = run_cli("stop --endpoint " + srv.endpoint(), &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--keys"), std::string::npos) << out;
  EXPECT_NE(read_file(srv.dir() + "/serve.log").find("refused a connection without this job's client key"),
            std::string::npos);
}

}  // namespace
}  // namespace sx::coord
