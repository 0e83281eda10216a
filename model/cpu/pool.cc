// PoolOp on oneDNN pooling: max (argmax workspace kept for backward) and average excluding
// padding. PyTorch's output size (incl. ceil_mode) is given to oneDNN as extra right padding.
// N batch, C channels, H, W input, OH, OW output.
#include <algorithm>
#include <string>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/dnnl_util.h"

namespace sx::model::cpu {
namespace {

using dnnl::memory;

// PyTorch's pooling output size; in ceil mode the last window must start inside the input or
// the left padding.
int pooled_size(int in, int k, int s, int p, bool ceil_mode) {
  const int span = in + 2 * p - k;
  int out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

class CpuPoolOp final : public PoolOp {
 public:
  CpuPoolOp(CpuBackend& be, const PoolDesc& d) : be_(be), d_(d) {}

  Status init() {
    const int oh = pooled_size(d_.in.h, d_.kernel, d_.stride, d_.pad, d_.ceil_mode);
    const int ow = pooled_size(d_.in.w, d_.kernel, d_.stride, d_.pad, d_.ceil_mode);
    out_ = Dims{d_.in.n, d_.in.c, oh, ow};
    // Right padding that makes oneDNN's floor formula give PyTorch's size.
    const int pad_b = std::max(d_.pad, (oh - 1) * d_.stride + d_.kernel - d_.in.h - d_.pad);
    const int pad_r = std::max(d_.pad, (ow - 1) * d_.stride + d_.kernel - d_.in.w - d_.pad);
    auto& eng = be_.engine();
    return dnnl_call("planning pool", [&] {
      using Fwd = dnnl::pooling_forward;
      using Bwd = dnnl::pooling_backward;
      const auto alg = d_.kind == PoolKind::kMax ? dnnl::algorithm::pooling_max
                                                 : dnnl::algorithm::pooling_avg_exclude_padding;
      const memory::desc x_md = tensor_md(d_.in, d_.in_layout), y_md = tensor_md(out_, d_.in_layout);
      const memory::dims strides = {d_.stride, d_.stride}, kernel = {d_.kernel, d_.kernel};
      const memory::dims pad_l = {d_.pad, d_.pad}, pad_rb = {pad_b, pad_r};
      fwd_pd_ = Fwd::primitive_desc(
          Fwd::desc(dnnl::prop_kind::forward_training, alg, x_md, y_md, strides, kernel, pad_l, pad_rb), eng);
      bwd_pd_ = Bwd::primitive_desc(Bwd::desc(alg, x_md, y_md, strides, kernel, pad_l, pad_rb), eng, fwd_pd_);
      fwd_ = Fwd(fwd_pd_);
      bwd_ = Bwd(bwd_pd_);
      x_ = handle_memory(x_md, eng);
      y_ = handle_memory(y_md, eng);
      if (d_.kind == PoolKind::kMax) workspace_ = OwnedMemory::make(be_, fwd_pd_.workspace_desc());
    });
  }

  Dims out_dims() const override { return out_; }
  Layout out_layout() const override { return d_.in_layout; }

  Status forward(const Tensor& x, const Tensor& y) override {
    SX_TRY(check(x, d_.in, "pool forward x"));
    SX_TRY(check(y, out_, "pool forward y"));
    return dnnl_call("pool forward", [&] {
      x_.set_data_handle(x.data);
      y_.set_data_handle(y.data);
      if (d_.kind == PoolKind::kMax)
        fwd_.execute(be_.stream(), {{DNNL_ARG_SRC, x_}, {DNNL_ARG_DST, y_}, {DNNL_ARG_WORKSPACE, workspace_.mem}});
      else
        fwd_.execute(be_.stream(), {{DNNL_ARG_SRC, x_}, {DNNL_ARG_DST, y_}});
    });
  }

  Status backward(const Tensor& dy, const Tensor& dx) override {
    SX_TRY(check(dy, out_, "pool backward dy"));
    SX_TRY(check(dx, d_.in, "pool backward dx"));
    return dnnl_call("pool backward", [&] {
      y_.set_data_handle(dy.data);
      x_.set_data_handle(dx.data);
      if (d_.kind == PoolKind::kMax)
        bwd_.execute(be_.stream(),
                     {{DNNL_ARG_DIFF_DST, y_}, {DNNL_ARG_DIFF_SRC, x_}, {DNNL_ARG_WORKSPACE, workspace_.mem}});
      else
        bwd_.execute(be_.stream(), {{DNNL_ARG_DIFF_DST, y_}, {DNNL_ARG_DIFF_SRC, x_}});
    });
  }

 private:
  Status check(const Tensor& t, const Dims& dims, const char* what) const {
    if (t.dims == dims && t.layout == d_.in_layout && t.data != nullptr) return Status::ok();
    return Status::invalid_argument(std::string(what) + ": expected " + dims.to_string() + " " +
                                    layout_name(d_.in_layout) + ", got " + t.dims.to_string() + " " +
                                    layout_name(t.layout));
  }

  CpuBackend& be_;
  PoolDesc d_;
  Dims out_;  // (N, C, OH, OW)
  dnnl::pooling_forward::primitive_desc fwd_pd_;
  dnnl::pooling_backward::primitive_desc bwd_pd_;
  dnnl::pooling_forward fwd_;
  dnnl::pooling_backward bwd_;
  memory x_, y_;              // (N, C, H, W) / (N, C, OH, OW) in in_layout; reused for dx / dy
  OwnedMemory workspace_;     // max-pool argmax, forward -> backward
};

}  // namespace

StatusOr<std::unique_ptr<PoolOp>> make_cpu_pool(CpuBackend& backend, const PoolDesc& desc) {
  SX_CHECK_ARG(desc.in.count() > 0, "pool: empty input");
  SX_CHECK_ARG(desc.kernel > 0 && desc.stride > 0 && desc.pad >= 0, "pool: bad kernel/stride/pad");
  SX_CHECK_ARG(2 * desc.pad <= desc.kernel, "pool: pad must be at most half the kernel (PyTorch rule)");
  SX_CHECK_ARG(desc.in.h + 2 * desc.pad >= desc.kernel && desc.in.w + 2 * desc.pad >= desc.kernel,
               "pool: kernel larger than padded input");
  auto op = std::make_unique<CpuPoolOp>(backend, desc);
  SX_TRY(op->init().with_context("pool " + desc.in.to_string()));
  return std::unique_ptr<PoolOp>(std::move(op));
}

}  // namespace sx::model::cpu
