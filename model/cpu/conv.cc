// PLACEHOLDER until the oneDNN implementation lands (being written now).
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
StatusOr<std::unique_ptr<ConvOp>> make_cpu_conv(CpuBackend&, const ConvDesc&) { return Status::unimplemented("conv"); }
}  // namespace sx::model::cpu
