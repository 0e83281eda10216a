// defines: sx::model::CudaBackendOptions, make_cuda_backend, cuda_built, cuda_device_count — the
// entry to the CUDA backend (model/cuda/). Compiled in every build: without CUDA (-DSX_CUDA=OFF or
// no toolkit) each of them answers with an error that says so and how to get a CUDA build.
#pragma once

#include <memory>

#include "common/status.h"
#include "model/backend.h"
#include "model/precision.h"

namespace sx::model {

struct CudaBackendOptions {
  int device = 0;                         // CUDA device index (a worker passes its local rank)
  Precision precision = Precision::kFp32; // compute precision of the activations (model/precision.h)
};

// True when this binary was built with the CUDA backend (SX_CUDA).
bool cuda_built();

// Number of visible CUDA devices, or the error of the call that failed, e.g. "cudaGetDeviceCount
// failed: CUDA driver version is insufficient for CUDA runtime version (cudaErrorInsufficientDriver,
// 35): no usable GPU on this host; expected a CUDA device and driver".
StatusOr<int> cuda_device_count();

// The cuDNN/cuBLAS backend on options.device: sets that device current on the calling thread, creates
// the compute stream and the library handles. Errors name the failed call and its code.
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options);

}  // namespace sx::model
