// The bf16/fp16 storage conversions of model/elementwise.h that every CUDA kernel uses to read and
// write reduced-precision activations, checked on the host against independent references: fp16
// against GCC's _Float16 (IEEE binary16 in libgcc), bf16 against round-to-nearest-even done in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "model/elementwise.h"

namespace sx::model::ew {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The bf16 nearest to f, ties to the even mantissa, by comparing distances in double.
uint16_t bf16_reference(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t lo = uint16_t(u >> 16);  // truncation: toward zero
  const uint16_t hi = uint16_t(lo + 1);   // next magnitude up (may be inf)
  const double dlo = std::abs(double(f) - double(from_bits(uint32_t(lo) << 16)));
  // IEEE rounding treats inf as the next step past the largest finite value: ±2^128.
  const double vhi = (hi & 0x7fffu) == 0x7f80u ? std::copysign(std::ldexp(1.0, 128), double(f))
                                               : double(from_bits(uint32_t(hi) << 16));
  const double dhi = std::abs(vhi - double(f));
  if ((u & 0xffffu) == 0) return lo;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1u) ? hi : lo;
}

bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0; }

TEST(StorageConversion, Bf16RoundsToNearestEvenOverTheFloatRange) {
  // Every 251st bit pattern (all exponents, signs, mantissa patterns) plus the ties around each bf16.
  for (uint64_t u = 0; u <= 0xffffffffull; u += 251) {
    const float f = from_bits(uint32_t(u));
    if (std::isnan(f)) continue;
    ASSERT_EQ(to_bf16(f).bits, bf16_reference(f)) << std::hexfloat << f;
  }
  for (uint32_t hi = 0; hi < 0x10000u; hi += 7) {
    for (uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) {
      const float f = from_bits((hi << 16) | low);
      if (std::isnan(f)) continue;
      ASSERT_EQ(to_bf16(f).bits, bf16_reference(f)) << std::hexfloat << f;
    }
  }
}

TEST(StorageConversion, Bf16SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(to_bf16(inf).bits, 0x7f80);
  EXPECT_EQ(to_bf16(-inf).bits, 0xff80);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80);  // rounds up to inf
  EXPECT_EQ(to_bf16(-0.f).bits, 0x8000);
  // NaN, including the ones whose low half would round the payload into the exponent: stay NaN.
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7fffffffu, 0xffffffffu, 0x7f80ffffu})
    EXPECT_TRUE(std::isnan(to_float(to_bf16(from_bits(nan))))) << std::hex << nan;
  for (uint32_t b = 0; b < 0x10000u; ++b) {  // every bf16 survives the round trip
    const Bf16 v{uint16_t(b)};
    const float f = to_float(v);
    if (std::isnan(f)) continue;
    ASSERT_EQ(to_bf16(f).bits, b);
  }
}

#if defined(__FLT16_MAX__)
uint16_t fp16_reference(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

TEST(StorageConversion, Fp16MatchesIeeeBinary16Rounding) {
  for (uint64_t u = 0; u <= 0xffffffffull; u += 127) {
    const float f = from_bits(uint32_t(u));
    if (std::isnan(f)) continue;
    ASSERT_EQ(to_fp16(f).bits, fp16_reference(f)) << std::hexfloat << f;
  }
  // Dense around the subnormal range, the normal/subnormal border and the overflow border.
  for (float lo : {1e-9f, 5.9e-8f, 6.1e-5f, 65000.f}) {
    float f = lo;
    for (int i = 0; i < 200000; ++i, f = std::nextafter(f, 1e30f)) {
      ASSERT_EQ(to_fp16(f).bits, fp16_reference(f)) << std::hexfloat << f;
      ASSERT_EQ(to_fp16(-f).bits, fp16_reference(-f)) << std::hexfloat << -f;
    }
  }
}

TEST(StorageConversion, Fp16ToFloatIsExactForEveryHalf) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    uint16_t bits = uint16_t(b);
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    const float want = static_cast<float>(h);
    ASSERT_TRUE(same_value(to_float(Fp16{bits}), want)) << std::hex << b;
    if (!std::isnan(want)) {
      ASSERT_EQ(to_fp16(want).bits, bits) << std::hex << b;
    }
  }
}
#else
TEST(StorageConversion, Fp16MatchesIeeeBinary16Rounding) { GTEST_SKIP() << "this compiler has no _Float16 reference"; }
#endif

TEST(StorageConversion, Fp16Borders) {
  EXPECT_EQ(to_fp16(65504.f).bits, 0x7bff);          // the largest half
  EXPECT_EQ(to_fp16(65519.99f).bits, 0x7bff);
  EXPECT_EQ(to_fp16(65520.f).bits, 0x7c00);          // the tie rounds to even: inf
  EXPECT_EQ(to_fp16(std::ldexp(1.f, -24)).bits, 0x0001);  // the smallest subnormal
  EXPECT_EQ(to_fp16(std::ldexp(1.f, -25)).bits, 0x0000);  // half of it: ties to even zero
  EXPECT_EQ(to_fp16(std::nextafter(std::ldexp(1.f, -25), 1.f)).bits, 0x0001);
  EXPECT_TRUE(std::isnan(to_float(to_fp16(std::nanf("")))));
  EXPECT_EQ(from_float<float>(1.5f), 1.5f);
  EXPECT_EQ(to_float(from_float<Bf16>(1.5f)), 1.5f);
  EXPECT_EQ(to_float(from_float<Fp16>(-2.25f)), -2.25f);
}

}  // namespace
}  // namespace sx::model::ew
