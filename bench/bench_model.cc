// sx_bench model: time one SE-ResNeXt preset on the CPU backend (or `--device cuda --precision
// fp32|bf16|fp16`) — inference forward (eval mode)
// and a training step (forward + loss + backward + SGD) — on random inputs and labels from a
// fixed seed. Peer: bench/torch_se_resnext.py (same keys); bench/compare_model.py runs both.
#include <cmath>
#include <memory>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "bench/subcommands.h"
#include "model/backend.h"
#include "model/cpu/isa.h"
#include "model/cuda/cuda_backend.h"
#include "model/precision.h"
#include "model/network.h"
#include "model/se_resnext.h"

namespace sx::bench {
namespace {

struct ModelBenchOptions {
  std::string arch = "se_resnext50_32x4d";
  int batch = 16;
  int image = 224;
  int threads = 2;
  int warmup = 2;        // untimed iterations before each timed series
  int iters = 10;        // timed train steps
  int infer_iters = -1;  // timed forwards; -1 = iters
  uint64_t seed = 1;
  float lr = 0.01f, momentum = 0.9f, weight_decay = 1e-4f;
  std::string only = "both";  // infer | train | both
  std::string bn = "auto";  // auto | onednn | fused: which BatchNorm implementation (A/B)
  std::string isa = "auto";  // auto | avx512 | avx2 | generic: cap of the CPU instruction-set level
  std::string device = "cpu";     // cpu | cuda
  int gpu = 0;                    // cuda: device index
  std::string precision = "fp32"; // cuda: fp32 | bf16 | fp16 (fp16 steps use a static loss scale)
  bool params_only = false;
  bool json = false;
};

struct Series {
  std::vector<double> ms;  // one per timed iteration
  CpuWindow window;        // spans the whole timed series
};

// Runs `body` warmup + iters times, timing the last iters (backend synchronised each time).
template <typename Body>
Status time_series(model::Backend& backend, int warmup, int iters, Series* out, Body&& body) {
  for (int i = 0; i < warmup; ++i) {
    SX_TRY(body());
    SX_TRY(backend.synchronize());
  }
  out->window = CpuWindow();
  for (int i = 0; i < iters; ++i) {
    double t0 = now_s();
    SX_TRY(body());
    SX_TRY(backend.synchronize());
    out->ms.push_back((now_s() - t0) * 1e3);
  }
  out->window.stop();
  return Status::ok();
}

Status run_model(const ModelBenchOptions& o) {
  SX_ASSIGN_OR_RETURN(model::ModelSpec spec, model::preset(o.arch));
  const int64_t params = model::count_parameters(spec);
  if (o.params_only) {
    std::printf("%lld\n", static_cast<long long>(params));
    return Status::ok();
  }
  SX_CHECK_ARG(o.batch > 0 && o.image > 0 && o.iters > 0 && o.warmup >= 0, "--batch, --image, --iters must be > 0");
  SX_CHECK_ARG(o.only == "both" || o.only == "infer" || o.only == "train", "--only must be infer, train or both");
  const int infer_iters = o.only == "train" ? 0 : o.infer_iters < 0 ? o.iters : o.infer_iters;
  const int train_iters = o.only == "infer" ? 0 : o.iters;

  // The cap goes to oneDNN too, before its first primitive, so both run at the same level.
  model::CpuIsa max_isa = model::CpuIsa::kAvx512;
  if (o.isa != "auto") {
    SX_ASSIGN_OR_RETURN(max_isa, model::parse_cpu_isa(o.isa));
    SX_TRY(model::cpu::cap_cpu_isa(max_isa));
  }
  // Backend before network: the network keeps a reference to it.
  SX_CHECK_ARG(o.device == "cpu" || o.device == "cuda", "--device must be cpu or cuda");
  SX_ASSIGN_OR_RETURN(const model::Precision precision, model::parse_precision(o.precision));
  if (o.device == "cpu" && precision != model::Precision::kFp32)
    return Status::invalid_argument("--precision " + o.precision + " needs --device cuda (the CPU backend is fp32)");
  std::unique_ptr<model::Backend> backend;
  if (o.device == "cuda") {
    auto made = model::make_cuda_backend({.device = o.gpu, .precision = precision});
    if (!made.is_ok()) return made.status().with_context("--device cuda --gpu " + std::to_string(o.gpu));
    backend = std::move(made).value();
  } else {
    backend = model::make_cpu_backend({.threads = o.threads, .max_cpu_isa = max_isa});
  }
  model::NetworkOptions net_options;
  net_options.batch = o.batch;
  net_options.image_h = net_options.image_w = o.image;
  net_options.seed = o.seed;
  SX_CHECK_ARG(o.bn == "auto" || o.bn == "onednn" || o.bn == "fused", "--bn must be auto, onednn or fused");
  net_options.bn_impl = o.bn == "fused"    ? model::BatchNormImpl::kFused
                        : o.bn == "onednn" ? model::BatchNormImpl::kOneDnn
                                           : model::BatchNormImpl::kAuto;
  double t_build = now_s();
  SX_ASSIGN_OR_RETURN(std::unique_ptr<model::Network> net, model::Network::build(*backend, spec, net_options));
  const double build_ms = (now_s() - t_build) * 1e3;

  // Random batch: x (N, C, H, W) ~ N(0, 1), labels uniform in [0, K).
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(size_t(o.batch) * spec.in_channels * o.image * o.image);
  for (float& v : x) v = normal(rng);
  std::uniform_int_distribution<int32_t> label(0, spec.num_classes - 1);
  std::vector<int32_t> labels(o.batch);
  for (int32_t& l : labels) l = label(rng);
  double t_input = now_s();
  SX_TRY(net->set_input(x.data()));
  SX_TRY(backend->synchronize());
  const double set_input_ms = (now_s() - t_input) * 1e3;
  SX_TRY(net->set_labels(labels.data()));

  // Inference first, then training (the PyTorch peer uses the same order).
  Series infer;
  int64_t reorders_forward = 0;
  if (infer_iters > 0) {
    backend->freeze_weights(true);  // as sx_infer: the weights stay converted between forwards
    SX_TRY(time_series(*backend, o.warmup, infer_iters, &infer, [&] { return net->forward(false); }));
    int64_t r0 = backend->reorder_count();
    SX_TRY(net->forward(false));
    reorders_forward = backend->reorder_count() - r0;
    backend->freeze_weights(false);
  }

  // fp16 trains with a loss scale (a static power of two here) and the overflow check the worker runs.
  const bool scaled = precision == model::Precision::kFp16;
  const float loss_scale = scaled ? 1024.f : 1.f;
  const model::SgdHyper hyper{.lr = o.lr, .momentum = o.momentum, .nesterov = false, .grad_scale = 1.f / loss_scale};
  const std::vector<model::SgdSegment> segments = net->sgd_segments(o.weight_decay, 0.f);
  float loss = 0.f;
  int64_t overflows = 0;
  auto step = [&]() -> Status {
    SX_TRY(net->forward(true));
    SX_ASSIGN_OR_RETURN(model::StepResult r, net->loss(0.f, nullptr, loss_scale));
    SX_TRY(net->backward(false));
    bool finite = true;
    if (scaled) SX_TRY(backend->all_finite(net->grads_data(), net->param_count(), &finite));
    if (finite) SX_TRY(net->sgd_step(hyper, segments));
    overflows += !finite;
    loss = r.loss;
    return Status::ok();
  };
  Series train;
  int64_t reorders_step = 0;
  if (train_iters > 0) {
    SX_TRY(time_series(*backend, o.warmup, train_iters, &train, step));
    int64_t r0 = backend->reorder_count();
    SX_TRY(step());
    reorders_step = backend->reorder_count() - r0;
    if (!std::isfinite(loss)) return Status::internal("training loss is " + std::to_string(loss));
  }

  const double forward_ms = median(infer.ms), step_ms = median(train.ms);
  // Achieved rate from the cost model: 2 flops per multiply-add, a train step counted as 3 forwards.
  const double gflop_forward = 2e-9 * double(model::count_macs(spec, o.image, o.image)) * o.batch;
  auto per_s = [](double amount, double ms) { return ms > 0 ? amount / (ms / 1e3) : 0.0; };  // 0 when not timed
  nlohmann::json j = {
      {"peer", "sxtrain"},
      {"backend", backend->name()},
      {"device", o.device},
      {"precision", o.precision},
      {"loss_scale", loss_scale},
      {"overflow_steps", overflows},
      {"cpu", model::cpu::cpu_model_name()},
      {"isa", model::cpu_isa_name(model::cpu::cpu_isa_available())},
      {"onednn_isa", model::cpu_isa_name(model::cpu::cpu_isa_onednn())},
      {"arch", o.arch},
      {"params", params},
      {"batch", o.batch},
      {"image", o.image},
      {"threads", o.threads},
      {"bn", o.bn},
      {"warmup", o.warmup},
      {"iterations", train_iters},
      {"infer_iterations", infer_iters},
      {"forward_ms", forward_ms},
      {"train_step_ms", step_ms},
      {"forward_ms_min", min_of(infer.ms)},
      {"train_step_ms_min", min_of(train.ms)},
      {"infer_img_per_s", per_s(o.batch, forward_ms)},
      {"train_img_per_s", per_s(o.batch, step_ms)},
      {"peak_rss_mb", peak_rss_mb()},
      {"gflop_per_forward", gflop_forward},
      {"forward_gflop_per_s", per_s(gflop_forward, forward_ms)},
      {"train_gflop_per_s", per_s(3 * gflop_forward, step_ms)},
      {"loss", loss},
      {"build_ms", build_ms},
      {"set_input_ms", set_input_ms},
      {"reorders_per_forward", reorders_forward},
      {"reorders_per_train_step", reorders_step},
      {"forward_ms_all", infer.ms},
      {"train_step_ms_all", train.ms},
      {"infer_wall_s", infer.window.wall_s()},
      {"infer_other_cpu_s", infer.window.other_cpu_s()},
      {"train_wall_s", train.window.wall_s()},
      {"train_other_cpu_s", train.window.other_cpu_s()},
      {"steal_s", infer.window.steal_s() + train.window.steal_s()},
  };
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return Status::ok();
  }
  std::printf("sxtrain %s  %s  params %lld  batch %d  image %d  threads %d\n  on %s\n", backend->name().c_str(),
              o.arch.c_str(), static_cast<long long>(params), o.batch, o.image, o.threads,
              model::cpu::cpu_description().c_str());
  std::printf("  %-16s %10s %10s %10s %12s %10s\n", "", "median ms", "min ms", "img/s", "GFLOP/s", "others s");
  auto row = [&](const char* what, const Series& s, double gflop) {
    if (s.ms.empty()) return;
    const double ms = median(s.ms);
    std::printf("  %-16s %10.2f %10.2f %10.1f %12.1f %10.2f\n", what, ms, min_of(s.ms), per_s(o.batch, ms),
                per_s(gflop, ms), s.window.other_cpu_s());
  };
  row("forward (eval)", infer, gflop_forward);
  row("train step", train, 3 * gflop_forward);
  std::printf("  peak RSS %.1f MB   build %.0f ms   reorders: %lld per forward, %lld per step   loss %.4f\n",
              peak_rss_mb(), build_ms, static_cast<long long>(reorders_forward),
              static_cast<long long>(reorders_step), loss);
  std::printf("  (GFLOP/s from the cost model, a step = 3 forwards; 'others s' = CPU seconds other processes took)\n");
  return Status::ok();
}

}  // namespace

