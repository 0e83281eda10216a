// PLACEHOLDER until the oneDNN implementation lands (being written now).
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
StatusOr<std::unique_ptr<PoolOp>> make_cpu_pool(CpuBackend&, const PoolDesc&) { return Status::unimplemented("pool"); }
}  // namespace sx::model::cpu
