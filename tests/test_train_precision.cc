// sx_worker's numerics and device keys end to end: numerics.precision / device validation, loss
// scaling in the real training loop on the CPU backend (a power-of-two scale that never overflows is
// bitwise the unscaled run, a scale of 3 is applied and divided out; steps with overflowing gradients
// are skipped without touching the weights; a dynamic scale backs off and then reports divergence),
// and `device=cuda` without a usable GPU: one clear line, exit 1.
#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/cuda/cuda_backend.h"
#include "tests/test_train_util.h"
#include "worker/config.h"

namespace sx::worker::testing {
namespace {

class TrainPrecision : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(temp_dir("precision"));
    make_datasets(*root_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static fs::path* root_;
};
fs::path* TrainPrecision::root_ = nullptr;

std::vector<nlohmann::json> train_records(const fs::path& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "train") out.push_back(j);
  }
  return out;
}

std::string config_error(const std::vector<std::string>& overrides) {
  auto c = parse_job_config("data:\n  train: /nonexistent\n", "job.yaml", overrides);
  return c.is_ok() ? std::string("(accepted)") : c.status().message();
}

TEST(TrainPrecisionConfig, BadValuesNameTheKey) {
  std::string e = config_error({"numerics.precision=bf16"});
  EXPECT_NE(e.find("numerics.precision"), std::string::npos) << e;
  EXPECT_NE(e.find("device: cuda"), std::string::npos) << e;
  e = config_error({"numerics.precision=fp8"});
  EXPECT_NE(e.find("'numerics.precision': expected one of fp32|bf16|fp16, got 'fp8'"), std::string::npos) << e;
  e = config_error({"device=gpu"});
  EXPECT_NE(e.find("'device': expected one of cpu|cuda"), std::string::npos) << e;
  e = config_error({"numerics.loss_scale=maybe"});
  EXPECT_NE(e.find("numerics.loss_scale"), std::string::npos) << e;
  e = config_error({"numerics.loss_scale_init=0"});
  EXPECT_NE(e.find("numerics.loss_scale_init"), std::string::npos) << e;
  e = config_error({"numerics.loss_scale_growth_interval=0"});
  EXPECT_NE(e.find("numerics.loss_scale_growth_interval"), std::string::npos) << e;
  // Accepted: what a GPU job sets.
  EXPECT_EQ(config_error({"device=cuda", "numerics.precision=fp16"}), "(accepted)");
  EXPECT_EQ(config_error({"device=cuda", "numerics.precision=bf16", "numerics.loss_scale=none"}), "(accepted)");
}

// A power-of-two loss scale multiplies every gradient exactly and the SGD pass divides it out
// exactly, so a run that never overflows is bitwise the run without scaling, growth included.
TEST_F(TrainPrecision, PowerOfTwoLossScaleIsBitwiseTheUnscaledRun) {
  const fs::path plain = *root_ / "plain", scaled = *root_ / "scaled";
  const std::vector<std::string> common = {"max_steps=8", "eval.at_end=false", "checkpoint.async=false"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  ASSERT_EQ(run(worker_args(*root_, plain, with({"numerics.loss_scale=none"})), plain.string() + ".log"), 0);
  ASSERT_EQ(run(worker_args(*root_, scaled,
                            with({"numerics.loss_scale=dynamic", "numerics.loss_scale_init=1024",
                                  "numerics.loss_scale_growth_interval=2"})),
                scaled.string() + ".log"),
            0);
  auto a = tensors(plain / "ckpt-00000008.h5"), b = tensors(scaled / "ckpt-00000008.h5");
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, values] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(values == b.at(name)) << name << " differs";
  }
  // The scale doubled every 2 steps: 1024 -> 16384 after 8, nothing skipped.
  auto recs = train_records(scaled);
  ASSERT_FALSE(recs.empty());
  EXPECT_EQ(recs.back()["step"].get<int>(), 8);
  EXPECT_EQ(recs.back()["loss_scale"].get<double>(), 16384.0);
  EXPECT_EQ(recs.back()["skipped_steps"].get<int>(), 0);
  EXPECT_FALSE(train_records(plain).back().contains("loss_scale"));
}

