// Error messages of the CUDA runtime, cuDNN and cuBLAS, in one form: "<call> failed: <what> (<name>, <code>)".
#include "model/cuda/cuda_check.h"

namespace sx::model::cuda {

std::string cuda_error(const std::string& call, cudaError_t error) {
  return call + " failed: " + cudaGetErrorString(error) + " (" + cudaGetErrorName(error) + ", " +
         std::to_string(int(error)) + ")";
}

std::string cudnn_error(const std::string& call, cudnnStatus_t status) {
  std::string msg = call + " failed: " + cudnnGetErrorString(status) + " (" + std::to_string(int(status)) + ")";
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof detail);  // cuDNN 9's reason, when it kept one
  if (detail[0] != '\0') msg += ": " + std::string(detail);
  return msg;
}

std::string cublas_error(const std::string& call, cublasStatus_t status) {
  return call + " failed: " + cublasGetStatusString(status) + " (" + cublasGetStatusName(status) + ", " +
         std::to_string(int(status)) + ")";
}

}  // namespace sx::model::cuda
