// defines: the fixture of the backend conformance suites (tests/test_backend_conformance*.cc): one
// instance per backend — the CPU backend always, the CUDA backend in fp32, bf16 and fp16 — with the
// tolerance of each precision, and helpers that move host vectors in and out of backend memory.
// CUDA instances skip, naming the failed call, where no GPU is usable (every machine without one).
//
// The references are naive double-precision loops in the suites; the CPU backend meets them at fp32
// tolerance, so on a GPU the same suite holds the CUDA backend to what the CPU reference is held to.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/cuda/cuda_backend.h"
#include "model/precision.h"
#include "tests/backend_test_util.h"

namespace sx::model::testing {

struct BackendCase {
  const char* name;  // test-name suffix: cpu, cuda_fp32, ...
  bool cuda;
  Precision precision;
};

inline std::string case_name(const ::testing::TestParamInfo<BackendCase>& info) { return info.param.name; }

inline std::vector<BackendCase> all_backend_cases() {
  return {{"cpu", false, Precision::kFp32},
          {"cuda_fp32", true, Precision::kFp32},
          {"cuda_bf16", true, Precision::kBf16},
          {"cuda_fp16", true, Precision::kFp16}};
}

class BackendConformance : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    const BackendCase& c = GetParam();
    if (!c.cuda) {
      be_ = make_cpu_backend({.threads = 2});
      return;
    }
    StatusOr<std::unique_ptr<Backend>> made = make_cuda_backend({.device = 0, .precision = c.precision});
    if (!made.is_ok()) GTEST_SKIP() << "no CUDA backend (" << precision_name(c.precision) << "): " << made.status().message();
    be_ = std::move(made).value();
  }

  Backend& be() { return *be_; }
  Precision precision() const { return GetParam().precision; }

  // Relative tolerance (of the reference's largest magnitude, expect_close) of an op whose inputs and
  // outputs are activations in the backend's storage type: one rounding of bf16 is 2^-9, of fp16 2^-12;
  // a few of them plus accumulation order. `fp32` is the op's own fp32 tolerance (accumulation order,
  // TF32 convolutions on a GPU).
  double tol(double fp32) const {
    switch (precision()) {
      case Precision::kBf16: return std::max(fp32, 3e-2);
      case Precision::kFp16: return std::max(fp32, 5e-3);
      case Precision::kFp32: break;
    }
    return fp32;
  }

  // Convolutions and GEMMs: fp32 accumulation on the CPU; on a GPU fp32 convolutions may run on TF32
  // tensor cores (10-bit mantissa inputs, PyTorch's default too), so a device's fp32 gets 3e-3.
  double conv_tol() const { return tol(be_->is_device() ? 3e-3 : 1e-4); }

  // ---- backend memory ----
  struct Floats {
    Buffer buf;
    float* data = nullptr;
    size_t n = 0;
  };
  Floats floats(const std::vector<float>& host) {
    Floats f;
    f.n = host.size();
    f.buf = be().allocate(std::max<size_t>(1, f.n) * sizeof(float));
    f.data = static_cast<float*>(f.buf.get());
    EXPECT_TRUE(be().copy_to_device(f.data, host.data(), f.n * sizeof(float)).is_ok());
    return f;
  }
  Floats zeros(size_t n) { return floats(std::vector<float>(n, 0.f)); }
  std::vector<float> host(const Floats& f) {
    std::vector<float> h(f.n);
    EXPECT_TRUE(be().copy_to_host(h.data(), f.data, f.n * sizeof(float)).is_ok());
    return h;
  }
  // An activation tensor in the backend's layout for its channel count, holding host_nchw.
  DevTensor tensor(const Dims& d, const std::vector<float>& host_nchw) {
    DevTensor t = make_tensor(be(), d, be().activation_layout(d.c));
    EXPECT_TRUE(be().upload_nchw(host_nchw.data(), t.t).is_ok());
    return t;
  }
  DevTensor empty_tensor(const Dims& d) { return make_tensor(be(), d, be().activation_layout(d.c)); }
  // What an activation holds after a round trip through the backend's storage type: the reference
  // must see the same inputs the backend computes with.
  std::vector<float> stored(const Dims& d, const std::vector<float>& host_nchw) {
    DevTensor t = tensor(d, host_nchw);
    return download(be(), t.t);
  }

  std::unique_ptr<Backend> be_;
};

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

}  // namespace sx::model::testing
