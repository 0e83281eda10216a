// defines: launchers of the memory kernels — fill, the host-layout transposes (plain NCHW fp32 <->
// NHWC activations in the storage type), the conv weight conversions (plain fp32 (OC, C/G, KH, KW) <->
// channels-last storage type), the finiteness check. Each queues work on `stream` and returns the
// launch's error. sm: the device's SM count (grid sizes, launch_math.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"
#include "model/precision.h"
#include "model/tensor.h"

namespace sx::model::cuda {

Status launch_fill(cudaStream_t stream, int sm, float* dst, float value, int64_t count);
// dst (N, C, H, W) NHWC storage <- src plain NCHW fp32, and back.
Status launch_nchw_to_nhwc(cudaStream_t stream, int sm, const float* src, void* dst, Precision p, const Dims& d);
Status launch_nhwc_to_nchw(cudaStream_t stream, int sm, const void* src, Precision p, float* dst, const Dims& d);
// w (OC, C/G, KH, KW) fp32 -> (OC, KH, KW, C/G) storage type, count = OC·C/G·KH·KW.
Status launch_weights_to_krsc(cudaStream_t stream, int sm, const float* w, void* krsc, Precision p, int64_t count,
                              int64_t cg, int64_t khw);
// dw (OC, C/G, KH, KW) fp32 (+)= (OC, KH, KW, C/G) storage type.
Status launch_weights_from_krsc(cudaStream_t stream, int sm, const void* krsc, Precision p, float* dw,
                                int64_t count, int64_t cg, int64_t khw, bool accumulate);
// *flag = 1 when data[0, count) holds an inf or NaN (flag is left alone otherwise: clear it first).
Status launch_find_nonfinite(cudaStream_t stream, int sm, const float* data, int64_t count, int* flag);

}  // namespace sx::model::cuda
