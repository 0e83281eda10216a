// LinearOp on oneDNN's sgemm (row-major): y (N, OUT) = x (N, IN) · w^T + b, with w (OUT, IN).
// sgemm over an inner_product primitive: no layouts to plan, no weight reorders, and gemm's beta
// gives the accumulate/overwrite rule of dW for free; fast for the tiny SE shapes and the classifier.
#include <string>

#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {
namespace {

Status gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
            int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t st = dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) return Status::internal("dnnl_sgemm failed with status " + std::to_string(int(st)));
  return Status::ok();
}

class CpuLinearOp final : public LinearOp {
 public:
  explicit CpuLinearOp(const LinearDesc& d) : d_(d) {}

  Status forward(const float* x, const float* w, const float* b, float* y) override {
    float beta = 0.f;
    if (d_.bias && b != nullptr) {  // y = b broadcast, then y += x · w^T
      for (int i = 0; i < d_.n; ++i)
        for (int o = 0; o < d_.out; ++o) y[int64_t(i) * d_.out + o] = b[o];
      beta = 1.f;
    }
    return gemm('N', 'T', d_.n, d_.out, d_.in, x, d_.in, w, d_.in, beta, y, d_.out);
  }

  Status backward_data(const float* dy, const float* w, float* dx) override {
    // dx (N, IN) = dy (N, OUT) · w (OUT, IN)
    return gemm('N', 'N', d_.n, d_.in, d_.out, dy, d_.out, w, d_.in, 0.f, dx, d_.in);
  }

  Status backward_weights(const float* x, const float* dy, float* dw, float* db, bool accumulate) override {
    // dw (OUT, IN) (+)= dy^T (OUT, N) · x (N, IN)
    SX_TRY(gemm('T', 'N', d_.out, d_.in, d_.n, dy, d_.out, x, d_.in, accumulate ? 1.f : 0.f, dw, d_.in));
    if (d_.bias && db != nullptr) {
      if (!accumulate)
        for (int o = 0; o < d_.out; ++o) db[o] = 0.f;
      for (int i = 0; i < d_.n; ++i)  // row by row: contiguous reads of dy
        for (int o = 0; o < d_.out; ++o) db[o] += dy[int64_t(i) * d_.out + o];
    }
    return Status::ok();
  }

 private:
  LinearDesc d_;
};

}  // namespace

StatusOr<std::unique_ptr<LinearOp>> make_cpu_linear(CpuBackend& /*backend*/, const LinearDesc& desc) {
  SX_CHECK_ARG(desc.n > 0 && desc.in > 0 && desc.out > 0, "linear: empty shape");
  return std::unique_ptr<LinearOp>(std::make_unique<CpuLinearOp>(desc));
}

}  // namespace sx::model::cpu
