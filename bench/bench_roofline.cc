// sx_bench roofline: a PROJECTION, not a measurement. Per-layer FLOPs and bytes of one training step
// (model/cost_model.h, from the model builder's architecture walk), a roofline on published A100 /
// H100 figures, and the published anchors it is read against. Nothing here runs on a GPU.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/subcommands.h"
#include "model/cost_model.h"
#include "model/se_resnext.h"

namespace sx::bench {
namespace {

struct RooflineOptions {
  std::string arch = "se_resnext50_32x4d";
  int batch = 128;
  int image = 224;
  bool layers = false;
  bool json = false;
};

// Published peak figures (vendor data sheets, SXM parts; listed in bench/RESULTS.md). gemm: dense bf16 tensor-core FLOP/s; vector: fp32 CUDA-core FLOP/s; bandwidth: HBM.
struct Machine {
  const char* name;
  double gemm_flops, vector_flops, bandwidth;
};
constexpr Machine kMachines[] = {
    {"A100-SXM-80GB", 312e12, 19.5e12, 2.0e12},
    {"H100-SXM", 989e12, 67e12, 3.35e12},
};

// NVIDIA DeepLearningExamples, SE-ResNeXt-101 32x4d, one A100 80 GB, AMP (mixed precision): 855 img/s.
constexpr double kNvidiaSeResNeXt101A100Amp = 855.0;
// MindSpore model zoo, SE-ResNeXt-50 on 8 Ascend 910: 217 ms per 128-image step per card.
constexpr double kAscendStepMs = 217.0, kAscendBatch = 128.0;

Status run_roofline(const RooflineOptions& o) {
  SX_ASSIGN_OR_RETURN(const model::ModelSpec spec, model::preset(o.arch));
  SX_CHECK_ARG(o.batch > 0 && o.image > 0, "--batch and --image must be > 0");
  const std::vector<model::LayerCost> bf16 = model::layer_costs(spec, o.image, o.image, o.batch, 2);
  const model::CostTotals t = model::sum_costs(bf16);
  SX_ASSIGN_OR_RETURN(const model::ModelSpec r101, model::preset("se_resnext101_32x4d"));
  const double flop_ratio = double(model::count_macs(r101, 224, 224)) / double(model::count_macs(spec, 224, 224));

  nlohmann::ordered_json j = {{"kind", "projection"},
                              {"note", "roofline on published peak figures; not measured on a GPU"},
                              {"arch", o.arch},
                              {"batch", o.batch},
                              {"image", o.image},
                              {"precision", "bf16"},
                              {"gflop_per_image_train", t.flops * 1e-9},
                              {"mb_per_image_train", t.bytes * 1e-6},
                              {"forward_gmacs_per_image", double(t.macs) * 1e-9}};
  const double a100_bound = 1.0 / model::roofline_seconds(bf16, kMachines[0].gemm_flops, kMachines[0].vector_flops,
                                                          kMachines[0].bandwidth);
  // The anchor's efficiency: NVIDIA's measured SE-ResNeXt-101 rate, scaled to this model by FLOPs,
  // as a fraction of this model's A100 roofline. Carried to H100 as the same fraction.
  const double anchor_scaled = kNvidiaSeResNeXt101A100Amp * flop_ratio;
  const double efficiency = anchor_scaled / a100_bound;
  nlohmann::ordered_json machines = nlohmann::ordered_json::array();
  for (const Machine& m : kMachines) {
    const double s = model::roofline_seconds(bf16, m.gemm_flops, m.vector_flops, m.bandwidth);
    double gemm_s = 0, memory_s = 0;  // time in conv/linear layers; time of layers bound by bandwidth
    for (const model::LayerCost& l : bf16) {
      const bool gemm = l.kind == model::CostKind::kConv || l.kind == model::CostKind::kLinear;
      const double compute = l.flops / (gemm ? m.gemm_flops : m.vector_flops), memory = l.bytes / m.bandwidth;
      if (gemm) gemm_s += std::max(compute, memory);
      if (memory >= compute) memory_s += memory;
    }
    machines.push_back({{"machine", m.name},
                        {"peak_bf16_tflops", m.gemm_flops * 1e-12},
                        {"hbm_tb_s", m.bandwidth * 1e-12},
                        {"roofline_img_s", 1.0 / s},
                        {"memory_bound_share", memory_s / s},
                        {"gemm_share_of_time", gemm_s / s},
                        {"projected_img_s", efficiency / s}});
  }
  j["machines"] = machines;
  j["anchors"] = {{"nvidia_se_resnext101_a100_amp_img_s", kNvidiaSeResNeXt101A100Amp},
                  {"flop_ratio_101_to_this", flop_ratio},
                  {"anchor_scaled_to_this_a100_img_s", anchor_scaled},
                  {"anchor_fraction_of_a100_roofline", efficiency},
                  {"ascend910_se_resnext50_img_s_per_card", kAscendBatch / (kAscendStepMs * 1e-3)}};
  if (o.layers) {
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    for (const model::LayerCost& l : bf16)
      layers.push_back({{"name", l.name}, {"kind", model::cost_kind_name(l.kind)}, {"macs", l.macs},
                        {"train_mflop", l.flops * 1e-6}, {"train_kb", l.bytes * 1e-3},
                        {"flop_per_byte", l.bytes > 0 ? l.flops / l.bytes : 0.0}});
    j["layers"] = layers;
  }
  if (o.json) {
    std::printf("%s\n", j.dump(1).c_str());
    return Status::ok();
  }
  std::printf("PROJECTION (roofline on published peaks, not measured): %s, batch %d, %d px, bf16 activations\n",
              o.arch.c_str(), o.batch, o.image);
  std::printf("  per image, one training step: %.2f GFLOP, %.1f MB (forward %.2f GMAC)\n", t.flops * 1e-9,
              t.bytes * 1e-6, double(t.macs) * 1e-9);
  if (o.layers) {
    std::printf("  %-28s %-8s %12s %10s %8s\n", "layer", "kind", "train MFLOP", "train KB", "FLOP/B");
    for (const model::LayerCost& l : bf16)
      std::printf("  %-28s %-8s %12.1f %10.1f %8.1f\n", l.name.c_str(), model::cost_kind_name(l.kind), l.flops * 1e-6,
                  l.bytes * 1e-3, l.bytes > 0 ? l.flops / l.bytes : 0.0);
  }
  for (const auto& m : j["machines"])
    std::printf("  %-14s roofline bound %6.0f img/s (memory-bound share of time %.0f%%); projected %5.0f img/s\n",
                m["machine"].get<std::string>().c_str(), m["roofline_img_s"].get<double>(),
                100 * m["memory_bound_share"].get<double>(), m["projected_img_s"].get<double>());
  std::printf("  anchors: NVIDIA SE-ResNeXt-101 A100 AMP %.0f img/s -> x%.2f FLOPs -> %.0f img/s for %s on A100 "
              "(%.0f%% of its roofline); Ascend 910 SE-ResNeXt-50 %.0f img/s per card\n",
              kNvidiaSeResNeXt101A100Amp, 1 / flop_ratio, anchor_scaled, o.arch.c_str(), 100 * efficiency,
              kAscendBatch / (kAscendStepMs * 1e-3));
  return Status::ok();
}

}  // namespace

Subcommand add_roofline_command(CLI::App& parent) {
  auto o = std::make_shared<RooflineOptions>();
  CLI::App* app = parent.add_subcommand(
      "roofline",
      "PROJECTION: per-layer FLOPs and bytes of one training step (model/cost_model.h) and a roofline on "
      "published A100/H100 bf16 figures, next to published anchors. Runs nothing on a GPU.");
  app->add_option("--arch", o->arch, "preset name")->capture_default_str();
  app->add_option("--batch", o->batch, "images per step (weights' traffic is shared by the batch)")
      ->capture_default_str();
  app->add_option("--image", o->image, "square input size in pixels")->capture_default_str();
  app->add_flag("--layers", o->layers, "print (or include in the JSON) every layer");
  app->add_flag("--json", o->json, "one JSON object instead of the table");
  return {app, [o] { return run_roofline(*o); }};
}

}  // namespace sx::bench
