// sx_ckpt and sx_infer end to end on a real (briefly trained) checkpoint, and what evaluating a run
// must not do: exit codes, messages naming the file, outputs on real PNG images and real files.
//   sx_ckpt: --help, inspect, verify (and a damaged file), export --format torch -> import -> the
//            same tensors bit for bit; import refuses another architecture and a non-zip file;
//            the imported file works as pretrained= (parameters arrive exactly).
//   sx_infer: text/json/csv; --batch 1 and 3 give the same probabilities; --list and --dir give
//            the same as arguments; an unreadable image is named, skipped, exit 3; a checkpoint
//            with an inf weight is an error naming it (no confident class).
//   mode=eval on a run directory leaves its config.yaml and metrics.jsonl untouched; eval.out
//            gets the result; a broken checkpoint makes eval fail naming it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "tests/test_train_util.h"

namespace sx::worker::testing {
namespace {

class SxTools : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(temp_dir("tools"));
    make_datasets(*root_);
    run_ = new fs::path(*root_ / "run");
    ASSERT_EQ(run(worker_args(*root_, *run_, {"batch.per_rank=16", "max_steps=16"}), run_->string() + ".log"), 0);
    // Bar images of classes 0..3 (as the dataset draws them) and a file that is no image.
    for (int c = 0; c < 4; ++c) {
      cv::Mat img(28, 28, CV_8UC1, cv::Scalar(10));
      for (int y = c * 7; y < c * 7 + 7; ++y)
        for (int x = 5; x < 24; ++x) img.at<uint8_t>(y, x) = 200;
      const fs::path p = *root_ / "images" / ("bar" + std::to_string(c) + ".png");
      fs::create_directories(p.parent_path());
      ASSERT_TRUE(cv::imwrite(p.string(), img));
    }
    std::ofstream(*root_ / "not_an_image.png") << "plain text";
  }
  static void TearDownTestSuite() {
    if (!::testing::UnitTest::GetInstance()->current_test_suite()->Failed()) fs::remove_all(*root_);  // kept on failure
    delete root_;
    delete run_;
  }
  static fs::path ckpt() { return *run_ / "ckpt-00000016.h5"; }
  static std::vector<std::string> images() {
    std::vector<std::string> v;
    for (int c = 0; c < 4; ++c) v.push_back((*root_ / "images" / ("bar" + std::to_string(c) + ".png")).string());
    return v;
  }
  static std::string tool(const char* name) { return (bin_dir() / name).string(); }
  static int exit_of(const std::vector<std::string>& args, const fs::path& log) { return wait_exit(spawn(args, log)); }
  static std::vector<std::string> infer(std::vector<std::string> extra) {
    std::vector<std::string> a = {tool("sx_infer"), "--checkpoint", run_->string(), "--threads", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  // A copy of the trained checkpoint with one stem weight set to `value`.
  static fs::path damaged(float value) {
    auto c = storage::read_checkpoint(ckpt().string());
    EXPECT_TRUE(c.is_ok());
    storage::CheckpointState s;
    s.meta = c->meta;
    for (auto& t : c->tensors) {
      if (t.name == "params/stem.conv1.weight") t.data[0] = value;
      s.tensors.push_back({t.name, t.shape, t.data.data()});
    }
    const fs::path out = *root_ / "broken" / "ckpt-00000016.h5";
    fs::create_directories(out.parent_path());
    EXPECT_TRUE(storage::write_checkpoint_file(out.string(), s).is_ok());
    return out;
  }
  static fs::path* root_;
  static fs::path* run_;
};
fs::path* SxTools::root_ = nullptr;
fs::path* SxTools::run_ = nullptr;

// Every binary answers --help (exit 0, a usage line naming it) and refuses an unknown option with
// a non-zero exit and a pointer to --help.
TEST(Binaries, EveryToolHasHelpAndRefusesAnUnknownOption) {
  const fs::path dir = temp_dir("help");
  for (const char* name : {"sx_worker", "sx_prep", "sx_infer", "sx_ckpt", "sx_coord", "sx_launch", "sx_bench"}) {
    SCOPED_TRACE(name);
    const std::string bin = (bin_dir() / name).string();
    ASSERT_TRUE(fs::exists(bin)) << bin << " is not built";
    const fs::path help = dir / (std::string(name) + ".help"), bad = dir / (std::string(name) + ".bad");
    EXPECT_EQ(wait_exit(spawn({bin, "--help"}, help)), 0);
    const std::string text = read_text(help);
    EXPECT_NE(text.find("Usage"), std::string::npos) << text;
    EXPECT_NE(text.find(name), std::string::npos) << text;
    EXPECT_NE(wait_exit(spawn({bin, "--no-such-option", "x"}, bad)), 0);
    EXPECT_NE(read_text(bad).find("--help"), std::string::npos) << read_text(bad);
  }
  fs::remove_all(dir);
}

TEST_F(SxTools, CkptHelpInspectVerify) {
  const fs::path log = *root_ / "ckpt.log";
  ASSERT_EQ(exit_of({tool("sx_ckpt"), "--help"}, log), 0);
  for (const char* verb : {"inspect", "verify", "export", "import"})
    EXPECT_NE(read_text(log).find(verb), std::string::npos) << read_text(log);
  ASSERT_EQ(exit_of({tool("sx_ckpt"), "inspect", run_->string()}, log), 0);
  EXPECT_NE(read_text(log).find("model_preset   small"), std::string::npos) << read_text(log);
  EXPECT_NE(read_text(log).find("params/fc.weight"), std::string::npos) << read_text(log);
  ASSERT_EQ(exit_of({tool("sx_ckpt"), "verify", (*run_ / "latest").string()}, log), 0);
  EXPECT_NE(read_text(log).find("ckpt-00000016.h5 OK"), std::string::npos) << read_text(log);
  EXPECT_NE(exit_of({tool("sx_ckpt"), "frobnicate", run_->string()}, log), 0) << read_text(log);

  // One flipped byte in the middle of the file: verify names the file and fails.
  const fs::path bad = *root_ / "flipped.h5";
  fs::copy_file(ckpt(), bad, fs::copy_options::overwrite_existing);
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(fs::file_size(bad) / 2));
    char ch = 0;
    f.read(&ch, 1);
    f.seekp(std::streamoff(fs::file_size(bad) / 2));
    ch = char(ch ^ 0x5a);
    f.write(&ch, 1);
  }
  EXPECT_EQ(exit_of({tool("sx_ckpt"), "verify", bad.string()}, log), 1);
  EXPECT_NE(read_text(log).find("flipped.h5 FAILED"), std::string::npos) << read_text(log);
}

