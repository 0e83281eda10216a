// ConvOp on cuDNN: three plans (forward, backward-data, backward-filter) built once for the op's shape
// (cudnn_plan.h), sharing the backend's workspace. Weights live fp32 and plain (OC, C/G, KH, KW) in the
// flat buffer; each forward converts them into the storage type, channels-last (OC, KH, KW, C/G), the
// layout NHWC convolutions run on (the mixed-precision cast of the master weights, once per step:
// backward-data reuses it), and the filter gradient comes back the same way, added or written into dw.
// N batch, C, H, W input, OC output channels, G groups.
#include <string>

#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/cudnn_plan.h"
#include "model/cuda/layout_kernels.h"
#include "model/cuda/storage.h"

namespace sx::model::cuda {
namespace {

class CudaConvOp final : public ConvOp {
 public:
  CudaConvOp(CudaBackend& be, const ConvDesc& d) : be_(be), d_(d) {}

  Status init() {
    const int oh = (d_.in.h + 2 * d_.pad - d_.kh) / d_.stride + 1;
    const int ow = (d_.in.w + 2 * d_.pad - d_.kw) / d_.stride + 1;
    out_ = Dims{d_.in.n, d_.oc, oh, ow};
    shape_ = ConvShape{d_.in.n, d_.in.c, d_.in.h, d_.in.w, d_.oc, d_.kh, d_.kw, oh, ow, d_.stride, d_.pad, d_.groups};
    const cudnnDataType_t io = cudnn_type(be_.precision());
    int64_t ws = 0;
    for (auto [plan, dir] : {std::pair{&fwd_, ConvDirection::kForward}, std::pair{&bwd_data_, ConvDirection::kBackwardData},
                             std::pair{&bwd_filter_, ConvDirection::kBackwardFilter}}) {
      SX_ASSIGN_OR_RETURN(*plan, ConvPlan::build(be_.cudnn(), dir, shape_, io));
      ws = std::max(ws, plan->workspace_bytes());
    }
    workspace_bytes_ = size_t(ws);
    if (workspace_bytes_ > 0) SX_TRY(be_.scratch(CudaBackend::kWorkspace, workspace_bytes_).status());
    weight_count_ = int64_t(d_.oc) * (d_.in.c / d_.groups) * d_.kh * d_.kw;
    const size_t bytes = size_t(weight_count_) * be_.element_bytes();
    w_ = be_.allocate(bytes);
    dw_ = be_.allocate(bytes);
    if (!w_ || !dw_) return Status::unavailable("out of device memory for conv weights (" + std::to_string(bytes) + " bytes)");
    return Status::ok();
  }

  Dims out_dims() const override { return out_; }
  Layout out_layout() const override { return Layout::kNHWC; }

  Status forward(const Tensor& x, const float* w, const Tensor& y) override {
    SX_TRY(check_nhwc(x, d_.in, "conv forward x"));
    SX_TRY(check_nhwc(y, out_, "conv forward y"));
    SX_TRY(convert_weights(w));
    SX_ASSIGN_OR_RETURN(void* ws, workspace());
    return fwd_.execute(be_.cudnn(), x.data, w_.get(), y.data, ws);
  }

  Status backward_data(const Tensor& dy, const float* w, const Tensor& dx) override {
    SX_TRY(check_nhwc(dy, out_, "conv backward_data dy"));
    SX_TRY(check_nhwc(dx, d_.in, "conv backward_data dx"));
    if (w != converted_from_) SX_TRY(convert_weights(w));  // the contract: the same w as the last forward
    SX_ASSIGN_OR_RETURN(void* ws, workspace());
    return bwd_data_.execute(be_.cudnn(), dx.data, w_.get(), dy.data, ws);
  }

  Status backward_weights(const Tensor& x, const Tensor& dy, float* dw, bool accumulate) override {
    SX_TRY(check_nhwc(x, d_.in, "conv backward_weights x"));
    SX_TRY(check_nhwc(dy, out_, "conv backward_weights dy"));
    SX_CHECK_ARG(dw != nullptr, "conv backward_weights: null dw");
    SX_ASSIGN_OR_RETURN(void* ws, workspace());
    SX_TRY(bwd_filter_.execute(be_.cudnn(), x.data, dw_.get(), dy.data, ws));
    return launch_weights_from_krsc(be_.stream(), be_.sm_count(), dw_.get(), be_.precision(), dw, weight_count_,
                                    d_.in.c / d_.groups, int64_t(d_.kh) * d_.kw, accumulate);
  }

 private:
  Status convert_weights(const float* w) {
    SX_CHECK_ARG(w != nullptr, "conv: null weights");
    converted_from_ = w;
    return launch_weights_to_krsc(be_.stream(), be_.sm_count(), w, w_.get(), be_.precision(), weight_count_,
                                  d_.in.c / d_.groups, int64_t(d_.kh) * d_.kw);
  }
  StatusOr<void*> workspace() {
    if (workspace_bytes_ == 0) return static_cast<void*>(nullptr);
    return be_.scratch(CudaBackend::kWorkspace, workspace_bytes_);
  }

  CudaBackend& be_;
  ConvDesc d_;
  Dims out_;            // (N, OC, OH, OW)
  ConvShape shape_;
  ConvPlan fwd_, bwd_data_, bwd_filter_;
  size_t workspace_bytes_ = 0;
  int64_t weight_count_ = 0;
  Buffer w_, dw_;       // (OC, KH, KW, C/G) storage type: the converted weights, cuDNN's filter gradient
  const float* converted_from_ = nullptr;
};

}  // namespace

StatusOr<std::unique_ptr<ConvOp>> make_cuda_conv(CudaBackend& backend, const ConvDesc& d) {
  SX_CHECK_ARG(d.in.count() > 0 && d.oc > 0, "conv: empty shape");
  SX_CHECK_ARG(d.kh > 0 && d.kw > 0 && d.stride > 0 && d.pad >= 0, "conv: bad kernel/stride/pad");
  SX_CHECK_ARG(d.groups > 0 && d.in.c % d.groups == 0 && d.oc % d.groups == 0,
               "conv: channels not divisible by groups");
  SX_CHECK_ARG(d.in.h + 2 * d.pad >= d.kh && d.in.w + 2 * d.pad >= d.kw, "conv: kernel larger than padded input");
  if (d.in_layout != Layout::kNHWC)
    return Status::invalid_argument(std::string("conv: the CUDA backend keeps activations in nhwc, got ") +
                                    layout_name(d.in_layout));
  auto op = std::make_unique<CudaConvOp>(backend, d);
  SX_TRY(op->init());
  return std::unique_ptr<ConvOp>(std::move(op));
}

}  // namespace sx::model::cuda
