// CoordLink: registration, metrics posting and the MPI broadcast of LR overrides.
#include "worker/coord_link.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <type_traits>

#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

static_assert(std::is_trivially_copyable_v<coord::LrOverride>, "broadcast as bytes");

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string job_name(const JobConfig& c) {
  if (!c.coord.job.empty()) return c.coord.job;
  std::filesystem::path p = std::filesystem::path(c.run_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "runs/job/"
  return p.filename().string();
}

// Waits (bounded) until the client has had `n` heartbeats answered.
void wait_answered(const coord::CoordClient& client, uint64_t n, double timeout_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (client.heartbeats_answered() < n && client.connected() && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

int64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  long long pages = 0, resident = 0;
  if (!(in >> pages >> resident)) return 0;
  return int64_t(resident) * int64_t(sysconf(_SC_PAGESIZE));
}

}  // namespace

StatusOr<std::unique_ptr<CoordLink>> CoordLink::open(const JobConfig& c, MpiEnv& env, int64_t steps_per_epoch) {
  std::unique_ptr<CoordLink> link(new CoordLink());
  link->env_ = &env;
  link->steps_per_epoch_ = steps_per_epoch;
  if (c.coord.check_every_steps < 1)
    return Status::invalid_argument("coord.check_every_steps: must be >= 1, got " +
                                    std::to_string(c.coord.check_every_steps));
  if (!(c.coord.connect_timeout_s > 0))
    return Status::invalid_argument("coord.connect_timeout_s: must be > 0, got " +
                                    std::to_string(c.coord.connect_timeout_s));
  link->every_ = c.coord.check_every_steps;
  const std::string job = job_name(c);
  coord::ClientOptions opts;
  if (!c.coord.endpoint.empty() && c.coord.endpoint != "none") {
    // sx_coord accepts only the job's client key (CURVE); it lives in the coordinator's job dir.
    auto keys = coord::read_client_keys(c.coord.keys.empty() ? c.run_dir + "/coord" : c.coord.keys);
    if (!keys.is_ok())
      return keys.status().with_context("coord.keys=" + (c.coord.keys.empty() ? "(run_dir/coord)" : c.coord.keys));
    opts.keys = std::move(keys).value();
  }
  auto client = coord::CoordClient::connect(c.coord.endpoint, job, c.coord.connect_timeout_s, opts);
  if (!client.is_ok())
    return client.status().with_context("coord.endpoint=" + c.coord.endpoint + " (job '" + job + "')");
  link->client_ = std::move(client).value();
  if (!link->client_->enabled()) return link;

  // MPI's view of this node: the node leader is the lowest world rank in the shared-memory communicator.
  coord::MpiView view;
  view.rank = env.rank();
  view.world_size = env.world_size();
  view.local_rank = env.local_rank();
  view.local_size = env.local_size();
  MPI_Comm node = MPI_COMM_NULL;
  SX_MPI(MPI_Comm_split_type(env.world(), MPI_COMM_TYPE_SHARED, env.rank(), MPI_INFO_NULL, &node));
  int me = env.rank(), leader = 0;
  const int rc = MPI_Allreduce(&me, &leader, 1, MPI_INT, MPI_MIN, node);
  MPI_Comm_free(&node);
  SX_MPI(rc);
  view.node_leader = leader;

  coord::RegisterRank reg;
  reg.job = job;
  reg.host = host_name();
  reg.pid = int64_t(getpid());
  reg.rank = env.rank();
  reg.world_size = env.world_size();
  reg.local_rank = env.local_rank();
  reg.device = "cpu";
  reg.steps_per_epoch = steps_per_epoch;
  auto table = link->client_->register_rank(reg, view);
  if (!table.is_ok()) return table.status().with_context("coordinator " + c.coord.endpoint);
  // The first heartbeat reply carries every stored override: with it in hand before step 0, a
  // (re)started job applies them from its first step instead of a few steps in.
  wait_answered(*link->client_, 1, 3.0);
  if (env.is_root()) link->initial_notices_ = link->client_->poll_notices();
  return link;
}

Status CoordLink::sync_notices(int64_t step) {
  if (!enabled() || step % every_ != 0) return Status::ok();
  int64_t msg[3] = {plan_.id != 0 ? int64_t(plan_.id) : 0, int64_t(plan_.kind), plan_.step};
  if (env_->is_root()) {
    std::vector<coord::Notice> fresh = client_->poll_notices();
    if (!notices_synced_) {
      for (const coord::Notice& n : initial_notices_) {
        if (n.from_step > step) fresh.push_back(n);
        else
          std::fprintf(stderr, "rank 0: ignoring %s notice #%llu from before this launch (from step %lld)\n",
                       n.kind == coord::NoticeKind::kDrain ? "drain" : "stop", static_cast<unsigned long long>(n.id),
                       static_cast<long long>(n.from_step));
      }
      initial_notices_.clear();
    }
    for (const coord::Notice& n : fresh) {
      const int64_t at = std::max(n.from_step, step);
      if (plan_.id != 0 && plan_.step <= at) continue;  // the earliest plan wins
      plan_ = StopPlan{n.id, n.kind, at, n.reason};
      msg[0] = int64_t(n.id);
      msg[1] = int64_t(n.kind);
      msg[2] = at;
    }
  }
  notices_synced_ = true;
  SX_MPI(MPI_Bcast(msg, 3, MPI_INT64_T, 0, env_->world()));
  if (msg[0] != 0 && !env_->is_root()) plan_ = StopPlan{uint64_t(msg[0]), coord::NoticeKind(msg[1]), msg[2], {}};
  return Status::ok();
}

Status CoordLink::sync_overrides(int64_t step) {
  if (!enabled() || step % every_ != 0) return Status::ok();
  std::vector<coord::LrOverride> fresh;
  if (env_->is_root()) {
    fresh = client_->poll_overrides();
    for (coord::LrOverride& o : fresh)  // --from-epoch given before the ranks reported steps/epoch
      if (o.from_step < 0 && o.from_epoch >= 0) o.from_step = std::llround(o.from_epoch * double(steps_per_epoch_));
  }
  int64_t count = int64_t(fresh.size());
  SX_MPI(MPI_Bcast(&count, 1, MPI_INT64_T, 0, env_->world()));
  if (count == 0) return Status::ok();
  fresh.resize(size_t(count));
  SX_MPI(MPI_Bcast(fresh.data(), int(count * int64_t(sizeof(coord::LrOverride))), MPI_BYTE, 0, env_->world()));
  for (coord::LrOverride& o : fresh) {
    o.from_step = std::max(o.from_step, step);  // a passed start takes effect now, on every rank alike
    overrides_.push_back(o);
  }
  return Status::ok();
}

double CoordLink::lr_at(double scheduled, int64_t step, LrSwitch* sw) {
  *sw = LrSwitch{};
  if (overrides_.empty()) return scheduled;
  // The same choice as coord::effective_lr: largest from_step <= step, ties to the larger id.
  const coord::LrOverride* best = nullptr;
  for (const coord::LrOverride& o : overrides_) {
    if (o.from_step > step) continue;
    if (!best || o.from_step > best->from_step || (o.from_step == best->from_step && o.id > best->id)) best = &o;
  }
  const double lr = coord::effective_lr(scheduled, step, overrides_);
  const uint64_t id = best ? best->id : 0;
  if (id != active_id_ && id != 0) {
    *sw = LrSwitch{id, step, lr};
    std::fprintf(stderr, "rank %d: LR override #%llu -> %g from step %lld\n", env_->rank(),
                 static_cast<unsigned long long>(id), lr, static_cast<long long>(step));
    std::fflush(stderr);
  }
  active_id_ = id;
  return lr;
}

CoordLink::~CoordLink() {
  if (!enabled() || last_posted_ < 0) return;
  // Let one heartbeat that started after the last post go out, so the coordinator sees the final
  // step (the one in flight may carry older metrics, hence +2). Bounded; skipped when disconnected.
  wait_answered(*client_, posted_at_ + 2, 2.5);
}

void CoordLink::post_metrics(int64_t step, double epoch, double loss, double lr, double img_per_sec) {
  if (!enabled()) return;
  client_->post_metrics(step, epoch, loss, lr, img_per_sec, rss_bytes());
  last_posted_ = step;
  posted_at_ = client_->heartbeats_answered();
}

}  // namespace sx::worker
