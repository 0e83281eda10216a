// defines: sx::model::cpu::ConvPlan — which activation format each conv primitive runs in — and
// the planned-conv factory behind make_cpu_conv, open to tests and benchmarks that compare plans.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {

enum class ConvFormat : uint8_t {
  kUser,     // the network's layouts (desc.in_layout in, activation_layout(OC) out): no reorders
  kAny,      // oneDNN's choice
  kNChw16c,
  kNChw8c,
  kNChw4c,
  kNhwc,
};

// Activation format per primitive; any format other than the network's costs counted reorders.
struct ConvPlan {
  ConvFormat fwd = ConvFormat::kUser;
  ConvFormat bwd_data = ConvFormat::kUser;
  ConvFormat bwd_weights = ConvFormat::kUser;
};

// A ConvOp that can say which oneDNN implementations it runs ("fwd | bwd-data | bwd-weights").
class CpuConv : public ConvOp {
 public:
  virtual std::string impl_info() const = 0;
};

// The plan make_cpu_conv uses for a shape at an instruction-set level (its channel block).
ConvPlan default_conv_plan(const ConvDesc& desc, CpuIsa isa);
StatusOr<std::unique_ptr<CpuConv>> make_cpu_conv_planned(CpuBackend& backend, const ConvDesc& desc,
                                                         const ConvPlan& plan);

}  // namespace sx::model::cpu
