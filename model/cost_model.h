// defines: sx::model::LayerCost, layer_costs, CostTotals, sum_costs — per-layer arithmetic and memory
// traffic of one training step of an SE-ResNeXt, from the same architecture walk as the builder
// (se_resnext.h), for roofline projections (`sx_bench roofline`, bench/RESULTS.md).
//
// The byte model is the traffic of the passes the CUDA backend runs (model/cuda/README.md: BN in 2
// passes forward + 2 backward, the SE merge, global pool and scale as separate passes), activations
// in `act_bytes` per element (4 fp32, 2 bf16/fp16), weights and gradients fp32, per image (weight
// traffic divided by the batch). It is a model, not a measurement: caches, fusion and the library's
// choice of algorithm move the real traffic both ways.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/se_resnext.h"

namespace sx::model {

enum class CostKind : uint8_t { kConv, kLinear, kBatchNorm, kPool, kSeMerge, kSgd };

struct LayerCost {
  std::string name;        // "stage2.block0.conv2", "stem.pool", "sgd"
  CostKind kind = CostKind::kConv;
  int64_t macs = 0;        // forward multiply-adds per image (conv / linear)
  double flops = 0;        // training step per image: forward + backward (conv: 2·macs fwd, 4·macs bwd)
  double bytes = 0;        // training step per image, forward + backward, at the given element sizes
  int64_t out_elems = 0;   // output activation elements per image
};

const char* cost_kind_name(CostKind kind);

// Every layer of one training step at image_h x image_w, batch `batch` (weights' traffic is shared by
// the batch), activations of act_bytes per element. The last entry is the SGD pass over the
// parameters. Sum of macs == count_macs(spec, image_h, image_w).
std::vector<LayerCost> layer_costs(const ModelSpec& spec, int image_h, int image_w, int batch, int act_bytes);

struct CostTotals {
  int64_t macs = 0;
  double flops = 0, bytes = 0;
  double conv_flops = 0, conv_bytes = 0;  // convolutions and linear layers
};
CostTotals sum_costs(const std::vector<LayerCost>& layers);

// Roofline time of one image's training step on a machine of peak_flops (FLOP/s, the precision's
// tensor-core rate for conv/linear) and bandwidth (bytes/s): Σ over layers of max(flops / peak,
// bytes / bandwidth). `vector_flops` bounds the non-GEMM layers (BN, pools, merge, SGD).
double roofline_seconds(const std::vector<LayerCost>& layers, double peak_flops, double vector_flops,
                        double bandwidth);

}  // namespace sx::model
