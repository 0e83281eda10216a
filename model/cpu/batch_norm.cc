// PLACEHOLDER until the oneDNN implementation lands (being written now).
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
StatusOr<std::unique_ptr<BatchNormOp>> make_cpu_batch_norm(CpuBackend&, const BatchNormDesc&) { return Status::unimplemented("batch_norm"); }
}  // namespace sx::model::cpu
