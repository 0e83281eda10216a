// CudaBackend: device, stream and library handles, memory, upload/download, scratch, op factories.
#include <cstring>
#include <string>

#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/layout_kernels.h"

namespace sx::model::cuda {

StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::create(const CudaBackendOptions& options) {
  std::unique_ptr<CudaBackend> be(new CudaBackend(options));
  SX_TRY(be->init().with_context("CUDA device " + std::to_string(options.device)));
  return be;
}

Status CudaBackend::init() {
  SX_CUDA(cudaSetDevice(options_.device));
  SX_CUDA(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, options_.device));
  int major = 0;
  SX_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, options_.device));
  if (options_.precision == Precision::kBf16 && major < 8)
    return Status::invalid_argument("bf16 needs compute capability 8.0 or newer (A100, H100); this device is " +
                                    std::to_string(major) + ".x; HINT: use numerics.precision fp16 or fp32");
  SX_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SX_CUDNN(cudnnCreate(&cudnn_));
  SX_CUDNN(cudnnSetStream(cudnn_, stream_));
  SX_CUBLAS(cublasCreate(&cublas_));
  SX_CUBLAS(cublasSetStream(cublas_, stream_));
  // fp32 GEMMs (the SE branch and the classifier) stay fp32: they are small, and their results feed
  // the loss directly.
  SX_CUBLAS(cublasSetMathMode(cublas_, CUBLAS_PEDANTIC_MATH));
  small_ = allocate(kSmallBytes);
  if (!small_) return Status::unavailable("cudaMalloc of " + std::to_string(kSmallBytes) + " bytes failed");
  return Status::ok();
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (Buffer& b : scratch_) b.reset();
  small_.reset();
  if (host_result_ != nullptr) cudaFreeHost(host_result_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (cudnn_ != nullptr) cudnnDestroy(cudnn_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const {
  return "cuda-cudnn (device " + std::to_string(options_.device) + ", " + precision_name(options_.precision) + ")";
}

Status CudaBackend::check_launch(const char* what) const { return launch_status(what); }

Status CudaBackend::synchronize() {
  SX_CUDA(cudaStreamSynchronize(stream_));
  return Status::ok();
}

// ---- memory ---------------------------------------------------------------------------------------

Buffer CudaBackend::allocate(size_t bytes) {
  void* p = nullptr;
  const size_t rounded = (bytes + 255) / 256 * 256;  // 256-byte alignment, as cudaMalloc gives, for every size
  if (cudaMalloc(&p, rounded == 0 ? 256 : rounded) != cudaSuccess) {
    cudaGetLastError();  // the failure is reported by the null buffer; keep the error state clean
    return Buffer(nullptr, [](void*) {});
  }
  // Zero-filled in stream order, before any op that is queued after this call reads it.
  if (cudaMemsetAsync(p, 0, rounded == 0 ? 256 : rounded, stream_) != cudaSuccess) {
    cudaFree(p);
    return Buffer(nullptr, [](void*) {});
  }
  return Buffer(p, [](void* q) { cudaFree(q); });
}

Status CudaBackend::copy_to_device(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  SX_CHECK_ARG(dst != nullptr && host_src != nullptr, "copy_to_device: null pointer");
  SX_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyDefault, stream_));
  return Status::ok();
}

Status CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::ok();
  SX_CHECK_ARG(host_dst != nullptr && src != nullptr, "copy_to_host: null pointer");
  SX_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDefault, stream_));
  SX_CUDA(cudaStreamSynchronize(stream_));
  return Status::ok();
}

Status CudaBackend::fill(float* dst, float value, int64_t count) {
  SX_CHECK_ARG(count >= 0 && (count == 0 || dst != nullptr), "fill: null destination");
  return launch_fill(stream_, sm_count_, dst, value, count);
}

StatusOr<void*> CudaBackend::scratch(ScratchSlot slot, size_t bytes) {
  if (bytes > scratch_bytes_[slot]) {
    SX_CUDA(cudaStreamSynchronize(stream_));  // queued work may still read the old buffer
    scratch_[slot].reset();
    scratch_bytes_[slot] = 0;
    scratch_[slot] = allocate(bytes);
    if (!scratch_[slot]) return Status::unavailable("cudaMalloc of " + std::to_string(bytes) + " bytes of scratch failed");
    scratch_bytes_[slot] = bytes;
  }
  return scratch_[slot].get();
}

