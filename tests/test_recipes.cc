// The ImageNet recipes in cluster-configs/ (cluster-configs/README.md): each file loads and
// validates like `sx_worker -c FILE --print-config`, names the optimizer settings its source uses,
// and the schedule the worker resolves from it (ImageNet's 1 281 167 training images at the world
// size the recipe is written for) is the source's schedule, evaluated at every step against an
// independent implementation of the source's formula.
#include <cmath>
#include <numbers>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/manifest.h"
#include "model/lr_schedule.h"
#include "worker/config.h"
#include "worker/train_model.h"

namespace sx::worker {
namespace {

constexpr int64_t kImageNetTrain = 1281167;

std::string recipe(const std::string& name) { return std::string(SX_TESTS_DIR) + "/../cluster-configs/" + name; }

struct Resolved {
  JobConfig config;
  ResolvedJob job;
  model::LrSchedule schedule;
};

// What sx_worker resolves for this file on `world` ranks (8 per node) over ImageNet-1k.
Resolved resolve(const std::string& name, int world) {
  auto c = load_job_config(recipe(name), {});
  EXPECT_TRUE(c.is_ok()) << c.status().to_string();
  dataplane::Manifest m;
  m.num_samples = kImageNetTrain;
  m.num_classes = 1000;
  m.channels = 3;
  m.encoding = "jpeg";
  auto job = resolve_job(c.value(), m, world, std::min(world, 8));
  EXPECT_TRUE(job.is_ok()) << job.status().to_string();
  auto s = model::LrSchedule::make(lr_schedule_config(c.value(), job->steps_per_epoch, c->epochs, job->global_batch));
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return {c.value(), job.value(), std::move(s).value()};
}

TEST(Recipes, PaddlePiecewise) {
  Resolved r = resolve("se_resnext50_paddle_piecewise.yaml", 8);
  const JobConfig& c = r.config;
  EXPECT_EQ(c.model.preset, "se_resnext50_32x4d");
  EXPECT_EQ(r.job.spec.num_classes, 1000);
  EXPECT_EQ(r.job.image_size, 224);
  EXPECT_EQ(r.job.global_batch, 256);
  EXPECT_DOUBLE_EQ(c.optimizer.momentum, 0.9);
  EXPECT_FALSE(c.optimizer.nesterov);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 1e-4);
  EXPECT_EQ(r.job.steps_per_epoch, kImageNetTrain / 256);
  EXPECT_EQ(r.schedule.total_steps(), 40 * r.job.steps_per_epoch);
  EXPECT_EQ(r.schedule.warmup_steps(), 0);
  // Paddle's piecewise_decay with boundaries every 10 epochs: 0.1 * 0.1^floor(epoch / 10).
  const int64_t spe = r.job.steps_per_epoch;
  for (int64_t step = 0; step < r.schedule.total_steps(); ++step) {
    const double want = 0.1 * std::pow(0.1, double(step / (10 * spe)));
    ASSERT_NEAR(r.schedule.lr_at(step), want, 1e-12 * want) << "step " << step;
  }
}

TEST(Recipes, MindSpore8Card) {
  Resolved r = resolve("se_resnext50_mindspore_8card.yaml", 8);
  const JobConfig& c = r.config;
  EXPECT_EQ(c.model.preset, "se_resnext50_32x4d");
  EXPECT_EQ(r.job.per_rank, 128);
  EXPECT_EQ(r.job.global_batch, 1024);
  EXPECT_DOUBLE_EQ(c.epochs, 120);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.4);
  EXPECT_DOUBLE_EQ(c.optimizer.momentum, 0.9);
  EXPECT_FALSE(c.optimizer.nesterov);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 1e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.bn_bias_decay, 0.0);  // MindSpore's param groups: no decay on BN/bias
  EXPECT_DOUBLE_EQ(c.optimizer.label_smoothing, 0.1);
  const int64_t spe = r.job.steps_per_epoch, total = r.schedule.total_steps();
  EXPECT_EQ(spe, kImageNetTrain / 1024);
  EXPECT_EQ(total, 120 * spe);
  EXPECT_EQ(r.schedule.warmup_steps(), spe);
  // MindSpore's warmup_cosine_annealing_lr(lr=0.4, steps_per_epoch, warmup_epochs=1, max_epoch=120,
  // T_max=120, eta_min=0): linear warm-up 0.4·(i+1)/W, then 0.4·(1+cos(π·floor(i/spe)/T_max))/2 (the
  // cosine steps once per epoch). Ours is the same cosine per step over [W, T]: they differ by at most
  // 0.2·π/119 (< 0.0053) after the warm-up and by one step's increment (0.4/W) during it; the LR summed
  // over the run (what the weights integrate) agrees to 0.5 %.
  const double base = 0.4, T = 120;
  double ours_sum = 0, theirs_sum = 0, max_diff = 0;
  for (int64_t i = 0; i < total; ++i) {
    const double theirs = i < spe ? base * double(i + 1) / double(spe)
                                  : base * (1 + std::cos(std::numbers::pi * double(i / spe) / T)) / 2;
    const double ours = r.schedule.lr_at(i);
    const double bound = i < spe ? base / double(spe) + 1e-12 : 0.2 * std::numbers::pi / 119 + 1e-12;
    ASSERT_LE(std::fabs(ours - theirs), bound) << "step " << i << ": ours " << ours << ", MindSpore " << theirs;
    max_diff = std::max(max_diff, std::fabs(ours - theirs));
    ours_sum += ours;
    theirs_sum += theirs;
  }
  EXPECT_NEAR(ours_sum / theirs_sum, 1.0, 0.005);
  EXPECT_NEAR(r.schedule.lr_at(spe), base, 1e-12);            // the peak right after the warm-up
  EXPECT_NEAR(r.schedule.lr_at(total - 1), 0.0, 1e-4);        // down to eta_min = 0
}

