// End-to-end gradient check of the whole `small` network (stem, three SE bottlenecks with
// downsample shortcuts, classifier) against central finite differences of the training loss,
// for parameters of every kind; variants with identity-shortcut blocks, without SE, with the vd
// stem and shortcut, and with oneDNN's batch norm cover the block's other code paths. BN runs in training mode (batch statistics), so the check covers
// the BN backward through the batch mean and variance.
//
// The parameters are first moved off the initial point (random BN gamma/beta, SE weights x8), so
// that a backward ignoring gamma/beta or the SE gate's dependence on its input would fail; this was
// verified by dropping the SE mean-gradient path (dmean) in Bottleneck::backward: 8-30x over tolerance.
//
// Precision: everything runs in fp32. The loss is recomputed in double from the fp32 logits (the
// backend's fp32 loss is quantised at ~2.4e-7, one ulp of ~2.3), which leaves the forward pass's own
// rounding, ~2e-8 in the loss. A central difference with step h then has noise ~2e-8 / h, and an
// error from ReLU kinks crossed by the step that grows like O(h) (at h = 1e-3 some elements were 14%
// off; at <= 3e-4 the differences converge to the analytic values). So h = min(3e-4, 6e-5/|g|).
// Two checks per tensor:
//   * directional: perturb the whole tensor along u = g/|g|; the derivative is |g|; tol 3% + noise;
//   * elementwise: the two largest-|g| elements; tol 5% + noise (noise term 8e-8 / h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstdio>
#include <random>

#include "model/network.h"

namespace sx::model {
namespace {

class GradCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    auto spec = preset("small");
    ASSERT_TRUE(spec.is_ok());
    setup(spec.value(), 12);  // 12 -> 12, 6, 3 through the stages
  }

  // The small preset changed by `edit` (a variant that reaches other code paths), at hw x hw.
  template <class Edit>
  void setup_small(Edit edit, int hw) {
    auto spec = preset("small");
    ASSERT_TRUE(spec.is_ok());
    ModelSpec s = spec.value();
    edit(s);
    setup(s, hw);
  }

  void setup(const ModelSpec& spec, int hw) {
    NetworkOptions o;
    o.bn_impl = bn_impl_;
    o.batch = kBatch;
    o.image_h = o.image_w = hw;
    o.seed = 3;
    auto net = Network::build(*be_, spec, o);
    ASSERT_TRUE(net.is_ok()) << net.status().to_string();
    net_ = std::move(net).value();
    Dims d = net_->input().dims;
    std::mt19937 gen(17);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(static_cast<size_t>(d.count()));
    for (float& v : x) v = nd(gen);
    ASSERT_TRUE(net_->set_input(x.data()).is_ok());
    ASSERT_TRUE(net_->set_labels(labels_.data()).is_ok());

    // Move away from the special initial point: BN gamma ~ U(0.5, 1.5), beta ~ U(-0.5, 0.5) (gamma 1,
    // beta 0 would hide a backward that ignores them), SE weights x8 so that the SE gate varies
    // and its gradient path matters (at init it changes the block gradients by only ~1%).
    std::vector<float> p(static_cast<size_t>(net_->param_count()));
    ASSERT_TRUE(be_->copy_to_host(p.data(), net_->params_data(), p.size() * 4).is_ok());
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    for (const auto& info : net_->params()) {
      for (int64_t i = info.offset; i < info.offset + info.count; ++i) {
        float& v = p[size_t(i)];
        if (info.kind == ParamKind::kBnGamma) v = 1.f + u(gen);
        if (info.kind == ParamKind::kBnBeta) v = u(gen);
        if (info.name.find(".se.") != std::string::npos) v *= 8.f;
      }
    }
    ASSERT_TRUE(be_->copy_to_device(net_->params_data(), p.data(), p.size() * 4).is_ok());
    ASSERT_TRUE(net_->forward(true).is_ok());
    ASSERT_TRUE(net_->loss(0.f).is_ok());
    ASSERT_TRUE(net_->backward(false).is_ok());
    grads_.resize(size_t(net_->param_count()));
    params_.resize(size_t(net_->param_count()));
    ASSERT_TRUE(be_->copy_to_host(grads_.data(), net_->grads_data(), grads_.size() * 4).is_ok());
    ASSERT_TRUE(be_->copy_to_host(params_.data(), net_->params_data(), params_.size() * 4).is_ok());
  }