TEST_F(SxTools, CkptTorchExportImportRoundTripAndPretrained) {
  const fs::path pt = *root_ / "small.pt", back = *root_ / "back.h5", log = *root_ / "export.log";
  ASSERT_EQ(exit_of({tool("sx_ckpt"), "export", run_->string(), "--format", "torch", "-o", pt.string()}, log), 0)
      << read_text(log);
  ASSERT_EQ(exit_of({tool("sx_ckpt"), "import", pt.string(), "--arch", "small", "-o", back.string()}, log), 0)
      << read_text(log);
  EXPECT_NE(read_text(log).find("small, 10 classes, 1 input channels"), std::string::npos) << read_text(log);
  auto a = tensors(ckpt()), b = tensors(back);
  int n = 0;
  for (const auto& [name, vb] : b) {
    ASSERT_TRUE(a.count(name)) << name;
    ASSERT_EQ(a.at(name).size(), vb.size()) << name;
    EXPECT_EQ(std::memcmp(a.at(name).data(), vb.data(), vb.size() * sizeof(float)), 0) << name;
    ++n;
  }
  EXPECT_EQ(n, int(std::count_if(a.begin(), a.end(), [](const auto& kv) { return kv.first.rfind("momentum/", 0) != 0; })));

  // PyTorch reads the export into the published-style definition (strict), where torch is installed.
  const fs::path py = *root_ / "load.log";
  const std::string script = "import sys; sys.path.insert(0, '" + std::string(SX_TESTS_DIR) +
                             "/../bench'); import torch, torch_se_resnext as r; s = r.Spec(**r.PRESETS['small']); "
                             "m = r.SEResNeXt(s); m.load_state_dict(torch.load('" + pt.string() +
                             "'), strict=True); print('loaded', float(m.fc.weight.sum()))";
  const int rc = exit_of({"/usr/bin/python3", "-c", script}, py);
  if (read_text(py).find("No module named 'torch'") == std::string::npos) {
    ASSERT_EQ(rc, 0) << read_text(py);
    double sum = 0;
    for (float v : a.at("params/fc.weight")) sum += v;
    EXPECT_NEAR(std::stod(read_text(py).substr(read_text(py).find("loaded ") + 7)), sum, 1e-4) << read_text(py);
  }

  // Refusals: another architecture (names the missing tensor), a file that is not torch's zip.
  EXPECT_EQ(exit_of({tool("sx_ckpt"), "import", pt.string(), "--arch", "se_resnext26_32x4d", "-o",
                     (*root_ / "x.h5").string()},
                    log),
            1);
  EXPECT_NE(read_text(log).find("se_resnext26_32x4d needs (10, 2048)"), std::string::npos) << read_text(log);
  EXPECT_FALSE(fs::exists(*root_ / "x.h5"));
  EXPECT_EQ(exit_of({tool("sx_ckpt"), "import", ckpt().string(), "--arch", "small", "-o", (*root_ / "x.h5").string()},
                    log),
            1);
  EXPECT_NE(read_text(log).find("not a zip-format torch.save file"), std::string::npos) << read_text(log);

  // pretrained= takes the imported file: another seed, one step at LR 1e-30, parameters arrive exactly.
  const fs::path tune = *root_ / "tune";
  ASSERT_EQ(run(worker_args(*root_, tune, {"batch.per_rank=16", "max_steps=1", "seed=99", "optimizer.lr=1e-30",
                                           "schedule.warmup_epochs=0", "pretrained=" + back.string()}),
                tune.string() + ".log"),
            0);
  auto c = tensors(tune / "ckpt-00000001.h5");
  for (const auto& [name, va] : a) {
    if (name.rfind("params/", 0) != 0) continue;
    EXPECT_EQ(std::memcmp(va.data(), c.at(name).data(), va.size() * sizeof(float)), 0) << name;
  }
}

