// The GPU training check (runs only on a GPU; skips here with the probe's message): sx_worker with
// device=cuda on the small model trains like device=cpu — the loss falls, and after N steps the
// per-step losses match the CPU fp32 run within the precision's tolerance — and its checkpoints are
// the CPU format (a GPU checkpoint resumes on the CPU and a CPU one on the GPU).
#include <cmath>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/cuda/cuda_backend.h"
#include "tests/test_train_util.h"

namespace sx::worker::testing {
namespace {

class TrainGpu : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto count = model::cuda_device_count();
    if (!count.is_ok() || count.value() == 0) {
      skip_ = new std::string(count.is_ok() ? "no CUDA device visible" : count.status().message());
      return;
    }
    root_ = new fs::path(temp_dir("gpu"));
    make_datasets(*root_);
  }
  static void TearDownTestSuite() {
    if (root_) fs::remove_all(*root_);
    delete root_;
    delete skip_;
    root_ = nullptr;
    skip_ = nullptr;
  }
  void SetUp() override {
    if (skip_) GTEST_SKIP() << "needs a GPU: " << *skip_;
  }
  static fs::path* root_;
  static std::string* skip_;
};
fs::path* TrainGpu::root_ = nullptr;
std::string* TrainGpu::skip_ = nullptr;

constexpr int kSteps = 16;

std::vector<double> step_losses(const fs::path& run_dir) {
  std::vector<double> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "train") out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::vector<double> train(const fs::path& data, const fs::path& dir, std::vector<std::string> extra) {
  for (std::string o : {"max_steps=" + std::to_string(kSteps), std::string("log.every_steps=1"),
                        std::string("eval.at_end=false"), std::string("checkpoint.async=false"),
                        std::string("batch.per_rank=32")})
    extra.push_back(o);
  EXPECT_EQ(run(worker_args(data, dir, extra), dir.string() + ".log"), 0);
  return step_losses(dir);
}

void expect_matches_cpu(const std::vector<double>& cpu, const std::vector<double>& gpu, double rel, const char* what) {
  ASSERT_EQ(gpu.size(), size_t(kSteps)) << what;
  ASSERT_EQ(cpu.size(), size_t(kSteps));
  EXPECT_LT(gpu.back(), 0.8 * gpu.front()) << what << ": the loss must fall";
  for (int s = 0; s < kSteps; ++s)
    EXPECT_NEAR(gpu[size_t(s)], cpu[size_t(s)], rel * cpu[size_t(s)]) << what << " step " << s + 1;
}

TEST_F(TrainGpu, LossFallsAndMatchesCpuInEveryPrecision) {
  const auto cpu = train(*root_, *root_ / "cpu", {"device=cpu"});
  // fp32 convolutions may run on TF32 tensor cores (10-bit mantissa): a few 1e-3 per step, growing.
  expect_matches_cpu(cpu, train(*root_, *root_ / "fp32", {"device=cuda"}), 0.02, "cuda fp32");
  expect_matches_cpu(cpu, train(*root_, *root_ / "bf16", {"device=cuda", "numerics.precision=bf16"}), 0.08,
                     "cuda bf16");
  expect_matches_cpu(cpu, train(*root_, *root_ / "fp16", {"device=cuda", "numerics.precision=fp16"}), 0.05,
                     "cuda fp16 (dynamic loss scale)");
}

TEST_F(TrainGpu, CheckpointsCrossDevices) {
  const fs::path gpu = *root_ / "cross_gpu", cpu = *root_ / "cross_cpu";
  train(*root_, gpu, {"device=cuda"});
  const fs::path ckpt = gpu / ("ckpt-000000" + std::to_string(kSteps) + ".h5");
  ASSERT_TRUE(fs::exists(ckpt));
  // GPU checkpoint -> CPU, and that CPU checkpoint -> GPU again: same file format both ways.
  EXPECT_EQ(run(worker_args(*root_, cpu, {"device=cpu", "resume=" + ckpt.string(), "max_steps=20",
                                         "eval.at_end=false", "batch.per_rank=32"}),
                cpu.string() + ".log"),
            0);
  EXPECT_EQ(run(worker_args(*root_, gpu / "back", {"device=cuda", "resume=" + (cpu / "ckpt-00000020.h5").string(),
                                                  "max_steps=24", "eval.at_end=false", "batch.per_rank=32"}),
                gpu.string() + "-back.log"),
            0);
  auto a = tensors(cpu / "ckpt-00000020.h5"), b = tensors(gpu / "back" / "ckpt-00000024.h5");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, v] : a) EXPECT_EQ(v.size(), b[name].size()) << name;
}

}  // namespace
}  // namespace sx::worker::testing