  // Training-mode loss with the parameters [offset, offset + count) replaced by `values`.
  double loss_with(int64_t offset, const std::vector<float>& values) {
    EXPECT_TRUE(be_->copy_to_device(net_->params_data() + offset, values.data(), values.size() * 4).is_ok());
    EXPECT_TRUE(net_->forward(true).is_ok());
    // Cross-entropy in double from the fp32 logits: avoids the fp32 rounding of the loss value itself.
    const int k = 10;
    std::vector<float> z(kBatch * k);
    EXPECT_TRUE(be_->copy_to_host(z.data(), net_->logits(), z.size() * 4).is_ok());
    double loss = 0;
    for (int i = 0; i < kBatch; ++i) {
      double m = *std::max_element(z.begin() + i * k, z.begin() + (i + 1) * k), sum = 0;
      for (int j = 0; j < k; ++j) sum += std::exp(double(z[size_t(i * k + j)]) - m);
      loss += m + std::log(sum) - double(z[size_t(i * k + labels_[size_t(i)])]);
    }
    EXPECT_TRUE(be_->copy_to_device(net_->params_data() + offset, params_.data() + offset, values.size() * 4).is_ok());
    return loss / kBatch;
  }

  void check(const std::string& name) {
    SCOPED_TRACE(name);
    const ParamInfo* info = nullptr;
    for (const auto& p : net_->params())
      if (p.name == name) info = &p;
    ASSERT_NE(info, nullptr);
    const int64_t off = info->offset, n = info->count;
    std::span<const float> g(grads_.data() + off, size_t(n));
    std::span<const float> w(params_.data() + off, size_t(n));
    double norm = 0;
    for (float v : g) norm += double(v) * v;
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 1e-6) << "no gradient";

    // Directional derivative along u = g/|g|: d/dt L(w + t·u) = |g|.
    const size_t count = static_cast<size_t>(n);
    std::vector<float> plus(count), minus(count);
    double h = step_for(norm);
    for (size_t i = 0; i < count; ++i) {
      double u = double(g[i]) / norm;
      plus[i] = float(w[i] + h * u);
      minus[i] = float(w[i] - h * u);
    }
    double fd = (loss_with(off, plus) - loss_with(off, minus)) / (2 * h);
    report(fd, norm, 0.03 * norm + kNoise / h, name + " directional");

    // The two largest-|g| elements.
    std::vector<int64_t> idx(count);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + std::min<int64_t>(2, n), idx.end(),
                      [&](int64_t a, int64_t b) { return std::abs(g[size_t(a)]) > std::abs(g[size_t(b)]); });
    for (int k = 0; k < std::min<int64_t>(2, n); ++k) {
      size_t i = size_t(idx[size_t(k)]);
      double an = g[i];
      double hi = step_for(std::abs(an));
      std::vector<float> p1 = {float(w[i] + hi)}, m1 = {float(w[i] - hi)};
      double step = double(p1[0]) - double(m1[0]);  // the step actually taken after rounding to float
      double fd1 = (loss_with(off + int64_t(i), p1) - loss_with(off + int64_t(i), m1)) / step;
      report(fd1, an, 0.05 * std::abs(an) + kNoise / hi, name + " element " + std::to_string(i));
    }
  }

  // Step: 3e-4, smaller where the loss changes fast (large |g|). Small because ReLU kinks crossed
  // by the step give an O(h) error: at h = 1e-3 some elements were off by up to 14%, at 3e-4 and
  // below the differences converge to the analytic values. The loss change h·|g| stays >= 6e-5,
  // far above the ~2e-8 forward noise.
  static double step_for(double gmag) { return std::min(3e-4, 6e-5 / std::max(gmag, 1e-12)); }

  void report(double fd, double an, double tol, const std::string& what) {
    worst_ = std::max(worst_, std::abs(fd - an) / tol);
    EXPECT_NEAR(fd, an, tol) << what;
  }
  void TearDown() override { std::printf("worst |fd - analytic| / tolerance: %.3f\n", worst_); }

  // Noise of the double loss recomputed from fp32 logits, times 2 (both sides), times 2 margin:
  // contributes kNoise / h to the tolerance of a difference quotient with step h.
  static constexpr double kNoise = 8e-8;
  static constexpr int kBatch = 4;
  // One thread: tiny shapes; on the shared 2-core machine OpenMP barriers made this 10x slower.
  std::unique_ptr<Backend> be_ = make_cpu_backend(BackendOptions{.threads = 1});
  BatchNormImpl bn_impl_ = BatchNormImpl::kAuto;
  std::unique_ptr<Network> net_;
  std::vector<float> grads_, params_;
  std::vector<int32_t> labels_ = {3, 7, 1, 3};
  double worst_ = 0;
};

TEST_F(GradCheck, Stem) {
  check("stem.conv1.weight");
  check("stem.bn1.weight");
  check("stem.bn1.bias");
}

