// CudaBackend's stateless ops: global average pool, 2-D ReLU/sigmoid, the SE residual merge and its
// gradients, add_into, softmax cross-entropy, top-k, SGD. Argument checks mirror the CPU backend's
// (model/cpu/kernels.cc) so both reject the same calls; the kernels are activation_kernels.cu and
// loss_kernels.cu.
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "model/cuda/activation_kernels.h"
#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/loss_kernels.h"

namespace sx::model::cuda {
namespace {

Status check_same(const char* op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  SX_TRY(check_nhwc(a, a.dims, (std::string(op) + " " + a_name).c_str()));
  if (a.dims == b.dims && a.layout == b.layout) return Status::ok();
  return Status::invalid_argument(std::string(op) + ": " + a_name + " is " + a.dims.to_string() + " " +
                                  layout_name(a.layout) + " but " + b_name + " is " + b.dims.to_string() + " " +
                                  layout_name(b.layout) + "; they must have the same dims and layout");
}

}  // namespace

// ---- global average pool ----------------------------------------------------------------------------

Status CudaBackend::global_avg_pool_forward(const Tensor& x, float* y) {
  if (x.dims.count() == 0) return Status::ok();
  SX_TRY(check_nhwc(x, x.dims, "global_avg_pool_forward x"));
  SX_CHECK_ARG(y != nullptr, "global_avg_pool_forward: null pointer");
  return launch_gap_forward(stream_, precision(), x.data, x.dims, y);
}

Status CudaBackend::global_avg_pool_backward(const float* dy, const Tensor& dx) {
  if (dx.dims.count() == 0) return Status::ok();
  SX_TRY(check_nhwc(dx, dx.dims, "global_avg_pool_backward dx"));
  SX_CHECK_ARG(dy != nullptr, "global_avg_pool_backward: null pointer");
  return launch_gap_backward(stream_, sm_count_, precision(), dy, dx.dims, dx.data);
}

// ---- 2-D element-wise ---------------------------------------------------------------------------------

Status CudaBackend::relu_forward(const float* x, float* y, int64_t count) {
  return launch_unary_forward(stream_, sm_count_, Unary::kRelu, x, y, count);
}
Status CudaBackend::relu_backward(const float* y, const float* dy, float* dx, int64_t count) {
  return launch_unary_backward(stream_, sm_count_, Unary::kRelu, y, dy, dx, count);
}
Status CudaBackend::sigmoid_forward(const float* x, float* y, int64_t count) {
  return launch_unary_forward(stream_, sm_count_, Unary::kSigmoid, x, y, count);
}
Status CudaBackend::sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) {
  return launch_unary_backward(stream_, sm_count_, Unary::kSigmoid, y, dy, dx, count);
}

// ---- residual merge with SE scale ---------------------------------------------------------------------

Status CudaBackend::scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out,
                                           ChannelAffine x_bn, ChannelAffine shortcut_bn) {
  SX_TRY(check_same("scale_add_relu_forward", x, "x", shortcut, "shortcut"));
  SX_TRY(check_same("scale_add_relu_forward", x, "x", out, "out"));
  if (x.dims.count() == 0) return Status::ok();
  return launch_merge_forward(stream_, sm_count_, precision(), x.dims, x.data, s, shortcut.data, out.data, x_bn,
                              shortcut_bn);
}

Status CudaBackend::scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                            const Tensor& dshortcut, float* ds, ChannelAffine x_bn) {
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", out, "out"));
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", dshortcut, "dshortcut"));
  if (s != nullptr) {
    SX_TRY(check_same("scale_add_relu_backward", dout, "dout", x, "x"));
    SX_CHECK_ARG(ds != nullptr, "scale_add_relu_backward: ds is null but s is not (the SE scale needs its gradient)");
  }
  if (dout.dims.count() == 0) return Status::ok();
  return launch_merge_backward(stream_, precision(), dout.dims, dout.data, out.data, s != nullptr ? x.data : nullptr,
                               dshortcut.data, s != nullptr ? ds : nullptr, x_bn);
}

