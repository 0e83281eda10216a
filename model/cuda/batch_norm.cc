// BatchNormOp on our kernels (bn_kernels.cu), in the CPU fused BN's conventions (model/backend.h,
// bn_math.h), split so the per-channel sums can be reduced across processes (SyncBN) between passes:
//   forward_train: sums Σ(x-k), Σ(x-k)² → [reducer on the host] → constants kernel → apply pass
//   backward:      sums Σdy', Σdy'·(x-μ) → dgamma/dbeta from the local sums → [reducer] → dx pass
// With a reducer the 2C + 1 doubles (sums and the count) go to pinned host memory, the stream is waited
// for, the reducer runs, and the reduced sums go back: the price of SyncBN, as on the CPU. Without one
// everything stays on the stream. The fused ReLU's mask is recomputed from x in backward.
// The optional members (deferred output, pooled output, scaled backward) keep the interface's defaults:
// the bottleneck then runs the separate ops (model/bottleneck.cc).
// N batch, C channels; rows = N·H·W.
#include <string>

#include "model/cuda/backend_impl.h"
#include "model/cuda/bn_kernels.h"
#include "model/cuda/cuda_check.h"

namespace sx::model::cuda {
namespace {

class CudaBatchNormOp final : public BatchNormOp {
 public:
  CudaBatchNormOp(CudaBackend& be, const BatchNormDesc& d) : be_(be), d_(d) {}

  Status init() {
    rows_ = int64_t(d_.dims.n) * d_.dims.h * d_.dims.w;
    const int64_t C = d_.dims.c;
    // Per-channel floats: mean, scale, shift (β of the last training forward), a, b, c; eval mean, scale.
    floats_ = be_.allocate(size_t(8 * C) * sizeof(float));
    // Doubles: local sums (2C), reduced sums (2C + 1).
    doubles_ = be_.allocate(size_t(4 * C + 1) * sizeof(double));
    if (!floats_ || !doubles_) return Status::unavailable("out of device memory for batch norm constants");
    float* f = static_cast<float*>(floats_.get());
    mean_ = f, scale_ = f + C, shift_ = f + 2 * C, ka_ = f + 3 * C, kb_ = f + 4 * C, kc_ = f + 5 * C;
    eval_mean_ = f + 6 * C, eval_scale_ = f + 7 * C;
    local_ = static_cast<double*>(doubles_.get());
    global_ = local_ + 2 * C;
    SX_TRY(be_.scratch(CudaBackend::kReduce, bn_partials_bytes(rows_, C, be_.sm_count())).status());
    return Status::ok();
  }

  Status forward_train(const Tensor& x, const float* gamma, const float* beta, const Tensor& y, float* save_mean,
                       float* save_var, float* running_mean, float* running_var, float momentum) override {
    SX_TRY(check_nhwc(x, d_.dims, "bn forward x"));
    SX_TRY(check_nhwc(y, d_.dims, "bn forward y"));
    const int64_t C = d_.dims.c;
    cudaStream_t s = be_.stream();
    SX_ASSIGN_OR_RETURN(void* partials, be_.scratch(CudaBackend::kReduce, bn_partials_bytes(rows_, C, be_.sm_count())));
    SX_TRY(launch_bn_stat_sums(s, be_.sm_count(), be_.precision(), x.data, rows_, C, running_mean,
                               static_cast<double*>(partials), local_));
    SX_ASSIGN_OR_RETURN(const double m, reduce(local_, "SyncBN statistics"));
    const double* sums = d_.reducer ? global_ : local_;
    SX_TRY(launch_bn_train_constants(s, C, sums, m, gamma, d_.eps, momentum, running_mean, running_var, save_mean,
                                     save_var, mean_, scale_));
    // β as of this forward: backward recomputes the ReLU mask with the forward's constants.
    SX_CUDA(cudaMemcpyAsync(shift_, beta, size_t(C) * sizeof(float), cudaMemcpyDeviceToDevice, s));
    return launch_bn_apply(s, be_.sm_count(), be_.precision(), x.data, rows_, C, mean_, scale_, shift_, d_.fuse_relu,
                           y.data);
  }

  Status forward_eval(const Tensor& x, const float* gamma, const float* beta, const float* running_mean,
                      const float* running_var, const Tensor& y) override {
    SX_TRY(check_nhwc(x, d_.dims, "bn forward_eval x"));
    SX_TRY(check_nhwc(y, d_.dims, "bn forward_eval y"));
    cudaStream_t s = be_.stream();
    // Own constants: the training forward's stay for a backward that may follow.
    SX_TRY(launch_bn_eval_constants(s, d_.dims.c, gamma, running_mean, running_var, d_.eps, eval_mean_, eval_scale_));
    return launch_bn_apply(s, be_.sm_count(), be_.precision(), x.data, rows_, d_.dims.c, eval_mean_, eval_scale_, beta,
                           d_.fuse_relu, y.data);
  }