TEST_F(GradCheck, BottleneckConvsAndBn) {
  check("stage0.block0.conv1.weight");
  check("stage0.block0.conv2.weight");  // grouped 3x3
  check("stage0.block0.bn2.weight");
  check("stage0.block0.bn2.bias");
  check("stage1.block0.conv2.weight");  // grouped 3x3, stride 2
  check("stage1.block0.conv3.weight");
  check("stage1.block0.bn3.weight");    // BN feeding the SE scale
  check("stage1.block0.bn3.bias");
}

TEST_F(GradCheck, SqueezeExcitation) {
  check("stage1.block0.se.fc1.weight");
  check("stage1.block0.se.fc1.bias");
  check("stage1.block0.se.fc2.weight");
  check("stage1.block0.se.fc2.bias");
  check("stage2.block0.se.fc1.weight");
}

TEST_F(GradCheck, Downsample) {
  check("stage0.block0.downsample.conv.weight");  // stride 1, channel change
  check("stage1.block0.downsample.conv.weight");  // stride 2
  check("stage1.block0.downsample.bn.weight");
  check("stage1.block0.downsample.bn.bias");
}

TEST_F(GradCheck, Classifier) {
  check("fc.weight");
  check("fc.bias");
}

// The vd variant: three-conv stem with max pool, and avg-pool + 1x1 conv shortcuts. 24x24 images
// give 12 -> 6 after the stem and 6, 3, 2 through the stages, so the 2x2 avg pool runs in ceil
// mode on an odd size (3 -> 2).
class GradCheckVd : public GradCheck {
 protected:
  void SetUp() override {
    setup_small(
        [](ModelSpec& s) {
          s.stem = Stem::kVd;
          s.avg_down = true;
          s.in_channels = 3;
        },
        24);
  }
};

TEST_F(GradCheckVd, StemAndAvgPoolShortcut) {
  check("stem.conv1.weight");
  check("stem.conv2.weight");
  check("stem.conv3.weight");
  check("stem.bn3.bias");
  check("stage0.block0.downsample.conv.weight");  // stride 1: no pool
  check("stage1.block0.downsample.conv.weight");  // avg pool 2x2/2 then 1x1
  check("stage2.block0.downsample.conv.weight");  // avg pool on 3x3 (ceil mode)
  check("stage2.block0.downsample.bn.weight");
}

// Two blocks per stage: the second block of each has the identity shortcut, whose merge takes only
// BN3's sums (no projection BN) and whose input gradient adds dz straight in.
class GradCheckIdentityShortcut : public GradCheck {
 protected:
  void SetUp() override {
    setup_small([](ModelSpec& s) { s.blocks = {2, 2, 1}; }, 12);
  }
};

TEST_F(GradCheckIdentityShortcut, SecondBlocksAndThroughThem) {
  check("stage0.block1.conv3.weight");
  check("stage0.block1.bn3.weight");
  check("stage0.block1.bn3.bias");
  check("stage0.block1.se.fc1.weight");
  check("stage1.block1.bn3.bias");
  check("stage0.block0.bn3.weight");  // upstream of an identity block: dz through the shortcut
  check("stage0.block0.downsample.bn.bias");
}

// Plain ResNeXt (no SE): the merge has no channel scale, so BN3's backward takes s = 1, dmean = 0.
class GradCheckPlainResNeXt : public GradCheck {
 protected:
  void SetUp() override {
    setup_small(
        [](ModelSpec& s) {
          s.se_reduction = 0;
          s.blocks = {2, 1, 1};
        },
        12);
  }
};

TEST_F(GradCheckPlainResNeXt, BlocksWithoutSe) {
  check("stage0.block1.bn3.weight");
  check("stage0.block1.bn3.bias");
  check("stage0.block1.conv3.weight");
  check("stage1.block0.bn3.weight");
  check("stage1.block0.downsample.bn.weight");
  check("stage0.block0.conv1.weight");
}

// oneDNN's batch norm cannot take the SE block's passes (pool_output_into, backward_scaled), so the
// block runs the separate global-average-pool and scale-backward ops: the same gradients.
class GradCheckOneDnnBn : public GradCheck {
 protected:
  void SetUp() override {
    bn_impl_ = BatchNormImpl::kOneDnn;
    GradCheck::SetUp();
  }
};

TEST_F(GradCheckOneDnnBn, SqueezeExcitationThroughSeparateOps) {
  check("stage1.block0.conv3.weight");
  check("stage1.block0.bn3.weight");
  check("stage1.block0.se.fc1.weight");
  check("stage1.block0.se.fc2.bias");
  check("stage0.block0.conv1.weight");
}

}  // namespace
}  // namespace sx::model
