// cuda_built, cuda_device_count, make_cuda_backend: the CUDA backend's entry, compiled in every build.
// SX_HAVE_CUDA (set by cmake/SxCuda.cmake) selects the real one or the answer of a CPU-only build.
#include <string>

#include "model/cuda/cuda_backend.h"

#if SX_HAVE_CUDA
#include <cuda_runtime.h>

#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_check.h"
#endif

namespace sx::model {

#if SX_HAVE_CUDA

bool cuda_built() { return true; }

StatusOr<int> cuda_device_count() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    return Status::unavailable(cuda::cuda_error("cudaGetDeviceCount", e) +
                               ": no usable GPU on this host; expected a CUDA device and driver");
  return count;
}

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options) {
  SX_CHECK_ARG(options.device >= 0, "CUDA device index must be >= 0");
  SX_ASSIGN_OR_RETURN(const int count, cuda_device_count());
  if (count == 0)
    return Status::unavailable("cudaGetDeviceCount found no CUDA device: no usable GPU on this host; expected a "
                               "CUDA device and driver (CUDA_VISIBLE_DEVICES may hide them)");
  if (options.device >= count)
    return Status::invalid_argument("CUDA device " + std::to_string(options.device) + " requested but " +
                                    std::to_string(count) + " visible (0.." + std::to_string(count - 1) +
                                    "); HINT: a worker takes the device of its local rank, so run at most " +
                                    std::to_string(count) + " ranks per node");
  return cuda::make_device_backend(options);
}

#else

namespace {
const char* const kNoCuda =
    "this build has no CUDA backend (configured with -DSX_CUDA=OFF, or the CUDA toolkit, cuDNN or NCCL was not "
    "found); HINT: install the CUDA toolkit with cuDNN and NCCL (under /usr/local/cuda) and reconfigure with "
    "cmake -DSX_CUDA=ON";
}

bool cuda_built() { return false; }
StatusOr<int> cuda_device_count() { return Status::unavailable(kNoCuda); }
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions&) { return Status::unavailable(kNoCuda); }

#endif

}  // namespace sx::model
