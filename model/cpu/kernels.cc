// PLACEHOLDER until the kernels land (being written now).
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
Status CpuBackend::global_avg_pool_forward(const Tensor& x, float* y) { return Status::unimplemented("global_avg_pool_forward"); }
Status CpuBackend::global_avg_pool_backward(const float* dy, const Tensor& dx) { return Status::unimplemented("global_avg_pool_backward"); }
Status CpuBackend::relu_forward(const float* x, float* y, int64_t count) { return Status::unimplemented("relu_forward"); }
Status CpuBackend::relu_backward(const float* y, const float* dy, float* dx, int64_t count) { return Status::unimplemented("relu_backward"); }
Status CpuBackend::sigmoid_forward(const float* x, float* y, int64_t count) { return Status::unimplemented("sigmoid_forward"); }
Status CpuBackend::sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) { return Status::unimplemented("sigmoid_backward"); }
Status CpuBackend::scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out) { return Status::unimplemented("scale_add_relu_forward"); }
Status CpuBackend::scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                 const Tensor& dshortcut, float* ds) { return Status::unimplemented("scale_add_relu_backward"); }
Status CpuBackend::scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) { return Status::unimplemented("scale_backward"); }
Status CpuBackend::add_into(const Tensor& dst, const Tensor& src) { return Status::unimplemented("add_into"); }
Status CpuBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets, int n, int k,
                               float label_smoothing, float grad_scale, float* dlogits, float* host_loss) { return Status::unimplemented("softmax_cross_entropy"); }
Status CpuBackend::count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                     int64_t* host_top5) { return Status::unimplemented("count_top_k"); }
Status CpuBackend::sgd_step(float* params, const float* grads, float* momentum_buf, std::span<const SgdSegment> segments,
                  const SgdHyper& hyper) { return Status::unimplemented("sgd_step"); }
}  // namespace sx::model::cpu
