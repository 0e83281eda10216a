// defines: sx::coord::CoordClient, ClientOptions, MpiView, verify_rank_table, effective_lr —
// the worker side of sx_coord. Registration happens on the caller's thread at start-up; after that a
// background thread owns the sockets, sends heartbeats with the latest posted metrics and collects
// LR overrides / notices, so nothing the training loop calls ever waits on the network.
// With endpoint "none" every call is a cheap no-op (training without a coordinator).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/keys.h"
#include "coordinator/types.h"

namespace zmq {
class context_t;
}  // namespace zmq

namespace sx::coord {

class Requester;

struct ClientOptions {
  double heartbeat_interval_s = 1.0;
  double request_timeout_s = 1.0;      // per heartbeat; on timeout the client reconnects
  double table_timeout_s = 60.0;       // register_rank: wait this long for every rank to register
  bool quiet = false;                  // no log lines (tests)
  CurveKeys keys;                      // the job's client key (read_client_keys); sx_coord requires it
};

// What MPI says about this process; the rank table must agree.
struct MpiView {
  int32_t rank = 0, world_size = 1;
  int32_t local_rank = 0, local_size = 1;  // from MPI_Comm_split_type(SHARED)
  int32_t node_leader = 0;                 // world rank of local rank 0
};

// A clear error when the coordinator's table and MPI disagree (world size, host, node membership).
Status verify_rank_table(const RankTable& table, const RegisterRank& me, const MpiView& mpi);

// The LR at `step`: the last override (by from_step, then id) with from_step <= step replaces the
// scheduled LR (kind lr) or scales it (kind factor). Every rank evaluates this with the same list.
double effective_lr(double scheduled_lr, int64_t step, const std::vector<LrOverride>& overrides);

class CoordClient {
 public:
  // endpoint "none" (or empty): a disabled client. Otherwise pings the coordinator until it answers
  // or `timeout_s` passes, then fails with a message naming the endpoint.
  static StatusOr<std::unique_ptr<CoordClient>> connect(const std::string& endpoint, const std::string& job,
                                                        double timeout_s, ClientOptions opts = {});
  ~CoordClient();  // stops the heartbeat thread (returns within ~request_timeout_s)
  CoordClient(const CoordClient&) = delete;
  CoordClient& operator=(const CoordClient&) = delete;

  bool enabled() const { return enabled_; }

  // Registers this rank, waits (up to table_timeout_s) until all world_size ranks have registered,
  // checks the table against `mpi`, then starts the heartbeat thread. me.job is filled in.
  // Disabled client: returns an empty table (generation 0) and checks nothing.
  StatusOr<RankTable> register_rank(RegisterRank me, const MpiView& mpi);

  // Non-blocking: stores the latest values; the heartbeat thread sends them.
  void post_metrics(const Metrics& m);
  void post_metrics(int64_t step, double epoch, double loss, double lr, double img_per_sec, int64_t mem_bytes,
                    double accuracy = NAN);

  // Overrides / notices received since the last call (from PUB or heartbeat replies), each id once.
  std::vector<LrOverride> poll_overrides();
  std::vector<Notice> poll_notices();

  bool connected() const { return connected_.load(); }  // last heartbeat answered
  uint64_t heartbeats_answered() const { return answered_.load(); }
  const std::string& endpoint() const { return endpoint_; }

 private:
  CoordClient() = default;
  void heartbeat_loop();
  void take(const std::vector<LrOverride>& ovs, const std::vector<Notice>& nts);
  void drain_sub();
  void connect_sub(const std::string& pub);
  void log(const std::string& msg) const;

  bool enabled_ = false;
  std::string endpoint_, job_, sub_endpoint_;
  ClientOptions opts_;
  RegisterRank me_;
  uint32_t generation_ = 0;
  std::unique_ptr<zmq::context_t> ctx_;
  std::unique_ptr<Requester> req_;
  struct SubSocket;
  std::unique_ptr<SubSocket> sub_;

  std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  bool stop_ = false;
  Metrics latest_;
  std::set<uint64_t> seen_overrides_, seen_notices_;
  std::vector<LrOverride> new_overrides_;
  std::vector<Notice> new_notices_;

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> answered_{0};
  std::thread thread_;
};

}  // namespace sx::coord
