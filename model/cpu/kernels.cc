// CpuBackend's own kernels: global average pool, ReLU/sigmoid, the SE residual merge and its
// gradients, softmax cross-entropy, top-k counting and the fused SGD step. This file checks the
// arguments and calls the loops of the backend's instruction-set level (kernel_loops.cc, compiled
// once per level; isa.h); the loss and top-k are small and run here.
//
// Lanes past C in a padded last block are written as 0 whatever the inputs hold there (add_into
// aside: it adds the padding too, 0 + 0). The arithmetic itself is model/elementwise.h.
//
// In-place is allowed where it makes sense: out may be x or shortcut, dshortcut may be dout, dx may
// be dz, y may be x, dx may be dy, dlogits may be logits (each element is read before it is written).
//
// Determinism: no floating-point reduction crosses threads (each (n, c) sum is done by one thread,
// the batch loss is summed serially), so results do not depend on the thread count or timing.
#include <algorithm>
#include <cmath>
#include <vector>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/isa.h"
#include "model/cpu/kernels_isa.h"
#include "model/cpu/layout_view.h"
#include "model/elementwise.h"

namespace sx::model::cpu {
namespace {

bool same_shape(const Tensor& a, const Tensor& b) { return a.dims == b.dims && a.layout == b.layout; }

std::string shape_of(const Tensor& t) { return t.dims.to_string() + " " + layout_name(t.layout); }

Status check_same(const char* op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  if (same_shape(a, b)) return Status::ok();
  return Status::invalid_argument(std::string(op) + ": " + a_name + " is " + shape_of(a) + " but " + b_name + " is " +
                                  shape_of(b) + "; they must have the same dims and layout");
}

}  // namespace

// ---- global average pool ----------------------------------------------------------------------------

Status CpuBackend::global_avg_pool_forward(const Tensor& x, float* y) {
  if (x.dims.count() == 0) return Status::ok();
  SX_CHECK_ARG(x.data != nullptr && y != nullptr, "global_avg_pool_forward: null pointer");
  const LayoutView xv = LayoutView::of(x);
  SX_ISA_CALL(isa_, gap_forward)(xv, y);
  return Status::ok();
}

Status CpuBackend::global_avg_pool_backward(const float* dy, const Tensor& dx) {
  if (dx.dims.count() == 0) return Status::ok();
  SX_CHECK_ARG(dx.data != nullptr && dy != nullptr, "global_avg_pool_backward: null pointer");
  const LayoutView dxv = LayoutView::of(dx);
  SX_ISA_CALL(isa_, gap_backward)(dy, dxv);
  return Status::ok();
}

// ---- 2-D element-wise ---------------------------------------------------------------------------------

Status CpuBackend::relu_forward(const float* x, float* y, int64_t count) {
  SX_ISA_CALL(isa_, relu_forward)(x, y, count);
  return Status::ok();
}

Status CpuBackend::relu_backward(const float* y, const float* dy, float* dx, int64_t count) {
  SX_ISA_CALL(isa_, relu_backward)(y, dy, dx, count);
  return Status::ok();
}

Status CpuBackend::sigmoid_forward(const float* x, float* y, int64_t count) {
  SX_ISA_CALL(isa_, sigmoid_forward)(x, y, count);
  return Status::ok();
}

Status CpuBackend::sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) {
  SX_ISA_CALL(isa_, sigmoid_backward)(y, dy, dx, count);
  return Status::ok();
}

// ---- residual merge with SE scale ---------------------------------------------------------------------

Status CpuBackend::scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out,
                                          ChannelAffine x_bn, ChannelAffine shortcut_bn) {
  SX_TRY(check_same("scale_add_relu_forward", x, "x", shortcut, "shortcut"));
  SX_TRY(check_same("scale_add_relu_forward", x, "x", out, "out"));
  if (x.dims.count() == 0) return Status::ok();
  const LayoutView xv = LayoutView::of(x), scv = LayoutView::of(shortcut), ov = LayoutView::of(out);
  SX_ISA_CALL(isa_, scale_add_relu_forward)(xv, s, scv, ov, x_bn, shortcut_bn);
  return Status::ok();
}

