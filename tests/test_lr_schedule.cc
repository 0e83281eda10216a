// LR schedules against hand-computed values (see the formulas in model/lr_schedule.h).
#include <gtest/gtest.h>

#include <cmath>

#include "model/lr_schedule.h"

namespace sx::model {
namespace {

LrSchedule make(const LrScheduleConfig& c) {
  auto s = LrSchedule::make(c);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? s.value() : LrSchedule{};
}

TEST(LrSchedule, PiecewiseBoundariesInEpochs) {
  LrScheduleConfig c;
  c.name = "Piecewise";
  c.steps_per_epoch = 10;
  c.boundary_epochs = {30, 60, 90};
  c.values = {0.1, 0.01, 0.001, 0.0001};
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(299), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(300), 0.01);  // the boundary step already has the new value
  EXPECT_DOUBLE_EQ(s.lr_at(599), 0.01);
  EXPECT_DOUBLE_EQ(s.lr_at(600), 0.001);
  EXPECT_DOUBLE_EQ(s.lr_at(900), 0.0001);
  EXPECT_DOUBLE_EQ(s.lr_at(100000), 0.0001);
}

TEST(LrSchedule, PiecewiseGammaEveryNEpochs) {
  LrScheduleConfig c;
  c.name = "Piecewise";
  c.base_lr = 0.4;
  c.steps_per_epoch = 5;
  c.step_epochs = 2;
  c.gamma = 0.5;
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.4);
  EXPECT_DOUBLE_EQ(s.lr_at(9), 0.4);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 0.2);
  EXPECT_DOUBLE_EQ(s.lr_at(25), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(30), 0.05);
}

TEST(LrSchedule, Cosine) {
  LrScheduleConfig c;
  c.name = "Cosine";
  c.base_lr = 0.2;
  c.steps_per_epoch = 100;
  c.epochs = 4;  // 400 steps
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.2);
  EXPECT_NEAR(s.lr_at(100), 0.2 * 0.5 * (1 + std::sqrt(0.5)), 1e-15);  // cos(π/4)
  EXPECT_NEAR(s.lr_at(200), 0.1, 1e-15);
  EXPECT_NEAR(s.lr_at(300), 0.2 * 0.5 * (1 - std::sqrt(0.5)), 1e-15);
  EXPECT_NEAR(s.lr_at(400), 0.0, 1e-15);
  EXPECT_NEAR(s.lr_at(1000), 0.0, 1e-15);  // stays at the end value
  c.min_lr = 0.02;
  LrSchedule m = make(c);
  EXPECT_NEAR(m.lr_at(200), 0.02 + 0.18 * 0.5, 1e-15);
  EXPECT_NEAR(m.lr_at(400), 0.02, 1e-15);
}

TEST(LrSchedule, LinearPolynomial) {
  LrScheduleConfig c;
  c.name = "Linear";
  c.base_lr = 0.1;
  c.steps_per_epoch = 10;
  c.epochs = 10;  // 100 steps
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.1);
  EXPECT_NEAR(s.lr_at(25), 0.075, 1e-15);
  EXPECT_NEAR(s.lr_at(50), 0.05, 1e-15);
  EXPECT_NEAR(s.lr_at(100), 0.0, 1e-15);
  EXPECT_NEAR(s.lr_at(150), 0.0, 1e-15);
  c.power = 2;
  c.min_lr = 0.01;
  LrSchedule p = make(c);
  EXPECT_NEAR(p.lr_at(50), 0.01 + 0.09 * 0.25, 1e-15);
}

