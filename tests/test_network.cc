// Network on the CPU backend: parameter names, layout and initialisation, the backward-order
// gradient prefix, BN train vs eval, gradient accumulation, SGD segments, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "model/network.h"
#include "tests/isa_test_util.h"

namespace sx::model {
namespace {

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    ::sx::Status st_ = (expr);                           \
    ASSERT_TRUE(st_.is_ok()) << #expr ": " << st_.to_string(); \
  } while (0)

ModelSpec spec_of(const char* name) {
  auto s = preset(name);
  EXPECT_TRUE(s.is_ok());
  return s.value();
}

std::unique_ptr<Network> build(Backend& be, const ModelSpec& spec, int batch, int hw, uint64_t seed = 1) {
  NetworkOptions o;
  o.batch = batch;
  o.image_h = o.image_w = hw;
  o.seed = seed;
  auto net = Network::build(be, spec, o);
  EXPECT_TRUE(net.is_ok()) << net.status().to_string();
  return net.is_ok() ? std::move(net).value() : nullptr;
}

std::vector<float> host(Backend& be, const float* p, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  EXPECT_TRUE(be.copy_to_host(v.data(), p, size_t(n) * sizeof(float)).is_ok());
  return v;
}

const ParamInfo* find(std::span<const ParamInfo> list, const std::string& name) {
  for (const auto& p : list)
    if (p.name == name) return &p;
  return nullptr;
}

// Fixed pseudo-random images and labels.
void set_batch(Network& net, int batch, uint32_t seed) {
  Dims d = net.input().dims;
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x(static_cast<size_t>(d.count()));
  for (float& v : x) v = u(gen);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) labels[size_t(i)] = int32_t(gen() % uint32_t(net.spec().num_classes));
  ASSERT_OK(net.set_input(x.data()));
  ASSERT_OK(net.set_labels(labels.data()));
}

// One thread: these shapes are tiny, and on the shared 2-core machine OpenMP barriers made the
// file 3x slower with two. DeterministicTraining uses two threads on purpose.
std::unique_ptr<Backend> backend_with_threads(int threads) {
  BackendOptions o;
  o.threads = threads;
  return make_cpu_backend(o);
}

class NetworkTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be_ = backend_with_threads(1);
};

TEST_F(NetworkTest, SmallLayoutNamesAndOffsets) {
  auto net = build(*be_, spec_of("small"), 2, 28);
  ASSERT_TRUE(net);
  EXPECT_EQ(net->param_count(), 148550);
  auto params = net->params();
  std::set<std::string> names;
  int64_t offset = 0;
  for (const auto& p : params) {
    EXPECT_TRUE(names.insert(p.name).second) << "duplicate " << p.name;
    EXPECT_EQ(p.offset, offset) << p.name;  // contiguous, in order
    int64_t count = 1;
    for (int64_t d : p.shape) count *= d;
    EXPECT_EQ(p.count, count) << p.name;
    offset += p.count;
    EXPECT_NE(p.kind, ParamKind::kBnRunningMean) << p.name;
    EXPECT_NE(p.kind, ParamKind::kBnRunningVar) << p.name;
  }
  EXPECT_EQ(offset, net->param_count());

  // Backward order: classifier first, then the last block's SE, ..., the stem last.
  EXPECT_EQ(params.front().name, "fc.weight");
  EXPECT_EQ(params[1].name, "fc.bias");
  EXPECT_EQ(params[2].name, "stage2.block0.se.fc2.weight");
  EXPECT_EQ(params.back().name, "stem.conv1.weight");
  auto pos = [&](const std::string& n) {
    const ParamInfo* p = find(params, n);
    EXPECT_NE(p, nullptr) << n;
    return p ? p->offset : -1;
  };
  EXPECT_LT(pos("stage2.block0.conv1.weight"), pos("stage1.block0.se.fc2.weight"));
  EXPECT_LT(pos("stage1.block0.bn3.weight"), pos("stage1.block0.conv3.weight"));  // BN's backward runs first
  EXPECT_LT(pos("stage0.block0.downsample.conv.weight"), pos("stem.bn1.weight"));

  struct Want {
    const char* name;
    std::vector<int64_t> shape;
    ParamKind kind;
  };
  for (const Want& w : std::vector<Want>{
           {"stem.conv1.weight", {32, 1, 3, 3}, ParamKind::kConvWeight},
           {"stem.bn1.weight", {32}, ParamKind::kBnGamma},
           {"stem.bn1.bias", {32}, ParamKind::kBnBeta},
           {"stage1.block0.conv1.weight", {64, 64, 1, 1}, ParamKind::kConvWeight},
           {"stage1.block0.conv2.weight", {64, 8, 3, 3}, ParamKind::kConvWeight},  // 8 groups of 8 channels
           {"stage1.block0.conv3.weight", {128, 64, 1, 1}, ParamKind::kConvWeight},
           {"stage1.block0.bn2.weight", {64}, ParamKind::kBnGamma},
           {"stage1.block0.se.fc1.weight", {8, 128}, ParamKind::kLinearWeight},
           {"stage1.block0.se.fc1.bias", {8}, ParamKind::kBias},
           {"stage1.block0.se.fc2.weight", {128, 8}, ParamKind::kLinearWeight},
           {"stage1.block0.downsample.conv.weight", {128, 64, 1, 1}, ParamKind::kConvWeight},
           {"stage1.block0.downsample.bn.bias", {128}, ParamKind::kBnBeta},
           {"fc.weight", {10, 256}, ParamKind::kLinearWeight},
           {"fc.bias", {10}, ParamKind::kBias},
       }) {
    const ParamInfo* p = find(params, w.name);
    ASSERT_NE(p, nullptr) << w.name;
    EXPECT_EQ(p->shape, w.shape) << w.name;
    EXPECT_EQ(p->kind, w.kind) << w.name;
  }

  // BN running statistics: their own buffer, two per BN, named after the BN.
  auto stats = net->bn_stats();
  int64_t bn_channels = 0;
  for (const auto& p : params)
    if (p.kind == ParamKind::kBnGamma) bn_channels += p.count;
  EXPECT_EQ(net->bn_stats_count(), 2 * bn_channels);
  offset = 0;
  for (const auto& s : stats) {
    EXPECT_EQ(s.offset, offset);
    offset += s.count;
    EXPECT_TRUE(s.kind == ParamKind::kBnRunningMean || s.kind == ParamKind::kBnRunningVar) << s.name;
    EXPECT_EQ(find(params, s.name), nullptr);
  }
  ASSERT_NE(find(stats, "stage1.block0.bn2.running_mean"), nullptr);
  ASSERT_NE(find(stats, "stage1.block0.bn2.running_var"), nullptr);
  ASSERT_NE(find(stats, "stem.bn1.running_var"), nullptr);
}

