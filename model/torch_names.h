// defines: sx::model::torch_name, torch_shape, normalize_torch_name — our parameter names and the
// state_dict names of the usual PyTorch ResNet / ResNeXt / SE-ResNeXt definitions (torchvision's
// ResNet, and timm's for SE and the `d`/vd variants), so that weights move both ways.
//
//   ours                                  PyTorch
//   stem.conv1 / stem.bn1                 conv1 / bn1                     (imagenet, small stems)
//   stem.conv1 bn1 conv2 bn2 conv3 bn3    conv1.0 conv1.1 conv1.3 conv1.4 conv1.6 bn1   (vd: timm deep stem)
//   stageS.blockB.convI / bnI             layer{S+1}.B.convI / bnI
//   stageS.blockB.se.fc1 / fc2            layer{S+1}.B.se.fc1 / fc2       weight (R, C) <-> (R, C, 1, 1): timm's 1x1 convs
//   stageS.blockB.downsample.conv / bn    layer{S+1}.B.downsample.0 / 1   (avg_down: .1 / .2 after the pool at .0)
//   fc                                    fc
// BN: weight, bias, running_mean, running_var alike; PyTorch adds num_batches_tracked (int64).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/se_resnext.h"

namespace sx::model {

// "stage1.block0.downsample.bn.running_var" -> "layer2.0.downsample.1.running_var"; an unknown
// name is an InvalidArgument naming it.
StatusOr<std::string> torch_name(const ModelSpec& spec, std::string_view name);

// The PyTorch shape of one of our parameters: SE FC weights gain the 1x1 of a conv; others as they are.
std::vector<int64_t> torch_shape(std::string_view name, const std::vector<int64_t>& shape);

// Other spellings of the same state_dict brought to the names above: "module." prefixes
// (DataParallel), Cadene's pretrainedmodels (layer0.conv1, layerN.B.se_module, last_linear).
std::string normalize_torch_name(std::string_view torch_name);

}  // namespace sx::model
