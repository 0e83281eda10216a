// PLACEHOLDER until the oneDNN implementation lands (being written now).
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
StatusOr<std::unique_ptr<LinearOp>> make_cpu_linear(CpuBackend&, const LinearDesc&) { return Status::unimplemented("linear"); }
}  // namespace sx::model::cpu