TEST_F(SxTools, InferFormatsBatchingAndInputs) {
  const fs::path log = *root_ / "infer.log";
  std::vector<std::string> a = infer({"--format", "json", "--batch", "3", "--top", "10"});
  for (const auto& i : images()) a.push_back(i);
  ASSERT_EQ(exit_of(a, log), 0) << read_text(log);
  std::vector<nlohmann::json> batched;
  {
    std::istringstream in(read_text(log));
    for (std::string line; std::getline(in, line);) batched.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(batched.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batched[i]["image"], images()[i]);
    double sum = 0, prev = 2;
    for (const auto& t : batched[i]["top"]) {
      const double p = t["probability"].get<double>();
      EXPECT_LE(p, prev);
      prev = p;
      sum += p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5) << "all 10 classes";
  }
  // --batch 1 (other batch composition, padding rows) gives the same numbers.
  a = infer({"--format", "json", "--batch", "1", "--top", "10"});
  for (const auto& i : images()) a.push_back(i);
  ASSERT_EQ(exit_of(a, log), 0) << read_text(log);
  std::istringstream in(read_text(log));
  size_t row = 0;
  for (std::string line; std::getline(in, line); ++row) {
    auto j = nlohmann::json::parse(line);
    for (size_t k = 0; k < 10; ++k) {
      EXPECT_EQ(j["top"][k]["class"], batched[row]["top"][k]["class"]);
      EXPECT_NEAR(j["top"][k]["probability"].get<double>(), batched[row]["top"][k]["probability"].get<double>(), 1e-5);
    }
  }
  EXPECT_EQ(row, 4u);

  // --dir and --list: the same images; CSV has a header and one row per image and class.
  std::ofstream(*root_ / "list.txt") << "images/bar0.png 0\nimages/bar1.png 1\n\nimages/bar2.png\nimages/bar3.png 3\n";
  ASSERT_EQ(exit_of(infer({"--format", "csv", "--top", "2", "--list", (*root_ / "list.txt").string()}), log), 0)
      << read_text(log);
  const std::string csv = read_text(log);
  EXPECT_EQ(csv.rfind("image,rank,class,name,probability\n", 0), 0u) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 4 * 2) << csv;
  ASSERT_EQ(exit_of(infer({"--format", "json", "--top", "4", "--dir", (*root_ / "images").string()}), log), 0);
  std::istringstream dir_in(read_text(log));
  row = 0;
  for (std::string line; std::getline(dir_in, line); ++row)
    EXPECT_EQ(nlohmann::json::parse(line)["top"][0]["class"], batched[row]["top"][0]["class"]);
  EXPECT_EQ(row, 4u);
}

