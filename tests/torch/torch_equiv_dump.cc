// torch_equiv_dump: runs a few training steps of one preset on the CPU backend and writes what
// tests/torch/torch_equivalence.py compares with PyTorch:
//   OUT/init.pt   the initial weights, through the same export as `sx_ckpt export --format torch`
//   OUT/steps.pt  inputs and labels per step; logits_eval (initial weights, running statistics);
//                 logits_train, loss.k, grad.<name> (step 0); bn1.<name> (running statistics
//                 after step 0); lr.k; param_final.<name> (after all steps). Names are PyTorch's.
// Optimiser: SGD momentum 0.9, Nesterov, weight decay on conv/linear weights only, the LR from the
// CosineWarmup schedule (1 warm-up epoch of 1 step, cosine over `steps` epochs).
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "model/lr_schedule.h"
#include "model/network.h"
#include "worker/torch_convert.h"
#include "worker/train_model.h"

namespace {

using sx::Status;
using sx::storage::TorchTensor;

struct Args {
  std::string arch, out;
  int image = 32, batch = 2, steps = 3, threads = 2;
  double lr = 0.05, warmup_start_lr = 0.02, weight_decay = 1e-3;
};

TorchTensor floats(std::string name, std::vector<int64_t> shape, const float* data) {
  TorchTensor t;
  t.name = std::move(name);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.shape = std::move(shape);
  t.data.assign(data, data + n);
  return t;
}

// The network's tensors of one kind under PyTorch names, prefixed.
Status add_named(std::vector<TorchTensor>& out, const std::string& prefix, const sx::model::ModelSpec& spec,
                 std::span<const sx::model::ParamInfo> infos, const float* base) {
  std::vector<sx::storage::TensorRef> refs;
  for (const sx::model::ParamInfo& p : infos)
    refs.push_back({std::string(p.kind == sx::model::ParamKind::kBnRunningMean ||
                                        p.kind == sx::model::ParamKind::kBnRunningVar
                                    ? "bn_stats/"
                                    : "params/") + p.name,
                    p.shape, base + p.offset});
  SX_ASSIGN_OR_RETURN(auto named, sx::worker::to_torch_tensors(spec, refs, 0));
  for (TorchTensor& t : named) {
    if (t.dtype != sx::storage::TorchDType::kFloat32) continue;
    t.name = prefix + t.name;
    out.push_back(std::move(t));
  }
  return Status::ok();
}

Status run(const Args& a) {
  SX_ASSIGN_OR_RETURN(sx::model::ModelSpec spec, sx::model::preset(a.arch));
  auto backend = sx::model::make_cpu_backend({.threads = a.threads});
  sx::model::NetworkOptions no;
  no.batch = a.batch;
  no.image_h = no.image_w = a.image;
  no.seed = 7;
  SX_ASSIGN_OR_RETURN(auto net, sx::model::Network::build(*backend, spec, no));

  SX_ASSIGN_OR_RETURN(auto init, sx::worker::to_torch_tensors(spec, sx::worker::checkpoint_refs(*net, false), 0));
  SX_TRY(sx::storage::write_torch_state_dict(a.out + "/init.pt", init));

  sx::model::LrScheduleConfig lc;
  lc.name = "CosineWarmup";
  lc.base_lr = a.lr;
  lc.steps_per_epoch = 1;
  lc.epochs = std::max(a.steps, 2);  // the cosine phase needs at least one step after the warm-up
  lc.warmup_epochs = 1;
  lc.warmup_start_lr = a.warmup_start_lr;
  SX_ASSIGN_OR_RETURN(sx::model::LrSchedule schedule, sx::model::LrSchedule::make(lc));
  const auto segments = net->sgd_segments(float(a.weight_decay), 0.f);

  const int64_t n = a.batch, c = spec.in_channels, k = spec.num_classes;
  std::mt19937 rng(123);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<TorchTensor> out;
  std::vector<float> logits(size_t(n * k));
  auto host_logits = [&]() { return backend->copy_to_host(logits.data(), net->logits(), logits.size() * sizeof(float)); };

  for (int step = 0; step < a.steps; ++step) {
    std::vector<float> x(size_t(n * c * a.image * a.image));
    for (float& v : x) v = normal(rng);
    std::vector<int32_t> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) labels[size_t(i)] = int32_t((7 * i + 3 * step + 1) % k);
    out.push_back(floats("input." + std::to_string(step), {n, c, a.image, a.image}, x.data()));
    TorchTensor lt;
    lt.name = "labels." + std::to_string(step);
    lt.shape = {n};
    lt.dtype = sx::storage::TorchDType::kInt64;
    lt.ints.assign(labels.begin(), labels.end());
    out.push_back(std::move(lt));

    SX_TRY(net->set_input(x.data()));
    SX_TRY(net->set_labels(labels.data()));
    if (step == 0) {
      SX_TRY(net->forward(false));
      SX_TRY(host_logits());
      out.push_back(floats("logits_eval", {n, k}, logits.data()));
    }
    SX_TRY(net->forward(true));
    if (step == 0) {
      SX_TRY(host_logits());
      out.push_back(floats("logits_train", {n, k}, logits.data()));
    }
    SX_ASSIGN_OR_RETURN(sx::model::StepResult r, net->loss(0.f));
    out.push_back(floats("loss." + std::to_string(step), {}, &r.loss));
    SX_TRY(net->backward(false));
    if (step == 0) {
      SX_TRY(add_named(out, "grad.", spec, net->params(), net->grads_data()));
      SX_TRY(add_named(out, "bn1.", spec, net->bn_stats(), net->bn_stats_data()));
    }
    const float lr = float(schedule.lr_at(step));
    out.push_back(floats("lr." + std::to_string(step), {}, &lr));
    SX_TRY(net->sgd_step({.lr = lr, .momentum = 0.9f, .nesterov = true}, segments));
  }
  SX_TRY(add_named(out, "param_final.", spec, net->params(), net->params_data()));
  return sx::storage::write_torch_state_dict(a.out + "/steps.pt", out);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"torch_equiv_dump: a few training steps of one preset, for the PyTorch comparison"};
  app.add_option("--arch", a.arch, "preset")->required();
  app.add_option("--image", a.image, "square input size");
  app.add_option("--batch", a.batch, "batch");
  app.add_option("--steps", a.steps, "SGD steps");
  app.add_option("--threads", a.threads, "compute threads");
  app.add_option("--out", a.out, "output directory (exists)")->required()->check(CLI::ExistingDirectory);
  CLI11_PARSE(app, argc, argv);
  Status st = run(a);
  if (!st.is_ok()) {
    std::fprintf(stderr, "torch_equiv_dump: %s\n", st.to_string().c_str());
    return 1;
  }
  return 0;
}