TEST(LrSchedule, CosineWarmup) {
  LrScheduleConfig c;
  c.name = "CosineWarmup";
  c.base_lr = 0.4;
  c.steps_per_epoch = 10;
  c.epochs = 12;
  c.warmup_epochs = 2;  // 20 warm-up steps, then cosine over the remaining 100
  c.warmup_start_lr = 0.0;
  LrSchedule s = make(c);
  EXPECT_EQ(s.warmup_steps(), 20);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.0);
  EXPECT_NEAR(s.lr_at(5), 0.1, 1e-15);
  EXPECT_NEAR(s.lr_at(10), 0.2, 1e-15);
  EXPECT_NEAR(s.lr_at(20), 0.4, 1e-15);   // warm-up ends at the cosine's start
  EXPECT_NEAR(s.lr_at(70), 0.2, 1e-15);   // half-way through the cosine
  EXPECT_NEAR(s.lr_at(120), 0.0, 1e-15);
}

TEST(LrSchedule, WarmupNameDefaultsToFiveEpochs) {
  LrScheduleConfig c;
  c.name = "LinearWarmup";
  c.steps_per_epoch = 3;
  c.epochs = 20;
  EXPECT_EQ(make(c).warmup_steps(), 15);
  c.name = "Linear";
  EXPECT_EQ(make(c).warmup_steps(), 0);
  c.warmup_epochs = 1;  // an explicit warm-up works with any name
  EXPECT_EQ(make(c).warmup_steps(), 3);
}

TEST(LrSchedule, PiecewiseWarmupUsesAbsoluteBoundaries) {
  LrScheduleConfig c;
  c.name = "PiecewiseWarmup";
  c.steps_per_epoch = 10;
  c.warmup_epochs = 1;
  c.warmup_start_lr = 0.01;
  c.boundary_epochs = {3};
  c.values = {0.11, 0.011};
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.01);
  EXPECT_NEAR(s.lr_at(5), 0.06, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 0.11);
  EXPECT_DOUBLE_EQ(s.lr_at(29), 0.11);
  EXPECT_DOUBLE_EQ(s.lr_at(30), 0.011);
}

TEST(LrSchedule, ScaledByGlobalBatch) {
  LrScheduleConfig c;
  c.name = "CosineWarmup";
  c.base_lr = 0.1;
  c.steps_per_epoch = 10;
  c.epochs = 10;
  c.warmup_epochs = 1;
  c.warmup_start_lr = 0.1;  // Goyal et al.: ramp from the unscaled LR to the scaled one
  c.scale_by_batch = true;
  c.global_batch = 1024;
  LrSchedule s = make(c);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.1);
  EXPECT_NEAR(s.lr_at(5), 0.25, 1e-15);
  EXPECT_NEAR(s.lr_at(10), 0.4, 1e-15);
  EXPECT_NEAR(s.lr_at(55), 0.2, 1e-15);
  LrScheduleConfig p;
  p.boundary_epochs = {1};
  p.values = {0.1, 0.01};
  p.scale_by_batch = true;
  p.global_batch = 128;
  LrSchedule ps = make(p);
  EXPECT_DOUBLE_EQ(ps.lr_at(0), 0.05);
  EXPECT_DOUBLE_EQ(ps.lr_at(1), 0.005);
}

TEST(LrSchedule, RejectsBadConfigNamingTheField) {
  auto expect_field = [](const LrScheduleConfig& c, const char* field) {
    auto s = LrSchedule::make(c);
    ASSERT_FALSE(s.is_ok()) << field;
    EXPECT_NE(s.status().message().find(field), std::string::npos) << s.status().message();
  };
  LrScheduleConfig c;
  c.name = "Exponential";
  expect_field(c, "name");
  c = {};
  c.boundary_epochs = {30, 60};
  c.values = {0.1, 0.01};
  expect_field(c, "values");
  c.boundary_epochs = {60, 30};
  c.values = {0.1, 0.01, 0.001};
  expect_field(c, "boundary_epochs[1]");
  c = {};
  c.name = "Cosine";
  expect_field(c, "epochs");  // a cosine needs a length
  c = {};
  c.steps_per_epoch = 0;
  expect_field(c, "steps_per_epoch");
  c = {};
  c.scale_by_batch = true;
  c.global_batch = 0;
  expect_field(c, "global_batch");
}

}  // namespace
}  // namespace sx::model
