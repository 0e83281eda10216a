// sx_coord: the coordinator service and its verbs.
//   sx_coord serve --job DIR --listen tcp://*:5555 [--dead-after T] [--stall-after S]
//   sx_coord status [--job DIR | --endpoint E] [--json]
//   sx_coord ranktable [--json | --hostfile]
//   sx_coord set-lr (--lr X | --factor F) (--from-step S | --from-epoch E)
//   sx_coord stop | drain [--reason TEXT] [--from-step S]
//   sx_coord plot --job DIR [-o PNG]
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "common/guard.h"
#include "coordinator/job_dir.h"
#include "coordinator/plot.h"
#include "coordinator/report.h"
#include "coordinator/request.h"
#include "coordinator/server.h"

namespace {

using namespace sx::coord;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Target {
  std::string job_dir, endpoint, keys;
  double timeout = 3;
};

void add_target(CLI::App* app, Target* t) {
  app->add_option("--job", t->job_dir, "job dir of a running `sx_coord serve` (reads DIR/coord.json)");
  app->add_option("--endpoint", t->endpoint, "coordinator endpoint, e.g. tcp://host:5555 (instead of --job)");
  app->add_option("--keys", t->keys,
                  "the job's client key file (default: DIR/coord_client.key of --job; required with --endpoint)");
  app->add_option("--timeout", t->timeout, "seconds to wait for the coordinator")->capture_default_str();
}

sx::StatusOr<Message> ask(const Target& t, MsgKind kind, Message req = {}) {
  std::string endpoint = t.endpoint;
  if (endpoint.empty()) {
    if (t.job_dir.empty()) return sx::Status::invalid_argument("pass --job DIR or --endpoint tcp://HOST:PORT");
    SX_ASSIGN_OR_RETURN(ServerInfo info, read_server_info(t.job_dir));
    endpoint = info.endpoint;
  }
  const std::string key_source = !t.keys.empty() ? t.keys : t.job_dir;
  if (key_source.empty())
    return sx::Status::invalid_argument("--endpoint needs --keys FILE (the job's coord_client.key), or pass --job DIR");
  SX_ASSIGN_OR_RETURN(CurveKeys keys, read_client_keys(key_source));
  req.kind = kind;
  auto reply = request_once(endpoint, req, t.timeout, keys);
  if (!reply.is_ok() && reply.status().code() == sx::StatusCode::kUnavailable)
    return sx::Status::unavailable("no coordinator at " + endpoint + ": is `sx_coord serve --job " +
                                   (t.job_dir.empty() ? std::string("DIR") : t.job_dir) + "` running?");
  return reply;
}

int fail(const sx::Status& s) {
  std::cerr << "sx_coord: " << s.to_string() << "\n";
  return s.code() == sx::StatusCode::kInvalidArgument ? 2 : 1;
}

int serve(ServerOptions opts) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  auto server = Server::open(std::move(opts));
  if (!server.is_ok()) return fail(server.status());
  sx::Status s = (*server)->run(g_stop);
  return s.is_ok() ? 0 : fail(s);
}

}  // namespace