TEST_F(NetworkTest, PresetCountsMatchTheSpec) {
  // Full-size architectures built at a tiny image so the planned ops are cheap.
  // One full-size build (planning ~170 ops takes seconds here); the vd and plain variants are
  // checked against count_parameters on the small model below.
  for (const char* name : {"se_resnext50_32x4d"}) {
    ModelSpec spec = spec_of(name);
    auto net = build(*be_, spec, 1, 32);
    ASSERT_TRUE(net) << name;
    EXPECT_EQ(net->param_count(), count_parameters(spec)) << name;
  }
}

TEST_F(NetworkTest, PlainResNeXtHasNoSe) {
  ModelSpec spec = spec_of("small");
  spec.se_reduction = 0;
  auto net = build(*be_, spec, 1, 16);
  ASSERT_TRUE(net);
  EXPECT_EQ(net->param_count(), count_parameters(spec));
  for (const auto& p : net->params()) EXPECT_EQ(p.name.find(".se."), std::string::npos) << p.name;
}

TEST_F(NetworkTest, VdStemAndShortcut) {
  ModelSpec spec = spec_of("small");
  spec.stem = Stem::kVd;
  spec.avg_down = true;
  spec.in_channels = 3;
  auto net = build(*be_, spec, 1, 32);
  ASSERT_TRUE(net);
  auto params = net->params();
  EXPECT_EQ(net->param_count(), count_parameters(spec));
  ASSERT_NE(find(params, "stem.conv1.weight"), nullptr);
  EXPECT_EQ(find(params, "stem.conv1.weight")->shape, (std::vector<int64_t>{16, 3, 3, 3}));
  EXPECT_EQ(find(params, "stem.conv2.weight")->shape, (std::vector<int64_t>{16, 16, 3, 3}));
  EXPECT_EQ(find(params, "stem.conv3.weight")->shape, (std::vector<int64_t>{32, 16, 3, 3}));
  // Backward order inside the stem: conv3 finishes first, conv1 last.
  EXPECT_LT(find(params, "stem.conv3.weight")->offset, find(params, "stem.conv1.weight")->offset);
  // stride-1 channel change: plain 1x1 conv; stride 2: (avg pool) 1x1 conv, same parameter shapes.
  EXPECT_EQ(find(params, "stage0.block0.downsample.conv.weight")->shape, (std::vector<int64_t>{64, 32, 1, 1}));
  EXPECT_EQ(find(params, "stage1.block0.downsample.conv.weight")->shape, (std::vector<int64_t>{128, 64, 1, 1}));

  // The avg-pool shortcut differs from the strided one: same parameters, different function.
  ModelSpec plain = spec;
  plain.avg_down = false;
  auto net2 = build(*be_, plain, 1, 32);
  ASSERT_TRUE(net2);
  ASSERT_EQ(net2->param_count(), net->param_count());
  set_batch(*net, 1, 7);
  set_batch(*net2, 1, 7);
  ASSERT_OK(net->forward(false));
  ASSERT_OK(net2->forward(false));
  auto a = host(*be_, net->logits(), 10), b = host(*be_, net2->logits(), 10);
  double diff = 0;
  for (int i = 0; i < 10; ++i) diff += std::abs(a[size_t(i)] - b[size_t(i)]);
  EXPECT_GT(diff, 1e-4);
}

