// The CUDA backend's entry on whatever machine runs the tests: a build without CUDA says so; a CUDA
// build on a host without a usable GPU (every machine here: no driver) fails with one clear error
// that names the failed call and its code; with a GPU the backend is made. Never a crash or a hang.
// Also the precision names of the config (`numerics.precision`).
#include <gtest/gtest.h>

#include <string>

#include "model/cuda/cuda_backend.h"
#include "model/precision.h"

namespace sx::model {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CudaProbe, MakeCudaBackendSucceedsExactlyWhenADeviceIsUsable) {
  const StatusOr<int> count = cuda_device_count();
  const StatusOr<std::unique_ptr<Backend>> be = make_cuda_backend({});
  if (!cuda_built()) {
    ASSERT_FALSE(be.is_ok());
    EXPECT_TRUE(contains(be.status().message(), "this build has no CUDA backend")) << be.status().to_string();
    EXPECT_TRUE(contains(be.status().message(), "-DSX_CUDA=ON")) << be.status().to_string();
    EXPECT_FALSE(count.is_ok());
    return;
  }
  if (count.is_ok() && count.value() > 0) {
    ASSERT_TRUE(be.is_ok()) << be.status().to_string();
    EXPECT_TRUE(be.value()->is_device());
    EXPECT_NE(be.value()->native_stream(), nullptr);
    return;
  }
  // No usable GPU: the backend's error is the probe's, which names the call, the CUDA error and its code.
  ASSERT_FALSE(be.is_ok());
  EXPECT_EQ(be.status().code(), StatusCode::kUnavailable);
  const std::string msg = be.status().message();
  EXPECT_TRUE(contains(msg, "no usable GPU on this host; expected a CUDA device and driver")) << msg;
  if (!count.is_ok()) {
    EXPECT_EQ(msg, count.status().message());
    EXPECT_EQ(msg.rfind("cudaGetDeviceCount failed: ", 0), 0u) << msg;
    EXPECT_TRUE(contains(msg, "(cuda")) << "the CUDA error name: " << msg;  // e.g. (cudaErrorInsufficientDriver, 35)
  }
}

TEST(CudaProbe, NoDriverIsTheMeasuredErrorOfThisMachineClass) {
  // GPU.md: the machines here have the toolkit but no driver; the runtime answers with error 35.
  if (!cuda_built()) GTEST_SKIP() << "built without CUDA";
  const StatusOr<int> count = cuda_device_count();
  if (count.is_ok()) GTEST_SKIP() << count.value() << " CUDA device(s) visible: not a driverless host";
  if (!contains(count.status().message(), "cudaErrorInsufficientDriver"))
    GTEST_SKIP() << "another driver problem: " << count.status().message();
  EXPECT_EQ(count.status().message(),
            "cudaGetDeviceCount failed: CUDA driver version is insufficient for CUDA runtime version "
            "(cudaErrorInsufficientDriver, 35): no usable GPU on this host; expected a CUDA device and driver");
}

TEST(CudaProbe, RepeatedFailuresStayClean) {
  // The runtime's failed initialisation must not turn into a crash or a different error on a retry.
  const StatusOr<std::unique_ptr<Backend>> first = make_cuda_backend({});
  for (int i = 0; i < 3; ++i) {
    const StatusOr<std::unique_ptr<Backend>> again = make_cuda_backend({});
    EXPECT_EQ(again.is_ok(), first.is_ok());
    if (!first.is_ok()) {
      EXPECT_EQ(again.status().message(), first.status().message());
    }
  }
}

TEST(CudaProbe, BadDeviceIndexIsNamed) {
  const StatusOr<std::unique_ptr<Backend>> neg = make_cuda_backend({.device = -1});
  ASSERT_FALSE(neg.is_ok());
  if (cuda_built()) {
    EXPECT_TRUE(contains(neg.status().message(), "device index must be >= 0")) << neg.status().to_string();
  }
  const StatusOr<int> count = cuda_device_count();
  if (!count.is_ok()) return;  // no device: the probe's error comes first
  const StatusOr<std::unique_ptr<Backend>> past = make_cuda_backend({.device = count.value()});
  ASSERT_FALSE(past.is_ok());
  EXPECT_TRUE(contains(past.status().message(), "CUDA device " + std::to_string(count.value()) + " requested"))
      << past.status().to_string();
}

TEST(Precision, NamesRoundTrip) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16}) {
    const StatusOr<Precision> back = parse_precision(precision_name(p));
    ASSERT_TRUE(back.is_ok()) << precision_name(p);
    EXPECT_EQ(back.value(), p);
  }
  EXPECT_STREQ(precision_name(Precision::kBf16), "bf16");
}

TEST(Precision, UnknownNameListsTheAllowedOnes) {
  for (const char* bad : {"", "fp64", "FP16", "half", "bf16 "}) {
    const StatusOr<Precision> p = parse_precision(bad);
    ASSERT_FALSE(p.is_ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(p.status().message(), "precision '" + std::string(bad) + "' is not one of fp32, bf16, fp16");
  }
}

}  // namespace
}  // namespace sx::model