Subcommand add_model_command(CLI::App& parent) {
  auto o = std::make_shared<ModelBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "model",
      "Time a model on the CPU backend: inference forward (eval mode, median ms and img/s) and a training step "
      "(forward + softmax cross-entropy + backward + SGD momentum, median ms), on random data from a fixed seed. "
      "Reports peak RSS (VmHWM) and the CPU time other processes took during the timed loops.");
  app->add_option("--arch", o->arch, "preset name (model/se_resnext.h), e.g. se_resnext50_32x4d, small")
      ->capture_default_str();
  app->add_option("--batch", o->batch, "images per step")->capture_default_str();
  app->add_option("--image", o->image, "square input size in pixels")->capture_default_str();
  app->add_option("--threads", o->threads, "OpenMP threads (0 = runtime default)")->capture_default_str();
  app->add_option("--warmup", o->warmup, "untimed iterations before each timed series")->capture_default_str();
  app->add_option("--iters", o->iters, "timed training steps")->capture_default_str();
  app->add_option("--infer-iters", o->infer_iters, "timed inference forwards (-1 = --iters)")->capture_default_str();
  app->add_option("--seed", o->seed, "seed of the parameters, inputs and labels")->capture_default_str();
  app->add_option("--lr", o->lr, "SGD learning rate")->capture_default_str();
  app->add_option("--momentum", o->momentum, "SGD momentum")->capture_default_str();
  app->add_option("--weight-decay", o->weight_decay, "weight decay of conv/linear weights (BN and biases: 0)")
      ->capture_default_str();
  app->add_option("--only", o->only, "what to time: infer, train or both")->capture_default_str();
  app->add_option("--bn", o->bn, "batch norm implementation: auto, onednn or fused (A/B)")->capture_default_str();
  app->add_option("--isa", o->isa,
                  "highest CPU instruction-set level for our kernels and oneDNN's: auto, avx512, avx2 or generic "
                  "(like ONEDNN_MAX_CPU_ISA, which also caps both)")
      ->capture_default_str();
  app->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app->add_option("--gpu", o->gpu, "cuda: device index")->capture_default_str();
  app->add_option("--precision", o->precision, "cuda: fp32, bf16 or fp16 (activations; weights stay fp32)")
      ->capture_default_str();
  app->add_flag("--params", o->params_only, "print only the parameter count of --arch (no backend) and exit");
  app->add_flag("--json", o->json,
                "print one JSON object: params, forward_ms, train_step_ms (medians), infer_img_per_s, peak_rss_mb, "
                "per-iteration times, other-process CPU seconds, ...");
  return Subcommand{app, [o] { return run_model(*o); }};
}

}  // namespace sx::bench
