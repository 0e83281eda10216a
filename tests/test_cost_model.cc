// The per-layer cost model (model/cost_model.h) behind `sx_bench roofline`: it walks the same
// architecture as the builder (MACs and parameters agree with count_macs / count_parameters for every
// preset), names every layer once, and its roofline behaves like one.
#include <gtest/gtest.h>

#include <set>

#include "model/cost_model.h"
#include "model/se_resnext.h"

namespace sx::model {
namespace {

TEST(CostModel, MacsMatchTheBuilderForEveryPreset) {
  for (const std::string& name : preset_names()) {
    auto spec = preset(name);
    ASSERT_TRUE(spec.is_ok());
    const int px = spec->stem == Stem::kSmall ? 28 : 224;
    const auto layers = layer_costs(*spec, px, px, 64, 2);
    EXPECT_EQ(sum_costs(layers).macs, count_macs(*spec, px, px)) << name;
    std::set<std::string> names;
    for (const LayerCost& l : layers) {
      EXPECT_TRUE(names.insert(l.name).second) << name << ": " << l.name << " twice";
      EXPECT_GE(l.flops, 0) << l.name;
      EXPECT_GT(l.bytes, 0) << l.name;
    }
    EXPECT_EQ(layers.back().name, "sgd");
  }
}

TEST(CostModel, SeResNeXt50Layers) {
  auto spec = preset("se_resnext50_32x4d");
  ASSERT_TRUE(spec.is_ok());
  const auto layers = layer_costs(*spec, 224, 224, 128, 2);
  int convs = 0, bns = 0, merges = 0;
  for (const LayerCost& l : layers) {
    convs += l.kind == CostKind::kConv;
    bns += l.kind == CostKind::kBatchNorm;
    merges += l.kind == CostKind::kSeMerge;
  }
  EXPECT_EQ(convs, 1 + 16 * 3 + 4);  // stem, 3 per block, 4 projection shortcuts
  EXPECT_EQ(bns, convs);
  EXPECT_EQ(merges, 16);
  // stage0.block0.conv2: 128 -> 128, 3x3, 32 groups, 56x56: 128·4·9·56·56 MACs.
  bool seen = false;
  for (const LayerCost& l : layers) {
    if (l.name != "stage0.block0.conv2") continue;
    seen = true;
    EXPECT_EQ(l.macs, int64_t(128) * 4 * 9 * 56 * 56);
  }
  EXPECT_TRUE(seen);
  // A train step is ~3 forwards of the conv/linear arithmetic (the stem has no dx).
  const CostTotals t = sum_costs(layers);
  EXPECT_GT(t.conv_flops, 5.5 * double(t.macs));
  EXPECT_LE(t.conv_flops, 6.0 * double(t.macs) + 1);
  // fp32 activations move about twice the bytes of bf16 ones.
  const double fp32 = sum_costs(layer_costs(*spec, 224, 224, 128, 4)).bytes;
  EXPECT_GT(fp32, 1.8 * t.bytes);
}

TEST(CostModel, RooflineIsBoundedByComputeAndBandwidth) {
  auto spec = preset("se_resnext50_32x4d");
  ASSERT_TRUE(spec.is_ok());
  const auto layers = layer_costs(*spec, 224, 224, 128, 2);
  const CostTotals t = sum_costs(layers);
  const double s = roofline_seconds(layers, 312e12, 19.5e12, 2.0e12);
  EXPECT_GE(s, t.bytes / 2.0e12 * 0.999);     // at least all bytes at full bandwidth
  EXPECT_GE(s, t.conv_flops / 312e12 * 0.999);  // at least the GEMM flops at peak
  // More bandwidth or compute never makes it slower.
  EXPECT_LE(roofline_seconds(layers, 989e12, 67e12, 3.35e12), s);
}

}  // namespace
}  // namespace sx::model
