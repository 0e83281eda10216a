// Backend conformance, part 1: memory, layouts and the device/precision members every backend has
// (upload/download round trips, fill, all_finite, native_stream, precision). Parameterised over the
// backends of test_backend_conformance_util.h; CUDA instances skip without a usable GPU.
#include <cmath>
#include <limits>

#include "tests/test_backend_conformance_util.h"

namespace sx::model::testing {
namespace {

using Conformance = BackendConformance;

TEST_P(Conformance, ReportsItsPrecisionAndStream) {
  EXPECT_EQ(be().precision(), precision());
  EXPECT_EQ(be().native_stream() != nullptr, be().is_device());  // host backends run ops synchronously
}

TEST_P(Conformance, UploadDownloadRoundTripsThroughTheStorageType) {
  const Dims d{2, 19, 5, 3};  // odd sizes: no accidental alignment
  const std::vector<float> x = random_uniform(size_t(d.count()), 7, -4.f, 4.f);
  DevTensor t = tensor(d, x);
  const std::vector<float> back = download(be(), t.t);
  // One rounding to the storage type: relative 2^-8 (bf16), 2^-11 (fp16), exact for fp32.
  const double rel = precision() == Precision::kBf16 ? 1.0 / 256 : precision() == Precision::kFp16 ? 1.0 / 2048 : 0.0;
  for (size_t i = 0; i < x.size(); ++i) ASSERT_LE(std::abs(back[i] - x[i]), rel * std::abs(x[i])) << i;
  // And the stored values are a fixed point.
  DevTensor t2 = tensor(d, back);
  EXPECT_EQ(download(be(), t2.t), back);
}

TEST_P(Conformance, ActivationBytesHoldAnActivationInTheStorageType) {
  const Dims d{2, 64, 7, 5};
  const Layout l = be().activation_layout(d.c);
  const size_t bytes = be().activation_bytes(d, l);
  const Tensor probe{d, l, nullptr};
  EXPECT_LE(bytes, probe.bytes());
  EXPECT_EQ(bytes, size_t(probe.padded_count()) * (precision() == Precision::kFp32 ? 4 : 2));
  // A tensor in exactly that much memory round-trips (nothing is written past it).
  Buffer b = be().allocate(bytes + 256);
  ASSERT_NE(b.get(), nullptr);
  std::vector<float> guard(64, 0.f);
  ASSERT_TRUE(be().copy_to_device(static_cast<char*>(b.get()) + bytes, guard.data(), 256).is_ok());
  const Tensor t{d, l, static_cast<float*>(b.get())};
  const std::vector<float> x = random_uniform(size_t(d.count()), 17, -1.f, 1.f);
  ASSERT_TRUE(be().upload_nchw(x.data(), t).is_ok());
  const std::vector<float> back = download(be(), t);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(back[i], x[i], std::abs(x[i]) / 128) << i;
  std::vector<float> after(64, 1.f);
  ASSERT_TRUE(be().copy_to_host(after.data(), static_cast<char*>(b.get()) + bytes, 256).is_ok());
  EXPECT_EQ(after, guard);
}

TEST_P(Conformance, FillAndCopies) {
  Floats f = zeros(1000);
  ASSERT_TRUE(be().fill(f.data + 10, 2.5f, 900).is_ok());
  const std::vector<float> h = host(f);
  for (size_t i = 0; i < h.size(); ++i) ASSERT_EQ(h[i], i >= 10 && i < 910 ? 2.5f : 0.f) << i;
}

TEST_P(Conformance, AllocateIsZeroFilled) {
  Buffer b = be().allocate(4096 * sizeof(float));
  ASSERT_NE(b.get(), nullptr);
  std::vector<float> h(4096, 1.f);
  ASSERT_TRUE(be().copy_to_host(h.data(), b.get(), h.size() * sizeof(float)).is_ok());
  for (float v : h) ASSERT_EQ(v, 0.f);
}

TEST_P(Conformance, AllFiniteFindsEveryKindOfNonFiniteAnywhere) {
  const size_t n = (size_t(1) << 20) + 3;  // several blocks and a ragged end on a GPU
  std::vector<float> v = random_uniform(n, 3, -1e30f, 1e30f);
  Floats f = floats(v);
  bool ok = false;
  ASSERT_TRUE(be().all_finite(f.data, int64_t(n), &ok).is_ok());
  EXPECT_TRUE(ok);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t at : {size_t(0), n / 2, n - 1}) {
    for (float bad : {inf, -inf, nan}) {
      std::vector<float> w = v;
      w[at] = bad;
      Floats g = floats(w);
      ok = true;
      ASSERT_TRUE(be().all_finite(g.data, int64_t(n), &ok).is_ok());
      EXPECT_FALSE(ok) << bad << " at " << at;
      ok = false;  // a prefix that stops before it is finite
      ASSERT_TRUE(be().all_finite(g.data, int64_t(at), &ok).is_ok());
      EXPECT_TRUE(ok) << bad << " at " << at;
    }
  }
  ok = false;
  ASSERT_TRUE(be().all_finite(f.data, 0, &ok).is_ok());
  EXPECT_TRUE(ok);  // nothing is finite
  EXPECT_FALSE(be().all_finite(f.data, 10, nullptr).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(all_backend_cases()), case_name);

}  // namespace
}  // namespace sx::model::testing
