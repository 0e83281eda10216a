// Job config: a good file, every kind of bad key / type / value (the message names file, line, key
// and what was expected), -o overrides and shortcuts, and print -> parse round trip.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "worker/config.h"
#include "worker/config_fields.h"

namespace sx::worker {
namespace {

const char* kGood = R"(
run_dir: runs/test
seed: 7
epochs: 3.5
model:
  preset: small
  num_classes: 10
data:
  train: data/train
  val: data/test
  mean: [0.286]
  std: [0.353]
optimizer:
  lr: 0.2
  nesterov: false
  label_smoothing: 0.05
schedule:
  name: CosineWarmup
  warmup_epochs: 1
batch:
  per_rank: 128
  accumulate: 2
checkpoint:
  every_steps: 100
  keep: 2
  async: no
comm:
  algorithm: hierarchical
  bucket_mb: 4
)";

StatusOr<JobConfig> parse(const std::string& text, std::vector<std::string> overrides = {}) {
  return parse_job_config(text, "job.yaml", overrides);
}

void expect_error(const StatusOr<JobConfig>& r, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(r.is_ok()) << "expected an error";
  for (const std::string& p : parts)
    EXPECT_NE(r.status().message().find(p), std::string::npos) << "'" << p << "' not in: " << r.status().message();
}

TEST(Config, GoodFileReadsEveryValue) {
  auto r = parse(kGood);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const JobConfig& c = r.value();
  EXPECT_EQ(c.run_dir, "runs/test");
  EXPECT_EQ(c.seed, 7u);
  EXPECT_DOUBLE_EQ(c.epochs, 3.5);
  EXPECT_EQ(c.model.num_classes, 10);
  EXPECT_EQ(c.data.train, "data/train");
  ASSERT_EQ(c.data.mean.size(), 1u);
  EXPECT_DOUBLE_EQ(c.data.mean[0], 0.286);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.2);
  EXPECT_FALSE(c.optimizer.nesterov);
  EXPECT_DOUBLE_EQ(c.schedule.warmup_epochs, 1);
  EXPECT_EQ(c.batch.per_rank, 128);
  EXPECT_EQ(c.batch.accumulate, 2);
  EXPECT_EQ(c.checkpoint.every_steps, 100);
  EXPECT_FALSE(c.checkpoint.async);  // YAML 1.1 "no"
  EXPECT_EQ(c.comm.algorithm, "hierarchical");
  EXPECT_DOUBLE_EQ(c.comm.bucket_mb, 4);
  EXPECT_EQ(c.checkpoint_dir(), "runs/test");
  // Untouched keys keep their defaults.
  EXPECT_DOUBLE_EQ(c.optimizer.momentum, 0.9);
  EXPECT_EQ(c.mode, "train");
}

TEST(Config, UnknownKeysNameFileLineAndKnownKeys) {
  expect_error(parse("data: {train: x}\noptimizer:\n  lrr: 0.1\n"),
               {"job.yaml:3:3", "unknown key 'optimizer.lrr'", "lr, momentum"});
  expect_error(parse("data: {train: x}\nbogus: 1\n"), {"job.yaml:2:1", "unknown key 'bogus'", "top-level keys"});
  expect_error(parse("data: {train: x}\nmodel:\n  preset: small\n  depth: 50\n"), {"job.yaml:4", "'model.depth'"});
}

TEST(Config, IllTypedValuesNameKeyAndExpectedType) {
  expect_error(parse("data: {train: x}\noptimizer: {lr: fast}\n"),
               {"job.yaml:2", "key 'optimizer.lr'", "expected number", "'fast'"});
  expect_error(parse("data: {train: x}\nbatch:\n  per_rank: 1.5\n"), {"job.yaml:3:13", "'batch.per_rank'", "integer"});
  expect_error(parse("data: {train: x}\nseed: -1\n"), {"'seed'", "integer"});
  expect_error(parse("data: {train: x}\noptimizer: {nesterov: maybe}\n"), {"'optimizer.nesterov'", "bool"});
  expect_error(parse("data: {train: x}\ndata: {mean: [0.1, x]}\n"), {"'data.mean'", "list of numbers"});
  expect_error(parse("data: {train: x}\noptimizer: [1, 2]\n"), {"'optimizer'", "expected a section"});
  expect_error(parse("data: {train: x}\nepochs: {a: 1}\n"), {"'epochs'", "got a map"});
  expect_error(parse("data: {train: x}\ncomm: {algorithm: ring}\n"), {"'comm.algorithm'", "auto|flat|hierarchical", "'ring'"});
  expect_error(parse("data: {train: x}\nepochs: .nan\n"), {"'epochs'"});
  expect_error(parse("data: {train: x}\nbatch: {per_rank: 99999999999}\n"), {"'batch.per_rank'", "integer"});
}