// A loss scale that is not a power of two is applied and divided out with rounding: the per-step
// losses follow the unscaled run (a scale left in the update would move them by far more), but the
// weights are not bitwise the same (so the bitwise test above is not passing vacuously).
TEST_F(TrainPrecision, NonPowerOfTwoScaleIsAppliedAndDividedOut) {
  const fs::path plain = *root_ / "plain3", scaled = *root_ / "scaled3";
  const std::vector<std::string> common = {"max_steps=6", "eval.at_end=false", "checkpoint.async=false",
                                           "log.every_steps=1"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  ASSERT_EQ(run(worker_args(*root_, plain, with({})), plain.string() + ".log"), 0);
  ASSERT_EQ(run(worker_args(*root_, scaled, with({"numerics.loss_scale=static", "numerics.loss_scale_init=3"})),
                scaled.string() + ".log"),
            0);
  auto p = train_records(plain), q = train_records(scaled);
  ASSERT_EQ(p.size(), 6u);
  ASSERT_EQ(q.size(), 6u);
  for (size_t i = 0; i < p.size(); ++i) {
    const double a = p[i]["loss"].get<double>(), b = q[i]["loss"].get<double>();
    EXPECT_NEAR(a, b, 2e-3 * a) << "step " << i + 1;  // rounding, grown by 6 steps of training
  }
  auto a = tensors(plain / "ckpt-00000006.h5"), b = tensors(scaled / "ckpt-00000006.h5");
  ASSERT_FALSE(a.empty());
  bool any_differs = false;
  for (const auto& [name, values] : a)
    if (name.rfind("params/", 0) == 0) any_differs |= values != b.at(name);
  EXPECT_TRUE(any_differs) << "a scale of 3 must leave rounding traces: is the loss scale applied at all?";
}

// After a huge LR the gradients overflow on every step. A static scale skips each of those steps:
// parameters and momentum stay exactly as the last applied step left them.
TEST_F(TrainPrecision, SkippedStepsLeaveTheWeightsUntouched) {
  const fs::path dir = *root_ / "static";
  ASSERT_EQ(run(worker_args(*root_, dir,
                            {"max_steps=5", "eval.at_end=false", "eval.every_epochs=0", "optimizer.lr=1e30",
                             "numerics.check_finite=false",
                             "numerics.loss_scale=static", "numerics.loss_scale_init=8", "checkpoint.every_steps=1",
                             "checkpoint.keep=10", "checkpoint.async=false", "log.every_steps=1"}),
                dir.string() + ".log"),
            0);
  auto recs = train_records(dir);
  ASSERT_EQ(recs.size(), 5u);
  int first_skip = 0;  // the step whose record first counts a skip
  for (const auto& r : recs)
    if (r["skipped_steps"].get<int>() > 0 && first_skip == 0) first_skip = r["step"].get<int>();
  ASSERT_GE(first_skip, 2) << read_text(dir.string() + ".log");
  EXPECT_EQ(recs.back()["skipped_steps"].get<int>(), 5 - first_skip + 1) << "every step after the blow-up skipped";
  EXPECT_EQ(recs.back()["loss_scale"].get<double>(), 8.0);
  auto before = tensors(dir / ("ckpt-0000000" + std::to_string(first_skip - 1) + ".h5"));
  auto after = tensors(dir / "ckpt-00000005.h5");
  ASSERT_FALSE(before.empty());
  for (const auto& [name, values] : before) {
    if (name.rfind("bn_stats/", 0) == 0) continue;  // forward still updates the running statistics
    EXPECT_TRUE(values == after.at(name)) << name << " moved in a skipped step";
  }
}

// Dynamic scaling halves the scale on every overflow; when even the smallest scale overflows the run
// ends with a clear divergence error (exit 1) instead of training on garbage.
TEST_F(TrainPrecision, PersistentOverflowBacksOffThenReportsDivergence) {
  const fs::path dir = *root_ / "diverge";
  const fs::path log = dir.string() + ".log";
  ASSERT_EQ(wait_exit(spawn(worker_args(*root_, dir,
                                        {"epochs=20", "max_steps=40", "eval.at_end=false", "eval.every_epochs=0",
                                         "optimizer.lr=1e30",
                                         "numerics.check_finite=false", "numerics.loss_scale=dynamic",
                                         "numerics.loss_scale_init=8"}),
                            log)),
            1);
  const std::string out = read_text(log);
  // 8 -> 4 -> ... -> 2^-16 = min_scale: 19 halvings, the 20th falls below it.
  size_t skips = 0;
  for (size_t at = out.find("step skipped"); at != std::string::npos; at = out.find("step skipped", at + 1)) ++skips;
  EXPECT_EQ(skips, 19u) << out;
  EXPECT_NE(out.find("loss scale now 4.0"), std::string::npos) << out;
  EXPECT_NE(out.find("the run diverged"), std::string::npos) << out;
  EXPECT_NE(out.find("HINT"), std::string::npos) << out;
}

// device=cuda where the CUDA backend cannot start (here: no GPU and no driver; or a build without
// CUDA): exit 1 with one line that names the failed call and what was expected; nothing written.
TEST_F(TrainPrecision, DeviceCudaWithoutGpuFailsWithOneClearLine) {
  auto count = model::cuda_device_count();
  if (count.is_ok() && count.value() > 0) GTEST_SKIP() << "a GPU is visible: the GPU tests cover device=cuda";
  const fs::path dir = *root_ / "cuda";
  const fs::path log = dir.string() + ".log";
  ASSERT_EQ(wait_exit(spawn(worker_args(*root_, dir, {"device=cuda", "log.progress=off"}), log)), 1);
  std::istringstream in(read_text(log));
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  ASSERT_EQ(lines.size(), 1u) << read_text(log);
  const std::string& line = lines[0];
  EXPECT_NE(line.find("device=cuda (rank 0, GPU 0"), std::string::npos) << line;
  if (model::cuda_built()) {
    EXPECT_NE(line.find("cudaGetDeviceCount failed"), std::string::npos) << line;
    EXPECT_NE(line.find("expected a CUDA device and driver"), std::string::npos) << line;
  } else {
    EXPECT_NE(line.find("no CUDA backend"), std::string::npos) << line;
  }
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));
}

}  // namespace
}  // namespace sx::worker::testing
