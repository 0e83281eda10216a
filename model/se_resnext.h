// defines: sx::model::ModelSpec (the SE-ResNeXt family as data), named presets, parameter counting.
// The builder (network.cc) turns a spec into layers; nothing here needs a backend.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sx::model {

enum class Stem : uint8_t {
  kImageNet,  // 7x7/2 conv (stem_channels) + BN + ReLU + 3x3/2 max pool
  kVd,        // three 3x3 convs (stem_channels/2, stem_channels/2, stem_channels), first /2, + 3x3/2 max pool
  kSmall,     // one 3x3/1 conv + BN + ReLU, no pool (28-32 px inputs)
};

struct ModelSpec {
  std::string name;
  std::vector<int> blocks = {3, 4, 6, 3};  // bottleneck blocks per stage
  int cardinality = 32;                    // groups of the 3x3 conv
  int base_width = 4;                      // channels per group in stage 0; doubles every stage
  std::vector<int> stage_channels;         // output channels per stage; empty = 256·2^s
  std::vector<int> stage_strides;          // per stage; empty = 1 for stage 0, 2 after
  int se_reduction = 16;                   // 0 = plain ResNeXt (no SE block)
  Stem stem = Stem::kImageNet;
  int stem_channels = 64;
  bool avg_down = false;                   // vd shortcut: 2x2/2 avg pool then 1x1/1 conv when downsampling
  int in_channels = 3;
  int num_classes = 1000;
  bool zero_init_last_bn = false;          // gamma = 0 in each block's last BN (Goyal et al.)

  int stage_count() const { return int(blocks.size()); }
  int width(int stage) const;              // bottleneck width = cardinality · base_width · 2^stage
  int out_channels(int stage) const;
  int stride(int stage) const;
  int se_channels(int stage) const;        // out_channels / se_reduction (floor), 0 without SE
  Status validate() const;                 // names the offending field
};

// Known names: se_resnext26/50/101/152_32x4d, resnext50/101_32x4d, se_resnext50_vd_32x4d,
// se_resnext101_vd_32x4d, resnext50_vd_32x4d, small (Fashion-MNIST/CIFAR size, 10 classes).
StatusOr<ModelSpec> preset(std::string_view name);
std::vector<std::string> preset_names();

// Trainable parameters (weights, BN gamma/beta, FC and SE biases); BN running stats not counted.
int64_t count_parameters(const ModelSpec& spec);
// Forward multiply-adds of one image (convolutions and linear layers; BN, pools, SE scaling not counted).
int64_t count_macs(const ModelSpec& spec, int image_h, int image_w);

}  // namespace sx::model
