// Backend conformance, part 5: a whole network. A small SE-ResNeXt with the ImageNet stem (7x7/2 conv,
// 3x3/2 max pool), a projection shortcut, grouped 3x3 convs and SE blocks — and its vd variant (avg-pool
// shortcut, ceil mode) — trains 8 SGD steps on one fixed batch on the backend under test and on the CPU
// reference backend from the same initial weights: the losses and the final parameters agree within
// the precision's tolerance, and the loss falls. The CPU instance runs the reference with 1 thread
// against the backend with 2 (results do not depend on the thread count).
#include <random>
#include <string>
#include <vector>

#include "model/network.h"
#include "tests/test_backend_conformance_util.h"

namespace sx::model::testing {
namespace {

ModelSpec tiny_spec(bool vd) {
  ModelSpec spec;
  spec.name = vd ? "tiny_vd" : "tiny";
  spec.blocks = {1, 1};
  spec.cardinality = 4;
  spec.base_width = 4;  // widths 16, 32
  spec.stage_channels = {32, 64};
  spec.stage_strides = {1, 2};
  spec.se_reduction = 4;
  spec.stem = vd ? Stem::kVd : Stem::kImageNet;
  spec.stem_channels = 16;
  spec.avg_down = vd;
  spec.num_classes = 10;
  return spec;
}

struct TrainRun {
  std::vector<float> losses;
  std::vector<float> params;
  std::vector<float> bn_stats;
};

void train(Backend& be, const ModelSpec& spec, const std::vector<float>& x, const std::vector<int32_t>& labels, int n,
           TrainRun* out) {
  NetworkOptions o;
  o.batch = n;
  o.image_h = o.image_w = 32;
  o.seed = 7;
  auto built = Network::build(be, spec, o);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  Network& net = *built.value();
  ASSERT_TRUE(net.set_input(x.data()).is_ok());
  ASSERT_TRUE(net.set_labels(labels.data()).is_ok());
  const auto segments = net.sgd_segments(1e-4f, 0.f);
  SgdHyper h;
  h.lr = 0.05f;
  h.momentum = 0.9f;
  for (int step = 0; step < 8; ++step) {
    auto r = net.train_step(h, segments, 0.1f);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    out->losses.push_back(r->loss);
  }
  out->params.resize(size_t(net.param_count()));
  ASSERT_TRUE(be.copy_to_host(out->params.data(), net.params_data(), out->params.size() * sizeof(float)).is_ok());
  out->bn_stats.resize(size_t(net.bn_stats_count()));
  ASSERT_TRUE(be.copy_to_host(out->bn_stats.data(), net.bn_stats_data(), out->bn_stats.size() * sizeof(float)).is_ok());
}

class NetworkConformance : public BackendConformance {};

TEST_P(NetworkConformance, EightTrainingStepsMatchTheCpuReference) {
  for (const bool vd : {false, true}) {
    SCOPED_TRACE(vd ? "vd" : "imagenet stem");
    const ModelSpec spec = tiny_spec(vd);
    const int n = 8;
    std::mt19937 gen(99);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(size_t(n) * 3 * 32 * 32);
    for (float& v : x) v = nd(gen);
    std::vector<int32_t> labels(static_cast<size_t>(n), 0);
    for (auto& l : labels) l = int32_t(gen() % 10);

    TrainRun ref, got;
    auto cpu = make_cpu_backend({.threads = 1});
    train(*cpu, spec, x, labels, n, &ref);
    train(be(), spec, x, labels, n, &got);
    if (HasFatalFailure()) return;
    // Eight steps compound the per-op differences: fp32 1e-3 (TF32 convolutions on a GPU), bf16 5e-2, fp16 1e-2.
    const double t = be().is_device() ? (precision() == Precision::kBf16   ? 5e-2
                                         : precision() == Precision::kFp16 ? 1e-2
                                                                           : 1e-3)
                                      : 1e-5;
    ASSERT_EQ(got.losses.size(), ref.losses.size());
    for (size_t i = 0; i < ref.losses.size(); ++i)
      EXPECT_NEAR(got.losses[i], ref.losses[i], t * ref.losses[0]) << "step " << i;
    EXPECT_LT(got.losses.back(), 0.8f * got.losses.front()) << "the loss falls";
    expect_close(got.params, to_double(ref.params), 10 * t, "params after 8 steps");
    expect_close(got.bn_stats, to_double(ref.bn_stats), 10 * t, "BN running statistics");
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, NetworkConformance, ::testing::ValuesIn(all_backend_cases()), case_name);

}  // namespace
}  // namespace sx::model::testing