TEST_F(NetworkTest, Initialisation) {
  ModelSpec spec = spec_of("small");
  auto net = build(*be_, spec, 1, 16, 42);
  ASSERT_TRUE(net);
  auto p = host(*be_, net->params_data(), net->param_count());
  auto s = host(*be_, net->bn_stats_data(), net->bn_stats_count());
  for (const auto& info : net->params()) {
    std::span<const float> v(p.data() + info.offset, size_t(info.count));
    double sum = 0, sq = 0, maxabs = 0;
    for (float x : v) sum += x, sq += double(x) * x, maxabs = std::max(maxabs, double(std::abs(x)));
    double mean = sum / double(v.size()), stddev = std::sqrt(sq / double(v.size()) - mean * mean);
    switch (info.kind) {
      case ParamKind::kBnGamma: EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return x == 1.f; })) << info.name; break;
      case ParamKind::kBnBeta: EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.f; })) << info.name; break;
      case ParamKind::kConvWeight: {
        // Kaiming normal, fan_out = OC·KH·KW.
        double want = std::sqrt(2.0 / double(info.shape[0] * info.shape[2] * info.shape[3]));
        if (v.size() >= 8192) {  // enough samples for a 5% check
          EXPECT_NEAR(stddev / want, 1.0, 0.05) << info.name;
          EXPECT_NEAR(mean, 0.0, 0.05 * want) << info.name;
        }
        break;
      }
      case ParamKind::kLinearWeight:
      case ParamKind::kBias: {
        // uniform(±1/sqrt(fan_in)); fan_in is the weight's second dim.
        std::string base = info.name.substr(0, info.name.rfind('.'));
        const ParamInfo* w = find(net->params(), base + ".weight");
        ASSERT_NE(w, nullptr);
        double bound = 1.0 / std::sqrt(double(w->shape[1]));
        EXPECT_LE(maxabs, bound) << info.name;
        if (v.size() >= 2048) {
          EXPECT_NEAR(stddev, bound / std::sqrt(3.0), 0.05 * bound) << info.name;
        }
        break;
      }
      default: ADD_FAILURE() << info.name;
    }
  }
  for (const auto& info : net->bn_stats()) {
    float want = info.kind == ParamKind::kBnRunningVar ? 1.f : 0.f;
    for (int64_t i = 0; i < info.count; ++i) ASSERT_EQ(s[size_t(info.offset + i)], want) << info.name;
  }

  // Same seed: identical; another seed: different weights.
  auto same = build(*be_, spec, 4, 28, 42);
  auto other = build(*be_, spec, 1, 16, 43);
  EXPECT_EQ(host(*be_, same->params_data(), same->param_count()), p);
  EXPECT_NE(host(*be_, other->params_data(), other->param_count()), p);

  spec.zero_init_last_bn = true;
  auto zero = build(*be_, spec, 1, 16, 42);
  auto pz = host(*be_, zero->params_data(), zero->param_count());
  for (const auto& info : zero->params()) {
    bool last_bn = info.name.find(".bn3.weight") != std::string::npos;
    if (info.kind == ParamKind::kBnGamma) {
      EXPECT_EQ(pz[size_t(info.offset)], last_bn ? 0.f : 1.f) << info.name;
    }
  }
}

