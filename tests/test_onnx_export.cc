// sx_ckpt export --format onnx: the exported inference graph, run by OpenCV's cv::dnn, gives the
// logits our own network gives (eval mode, the same weights and input) within 1e-4, for the `small`
// model and for SE-ResNeXt-50 vd (vd stem, avg-pool shortcut) at 64 px, with BN statistics and
// affines far from the identity so that the BN folding is exercised. Also the protobuf wire format
// against hand-encoded bytes, and the errors of a broken checkpoint.
#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <opencv2/dnn.hpp>

#include "model/backend.h"
#include "model/network.h"
#include "storage/checkpoint.h"
#include "worker/config.h"
#include "worker/onnx_export.h"
#include "worker/protobuf_writer.h"
#include "worker/train_model.h"

namespace sx::worker {
namespace {

namespace fs = std::filesystem;

TEST(ProtoWriter, WireFormatMatchesHandEncodedBytes) {
  ProtoWriter w;
  w.int_field(1, 150);  // the protobuf documentation's example: 08 96 01
  EXPECT_EQ(w.bytes(), std::string("\x08\x96\x01", 3));
  ProtoWriter s;
  s.bytes_field(2, "testing");  // 12 07 74 65 73 74 69 6e 67
  EXPECT_EQ(s.bytes(), std::string("\x12\x07testing", 9));
  ProtoWriter f;
  f.float_field(2, 1.0f);  // key 0x15, then 00 00 80 3f
  EXPECT_EQ(f.bytes(), std::string("\x15\x00\x00\x80\x3f", 5));
  ProtoWriter n;
  n.int_field(20, -1);  // key 0xa0 0x01, then ten bytes of two's complement
  EXPECT_EQ(n.bytes(), std::string("\xa0\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12));
  ProtoWriter outer;
  outer.message_field(3, w);  // 1a 03 08 96 01
  EXPECT_EQ(outer.bytes(), std::string("\x1a\x03\x08\x96\x01", 5));
}

class OnnxExport : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sx_onnx_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A checkpoint of `preset` (10 classes, S px) with randomised BN statistics and affines; then the
  // ONNX export and cv::dnn against our network's eval forward on a random batch.
  void compare(const std::string& preset, int image_size, int batch) {
    JobConfig config;
    config.mode = "eval";
    config.model.preset = preset;
    config.model.image_size = image_size;
    dataplane::Manifest shape;
    shape.num_classes = 10;
    shape.channels = 3;
    auto job = resolve_job(config, shape, 1, 1);
    ASSERT_TRUE(job.is_ok()) << job.status().to_string();
    auto backend = model::make_cpu_backend({.threads = 1});
    model::NetworkOptions no;
    no.batch = batch;
    no.image_h = no.image_w = image_size;
    no.seed = 5;
    auto net = model::Network::build(*backend, job->spec, no);
    ASSERT_TRUE(net.is_ok()) << net.status().to_string();
    model::Network& n = **net;
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    std::normal_distribution<float> g(0.f, 0.2f);
    for (const model::ParamInfo& p : n.params())
      if (p.kind == model::ParamKind::kBnGamma || p.kind == model::ParamKind::kBnBeta)
        for (int64_t i = 0; i < p.count; ++i)
          n.params_data()[p.offset + i] = p.kind == model::ParamKind::kBnGamma ? u(rng) : g(rng);
    for (const model::ParamInfo& p : n.bn_stats()) {
      const bool var = p.name.ends_with("running_var");
      for (int64_t i = 0; i < p.count; ++i) n.bn_stats_data()[p.offset + i] = var ? 2.f * u(rng) - 0.9f : g(rng);
    }

    storage::CheckpointState state;
    state.meta.model_preset = preset;
    state.meta.config_text = job_config_to_yaml(config);
    state.meta.extra_json = "{\"num_classes\": 10, \"in_channels\": 3, \"image_size\": " + std::to_string(image_size) + "}";
    state.tensors = checkpoint_refs(n, false);
    ASSERT_TRUE(storage::save_checkpoint(dir_.string(), state).is_ok());
    auto file = storage::find_latest(dir_.string());
    ASSERT_TRUE(file.is_ok());
    const std::string onnx = (dir_ / "model.onnx").string();
    Status st = export_onnx(*file, onnx);
    ASSERT_TRUE(st.is_ok()) << st.to_string();

    const size_t per_image = size_t(3) * image_size * image_size;
    std::vector<float> input(per_image * size_t(batch)), ours(size_t(batch) * 10);
    std::normal_distribution<float> pixel(0.f, 1.f);
    for (float& v : input) v = pixel(rng);
    ASSERT_TRUE(n.set_input(input.data()).is_ok());
    ASSERT_TRUE(n.forward(false).is_ok());
    ASSERT_TRUE(backend->copy_to_host(ours.data(), n.logits(), ours.size() * sizeof(float)).is_ok());

    // One image per cv::dnn forward: OpenCV 4.6 maps the SE Mul of (N, C, H, W) by (N, C, 1, 1) to
    // its Scale layer, which broadcasts only for N = 1 (onnxruntime takes the batch as it is).
    cv::dnn::Net dnn = cv::dnn::readNetFromONNX(onnx);
    ASSERT_FALSE(dnn.empty());
    double max_diff = 0, max_abs = 0;
    for (int b = 0; b < batch; ++b) {
      const int dims[4] = {1, 3, image_size, image_size};
      cv::Mat blob(4, dims, CV_32F, input.data() + size_t(b) * per_image);
      dnn.setInput(blob, "input");
      cv::Mat theirs = dnn.forward("logits");
      ASSERT_EQ(theirs.total(), size_t(10));
      for (size_t i = 0; i < 10; ++i) {
        const float o = ours[size_t(b) * 10 + i];
        max_diff = std::max(max_diff, double(std::fabs(theirs.ptr<float>()[i] - o)));
        max_abs = std::max(max_abs, double(std::fabs(o)));
      }
    }
    EXPECT_LE(max_diff, 1e-4) << preset << ": cv::dnn vs our network, largest |logit| " << max_abs;
    EXPECT_GT(max_abs, 1e-2) << "the logits are too small for the comparison to mean anything";
    RecordProperty("max_abs_diff", std::to_string(max_diff));
    std::printf("%s: %d images, max |logit| %.4g, max |cv::dnn - ours| %.3g\n", preset.c_str(), batch, max_abs, max_diff);
  }

  fs::path dir_;
};

TEST_F(OnnxExport, SmallModelMatchesOpenCvDnn) { compare("small", 28, 4); }
TEST_F(OnnxExport, SeResNeXt50vdMatchesOpenCvDnn) { compare("se_resnext50_vd_32x4d", 64, 2); }

TEST_F(OnnxExport, BrokenCheckpointIsANamedError) {
  storage::CheckpointState state;
  state.meta.model_preset = "small";
  std::vector<float> w(10 * 256, 0.f), b(10, 0.f), stem(32 * 3 * 3 * 3, 0.f);
  state.tensors = {{"params/fc.weight", {10, 256}, w.data()}, {"params/fc.bias", {10}, b.data()},
                   {"params/stem.conv1.weight", {32, 3, 3, 3}, stem.data()}};
  ASSERT_TRUE(storage::save_checkpoint(dir_.string(), state).is_ok());
  auto file = storage::find_latest(dir_.string());
  ASSERT_TRUE(file.is_ok());
  Status st = export_onnx(*file, (dir_ / "model.onnx").string());
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("the checkpoint has no params/stem.bn1.weight"), std::string::npos) << st.to_string();
  EXPECT_FALSE(fs::exists(dir_ / "model.onnx"));
}

}  // namespace
}  // namespace sx::worker
