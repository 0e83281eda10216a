// defines: launchers of the activation kernels (activation_kernels.cu): 2-D element-wise ops (fp32),
// the global average pool, the SE residual merge and its gradients, scale_backward, add_into (NHWC in
// the storage type of `p`), and the linear layer's bias helpers. Per-element math: model/elementwise.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"
#include "model/backend.h"
#include "model/precision.h"

namespace sx::model::cuda {

enum class Unary { kRelu, kSigmoid };
// y = f(x) (forward) or dx = f'(y)·dy (backward: y is the forward output), count fp32 values.
Status launch_unary_forward(cudaStream_t stream, int sm, Unary f, const float* x, float* y, int64_t count);
Status launch_unary_backward(cudaStream_t stream, int sm, Unary f, const float* y, const float* dy, float* dx,
                             int64_t count);

// y[n, c] = mean over H, W of x (N, C, H, W) NHWC; y plain (N, C) fp32.
Status launch_gap_forward(cudaStream_t stream, Precision p, const void* x, const Dims& d, float* y);
// dx = dy[n, c] / (H·W), overwritten.
Status launch_gap_backward(cudaStream_t stream, int sm, Precision p, const float* dy, const Dims& d, void* dx);

// out = relu(x_bn(x)·s[n, c] + sc_bn(shortcut)); s null means 1, an empty ChannelAffine the identity.
Status launch_merge_forward(cudaStream_t stream, int sm, Precision p, const Dims& d, const void* x, const float* s,
                            const void* shortcut, void* out, ChannelAffine x_bn, ChannelAffine sc_bn);
// dz = relu_grad(out, dout) into dshortcut; ds[n, c] = Σ_hw dz·x_bn(x) when ds is not null.
Status launch_merge_backward(cudaStream_t stream, Precision p, const Dims& d, const void* dout, const void* out,
                             const void* x, void* dshortcut, float* ds, ChannelAffine x_bn);
// dx = dz·s[n, c] + dmean[n, c] / (H·W) (s null: 1, dmean null: 0).
Status launch_scale_backward(cudaStream_t stream, int sm, Precision p, const Dims& d, const void* dz, const float* s,
                             const float* dmean, void* dx);
// dst += src, count elements.
Status launch_add_into(cudaStream_t stream, int sm, Precision p, void* dst, const void* src, int64_t count);

// y (N, OUT) = b broadcast over the rows.
Status launch_bias_rows(cudaStream_t stream, int sm, const float* b, float* y, int64_t n, int64_t out);
// db[o] (+)= Σ_i dy[i, o], dy (N, OUT); rows summed in order.
Status launch_column_sums(cudaStream_t stream, const float* dy, int64_t n, int64_t out, float* db, bool accumulate);

}  // namespace sx::model::cuda
