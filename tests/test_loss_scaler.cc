// LossScaler (model/loss_scaler.h): the dynamic loss-scaling rule of fp16 training, on the host.
#include <gtest/gtest.h>

#include <cmath>

#include "model/loss_scaler.h"

namespace sx::model {
namespace {

LossScaler make(LossScalerConfig c) {
  auto s = LossScaler::make(c);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return std::move(s).value();
}

TEST(LossScaler, GrowsAfterIntervalOfGoodSteps) {
  LossScaler s = make({.init_scale = 1024, .growth_interval = 3});
  EXPECT_EQ(s.scale(), 1024.f);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(s.update(true).value(), ScaledStep::kApply);
  EXPECT_EQ(s.scale(), 1024.f);
  EXPECT_EQ(s.good_steps(), 2);
  EXPECT_EQ(s.update(true).value(), ScaledStep::kApply);  // third good step in a row: x2
  EXPECT_EQ(s.scale(), 2048.f);
  EXPECT_EQ(s.good_steps(), 0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.scale(), 4096.f);
  EXPECT_EQ(s.skipped_steps(), 0);
}

TEST(LossScaler, OverflowSkipsHalvesAndRestartsTheCount) {
  LossScaler s = make({.init_scale = 1024, .growth_interval = 3});
  ASSERT_TRUE(s.update(true).is_ok());
  ASSERT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.update(false).value(), ScaledStep::kSkip);
  EXPECT_EQ(s.scale(), 512.f);
  EXPECT_EQ(s.good_steps(), 0);  // the two good steps before the overflow no longer count
  EXPECT_EQ(s.skipped_steps(), 1);
  ASSERT_TRUE(s.update(true).is_ok());
  ASSERT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.scale(), 512.f);
  ASSERT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.scale(), 1024.f);
}

TEST(LossScaler, ScaleStaysAPowerOfTwoSoUnscalingIsExact) {
  LossScaler s = make({.growth_interval = 1});
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(s.update(i % 3 != 0).is_ok());
    int e = 0;
    EXPECT_EQ(std::frexp(double(s.scale()), &e), 0.5) << "step " << i;
    const float g = 0.1234567f;
    EXPECT_EQ(g * s.scale() * s.inv_scale(), g) << "step " << i;
  }
}

TEST(LossScaler, GrowthStopsAtMaxScale) {
  LossScaler s = make({.init_scale = 8, .growth_interval = 1, .max_scale = 32});
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.scale(), 32.f);
}

TEST(LossScaler, ShrinkingBelowMinScaleIsADivergenceError) {
  LossScaler s = make({.init_scale = 4, .min_scale = 1});
  EXPECT_EQ(s.update(false).value(), ScaledStep::kSkip);  // 2
  EXPECT_EQ(s.update(false).value(), ScaledStep::kSkip);  // 1
  auto r = s.update(false);                               // 0.5 < min
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("diverged"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("HINT"), std::string::npos);
  EXPECT_EQ(s.skipped_steps(), 3);
}

TEST(LossScaler, StaticScaleSkipsButNeverChanges) {
  LossScaler s = make({.dynamic = false, .init_scale = 128, .growth_interval = 1});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.update(false).value(), ScaledStep::kSkip);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.update(true).value(), ScaledStep::kApply);
  EXPECT_EQ(s.scale(), 128.f);
  EXPECT_EQ(s.skipped_steps(), 5);
}

TEST(LossScaler, RestoreContinuesTheRecordedState) {
  LossScaler a = make({.init_scale = 1024, .growth_interval = 4});
  LossScaler b = make({.init_scale = 1024, .growth_interval = 4});
  for (bool f : {true, false, true, true}) ASSERT_TRUE(a.update(f).is_ok());
  ASSERT_TRUE(b.restore(a.scale(), a.good_steps()).is_ok());
  for (bool f : {true, true, false, true, true, true, true, true}) {
    ASSERT_EQ(a.update(f).value(), b.update(f).value());
    EXPECT_EQ(a.scale(), b.scale());
    EXPECT_EQ(a.good_steps(), b.good_steps());
  }
  EXPECT_FALSE(b.restore(-1, 0).is_ok());
  EXPECT_FALSE(b.restore(std::nan(""), 0).is_ok());
}

TEST(LossScaler, BadConfigNamesTheField) {
  struct Case {
    LossScalerConfig c;
    const char* field;
  };
  for (const Case& k : {Case{{.init_scale = 0}, "init_scale"}, Case{{.init_scale = INFINITY}, "init_scale"},
                        Case{{.growth_factor = 1}, "growth_factor"}, Case{{.backoff_factor = 1}, "backoff_factor"},
                        Case{{.growth_interval = 0}, "growth_interval"},
                        Case{{.init_scale = 1e9, .max_scale = 1e6}, "init_scale"}}) {
    auto s = LossScaler::make(k.c);
    ASSERT_FALSE(s.is_ok()) << k.field;
    EXPECT_NE(s.status().message().find(k.field), std::string::npos) << s.status().message();
  }
}

}  // namespace
}  // namespace sx::model
