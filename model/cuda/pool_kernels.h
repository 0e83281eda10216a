// defines: launchers of the pooling kernels (pool_kernels.cu): max (with the argmax kept for backward)
// and average excluding padding (PyTorch count_include_pad=False), NHWC in the storage type of `p`.
// Windows and their inverses are launch_math.h's pool_window / pool_outputs_covering.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"
#include "model/precision.h"
#include "model/tensor.h"

namespace sx::model::cuda {

struct PoolGeometry {
  Dims in, out;               // (N, C, H, W), (N, C, OH, OW)
  int kernel = 2, stride = 2, pad = 0;
  bool max = true;
};

// y = pool(x); for max pooling argmax (one int per output element: h·W + w of the winner in its plane).
Status launch_pool_forward(cudaStream_t stream, int sm, Precision p, const PoolGeometry& g, const void* x, void* y,
                           int32_t* argmax);
// dx (overwritten) gathers from the outputs whose windows cover each input: no atomics, deterministic.
Status launch_pool_backward(cudaStream_t stream, int sm, Precision p, const PoolGeometry& g, const void* dy,
                            const int32_t* argmax, void* dx);

}  // namespace sx::model::cuda
