// End-to-end tests of `sx_coord serve` as a real child process on 127.0.0.1, driven by the worker
// client library, raw ZeroMQ sockets and the CLI verbs.
#include <gtest/gtest.h>

#include <future>
#include <random>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "coordinator/client.h"
#include "coordinator/protocol.h"
#include "coordinator/request.h"
#include "test_coord_util.h"

namespace sx::coord {
namespace {

using namespace sx::coord::testing;
using Clock = std::chrono::steady_clock;

// The job's client key (sx_coord serve made it in the job dir); without one the server lets nobody in.
CurveKeys keys_of(const std::string& job_dir) {
  auto k = read_client_keys(job_dir);
  EXPECT_TRUE(k.is_ok()) << k.status().to_string();
  return k.is_ok() ? *k : CurveKeys{};
}

ClientOptions fast_opts(const std::string& job_dir = "") {
  ClientOptions o;
  if (!job_dir.empty()) o.keys = keys_of(job_dir);
  o.heartbeat_interval_s = 0.2;
  o.request_timeout_s = 0.3;
  o.table_timeout_s = 10;
  o.quiet = true;
  return o;
}

RegisterRank me(int rank, int world, const std::string& host, int local_rank, int64_t steps_per_epoch = 50) {
  RegisterRank r;
  r.host = host;
  r.pid = 7000 + rank;
  r.rank = rank;
  r.world_size = world;
  r.local_rank = local_rank;
  r.device = "cpu:" + std::to_string(local_rank);
  r.steps_per_epoch = steps_per_epoch;
  return r;
}

struct Rank {
  std::unique_ptr<CoordClient> client;
  RankTable table;
};

// Connects and registers `world` ranks concurrently (register_rank waits for the full table).
std::vector<Rank> start_ranks(const ServerProc& srv, const std::string& job,
                              const std::vector<std::pair<RegisterRank, MpiView>>& specs) {
  std::vector<std::future<Rank>> fs;
  for (const auto& [r, v] : specs)
    fs.push_back(std::async(std::launch::async, [&, r = r, v = v] {
      auto c = CoordClient::connect(srv.endpoint(), job, 5, fast_opts(srv.dir()));
      EXPECT_TRUE(c.is_ok()) << c.status().to_string();
      if (!c.is_ok()) return Rank{};
      auto t = (*c)->register_rank(r, v);
      EXPECT_TRUE(t.is_ok()) << t.status().to_string();
      return Rank{std::move(c).value(), t.is_ok() ? *t : RankTable{}};
    }));
  std::vector<Rank> out;
  for (auto& f : fs) out.push_back(f.get());
  return out;
}

StatusReport query_status(const ServerProc& srv) {
  Message q;
  q.kind = MsgKind::kStatusQuery;
  auto r = request_once(srv.endpoint(), q, 3, keys_of(srv.dir()));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? r->status : StatusReport{};
}

template <typename Pred>
bool wait_for(Pred pred, double seconds) {
  auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

const std::vector<std::pair<RegisterRank, MpiView>> kThreeOnTwo = {
    {me(0, 3, "nodeA", 0), MpiView{0, 3, 0, 2, 0}},
    {me(1, 3, "nodeA", 1), MpiView{1, 3, 1, 2, 0}},
    {me(2, 3, "nodeB", 0), MpiView{2, 3, 0, 1, 2}},
};

TEST(CoordServer, RegisterThreeRanksOnTwoHostsAndReportMetrics) {
  ServerProc srv(fresh_job_dir("reg"), 5);
  ASSERT_TRUE(srv.start()) << read_file(srv.dir() + "/serve.log");
  std::string job = std::filesystem::path(srv.dir()).filename().string();
  auto ranks = start_ranks(srv, job, kThreeOnTwo);
  ASSERT_EQ(ranks.size(), 3u);
  for (const auto& r : ranks) {
    ASSERT_TRUE(r.client);
    EXPECT_EQ(r.table.generation, 1u);
    EXPECT_TRUE(r.table.complete);
    EXPECT_EQ(r.table.world_size, 3);
    ASSERT_EQ(r.table.hosts.size(), 2u);
    EXPECT_EQ(r.table.hosts[0].host, "nodeA");
    EXPECT_EQ(r.table.hosts[0].ranks, (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(r.table.hosts[0].leader, 0);
    EXPECT_EQ(r.table.hosts[1].host, "nodeB");
    EXPECT_EQ(r.table.hosts[1].leader, 2);
  }
  for (int step = 1; step <= 3; ++step) {
    for (int i = 0; i < 3; ++i)
      ranks[i].client->post_metrics(10 * step + i, step / 50.0, 2.0 - 0.1 * step, 0.1, 100.0 + i, 1000 + i, 0.1 * step);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  int rc = 0;
  std::string out = run_cli("status --json --job " + srv.dir(), &rc);
  ASSERT_EQ(rc, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["generation"], 1);
  ASSERT_EQ(j["ranks"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const auto& r = j["ranks"][i];
    EXPECT_EQ(r["rank"], i);
    EXPECT_EQ(r["host"], i < 2 ? "nodeA" : "nodeB");
    EXPECT_EQ(r["step"], 30 + i);
    EXPECT_NEAR(r["loss"].get<double>(), 1.7, 1e-12);
    EXPECT_NEAR(r["img_per_sec"].get<double>(), 100.0 + i, 1e-12);
    EXPECT_EQ(r["state"], "alive");
    EXPECT_GE(r["heartbeat_age"].get<double>(), 0.0);  // "alive" above is the server's own age test
  }
  std::string table = run_cli("status --job " + srv.dir(), &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(table.find("nodeB"), std::string::npos) << table;
  EXPECT_EQ(run_cli("ranktable --hostfile --job " + srv.dir(), &rc), "nodeA slots=2\nnodeB slots=1\n");
  auto rt = nlohmann::json::parse(run_cli("ranktable --json --endpoint " + srv.endpoint() + " --keys " + srv.dir() + "/coord_client.key", &rc));
  EXPECT_EQ(rt["hosts"][1]["leader"], 2);
  EXPECT_EQ(rt["steps_per_epoch"], 50);

  // The metrics log has the steps; plot turns it into a 4-panel PNG.
  std::string log = read_file(srv.dir() + "/metrics.jsonl");
  EXPECT_NE(log.find("\"step\":32"), std::string::npos);
  std::string png = srv.dir() + "/m.png";
  out = run_cli("plot --job " + srv.dir() + " -o " + png + " --width 800 --height 600", &rc);
  ASSERT_EQ(rc, 0) << out;
  cv::Mat img = cv::imread(png);
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 800);
  EXPECT_EQ(img.rows, 600);
}

TEST(CoordServer, SilentRankIsDeadAndFrozenStepIsStalled) {
  const double T = 1.0;
  ServerProc srv(fresh_job_dir("dead"), T);
  ASSERT_TRUE(srv.start());
  std::string job = std::filesystem::path(srv.dir()).filename().string();
  auto ranks = start_ranks(srv, job, kThreeOnTwo);
  ASSERT_EQ(ranks.size(), 3u);
  ranks[1].client->post_metrics(5, 0, 1, 0.1, 10, 0);  // rank 1: heartbeats, step frozen at 5
  ranks[2].client.reset();                              // rank 2: silent from now on
  auto silent_since = Clock::now();
  std::atomic<bool> stop{false};
  std::thread stepper([&] {  // rank 0 keeps stepping
    for (int64_t s = 0; !stop; ++s) {
      ranks[0].client->post_metrics(s, 0, 1, 0.1, 10, 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  // Generous deadlines (a loaded machine delays the server's sweep); the lower bound is the claim
  // that a rank is not declared dead before T of silence.
  bool dead = wait_for([&] { return query_status(srv).ranks[2].state == RankState::kDead; }, T + 30.0);
  double took = std::chrono::duration<double>(Clock::now() - silent_since).count();
  EXPECT_TRUE(dead) << "rank 2 never declared dead";
  EXPECT_GT(took, T - 0.2);
  bool stalled = wait_for([&] { return query_status(srv).ranks[1].state == RankState::kStalled; }, T + 30.0);
  EXPECT_TRUE(stalled);
  StatusReport s = query_status(srv);
  EXPECT_EQ(s.ranks[0].state, RankState::kAlive);
  EXPECT_GT(s.ranks[0].metrics.step, 5);
  stop = true;
  stepper.join();
  EXPECT_NE(read_file(srv.dir() + "/serve.log").find("rank 2: alive -> dead"), std::string::npos);
}

TEST(CoordServer, OverridesReachClientsAndSurviveSigkillRestart) {
  ServerProc srv(fresh_job_dir("kill"), 10);
  ASSERT_TRUE(srv.start());
  std::string job = std::filesystem::path(srv.dir()).filename().string();
  auto ranks = start_ranks(srv, job, {{me(0, 1, "solo", 0, 50), MpiView{}}});
  ASSERT_TRUE(ranks[0].client);
  CoordClient& c = *ranks[0].client;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the SUB connection settle

  int rc = 0;
  std::string out = run_cli("set-lr --job " + srv.dir() + " --lr 0.05 --from-step 100", &rc);
  ASSERT_EQ(rc, 0) << out;
  out = run_cli("set-lr --job " + srv.dir() + " --factor 0.5 --from-epoch 3", &rc);
  ASSERT_EQ(rc, 0) << out;
  std::vector<LrOverride> got;
  ASSERT_TRUE(wait_for([&] {
    for (auto& o : c.poll_overrides()) got.push_back(o);
    return got.size() >= 2;
  }, 2.0));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].kind, OverrideKind::kLr);
  EXPECT_DOUBLE_EQ(got[0].value, 0.05);
  EXPECT_EQ(got[0].from_step, 100);
  EXPECT_EQ(got[1].kind, OverrideKind::kFactor);
  EXPECT_EQ(got[1].from_step, 150);  // epoch 3 x 50 steps
  // Bad set-lr: clear error, non-zero exit.
  out = run_cli("set-lr --job " + srv.dir() + " --lr 0.1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--from-step"), std::string::npos) << out;

  // SIGKILL the coordinator mid-job: the client keeps going and never blocks its caller.
  srv.kill_now(SIGKILL);
  ASSERT_TRUE(wait_for([&] { return !c.connected(); }, 2.0));
  // post_metrics only stores (the heartbeat thread sends): 1000 posts to a dead coordinator return.
  // A post that waited on the network would take 1000 x the send timeout; the deadline is generous.
  auto posts = std::async(std::launch::async, [&] {
    for (int i = 0; i < 1000; ++i) c.post_metrics(200 + i, 4, 0.5, 0.05, 99, 0);
  });
  ASSERT_EQ(posts.wait_for(std::chrono::seconds(60)), std::future_status::ready) << "post_metrics blocks its caller";
  out = run_cli("status --timeout 0.5 --job " + srv.dir(), &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("is `sx_coord serve --job"), std::string::npos) << out;

  // Restart on the same job dir: table and overrides come back from disk, the client reconnects.
  uint64_t answered = c.heartbeats_answered();
  ASSERT_TRUE(srv.start()) << read_file(srv.dir() + "/serve.log");
  ASSERT_TRUE(wait_for([&] { return c.connected() && c.heartbeats_answered() > answered; }, 3.0));
  StatusReport s = query_status(srv);
  EXPECT_EQ(s.table.generation, 1u);
  ASSERT_EQ(s.ranks.size(), 1u);
  EXPECT_EQ(s.ranks[0].host, "solo");
  EXPECT_EQ(s.ranks[0].metrics.step, 1199);
  ASSERT_EQ(s.overrides.size(), 2u);
  EXPECT_EQ(s.overrides[1].from_step, 150);
  EXPECT_TRUE(c.poll_overrides().empty());  // no duplicates after the reconnect

  // A client that missed the broadcasts gets them in its first heartbeat reply.
  auto late = CoordClient::connect(srv.endpoint(), job, 3, fast_opts(srv.dir()));
  ASSERT_TRUE(late.is_ok());
  ASSERT_TRUE((*late)->register_rank(me(0, 1, "solo", 0, 50), MpiView{}).is_ok());
  std::vector<LrOverride> late_got;
  ASSERT_TRUE(wait_for([&] {
    for (auto& o : (*late)->poll_overrides()) late_got.push_back(o);
    return late_got.size() >= 2;
  }, 2.0));
  EXPECT_EQ(late_got[0].id, got[0].id);
  EXPECT_EQ(late_got[1].id, got[1].id);
  // New overrides after the restart still go out on PUB (ids continue).
  out = run_cli("set-lr --job " + srv.dir() + " --lr 0.001 --from-step 500", &rc);
  ASSERT_EQ(rc, 0) << out;
  std::vector<LrOverride> third;
  ASSERT_TRUE(wait_for([&] {
    for (auto& o : c.poll_overrides()) third.push_back(o);
    return !third.empty();
  }, 2.0));
  EXPECT_EQ(third[0].id, got[1].id + 1);
}

TEST(CoordServer, MalformedFramesGetErrorRepliesAndChangeNothing) {
  ServerProc srv(fresh_job_dir("fuzz"), 10);
  ASSERT_TRUE(srv.start());
  std::string job = std::filesystem::path(srv.dir()).filename().string();
  {
    auto ranks = start_ranks(srv, job, {{me(0, 1, "solo", 0), MpiView{}}});
    int rc = 0;
    std::string out = run_cli("set-lr --job " + srv.dir() + " --lr 0.2 --from-step 7", &rc);
    ASSERT_EQ(rc, 0) << out;
  }
  std::string state_before = read_file(srv.dir() + "/coord_state.json");
  ASSERT_FALSE(state_before.empty());

  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 3000);
  apply_curve_client(s, keys_of(srv.dir()));  // an authenticated peer sending garbage
  s.connect(srv.endpoint());
  Message hello;
  hello.kind = MsgKind::kHello;
  std::string good = encode(hello);
  Message v9 = hello;
  v9.version = 9;
  Message reply_kind;
  reply_kind.kind = MsgKind::kStatusReply;
  std::mt19937_64 rng(7);
  int errors = 0, bad_version = 0;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> frames;
    switch (i % 6) {
      case 0:
      case 1: {  // random bytes
        std::string f(rng() % 300, '\0');
        for (auto& ch : f) ch = static_cast<char>(rng());
        frames.push_back(f);
        break;
      }
      case 2: frames.push_back(encode(v9)); break;                                    // wrong version
      case 3: frames.push_back(good.substr(0, 8 * (rng() % (good.size() / 8)))); break;  // truncated (maybe empty)
      case 4: frames = {good, good}; break;                                           // two payload frames
      case 5: frames.push_back(encode(reply_kind)); break;                            // a reply sent as request
    }
    std::vector<zmq::const_buffer> bufs;
    for (auto& f : frames) bufs.push_back(zmq::buffer(f));
    ASSERT_TRUE(zmq::send_multipart(s, bufs));
    zmq::message_t m;
    ASSERT_TRUE(s.recv(m)) << "no reply to bad frame " << i;
    auto d = decode(std::string_view(static_cast<const char*>(m.data()), m.size()));
    ASSERT_TRUE(d.is_ok()) << d.status().to_string();
    if (d->kind == MsgKind::kError) ++errors;
    if (d->kind == MsgKind::kError && d->error.code == ErrorCode::kBadVersion) ++bad_version;
  }
  EXPECT_EQ(errors, n);
  EXPECT_EQ(bad_version, n / 6);
  // An empty multipart from a REQ-style peer: [delimiter][empty payload].
  std::vector<zmq::const_buffer> req_style = {zmq::const_buffer(), zmq::const_buffer()};
  ASSERT_TRUE(zmq::send_multipart(s, req_style));
  std::vector<zmq::message_t> parts;
  ASSERT_TRUE(zmq::recv_multipart(s, std::back_inserter(parts)));
  ASSERT_EQ(parts.size(), 2u);  // delimiter echoed
  auto d = decode(std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->kind, MsgKind::kError);

  EXPECT_TRUE(srv.running());
  StatusReport st = query_status(srv);
  EXPECT_EQ(st.table.generation, 1u);
  EXPECT_EQ(st.overrides.size(), 1u);
  EXPECT_EQ(read_file(srv.dir() + "/coord_state.json"), state_before);
}

TEST(CoordClient, UnreachableCoordinatorFailsAfterTimeoutNamingTheEndpoint) {
  std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  auto t0 = Clock::now();
  auto c = CoordClient::connect(endpoint, "j", 0.5, fast_opts());
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.status().message().find(endpoint), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("coord: none"), std::string::npos);
  EXPECT_GT(took, 0.45);  // it waited for the timeout (it returned at all, so it did not wait forever)
  EXPECT_FALSE(CoordClient::connect("not-an-endpoint", "j", 0.2, fast_opts()).is_ok());
}

TEST(CoordClient, NoneModeDoesNothing) {
  auto c = CoordClient::connect("none", "j", 0.1, fast_opts());
  ASSERT_TRUE(c.is_ok());
  EXPECT_FALSE((*c)->enabled());
  auto t = (*c)->register_rank(me(3, 8, "h", 3), MpiView{3, 8, 3, 8, 0});
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->generation, 0u);
  (*c)->post_metrics(1, 0, 1, 0.1, 1, 1);
  EXPECT_TRUE((*c)->poll_overrides().empty());
  EXPECT_TRUE((*c)->poll_notices().empty());
}

TEST(CoordClient, WrongJobAndNoticesAndClientStartsBeforeServer) {
  std::string dir = fresh_job_dir("late");
  ServerProc srv(dir, 10);
  std::string job = std::filesystem::path(dir).filename().string();
  // The server comes up while the client is already waiting in connect() (with the job's keys, made
  // beforehand as sx_launch's first `serve` would have).
  ASSERT_TRUE(load_or_create_job_keys(dir).is_ok());
  auto fut = std::async(std::launch::async, [&] { return CoordClient::connect(srv.endpoint(), job, 5, fast_opts(srv.dir())); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(srv.start());
  auto c = fut.get();
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  auto wrong = CoordClient::connect(srv.endpoint(), "other-job", 2, fast_opts(srv.dir()));
  ASSERT_FALSE(wrong.is_ok());
  EXPECT_NE(wrong.status().message().find("other-job"), std::string::npos);
  ASSERT_TRUE((*c)->register_rank(me(0, 1, "solo", 0), MpiView{}).is_ok());
  int rc = 0;
  std::string out = run_cli("drain --reason maintenance --job " + dir, &rc);
  ASSERT_EQ(rc, 0) << out;
  std::vector<Notice> got;
  ASSERT_TRUE(wait_for([&] {
    for (auto& n : (*c)->poll_notices()) got.push_back(n);
    return !got.empty();
  }, 2.0));
  EXPECT_EQ(got[0].kind, NoticeKind::kDrain);
  EXPECT_EQ(got[0].reason, "maintenance");
}

TEST(CoordClient, MpiMismatchAndIncompleteTableAreClearErrors) {
  ServerProc srv(fresh_job_dir("mismatch"), 10);
  ASSERT_TRUE(srv.start());
  std::string job = std::filesystem::path(srv.dir()).filename().string();
  ClientOptions o = fast_opts(srv.dir());
  o.table_timeout_s = 0.5;
  // World of 3, only rank 0 shows up: fails after the table timeout naming the missing ranks.
  auto c = CoordClient::connect(srv.endpoint(), job, 2, o);
  ASSERT_TRUE(c.is_ok());
  auto t = (*c)->register_rank(me(0, 3, "nodeA", 0), MpiView{0, 3, 0, 2, 0});
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("missing ranks 1,2"), std::string::npos) << t.status().message();
  // World of 1, but MPI believes two ranks share this node: a mismatch naming both views.
  auto d = CoordClient::connect(srv.endpoint(), job, 2, o);
  ASSERT_TRUE(d.is_ok());
  t = (*d)->register_rank(me(0, 1, "nodeA", 0), MpiView{0, 1, 0, 2, 0});
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("rank table mismatch on host 'nodeA'"), std::string::npos) << t.status().message();
  EXPECT_EQ(query_status(srv).table.generation, 2u);  // the world-size change started a generation
}

TEST(CoordPlot, SyntheticLogGivesAPngAndBadInputAClearError) {
  std::string dir = fresh_job_dir("plot");
  {
    std::ofstream log(dir + "/metrics.jsonl");
    for (int step = 0; step < 300; step += 10)
      for (int rank = 0; rank < 2; ++rank)
        log << nlohmann::json{{"gen", 1}, {"rank", rank}, {"step", step}, {"epoch", step / 100}, {"spe", 100},
                              {"loss", 2.0 / (1 + step / 50.0)}, {"acc", step / 400.0}, {"lr", step < 200 ? 0.1 : 0.01},
                              {"img_s", 500 + rank}}
                   .dump()
            << "\n";
    log << "{\"step\": 31";  // torn last line
  }
  int rc = 0;
  std::string out = run_cli("plot --job " + dir, &rc);
  ASSERT_EQ(rc, 0) << out;
  cv::Mat img = cv::imread(dir + "/metrics.png");
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 1200);
  EXPECT_EQ(img.rows, 800);
  EXPECT_LT(cv::mean(img)[0], 254.0);  // something was drawn
  out = run_cli("plot --job " + dir + "/nope", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("metrics.jsonl"), std::string::npos) << out;
}

}  // namespace
}  // namespace sx::coord