  Status backward(const Tensor& x, const Tensor& /*y: the mask is recomputed from x*/, const Tensor& dy,
                  const float* gamma, const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                  float* dbeta, bool accumulate) override {
    SX_TRY(check_nhwc(x, d_.dims, "bn backward x"));
    SX_TRY(check_nhwc(dy, d_.dims, "bn backward dy"));
    SX_TRY(check_nhwc(dx, d_.dims, "bn backward dx"));
    const int64_t C = d_.dims.c;
    cudaStream_t s = be_.stream();
    SX_ASSIGN_OR_RETURN(void* partials, be_.scratch(CudaBackend::kReduce, bn_partials_bytes(rows_, C, be_.sm_count())));
    // save_mean is the forward's mean_, scale_ and shift_ its other constants: the forward's ReLU mask.
    SX_TRY(launch_bn_grad_sums(s, be_.sm_count(), be_.precision(), x.data, dy.data, rows_, C, save_mean, scale_, shift_,
                               d_.fuse_relu, static_cast<double*>(partials), local_));
    SX_ASSIGN_OR_RETURN(const double m, reduce(local_, "SyncBN gradient sums"));
    SX_TRY(launch_bn_grad_constants(s, C, local_, d_.reducer ? global_ : local_, m, gamma, save_var, d_.eps, dgamma,
                                    dbeta, accumulate, ka_, kb_, kc_));
    return launch_bn_grad_apply(s, be_.sm_count(), be_.precision(), x.data, dy.data, rows_, C, save_mean, scale_, shift_,
                                d_.fuse_relu, ka_, kb_, kc_, dx.data);
  }

 private:
  // The count of values per channel the sums cover: with a reducer, the sums (2C doubles at `sums`) and
  // this process's count go through it on the host and come back into global_; without, this process's.
  StatusOr<double> reduce(const double* sums, const char* what) {
    const double local_count = double(rows_);
    if (!d_.reducer) return local_count;
    const int64_t C = d_.dims.c;
    const size_t bytes = size_t(2 * C + 1) * sizeof(double);
    SX_ASSIGN_OR_RETURN(void* h, be_.host_result(bytes));
    double* host = static_cast<double*>(h);
    SX_CUDA(cudaMemcpyAsync(host, sums, size_t(2 * C) * sizeof(double), cudaMemcpyDeviceToHost, be_.stream()));
    SX_CUDA(cudaStreamSynchronize(be_.stream()));
    host[2 * C] = local_count;
    SX_TRY(d_.reducer(host, int(2 * C + 1)).with_context(what));
    const double m = host[2 * C];
    SX_CUDA(cudaMemcpyAsync(global_, host, size_t(2 * C) * sizeof(double), cudaMemcpyHostToDevice, be_.stream()));
    // The pinned buffer is reused by the next call: the copy must have read it before this returns.
    SX_CUDA(cudaStreamSynchronize(be_.stream()));
    return m;
  }

  CudaBackend& be_;
  BatchNormDesc d_;
  int64_t rows_ = 0;
  Buffer floats_, doubles_;
  // (C) each: the last training forward's mean, scale, shift (its ReLU mask); backward's dx constants;
  // forward_eval's mean and scale.
  float *mean_ = nullptr, *scale_ = nullptr, *shift_ = nullptr;
  float *ka_ = nullptr, *kb_ = nullptr, *kc_ = nullptr;
  float *eval_mean_ = nullptr, *eval_scale_ = nullptr;
  double* local_ = nullptr;   // (2C) this process's sums
  double* global_ = nullptr;  // (2C) the reducer's sums
};

}  // namespace

StatusOr<std::unique_ptr<BatchNormOp>> make_cuda_batch_norm(CudaBackend& backend, const BatchNormDesc& desc) {
  SX_CHECK_ARG(desc.dims.count() > 0, "batch norm: empty shape");
  if (desc.layout != Layout::kNHWC)
    return Status::invalid_argument(std::string("batch norm: the CUDA backend keeps activations in nhwc, got ") +
                                    layout_name(desc.layout));
  if (desc.impl == BatchNormImpl::kOneDnn)
    return Status::invalid_argument("batch norm: impl onednn exists only on the CPU backend (use auto or fused)");
  auto op = std::make_unique<CudaBatchNormOp>(backend, desc);
  SX_TRY(op->init());
  return std::unique_ptr<BatchNormOp>(std::move(op));
}

}  // namespace sx::model::cuda