TEST(Config, OutOfRangeValuesNameKeyAndRange) {
  expect_error(parse("data: {train: x}\noptimizer: {lr: -1}\n"), {"job.yaml", "'optimizer.lr'", "> 0", "-1"});
  expect_error(parse("data: {train: x}\noptimizer: {momentum: 1}\n"), {"'optimizer.momentum'", "[0, 1)"});
  expect_error(parse("data: {train: x}\nmodel: {preset: resnet9000}\n"), {"'model.preset'", "small"});
  expect_error(parse("data: {train: x}\ndata: {mean: [0.5], std: []}\n"), {"'data.std'"});
  expect_error(parse("data: {train: x}\nschedule: {name: Exponential}\n"), {"'schedule'", "name"});
  expect_error(parse("epochs: 1\n"), {"'data.train'"});
  expect_error(parse("data: {train: x}\npretrained: a.h5\nresume: auto\n"), {"'pretrained'"});
}

TEST(Config, SyntaxErrorsAndMissingFile) {
  expect_error(parse("data: {train: x\n"), {"job.yaml:", "not valid YAML"});
  expect_error(parse("- 1\n- 2\n"), {"job.yaml", "map"});
  auto r = load_job_config("/nonexistent/job.yaml", {});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("/nonexistent/job.yaml"), std::string::npos);
}

TEST(Config, OverridesApplyInOrderAfterTheFile) {
  auto r = parse(kGood, {"optimizer.lr=0.05", "data.mean=[0.5]", "data.std=0.25", "resume=auto", "mode=eval",
                         "checkpoint=runs/x/latest", "checkpoint.keep=5", "optimizer.lr=0.01", "run_dir=a:b#c"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const JobConfig& c = r.value();
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.01);
  EXPECT_EQ(c.data.mean, std::vector<double>{0.5});
  EXPECT_EQ(c.data.std, std::vector<double>{0.25});
  EXPECT_EQ(c.resume, "auto");
  EXPECT_EQ(c.mode, "eval");
  EXPECT_EQ(c.checkpoint.load, "runs/x/latest");
  EXPECT_EQ(c.checkpoint.keep, 5);
  EXPECT_EQ(c.run_dir, "a:b#c");  // strings verbatim
  EXPECT_EQ(c.seed, 7u);          // from the file
}

TEST(Config, BadOverridesNameTheArgument) {
  expect_error(parse(kGood, {"optimizer.lrr=1"}), {"-o optimizer.lrr=1", "unknown key", "keys of optimizer"});
  expect_error(parse(kGood, {"nosuch=1"}), {"-o nosuch=1", "top-level keys"});
  expect_error(parse(kGood, {"optimizer.lr"}), {"-o optimizer.lr", "key=value"});
  expect_error(parse(kGood, {"batch.per_rank=big"}), {"-o batch.per_rank=big", "'batch.per_rank'", "integer"});
  expect_error(parse(kGood, {"mode=infer"}), {"-o mode=infer", "train|eval"});
  expect_error(parse(kGood, {"epochs=0"}), {"'epochs'", "> 0"});
}

TEST(Config, PrintedConfigReadsBackIdentically) {
  auto r = parse(kGood, {"data.val=", "schedule.boundaries=[1, 2.5]", "schedule.values=[0.1, 0.01, 0.001]",
                         "schedule.name=Piecewise", "optimizer.lr=0.1000000000000001"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const std::string text = job_config_to_yaml(r.value());
  auto back = parse_job_config(text, "printed", {});
  ASSERT_TRUE(back.is_ok()) << back.status().to_string() << "\n" << text;
  EXPECT_EQ(job_config_to_yaml(back.value()), text);
  EXPECT_EQ(back->optimizer.lr, 0.1000000000000001);  // shortest round-trip text, exact
  EXPECT_EQ(back->data.val, "");
  EXPECT_EQ(back->schedule.boundaries, (std::vector<double>{1, 2.5}));
  // Every key appears once.
  for (const ConfigField& f : config_fields()) {
    const std::string leaf = f.key.substr(f.key.find('.') + 1) + ":";
    EXPECT_NE(text.find(leaf), std::string::npos) << f.key;
  }
}

TEST(Config, HelpListsEveryKeyWithDefault) {
  const std::string help = job_config_help();
  for (const ConfigField& f : config_fields()) EXPECT_NE(help.find("  " + f.key + " "), std::string::npos) << f.key;
  EXPECT_NE(help.find("default 0.1"), std::string::npos);
}

TEST(Config, LoadsFromFile) {
  const std::string path = ::testing::TempDir() + "/sx_config_test.yaml";
  {
    std::ofstream out(path);
    out << kGood;
  }
  auto r = load_job_config(path, {"seed=3"});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->seed, 3u);
  EXPECT_EQ(r->source, path);
  auto bad = load_job_config(path, {"optimizer.momentum=2"});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find(path), std::string::npos) << bad.status().message();
  std::remove(path.c_str());
}

}  // namespace
}  // namespace sx::worker
