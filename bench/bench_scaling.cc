// `sx_bench scaling`: data-parallel training throughput of one model under mpirun. Every rank builds
// the network with its own threads, trains on random data (fixed seed per rank), and reduces its
// gradients with the real Communicator (buckets on the communication thread as backward finishes
// them, 1/world folded into SGD) — the same path as sx_worker, minus the data plane. Reports the
// global images/s (slowest rank's step time). bench/scaling.py runs np=1 and np=2 side by side.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "bench/subcommands.h"
#include "model/network.h"
#include "worker/comm_env.h"
#include "worker/communicator.h"

namespace sx::bench {
namespace {

struct ScalingOptions {
  std::string arch = "small";
  int batch = 128;      // per rank
  int image = 28;
  int threads = 1;      // per rank
  int warmup = 3;
  int iters = 20;
  double bucket_mb = 25;
  bool overlap = true;
  bool json = false;
};

Status run_scaling(const ScalingOptions& o) {
  SX_ASSIGN_OR_RETURN(std::unique_ptr<worker::MpiEnv> env, worker::MpiEnv::init(nullptr, nullptr));
  SX_ASSIGN_OR_RETURN(model::ModelSpec spec, model::preset(o.arch));
  auto backend = model::make_cpu_backend({.threads = o.threads});
  model::NetworkOptions no;
  no.batch = o.batch;
  no.image_h = no.image_w = o.image;
  no.seed = 1;  // same initial parameters on every rank, as after sx_worker's broadcast
  SX_ASSIGN_OR_RETURN(std::unique_ptr<model::Network> net, model::Network::build(*backend, spec, no));

  std::vector<int64_t> boundaries;
  for (const model::ParamInfo& p : net->params()) boundaries.push_back(p.offset + p.count);
  worker::CommOptions co;
  co.bucket_bytes = int64_t(o.bucket_mb * 1048576.0);
  co.overlap = o.overlap;
  co.average = false;
  SX_ASSIGN_OR_RETURN(std::unique_ptr<worker::Communicator> comm,
                      worker::Communicator::create(*env, std::span<float>(net->grads_data(), net->param_count()),
                                                   co, boundaries));

  // Random inputs and labels, different per rank (each rank sees its own slice of a global batch).
  std::mt19937 rng(1000 + uint32_t(env->rank()));
  std::normal_distribution<float> pixel(0.f, 1.f);
  std::vector<float> images(size_t(net->input().dims.count()));
  for (float& x : images) x = pixel(rng);
  std::vector<int32_t> labels(size_t(o.batch));
  for (int32_t& l : labels) l = int32_t(rng() % uint32_t(spec.num_classes));
  SX_TRY(net->set_input(images.data()));
  SX_TRY(net->set_labels(labels.data()));
  const std::vector<model::SgdSegment> segments = net->sgd_segments(1e-4f, 0.f);

  std::vector<double> step_ms;
  for (int it = 0; it < o.warmup + o.iters; ++it) {
    SX_TRY(env->barrier());
    const double t0 = now_s();
    SX_TRY(net->forward(true));
    SX_TRY(net->loss(0.f).status());
    SX_TRY(net->backward(false, [&](int64_t end) { comm->on_grads_ready(end); }));
    SX_TRY(comm->wait_all());
    SX_TRY(net->sgd_step({.lr = 0.01f, .momentum = 0.9f, .nesterov = false, .grad_scale = comm->grad_scale()},
                         segments));
    double ms = (now_s() - t0) * 1e3;
    SX_TRY(env->allreduce_max(std::span<double>(&ms, 1)));  // the step is as slow as its slowest rank
    if (it >= o.warmup) step_ms.push_back(ms);
  }
  const double ms = median(step_ms);
  const double img_s = double(o.batch) * env->world_size() / (ms / 1e3);
  if (!env->is_root()) return Status::ok();
  if (o.json) {
    nlohmann::json j = {{"arch", o.arch},         {"world_size", env->world_size()}, {"batch_per_rank", o.batch},
                        {"image", o.image},       {"threads_per_rank", o.threads},   {"overlap", o.overlap},
                        {"step_ms", ms},          {"step_ms_min", min_of(step_ms)},  {"images_per_s", img_s},
                        {"step_ms_all", step_ms}, {"iterations", o.iters},           {"warmup", o.warmup}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: np=%d, batch %d per rank, %d thread(s) per rank: step %.1f ms (median of %d), %.1f img/s\n",
                o.arch.c_str(), env->world_size(), o.batch, o.threads, ms, o.iters, img_s);
  }
  return Status::ok();
}

}  // namespace

Subcommand add_scaling_command(CLI::App& parent) {
  auto o = std::make_shared<ScalingOptions>();
  CLI::App* app = parent.add_subcommand(
      "scaling",
      "Run under mpirun: data-parallel train steps (forward, loss, backward with bucketed overlapped allreduce, "
      "SGD) on random data; prints global img/s from the slowest rank's median step. bench/scaling.py compares "
      "np=1 with np=2.");
  app->add_option("--arch", o->arch, "preset name")->capture_default_str();
  app->add_option("--batch", o->batch, "images per rank per step")->capture_default_str();
  app->add_option("--image", o->image, "square input size")->capture_default_str();
  app->add_option("--threads", o->threads, "OpenMP threads per rank")->capture_default_str();
  app->add_option("--warmup", o->warmup, "untimed steps")->capture_default_str();
  app->add_option("--iters", o->iters, "timed steps")->capture_default_str();
  app->add_option("--bucket-mb", o->bucket_mb, "allreduce bucket size in MiB")->capture_default_str();
  app->add_flag("!--no-overlap", o->overlap, "reduce all buckets after backward instead of during it");
  app->add_flag("--json", o->json, "one JSON object");
  return {app, [o] { return run_scaling(*o); }};
}

}  // namespace sx::bench