Status CpuBackend::scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                           const Tensor& dshortcut, float* ds, ChannelAffine x_bn) {
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", out, "out"));
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", dshortcut, "dshortcut"));
  if (s != nullptr) {
    SX_TRY(check_same("scale_add_relu_backward", dout, "dout", x, "x"));
    SX_CHECK_ARG(ds != nullptr, "scale_add_relu_backward: ds is null but s is not (the SE scale needs its gradient)");
  }
  if (dout.dims.count() == 0) return Status::ok();
  const LayoutView gv = LayoutView::of(dout), ov = LayoutView::of(out), xv = LayoutView::of(x),
                   zv = LayoutView::of(dshortcut);
  float* ds_or_null = s != nullptr ? ds : nullptr;
  SX_ISA_CALL(isa_, scale_add_relu_backward)(gv, ov, xv, ds_or_null, zv, x_bn);
  return Status::ok();
}

Status CpuBackend::scale_add_relu_backward_sums(const Tensor& dout, const Tensor& out, const Tensor& x,
                                                ChannelAffine x_bn, const float* s, const Tensor& shortcut,
                                                ChannelAffine shortcut_bn, const Tensor& dshortcut, float* ds,
                                                const MergeSums& sums) {
  const char* what = "scale_add_relu_backward_sums";
  SX_TRY(check_same(what, dout, "dout", out, "out"));
  SX_TRY(check_same(what, dout, "dout", dshortcut, "dshortcut"));
  SX_TRY(check_same(what, dout, "dout", x, "x"));
  SX_CHECK_ARG(x_bn && sums.dz && sums.dz_x, "scale_add_relu_backward_sums: needs x_bn and the dz, dz_x sums");
  SX_CHECK_ARG(bool(shortcut_bn) == (sums.dz_shortcut != nullptr),
               "scale_add_relu_backward_sums: dz_shortcut is taken exactly when shortcut_bn is set");
  if (shortcut_bn) SX_TRY(check_same(what, dout, "dout", shortcut, "shortcut"));
  SX_CHECK_ARG(s == nullptr || ds != nullptr, "scale_add_relu_backward_sums: ds is null but s is not");
  if (dout.dims.count() == 0) return Status::ok();
  const LayoutView gv = LayoutView::of(dout), ov = LayoutView::of(out), xv = LayoutView::of(x),
                   sv = LayoutView::of(shortcut), zv = LayoutView::of(dshortcut);
  SX_ISA_CALL(isa_, scale_add_relu_backward_sums)(gv, ov, xv, x_bn.mean, sv, shortcut_bn.mean, zv, sums);
  if (s != nullptr) {  // ds = Σ dz·((x - m)·a + b) from the same sums
    const int c = dout.dims.c;
    for (int64_t i = 0; i < int64_t(dout.dims.n) * c; ++i)
      ds[i] = float(double(x_bn.scale[i % c]) * sums.dz_x[i] + double(x_bn.shift[i % c]) * sums.dz[i]);
  }
  return Status::ok();
}

Status CpuBackend::scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) {
  SX_TRY(check_same("scale_backward", dz, "dz", dx, "dx"));
  if (dz.dims.count() == 0) return Status::ok();
  const LayoutView zv = LayoutView::of(dz), xv = LayoutView::of(dx);
  SX_ISA_CALL(isa_, scale_backward)(zv, s, dmean, xv);
  return Status::ok();
}

Status CpuBackend::add_into(const Tensor& dst, const Tensor& src) {
  SX_TRY(check_same("add_into", dst, "dst", src, "src"));
  // Padding is 0 in both, so the flat sum keeps it 0 and needs no layout at all.
  SX_ISA_CALL(isa_, add_into)(dst.data, src.data, dst.padded_count());
  return Status::ok();
}

// ---- loss and metrics ---------------------------------------------------------------------------------