TEST_F(NetworkTest, SgdSegments) {
  auto net = build(*be_, spec_of("small"), 1, 16);
  ASSERT_TRUE(net);
  auto segs = net->sgd_segments(1e-4f, 0.f);
  int64_t end = 0;
  for (const auto& s : segs) {
    EXPECT_EQ(s.offset, end);
    end += s.count;
  }
  EXPECT_EQ(end, net->param_count());
  for (const auto& p : net->params()) {
    bool weight = p.kind == ParamKind::kConvWeight || p.kind == ParamKind::kLinearWeight;
    for (const auto& s : segs)
      if (p.offset >= s.offset && p.offset < s.offset + s.count) {
        EXPECT_EQ(s.weight_decay, weight ? 1e-4f : 0.f) << p.name;
        EXPECT_LE(p.offset + p.count, s.offset + s.count) << p.name;
      }
  }
  // Adjacent runs with the same decay are merged: a BN's gamma and beta are one segment.
  EXPECT_LT(segs.size(), net->params().size());
  auto all = net->sgd_segments(1e-4f, 1e-4f);
  ASSERT_EQ(all.size(), 1u);
}

TEST_F(NetworkTest, GradsReadyPrefixIsFinalAndMonotone) {
  const int batch = 4;
  auto net = build(*be_, spec_of("small"), batch, 16);
  ASSERT_TRUE(net);
  set_batch(*net, batch, 3);
  ASSERT_OK(net->forward(true));
  ASSERT_TRUE(net->loss(0.f).is_ok());
  // Snapshot the prefix at every report; at the end, each snapshot must equal the final gradients.
  std::vector<int64_t> ends;
  std::vector<std::vector<float>> snaps;
  ASSERT_OK(net->backward(false, [&](int64_t end) {
    ends.push_back(end);
    snaps.push_back(host(*be_, net->grads_data(), end));
  }));
  ASSERT_FALSE(ends.empty());
  EXPECT_EQ(ends.back(), net->param_count());
  EXPECT_EQ(ends.size(), 20u);  // layer by layer: fc, 3 blocks x (SE fc2, fc1, conv3, conv2, conv1, downsample), stem
  for (size_t i = 1; i < ends.size(); ++i) EXPECT_GT(ends[i], ends[i - 1]);
  auto final_grads = host(*be_, net->grads_data(), net->param_count());
  for (size_t i = 0; i < snaps.size(); ++i)
    for (size_t j = 0; j < snaps[i].size(); ++j)
      ASSERT_EQ(snaps[i][j], final_grads[j]) << "report " << i << " (end " << ends[i] << ") element " << j;
  // Every parameter received a gradient.
  for (const auto& p : net->params()) {
    double norm = 0;
    for (int64_t i = 0; i < p.count; ++i) norm += std::abs(final_grads[size_t(p.offset + i)]);
    EXPECT_GT(norm, 0.0) << p.name;
  }
}

TEST_F(NetworkTest, AccumulateDoublesTheGradient) {
  const int batch = 4;
  auto net = build(*be_, spec_of("small"), batch, 16);
  ASSERT_TRUE(net);
  set_batch(*net, batch, 5);
  ASSERT_OK(net->forward(true));
  ASSERT_TRUE(net->loss(0.f).is_ok());
  ASSERT_OK(net->backward(false));
  auto g1 = host(*be_, net->grads_data(), net->param_count());
  ASSERT_OK(net->backward(true));
  auto g2 = host(*be_, net->grads_data(), net->param_count());
  // Not bit-exact: the accumulating path may sum in another order, so the tolerance is relative
  // to the tensor's largest gradient (a missing or doubled term would be off by ~100% of it).
  for (const auto& p : net->params()) {
    float scale = 0;
    for (int64_t i = p.offset; i < p.offset + p.count; ++i) scale = std::max(scale, std::abs(g1[size_t(i)]));
    for (int64_t i = p.offset; i < p.offset + p.count; ++i)
      ASSERT_NEAR(g2[size_t(i)], 2.f * g1[size_t(i)], 1e-5f * scale) << p.name << " element " << i - p.offset;
  }
  // accumulate=false overwrites again.
  ASSERT_OK(net->backward(false));
  EXPECT_EQ(host(*be_, net->grads_data(), net->param_count()), g1);
}

