// PoolOp on our kernels (pool_kernels.cu): max pooling keeps its argmax (one int per output element)
// from forward to backward; average pooling divides by the in-bounds part of each window.
// N batch, C channels, H, W input, OH, OW output.
#include <string>

#include "model/cuda/backend_impl.h"
#include "model/cuda/launch_math.h"
#include "model/cuda/pool_kernels.h"

namespace sx::model::cuda {
namespace {

class CudaPoolOp final : public PoolOp {
 public:
  CudaPoolOp(CudaBackend& be, const PoolDesc& d) : be_(be), d_(d) {}

  Status init() {
    g_.in = d_.in;
    g_.out = Dims{d_.in.n, d_.in.c, pooled_size(d_.in.h, d_.kernel, d_.stride, d_.pad, d_.ceil_mode),
                  pooled_size(d_.in.w, d_.kernel, d_.stride, d_.pad, d_.ceil_mode)};
    g_.kernel = d_.kernel, g_.stride = d_.stride, g_.pad = d_.pad;
    g_.max = d_.kind == PoolKind::kMax;
    if (g_.max) {
      argmax_ = be_.allocate(size_t(g_.out.count()) * sizeof(int32_t));
      if (!argmax_) return Status::unavailable("out of device memory for the max-pool argmax");
    }
    return Status::ok();
  }

  Dims out_dims() const override { return g_.out; }
  Layout out_layout() const override { return Layout::kNHWC; }

  Status forward(const Tensor& x, const Tensor& y) override {
    SX_TRY(check_nhwc(x, g_.in, "pool forward x"));
    SX_TRY(check_nhwc(y, g_.out, "pool forward y"));
    return launch_pool_forward(be_.stream(), be_.sm_count(), be_.precision(), g_, x.data, y.data, argmax());
  }

  Status backward(const Tensor& dy, const Tensor& dx) override {
    SX_TRY(check_nhwc(dy, g_.out, "pool backward dy"));
    SX_TRY(check_nhwc(dx, g_.in, "pool backward dx"));
    return launch_pool_backward(be_.stream(), be_.sm_count(), be_.precision(), g_, dy.data, argmax(), dx.data);
  }

 private:
  int32_t* argmax() const { return static_cast<int32_t*>(argmax_.get()); }

  CudaBackend& be_;
  PoolDesc d_;
  PoolGeometry g_;
  Buffer argmax_;  // (N, OH, OW, C) ints, max pooling only
};

}  // namespace

StatusOr<std::unique_ptr<PoolOp>> make_cuda_pool(CudaBackend& backend, const PoolDesc& desc) {
  // The CPU backend's rules, so both accept the same descs.
  SX_CHECK_ARG(desc.in.count() > 0, "pool: empty input");
  SX_CHECK_ARG(desc.kernel > 0 && desc.stride > 0 && desc.pad >= 0, "pool: bad kernel/stride/pad");
  SX_CHECK_ARG(2 * desc.pad <= desc.kernel, "pool: pad must be at most half the kernel (PyTorch rule)");
  SX_CHECK_ARG(desc.in.h + 2 * desc.pad >= desc.kernel && desc.in.w + 2 * desc.pad >= desc.kernel,
               "pool: kernel larger than padded input");
  if (desc.in_layout != Layout::kNHWC)
    return Status::invalid_argument(std::string("pool: the CUDA backend keeps activations in nhwc, got ") +
                                    layout_name(desc.in_layout));
  auto op = std::make_unique<CudaPoolOp>(backend, desc);
  SX_TRY(op->init().with_context("pool " + desc.in.to_string()));
  return std::unique_ptr<PoolOp>(std::move(op));
}

}  // namespace sx::model::cuda