Status CudaBackend::scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) {
  SX_TRY(check_same("scale_backward", dz, "dz", dx, "dx"));
  if (dz.dims.count() == 0) return Status::ok();
  return launch_scale_backward(stream_, sm_count_, precision(), dz.dims, dz.data, s, dmean, dx.data);
}

Status CudaBackend::add_into(const Tensor& dst, const Tensor& src) {
  SX_TRY(check_same("add_into", dst, "dst", src, "src"));
  return launch_add_into(stream_, sm_count_, precision(), dst.data, src.data, dst.dims.count());
}

// ---- loss and metrics ---------------------------------------------------------------------------------

namespace {
// The host part of a bad-label report: the label value of the first bad sample.
Status bad_label(CudaBackend& be, const char* op, const int32_t* labels, int32_t row, int k) {
  int32_t label = 0;
  SX_TRY(be.copy_to_host(&label, labels + row, sizeof label));
  return Status::invalid_argument(std::string(op) + ": label " + std::to_string(label) + " of sample " +
                                  std::to_string(row) + " is outside [0, " + std::to_string(k) + ")");
}
}  // namespace

Status CudaBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets,
                                          int n, int k, float label_smoothing, float grad_scale, float* dlogits,
                                          float* host_loss) {
  SX_CHECK_ARG(n > 0 && k > 0, "softmax_cross_entropy: empty batch or no classes");
  SX_CHECK_ARG(logits != nullptr && dlogits != nullptr && host_loss != nullptr, "softmax_cross_entropy: null pointer");
  SX_CHECK_ARG(soft_targets != nullptr || labels != nullptr, "softmax_cross_entropy: neither labels nor soft targets");
  SX_CHECK_ARG(label_smoothing >= 0.f && label_smoothing <= 1.f,
               "softmax_cross_entropy: label_smoothing not in [0, 1]");
  // Device results in small(): the mean loss (double) then the first bad row; row losses in kReduce.
  auto* mean_loss = static_cast<double*>(small());
  auto* bad_row = reinterpret_cast<int32_t*>(mean_loss + 1);
  SX_ASSIGN_OR_RETURN(void* rows, scratch(kReduce, size_t(n) * sizeof(double)));
  const int32_t none = INT32_MAX;
  SX_CUDA(cudaMemcpyAsync(bad_row, &none, sizeof none, cudaMemcpyHostToDevice, stream_));
  SX_TRY(launch_softmax_cross_entropy(stream_, logits, labels, soft_targets, n, k, label_smoothing, grad_scale, dlogits,
                                      static_cast<double*>(rows), mean_loss, bad_row));
  SX_ASSIGN_OR_RETURN(void* h, host_result(sizeof(double) + sizeof(int32_t)));
  SX_CUDA(cudaMemcpyAsync(h, mean_loss, sizeof(double) + sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  SX_CUDA(cudaStreamSynchronize(stream_));
  double loss = 0.0;
  int32_t bad = 0;
  std::memcpy(&loss, h, sizeof loss);
  std::memcpy(&bad, static_cast<char*>(h) + sizeof(double), sizeof bad);
  if (bad != none) return bad_label(*this, "softmax_cross_entropy", labels, bad, k);
  *host_loss = float(loss);
  return Status::ok();
}

Status CudaBackend::count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                                int64_t* host_top5) {
  SX_CHECK_ARG(n >= 0 && k > 0, "count_top_k: bad shape");
  SX_CHECK_ARG(host_top1 != nullptr && host_top5 != nullptr, "count_top_k: null counter");
  if (n == 0) return Status::ok();
  SX_CHECK_ARG(logits != nullptr && labels != nullptr, "count_top_k: null pointer");
  auto* hits = static_cast<unsigned long long*>(small());
  auto* bad_row = reinterpret_cast<int32_t*>(hits + 2);
  struct Counts {
    unsigned long long hits[2];
    int32_t bad;
  };
  const Counts init = {{0, 0}, INT32_MAX};
  SX_CUDA(cudaMemcpyAsync(hits, &init, sizeof init, cudaMemcpyHostToDevice, stream_));
  SX_TRY(launch_count_top_k(stream_, logits, labels, n, k, hits, bad_row));
  SX_ASSIGN_OR_RETURN(void* h, host_result(sizeof init));
  SX_CUDA(cudaMemcpyAsync(h, hits, sizeof init, cudaMemcpyDeviceToHost, stream_));
  SX_CUDA(cudaStreamSynchronize(stream_));
  Counts got;
  std::memcpy(&got, h, sizeof got);
  if (got.bad != INT32_MAX) return bad_label(*this, "count_top_k", labels, got.bad, k);
  *host_top1 += int64_t(got.hits[0]);
  *host_top5 += int64_t(got.hits[1]);
  return Status::ok();
}

// ---- optimizer ----------------------------------------------------------------------------------------

Status CudaBackend::sgd_step(float* params, const float* grads, float* momentum_buf,
                             std::span<const SgdSegment> segments, const SgdHyper& hyper) {
  std::vector<SgdSegment> sorted(segments.begin(), segments.end());
  std::sort(sorted.begin(), sorted.end(), [](const SgdSegment& a, const SgdSegment& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    SX_CHECK_ARG(sorted[i].offset >= 0 && sorted[i].count >= 0, "sgd_step: segment with negative offset or count");
    SX_CHECK_ARG(i == 0 || sorted[i - 1].offset + sorted[i - 1].count <= sorted[i].offset,
                 "sgd_step: overlapping segments");
  }
  SX_CHECK_ARG(params != nullptr && grads != nullptr && momentum_buf != nullptr, "sgd_step: null buffer");
  if (sorted.empty()) return Status::ok();
  const int segs = int(sorted.size());
  const bool same = sorted.size() == sgd_segments_.size() &&
                    std::equal(sorted.begin(), sorted.end(), sgd_segments_.begin(), [](const SgdSegment& a, const SgdSegment& b) {
                      return a.offset == b.offset && a.count == b.count && a.weight_decay == b.weight_decay;
                    });
  // Table: start (S + 1) int64, offset (S) int64, weight decay (S) float.
  const size_t bytes = size_t(2 * segs + 1) * sizeof(int64_t) + size_t(segs) * sizeof(float);
  if (!same) {
    std::vector<char> host(bytes);
    auto* start = reinterpret_cast<int64_t*>(host.data());
    int64_t* offset = start + segs + 1;
    auto* wd = reinterpret_cast<float*>(offset + segs);
    start[0] = 0;
    for (int s = 0; s < segs; ++s) {
      start[s + 1] = start[s] + sorted[size_t(s)].count;
      offset[s] = sorted[size_t(s)].offset;
      wd[s] = sorted[size_t(s)].weight_decay;
    }
    sgd_table_ = allocate(bytes);
    if (!sgd_table_) return Status::unavailable("out of device memory for the SGD segment table");
    SX_CUDA(cudaMemcpyAsync(sgd_table_.get(), host.data(), bytes, cudaMemcpyHostToDevice, stream_));
    SX_CUDA(cudaStreamSynchronize(stream_));  // `host` goes out of scope
    sgd_segments_ = sorted;
  }
  auto* start = static_cast<const int64_t*>(sgd_table_.get());
  const int64_t* offset = start + segs + 1;
  auto* wd = reinterpret_cast<const float*>(offset + segs);
  int64_t total = 0;
  for (const SgdSegment& seg : sorted) total += seg.count;
  return launch_sgd(stream_, sm_count_, params, grads, momentum_buf, start, offset, wd, segs, total, hyper.lr,
                    hyper.momentum, hyper.grad_scale, hyper.nesterov);
}

}  // namespace sx::model::cuda