TEST_F(NetworkTest, BatchNormTrainVsEval) {
  const int batch = 4;
  const int k = 10;
  auto net = build(*be_, spec_of("small"), batch, 16);
  ASSERT_TRUE(net);
  Dims d = net->input().dims;
  int64_t per = d.c * d.h * d.w;
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> a(size_t(d.count())), b(size_t(d.count()));
  for (float& v : a) v = nd(gen);
  b = a;
  for (int64_t i = per; i < d.count(); ++i) b[size_t(i)] = 3.f * nd(gen) + 1.f;  // same image 0, other companions
  std::vector<int32_t> labels(batch, 1);
  ASSERT_OK(net->set_labels(labels.data()));

  // Eval: running statistics, so image 0's logits do not depend on the rest of the batch.
  auto stats0 = host(*be_, net->bn_stats_data(), net->bn_stats_count());
  ASSERT_OK(net->set_input(a.data()));
  ASSERT_OK(net->forward(false));
  auto ea = host(*be_, net->logits(), k);
  ASSERT_OK(net->set_input(b.data()));
  ASSERT_OK(net->forward(false));
  auto eb = host(*be_, net->logits(), k);
  for (int i = 0; i < k; ++i) EXPECT_NEAR(ea[size_t(i)], eb[size_t(i)], 1e-5f);
  EXPECT_EQ(host(*be_, net->bn_stats_data(), net->bn_stats_count()), stats0);  // eval leaves them alone

  // Train: batch statistics, so they do; and the running statistics move.
  ASSERT_OK(net->set_input(a.data()));
  ASSERT_OK(net->forward(true));
  auto ta = host(*be_, net->logits(), k);
  ASSERT_OK(net->set_input(b.data()));
  ASSERT_OK(net->forward(true));
  auto tb = host(*be_, net->logits(), k);
  double diff = 0;
  for (int i = 0; i < k; ++i) diff += std::abs(ta[size_t(i)] - tb[size_t(i)]);
  EXPECT_GT(diff, 1e-3);
  auto stats1 = host(*be_, net->bn_stats_data(), net->bn_stats_count());
  EXPECT_NE(stats1, stats0);
  // Stem BN after one train step from (mean 0, var 1): running_mean = 0.1·batch mean (momentum 0.1).
  const ParamInfo* rm = find(net->bn_stats(), "stem.bn1.running_mean");
  ASSERT_NE(rm, nullptr);
  EXPECT_NE(stats1[size_t(rm->offset)], 0.f);
}

TEST_F(NetworkTest, DeterministicTraining) {
  be_ = backend_with_threads(2);  // reductions split across threads must still repeat exactly
  const int batch = 4;
  ModelSpec spec = spec_of("small");
  auto run = [&](uint64_t seed) {
    auto net = build(*be_, spec, batch, 16, seed);
    set_batch(*net, batch, 9);
    SgdHyper h;
    h.lr = 0.05f;
    auto segs = net->sgd_segments(1e-4f, 0.f);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(net->train_step(h, segs).is_ok());
    auto p = host(*be_, net->params_data(), net->param_count());
    auto s = host(*be_, net->bn_stats_data(), net->bn_stats_count());
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  auto a = run(5), b = run(5), c = run(6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST_F(NetworkTest, BuildErrors) {
  ModelSpec spec = spec_of("small");
  spec.cardinality = 0;
  NetworkOptions o;
  auto bad = Network::build(*be_, spec, o);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("cardinality"), std::string::npos) << bad.status().message();
  o.batch = 0;
  auto bad_batch = Network::build(*be_, spec_of("small"), o);
  ASSERT_FALSE(bad_batch.is_ok());
  EXPECT_NE(bad_batch.status().message().find("batch"), std::string::npos);
}

// A NaN in one image's input must reach that image's logits at every ISA level (ReLU, BN+ReLU and
// the merge keep NaN), and stay out of the other image's (eval: BN uses running statistics). A
// diverged network then shows as NaN instead of as a confident class.
class NetworkLevelTest : public ::testing::TestWithParam<CpuIsa> {};

TEST_P(NetworkLevelTest, NanInputGivesNanLogits) {
  SX_SKIP_UNLESS_RUNNABLE(GetParam());
  auto be = testing::make_backend_at(GetParam(), 1);
  for (const char* name : {"small", "se_resnext26_32x4d"}) {
    SCOPED_TRACE(name);
    auto net = build(*be, spec_of(name), 2, 32);
    ASSERT_TRUE(net);
    set_batch(*net, 2, 4);
    Dims d = net->input().dims;
    std::vector<float> x(static_cast<size_t>(d.count()), 0.25f);
    x[size_t(d.c * d.h * d.w / 2 + 3)] = std::nanf("");  // inside image 0
    ASSERT_OK(net->set_input(x.data()));
    ASSERT_OK(net->forward(/*train=*/false));
    const int k = net->spec().num_classes;
    auto logits = host(*be, net->logits(), 2 * k);
    for (int j = 0; j < k; ++j) {
      EXPECT_TRUE(std::isnan(logits[size_t(j)])) << "image 0, class " << j << ": " << logits[size_t(j)];
      EXPECT_TRUE(std::isfinite(logits[size_t(k + j)])) << "image 1, class " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Levels, NetworkLevelTest, ::testing::ValuesIn(testing::all_isas()),
                         [](const auto& info) { return std::string(cpu_isa_name(info.param)); });

}  // namespace
}  // namespace sx::model