static int coord_main(int argc, char** argv) {
  // `sx_coord --job DIR --listen ...` (the DESIGN.md spelling) means `sx_coord serve ...`.
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0].rfind("--", 0) == 0 && args[0] != "--help" && args[0] != "-h")
    args.insert(args.begin(), "serve");
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector

  CLI::App app{"sx_coord: rank table, membership, LR broadcast and job monitor for sxtrain"};
  app.require_subcommand(1);

  ServerOptions sopts;
  auto* serve_cmd = app.add_subcommand("serve", "run the coordinator service for a job dir");
  serve_cmd->add_option("--job", sopts.job_dir, "job dir: state, metrics log and coord.json live here")->required();
  serve_cmd->add_option("--listen", sopts.listen, "ROUTER endpoint for requests")->capture_default_str();
  serve_cmd->add_option("--pub", sopts.pub, "PUB endpoint for broadcasts (default: listen port + 1)");
  serve_cmd->add_option("--job-name", sopts.job_name, "job name workers must register with (default: dir name)");
  serve_cmd->add_option("--dead-after", sopts.dead_after, "T: a rank silent for T seconds is dead")->capture_default_str();
  serve_cmd->add_option("--stall-after", sopts.stall_after, "a rank whose step is frozen this long is stalled (default T)");

  Target st;
  bool st_json = false;
  auto* status_cmd = app.add_subcommand("status", "table of ranks: host, step, loss, img/s, heartbeat age, state");
  add_target(status_cmd, &st);
  status_cmd->add_flag("--json", st_json, "machine-readable output");

  Target rt;
  bool rt_json = false, rt_hostfile = false;
  auto* rank_cmd = app.add_subcommand("ranktable", "the current rank table");
  add_target(rank_cmd, &rt);
  rank_cmd->add_flag("--json", rt_json, "JSON (default)");
  rank_cmd->add_flag("--hostfile", rt_hostfile, "OpenMPI hostfile: `host slots=N`");

  Target lt;
  double lr = -1, factor = -1, from_epoch = -1;
  int64_t from_step = -1;
  auto* lr_cmd = app.add_subcommand("set-lr", "override the LR schedule from a global step or epoch on every rank");
  add_target(lr_cmd, &lt);
  auto* lr_opt = lr_cmd->add_option("--lr", lr, "new learning rate");
  auto* factor_opt = lr_cmd->add_option("--factor", factor, "multiply the scheduled LR by this");
  lr_opt->excludes(factor_opt);
  auto* step_opt = lr_cmd->add_option("--from-step", from_step, "global step it takes effect at");
  auto* epoch_opt = lr_cmd->add_option("--from-epoch", from_epoch, "epoch it takes effect at (uses steps/epoch)");
  step_opt->excludes(epoch_opt);

  Target nt;
  std::string reason;
  int64_t notice_step = -1;
  auto* stop_cmd = app.add_subcommand("stop", "tell the workers to leave at the notice's step without a checkpoint (a relaunch resumes from the last one)");
  auto* drain_cmd = app.add_subcommand("drain", "tell the workers to checkpoint at the notice's step and leave (a relaunch resumes there)");
  for (auto* c : {stop_cmd, drain_cmd}) {
    add_target(c, &nt);
    c->add_option("--reason", reason, "text shown in the workers' logs");
    c->add_option("--from-step", notice_step, "global step it takes effect at (default: as soon as possible)");
  }

  std::string plot_job, plot_out;
  int plot_w = 1200, plot_h = 800;
  auto* plot_cmd = app.add_subcommand("plot", "PNG of loss, accuracy, LR and img/s against epoch from the metrics log");
  plot_cmd->add_option("--job", plot_job, "job dir (reads DIR/metrics.jsonl)")->required();
  plot_cmd->add_option("-o,--out", plot_out, "output PNG (default DIR/metrics.png)");
  plot_cmd->add_option("--width", plot_w)->capture_default_str();
  plot_cmd->add_option("--height", plot_h)->capture_default_str();

  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve_cmd) return serve(sopts);
  if (*status_cmd) {
    auto r = ask(st, MsgKind::kStatusQuery);
    if (!r.is_ok()) return fail(r.status());
    if (st_json) std::cout << status_json(r->status).dump(2) << "\n";
    else std::cout << status_table(r->status);
    return 0;
  }
  if (*rank_cmd) {
    auto r = ask(rt, MsgKind::kRankTableQuery);
    if (!r.is_ok()) return fail(r.status());
    if (rt_hostfile) std::cout << hostfile(r->rank_table);
    else std::cout << rank_table_json(r->rank_table).dump(2) << "\n";
    return 0;
  }
  if (*lr_cmd) {
    if ((lr < 0) == (factor < 0)) return fail(sx::Status::invalid_argument("set-lr needs one of --lr X or --factor F (>= 0)"));
    if ((from_step < 0) == (from_epoch < 0))
      return fail(sx::Status::invalid_argument("set-lr needs one of --from-step S or --from-epoch E (>= 0)"));
    Message req;
    req.lr_override = LrOverride{0, lr >= 0 ? OverrideKind::kLr : OverrideKind::kFactor, lr >= 0 ? lr : factor,
                                 from_step, from_epoch};
    auto r = ask(lt, MsgKind::kSetOverride, req);
    if (!r.is_ok()) return fail(r.status());
    std::cout << override_json(r->lr_override).dump() << "\n";
    auto st = ask(lt, MsgKind::kStatusQuery);
    int64_t max_step = -1;
    if (st.is_ok())
      for (const auto& rs : st->status.ranks) max_step = std::max(max_step, rs.metrics.step);
    if (max_step >= r->lr_override.from_step)
      std::cerr << "sx_coord: warning: ranks are already at step " << max_step << " >= " << r->lr_override.from_step
                << "; the override takes effect at the step the workers receive it\n";
    return 0;
  }
  if (*stop_cmd || *drain_cmd) {
    Message req;
    req.notice = Notice{0, *drain_cmd ? NoticeKind::kDrain : NoticeKind::kStop, notice_step, reason};
    auto r = ask(nt, MsgKind::kSendNotice, req);
    if (!r.is_ok()) return fail(r.status());
    std::cout << "notice #" << r->notice.id << " sent\n";
    return 0;
  }
  if (*plot_cmd) {
    if (plot_out.empty()) plot_out = plot_job + "/metrics.png";
    sx::Status s = plot_metrics(JobFiles{plot_job}.metrics(), plot_out, plot_w, plot_h);
    if (!s.is_ok()) return fail(s);
    std::cout << plot_out << "\n";
    return 0;
  }
  return 0;
}

int main(int argc, char** argv) {
  return sx::guarded_main("sx_coord", [&] { return coord_main(argc, argv); });
}
