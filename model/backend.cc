// Backend's default members: the ones a host backend that runs ops synchronously can share.
#include "model/backend.h"

#include <cmath>

namespace sx::model {

Status Backend::all_finite(const float* data, int64_t count, bool* host_all_finite) {
  SX_CHECK_ARG(host_all_finite != nullptr, "all_finite: null result");
  SX_CHECK_ARG(count >= 0 && (count == 0 || data != nullptr), "all_finite: null data");
  if (is_device())
    return Status::unimplemented(name() + ": all_finite needs the backend's own implementation (device memory)");
  int64_t bad = 0;
#pragma omp parallel for simd reduction(+ : bad) schedule(static) if (count >= (int64_t(1) << 16))
  for (int64_t i = 0; i < count; ++i) bad += !std::isfinite(data[i]);
  *host_all_finite = bad == 0;
  return Status::ok();
}

}  // namespace sx::model
