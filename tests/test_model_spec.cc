// ModelSpec: presets reproduce the published parameter counts, the small model's size and cost,
// validate() names the bad field. No backend needed.
#include <gtest/gtest.h>

#include <algorithm>

#include "model/se_resnext.h"

namespace sx::model {
namespace {

ModelSpec get(const char* name) {
  auto s = preset(name);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? s.value() : ModelSpec{};
}

// torchvision resnext50_32x4d and Cadene's pretrainedmodels se_resnext*_32x4d, 1000 classes.
TEST(ModelSpec, PublishedParameterCounts) {
  EXPECT_EQ(count_parameters(get("resnext50_32x4d")), 25028904);
  EXPECT_EQ(count_parameters(get("se_resnext50_32x4d")), 27559896);
  EXPECT_EQ(count_parameters(get("se_resnext101_32x4d")), 48955416);
  EXPECT_EQ(count_parameters(get("se_resnext152_32x4d")), 66580440);
}

// torchvision resnext101_32x4d-style count (no published torchvision model; this is the value
// PyTorch computes for torchvision.models.resnet.ResNet(Bottleneck, [3,4,23,3], groups=32, width_per_group=4)).
TEST(ModelSpec, ResNeXt101Count) { EXPECT_EQ(count_parameters(get("resnext101_32x4d")), 44177704); }

TEST(ModelSpec, SmallModel) {
  ModelSpec s = get("small");
  EXPECT_EQ(count_parameters(s), 148550);
  EXPECT_EQ(s.num_classes, 10);
  EXPECT_EQ(s.in_channels, 1);
  EXPECT_EQ(s.width(0), 32);
  EXPECT_EQ(s.width(1), 64);
  EXPECT_EQ(s.width(2), 128);
  // ≈19.8 M multiply-adds for a 28x28 image (BENCHMARKING.md cost model).
  int64_t macs = count_macs(s, 28, 28);
  EXPECT_NEAR(double(macs) / 1e6, 19.8, 0.05) << macs;
}

TEST(ModelSpec, SeResNeXt50Macs) {
  // 4.233 G multiply-adds at 224x224 (BENCHMARKING.md); SE scaling and pools are not counted.
  EXPECT_NEAR(double(count_macs(get("se_resnext50_32x4d"), 224, 224)) / 1e9, 4.233, 0.01);
}

TEST(ModelSpec, SeReductionZeroIsPlainResNeXt) {
  ModelSpec s = get("se_resnext50_32x4d");
  s.se_reduction = 0;
  EXPECT_EQ(count_parameters(s), count_parameters(get("resnext50_32x4d")));
  EXPECT_EQ(s.se_channels(0), 0);
}

TEST(ModelSpec, NumClassesChangesOnlyTheClassifier) {
  ModelSpec s = get("se_resnext50_32x4d");
  s.num_classes = 10;
  EXPECT_EQ(count_parameters(s), 27559896 - 2048 * 990 - 990);
}

TEST(ModelSpec, VdVariants) {
  ModelSpec vd = get("se_resnext50_vd_32x4d");
  EXPECT_EQ(vd.stem, Stem::kVd);
  EXPECT_TRUE(vd.avg_down);
  // The vd stem replaces the 7x7x3x64 conv + BN(64) by 3x3 convs 3->32->32->64 with their BNs;
  // the avg-pool shortcut has the same conv and BN parameters as the strided one.
  int64_t stem_delta = (3 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + (32 * 64 * 9 + 128) - (3 * 64 * 49 + 128);
  EXPECT_EQ(count_parameters(vd), 27559896 + stem_delta);
  EXPECT_EQ(count_parameters(get("resnext50_vd_32x4d")), 25028904 + stem_delta);
  EXPECT_EQ(count_parameters(get("se_resnext101_vd_32x4d")), 48955416 + stem_delta);
}

TEST(ModelSpec, AllPresetsValidateAndResolve) {
  auto names = preset_names();
  for (const char* want : {"se_resnext26_32x4d", "se_resnext50_32x4d", "se_resnext101_32x4d", "se_resnext152_32x4d",
                           "resnext50_32x4d", "resnext101_32x4d", "se_resnext50_vd_32x4d", "se_resnext101_vd_32x4d",
                           "resnext50_vd_32x4d", "small"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  for (const auto& n : names) {
    ModelSpec s = get(n.c_str());
    EXPECT_EQ(s.name, n);
    EXPECT_TRUE(s.validate().is_ok()) << n << ": " << s.validate().to_string();
  }
  auto missing = preset("se_resnext51");
  EXPECT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("se_resnext50_32x4d"), std::string::npos);  // lists the known names
}

TEST(ModelSpec, DefaultsPerStage) {
  ModelSpec s = get("se_resnext50_32x4d");
  EXPECT_EQ(s.width(0), 128);
  EXPECT_EQ(s.width(3), 1024);
  EXPECT_EQ(s.out_channels(0), 256);
  EXPECT_EQ(s.out_channels(3), 2048);
  EXPECT_EQ(s.stride(0), 1);
  EXPECT_EQ(s.stride(1), 2);
  EXPECT_EQ(s.se_channels(3), 128);
}

TEST(ModelSpec, CustomStageList) {
  ModelSpec s;
  s.blocks = {1, 2};
  s.cardinality = 4;
  s.base_width = 2;
  s.stage_channels = {16, 32};
  s.stage_strides = {2, 1};
  s.se_reduction = 4;
  s.stem = Stem::kSmall;
  s.stem_channels = 8;
  s.in_channels = 3;
  s.num_classes = 5;
  ASSERT_TRUE(s.validate().is_ok());
  // stem 3x3 3->8 + BN; stage0 (8->8->8->16, stride 2, downsample); stage1 2 blocks 16->16->16->32, first with downsample.
  auto block = [](int64_t c, int64_t w, int64_t out, int64_t g, int64_t r, bool down) {
    int64_t p = c * w + 2 * w + w * (w / g) * 9 + 2 * w + w * out + 2 * out + out * r + r + r * out + out;
    return p + (down ? c * out + 2 * out : 0);
  };
  int64_t expect = 3 * 8 * 9 + 16 + block(8, 8, 16, 4, 4, true) + block(16, 16, 32, 4, 8, true) +
                   block(32, 16, 32, 4, 8, false) + 32 * 5 + 5;
  EXPECT_EQ(count_parameters(s), expect);
}

TEST(ModelSpec, ValidateNamesTheField) {
  auto expect_field = [](ModelSpec s, const char* field) {
    Status st = s.validate();
    ASSERT_FALSE(st.is_ok()) << field;
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find(field), std::string::npos) << st.message();
  };
  ModelSpec base = get("se_resnext50_32x4d");
  ModelSpec s = base;
  s.blocks = {};
  expect_field(s, "blocks");
  s = base, s.blocks = {3, 0, 6, 3};
  expect_field(s, "blocks[1]");
  s = base, s.cardinality = 0;
  expect_field(s, "cardinality");
  s = base, s.base_width = -1;
  expect_field(s, "base_width");
  s = base, s.stage_channels = {64, 128};
  expect_field(s, "stage_channels");
  s = base, s.stage_strides = {1, 2, 3, 2};
  expect_field(s, "stage_strides[2]");
  s = base, s.se_reduction = -1;
  expect_field(s, "se_reduction");
  s = base, s.se_reduction = 1000;
  expect_field(s, "se_reduction");
  s = base, s.stem_channels = 0;
  expect_field(s, "stem_channels");
  s = get("se_resnext50_vd_32x4d"), s.stem_channels = 33;
  expect_field(s, "stem_channels");
  s = base, s.in_channels = 0;
  expect_field(s, "in_channels");
  s = base, s.num_classes = 0;
  expect_field(s, "num_classes");
}

}  // namespace
}  // namespace sx::model