void check_paddleclas(const std::string& file, const std::string& preset) {
  for (int world : {8, 32}) {
    SCOPED_TRACE(file + " on " + std::to_string(world) + " ranks");
    Resolved r = resolve(file, world);
    const JobConfig& c = r.config;
    EXPECT_EQ(c.model.preset, preset);
    EXPECT_EQ(r.job.per_rank, 64);
    EXPECT_EQ(r.job.global_batch, 64 * world);
    EXPECT_DOUBLE_EQ(c.epochs, 200);
    EXPECT_DOUBLE_EQ(c.optimizer.momentum, 0.9);
    EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 7e-5);
    EXPECT_DOUBLE_EQ(c.optimizer.label_smoothing, 0.1);
    EXPECT_DOUBLE_EQ(c.optimizer.mixup_alpha, 0.2);
    EXPECT_EQ(r.schedule.warmup_steps(), 0);
    // Paddle's CosineAnnealingDecay per step: peak·(1 + cos(π·step/total))/2, peak = 0.1·G/256.
    const double peak = 0.1 * double(r.job.global_batch) / 256.0;
    const int64_t total = r.schedule.total_steps();
    EXPECT_EQ(total, 200 * r.job.steps_per_epoch);
    for (int64_t step = 0; step < total; step += 97) {
      const double want = peak * (1 + std::cos(std::numbers::pi * double(step) / double(total))) / 2;
      ASSERT_NEAR(r.schedule.lr_at(step), want, 1e-9) << "step " << step;
    }
  }
}

TEST(Recipes, PaddleClasSeResNeXt50) { check_paddleclas("se_resnext50_32x4d_paddleclas.yaml", "se_resnext50_32x4d"); }
TEST(Recipes, PaddleClasSeResNeXt50vd) {
  check_paddleclas("se_resnext50_vd_32x4d_paddleclas.yaml", "se_resnext50_vd_32x4d");
}
TEST(Recipes, PaddleClasSeResNeXt101) { check_paddleclas("se_resnext101_32x4d_paddleclas.yaml", "se_resnext101_32x4d"); }

}  // namespace
}  // namespace sx::worker