StatusOr<void*> CudaBackend::host_result(size_t bytes) {
  if (bytes > host_result_bytes_) {
    SX_CUDA(cudaStreamSynchronize(stream_));
    if (host_result_ != nullptr) SX_CUDA(cudaFreeHost(host_result_));
    host_result_ = nullptr;
    host_result_bytes_ = 0;
    SX_CUDA(cudaMallocHost(&host_result_, bytes));
    host_result_bytes_ = bytes;
  }
  return host_result_;
}

Status CudaBackend::all_finite(const float* data, int64_t count, bool* host_all_finite) {
  SX_CHECK_ARG(host_all_finite != nullptr, "all_finite: null result");
  SX_CHECK_ARG(count >= 0 && (count == 0 || data != nullptr), "all_finite: null data");
  int* flag = static_cast<int*>(small());
  SX_CUDA(cudaMemsetAsync(flag, 0, sizeof(int), stream_));
  SX_TRY(launch_find_nonfinite(stream_, sm_count_, data, count, flag));
  SX_ASSIGN_OR_RETURN(void* h, host_result(sizeof(int)));
  SX_CUDA(cudaMemcpyAsync(h, flag, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  SX_CUDA(cudaStreamSynchronize(stream_));
  *host_all_finite = *static_cast<int*>(h) == 0;
  return Status::ok();
}

// ---- layouts ----------------------------------------------------------------------------------------

Status check_nhwc(const Tensor& t, const Dims& dims, const char* what) {
  if (t.dims == dims && t.layout == Layout::kNHWC && (t.data != nullptr || dims.count() == 0)) return Status::ok();
  return Status::invalid_argument(std::string(what) + ": expected " + dims.to_string() + " nhwc, got " +
                                  t.dims.to_string() + " " + layout_name(t.layout) +
                                  (t.data == nullptr ? " without memory" : ""));
}

namespace {
bool is_device_pointer(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}
}  // namespace

Status CudaBackend::upload_nchw(const float* host_nchw, const Tensor& dst) {
  SX_TRY(check_nhwc(dst, dst.dims, "upload_nchw dst"));
  const int64_t count = dst.dims.count();
  if (count == 0) return Status::ok();
  SX_CHECK_ARG(host_nchw != nullptr, "upload_nchw: null source");
  const float* src = host_nchw;
  if (!is_device_pointer(host_nchw)) {  // host memory: through the staging buffer
    SX_ASSIGN_OR_RETURN(void* staging, scratch(kStaging, size_t(count) * sizeof(float)));
    SX_CUDA(cudaMemcpyAsync(staging, host_nchw, size_t(count) * sizeof(float), cudaMemcpyHostToDevice, stream_));
    src = static_cast<const float*>(staging);
  }
  count_reorder();
  return launch_nchw_to_nhwc(stream_, sm_count_, src, dst.data, precision(), dst.dims);
}

Status CudaBackend::download_nchw(const Tensor& src, float* host_nchw) {
  SX_TRY(check_nhwc(src, src.dims, "download_nchw src"));
  const int64_t count = src.dims.count();
  if (count == 0) return Status::ok();
  SX_CHECK_ARG(host_nchw != nullptr, "download_nchw: null destination");
  SX_ASSIGN_OR_RETURN(void* staging, scratch(kStaging, size_t(count) * sizeof(float)));
  count_reorder();
  SX_TRY(launch_nhwc_to_nchw(stream_, sm_count_, src.data, precision(), static_cast<float*>(staging), src.dims));
  SX_CUDA(cudaMemcpyAsync(host_nchw, staging, size_t(count) * sizeof(float), cudaMemcpyDefault, stream_));
  SX_CUDA(cudaStreamSynchronize(stream_));
  return Status::ok();
}

// ---- op factories: one file per op kind ------------------------------------------------------------

StatusOr<std::unique_ptr<ConvOp>> CudaBackend::make_conv(const ConvDesc& desc) { return make_cuda_conv(*this, desc); }
StatusOr<std::unique_ptr<BatchNormOp>> CudaBackend::make_batch_norm(const BatchNormDesc& desc) {
  return make_cuda_batch_norm(*this, desc);
}
StatusOr<std::unique_ptr<PoolOp>> CudaBackend::make_pool(const PoolDesc& desc) { return make_cuda_pool(*this, desc); }
StatusOr<std::unique_ptr<LinearOp>> CudaBackend::make_linear(const LinearDesc& desc) {
  return make_cuda_linear(*this, desc);
}

StatusOr<std::unique_ptr<Backend>> make_device_backend(const CudaBackendOptions& options) {
  SX_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> be, CudaBackend::create(options));
  return std::unique_ptr<Backend>(std::move(be));
}

}  // namespace sx::model::cuda
