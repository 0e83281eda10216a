// LinearOp on cuBLAS (fp32, pedantic math: the SE branch and the classifier are small and feed the loss):
// y (N, OUT) = x (N, IN) · w^T + b with w (OUT, IN), all row-major. cuBLAS is column-major, so each
// row-major matrix is its transpose there: y^T = w·x^T is gemm(T, N) of w (IN x OUT col-major) and x^T.
// gemm's beta gives the accumulate/overwrite rule of dw for free; db is a column sum in row order.
#include <string>

#include "model/cuda/activation_kernels.h"
#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_check.h"

namespace sx::model::cuda {
namespace {

class CudaLinearOp final : public LinearOp {
 public:
  CudaLinearOp(CudaBackend& be, const LinearDesc& d) : be_(be), d_(d) {}

  Status forward(const float* x, const float* w, const float* b, float* y) override {
    SX_CHECK_ARG(x != nullptr && w != nullptr && y != nullptr, "linear forward: null pointer");
    float beta = 0.f;
    if (d_.bias && b != nullptr) {  // y = b broadcast, then y += x · w^T
      SX_TRY(launch_bias_rows(be_.stream(), be_.sm_count(), b, y, d_.n, d_.out));
      beta = 1.f;
    }
    const float one = 1.f;
    SX_CUBLAS(cublasSgemm(be_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, d_.out, d_.n, d_.in, &one, w, d_.in, x, d_.in, &beta,
                          y, d_.out));
    return Status::ok();
  }

  Status backward_data(const float* dy, const float* w, float* dx) override {
    SX_CHECK_ARG(dy != nullptr && w != nullptr && dx != nullptr, "linear backward_data: null pointer");
    // dx (N, IN) = dy (N, OUT) · w (OUT, IN): dx^T = w^T·dy^T.
    const float one = 1.f, zero = 0.f;
    SX_CUBLAS(cublasSgemm(be_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, d_.in, d_.n, d_.out, &one, w, d_.in, dy, d_.out, &zero,
                          dx, d_.in));
    return Status::ok();
  }

  Status backward_weights(const float* x, const float* dy, float* dw, float* db, bool accumulate) override {
    SX_CHECK_ARG(x != nullptr && dy != nullptr && dw != nullptr, "linear backward_weights: null pointer");
    // dw (OUT, IN) (+)= dy^T (OUT, N) · x (N, IN): dw^T = x^T·dy.
    const float one = 1.f, beta = accumulate ? 1.f : 0.f;
    SX_CUBLAS(cublasSgemm(be_.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, d_.in, d_.out, d_.n, &one, x, d_.in, dy, d_.out, &beta,
                          dw, d_.in));
    if (d_.bias && db != nullptr) SX_TRY(launch_column_sums(be_.stream(), dy, d_.n, d_.out, db, accumulate));
    return Status::ok();
  }

 private:
  CudaBackend& be_;
  LinearDesc d_;
};

}  // namespace

StatusOr<std::unique_ptr<LinearOp>> make_cuda_linear(CudaBackend& backend, const LinearDesc& desc) {
  SX_CHECK_ARG(desc.n > 0 && desc.in > 0 && desc.out > 0, "linear: empty shape");
  return std::unique_ptr<LinearOp>(std::make_unique<CudaLinearOp>(backend, desc));
}

}  // namespace sx::model::cuda