Status CpuBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets, int n,
                                         int k, float label_smoothing, float grad_scale, float* dlogits,
                                         float* host_loss) {
  SX_CHECK_ARG(n > 0 && k > 0, "softmax_cross_entropy: empty batch or no classes");
  SX_CHECK_ARG(logits != nullptr && dlogits != nullptr && host_loss != nullptr, "softmax_cross_entropy: null pointer");
  SX_CHECK_ARG(soft_targets != nullptr || labels != nullptr, "softmax_cross_entropy: neither labels nor soft targets");
  SX_CHECK_ARG(label_smoothing >= 0.f && label_smoothing <= 1.f,
               "softmax_cross_entropy: label_smoothing not in [0, 1]");
  if (soft_targets == nullptr) {
    for (int i = 0; i < n; ++i) {
      if (labels[i] < 0 || labels[i] >= k)
        return Status::invalid_argument("softmax_cross_entropy: label " + std::to_string(labels[i]) + " of sample " +
                                        std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
    }
  }
  // Soft targets (mixup, cutmix) are expected to sum to 1 per row, as dlogits = softmax - target assumes.
  const float scale = grad_scale / float(n);
  const float inv_k = 1.f / float(k);
  std::vector<double> row_loss(size_t(n), 0.0);
#pragma omp parallel for schedule(static) if (int64_t(n) * k >= kParallelMin)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    float* dz = dlogits + int64_t(i) * k;
    float mx = z[0];
    for (int c = 1; c < k; ++c) mx = std::max(mx, z[c]);
    double sum = 0.0;
    for (int c = 0; c < k; ++c) sum += std::exp(double(z[c]) - mx);
    const double lse = mx + std::log(sum);  // log Σ exp z, without overflow
    double loss = 0.0;
    for (int c = 0; c < k; ++c) {
      const float t = soft_targets ? soft_targets[int64_t(i) * k + c]
                                   : ew::smoothed_target(c == labels[i], label_smoothing, inv_k);
      const double zc = z[c];
      loss += t * (lse - zc);  // -t · log softmax
      dz[c] = ew::softmax_ce_grad(float(std::exp(zc - lse)), t, scale);
    }
    row_loss[size_t(i)] = loss;
  }
  double total = 0.0;
  for (double l : row_loss) total += l;  // serial: the same bits whatever the thread count
  *host_loss = float(total / n);
  return Status::ok();
}

// Rank of the label = classes with a higher logit + classes with an equal logit and a lower index
// (the order of a stable descending sort); top-k hit when rank < k. A NaN label logit is a miss.
Status CpuBackend::count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                               int64_t* host_top5) {
  SX_CHECK_ARG(n >= 0 && k > 0, "count_top_k: bad shape");
  SX_CHECK_ARG(host_top1 != nullptr && host_top5 != nullptr, "count_top_k: null counter");
  if (n == 0) return Status::ok();
  SX_CHECK_ARG(logits != nullptr && labels != nullptr, "count_top_k: null pointer");
  for (int i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= k)
      return Status::invalid_argument("count_top_k: label " + std::to_string(labels[i]) + " of sample " +
                                      std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
  }
  int64_t top1 = 0, top5 = 0;
#pragma omp parallel for schedule(static) reduction(+ : top1, top5) if (int64_t(n) * k >= kParallelMin)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    const int label = labels[i];
    const float zl = z[label];
    if (std::isnan(zl)) continue;
    int rank = 0;
    for (int c = 0; c < k; ++c) rank += (z[c] > zl) || (z[c] == zl && c < label);
    top1 += rank < 1;
    top5 += rank < 5;
  }
  *host_top1 += top1;
  *host_top5 += top5;
  return Status::ok();
}

// ---- optimizer ----------------------------------------------------------------------------------------

Status CpuBackend::sgd_step(float* params, const float* grads, float* momentum_buf,
                            std::span<const SgdSegment> segments, const SgdHyper& hyper) {
  // Segments run without a barrier between them, so they must not overlap.
  std::vector<SgdSegment> sorted(segments.begin(), segments.end());
  std::sort(sorted.begin(), sorted.end(), [](const SgdSegment& a, const SgdSegment& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    SX_CHECK_ARG(sorted[i].offset >= 0 && sorted[i].count >= 0, "sgd_step: segment with negative offset or count");
    SX_CHECK_ARG(i == 0 || sorted[i - 1].offset + sorted[i - 1].count <= sorted[i].offset,
                 "sgd_step: overlapping segments");
  }
  SX_CHECK_ARG(params != nullptr && grads != nullptr && momentum_buf != nullptr, "sgd_step: null buffer");
  SX_ISA_CALL(isa_, sgd_segments)(params, grads, momentum_buf, segments, hyper);
  return Status::ok();
}

}  // namespace sx::model::cpu
