// defines: SX_CUDA, SX_CUDNN, SX_CUBLAS — checks that turn a failed CUDA runtime, cuDNN or cuBLAS
// call into an sx::Status naming the call, its error name and code, file and line — and the
// message builders they use (cuda_error(), ...), for code that words its own context.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "common/status.h"

namespace sx::model::cuda {

// "<call> failed: <description> (<error name>, <code>)".
std::string cuda_error(const std::string& call, cudaError_t error);
std::string cudnn_error(const std::string& call, cudnnStatus_t status);
std::string cublas_error(const std::string& call, cublasStatus_t status);

inline std::string source_location(const char* file, int line) {
  return std::string(" at ") + file + ":" + std::to_string(line);
}

// The error of the last kernel launch on this thread (bad configuration, no kernel image for the device).
inline Status launch_status(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return Status::ok();
  return Status::internal(cuda_error(std::string("launching kernel ") + kernel, e));
}

}  // namespace sx::model::cuda

// Returns early with Status::internal when the call fails.
#define SX_CUDA(expr)                                                                                  \
  do {                                                                                                 \
    const cudaError_t sx_cuda_error_ = (expr);                                                         \
    if (sx_cuda_error_ != cudaSuccess)                                                                 \
      return ::sx::Status::internal(::sx::model::cuda::cuda_error(#expr, sx_cuda_error_) +             \
                                    ::sx::model::cuda::source_location(__FILE__, __LINE__));           \
  } while (0)

#define SX_CUDNN(expr)                                                                                 \
  do {                                                                                                 \
    const cudnnStatus_t sx_cudnn_status_ = (expr);                                                     \
    if (sx_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                                      \
      return ::sx::Status::internal(::sx::model::cuda::cudnn_error(#expr, sx_cudnn_status_) +          \
                                    ::sx::model::cuda::source_location(__FILE__, __LINE__));           \
  } while (0)

#define SX_CUBLAS(expr)                                                                                \
  do {                                                                                                 \
    const cublasStatus_t sx_cublas_status_ = (expr);                                                   \
    if (sx_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                    \
      return ::sx::Status::internal(::sx::model::cuda::cublas_error(#expr, sx_cublas_status_) +        \
                                    ::sx::model::cuda::source_location(__FILE__, __LINE__));           \
  } while (0)