TEST_F(SxTools, InferSkipsABadImageAndRefusesABrokenModel) {
  const fs::path log = *root_ / "infer_bad.log";
  std::vector<std::string> a = infer({});
  a.push_back(images()[0]);
  a.push_back((*root_ / "not_an_image.png").string());
  a.push_back(images()[1]);
  EXPECT_EQ(exit_of(a, log), 3) << read_text(log);
  const std::string out = read_text(log);
  EXPECT_NE(out.find("skipped " + (*root_ / "not_an_image.png").string() + ": cannot read or decode"), std::string::npos)
      << out;
  EXPECT_NE(out.find(images()[0]), std::string::npos);
  EXPECT_NE(out.find(images()[1] + "\n  1."), std::string::npos) << "the image after the bad one is classified\n" << out;

  const fs::path broken = damaged(INFINITY);
  EXPECT_EQ(exit_of({tool("sx_infer"), "--checkpoint", broken.string(), images()[0]}, log), 1);
  EXPECT_NE(read_text(log).find(broken.string() + ": parameter stem.conv1.weight[0] = inf"), std::string::npos)
      << read_text(log);
  EXPECT_EQ(read_text(log).find("%"), std::string::npos) << "no probability may be printed\n" << read_text(log);
}

TEST_F(SxTools, EvalLeavesTheRunAloneAndRefusesABrokenModel) {
  const std::string config = read_text(*run_ / "config.yaml"), metrics = read_text(*run_ / "metrics.jsonl");
  ASSERT_FALSE(config.empty());
  const fs::path out = *root_ / "eval.jsonl", log = *root_ / "eval.log";
  ASSERT_EQ(run(worker_args(*root_, *run_, {"batch.per_rank=16", "mode=eval", "eval.out=" + out.string()}), log), 0);
  EXPECT_EQ(read_text(*run_ / "config.yaml"), config);
  EXPECT_EQ(read_text(*run_ / "metrics.jsonl"), metrics);
  auto j = nlohmann::json::parse(read_text(out));
  EXPECT_EQ(j["step"], 16);
  EXPECT_EQ(j["samples"], 64);
  EXPECT_NE(j["checkpoint"].get<std::string>().find("ckpt-00000016.h5"), std::string::npos);

  const fs::path broken = damaged(NAN);
  EXPECT_EQ(exit_of(worker_args(*root_, *root_ / "evalbroken", {"batch.per_rank=16", "mode=eval",
                                                                  "checkpoint=" + broken.string()}),
                    log),
            1)
      << read_text(log);
  EXPECT_NE(read_text(log).find("evaluating " + broken.string()), std::string::npos) << read_text(log);
  EXPECT_NE(read_text(log).find("parameter stem.conv1.weight[0] = nan"), std::string::npos) << read_text(log);
  EXPECT_EQ(read_text(log).find("top1 "), std::string::npos) << read_text(log);
}

}  // namespace
}  // namespace sx::worker::testing
