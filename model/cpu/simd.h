// defines: Simd — one vector register of floats at the instruction-set level of the file that
// includes it (after isa_begin.h), with the handful of operations our hand-written kernels use, so
// each kernel is written once for AVX-512 (16 lanes) and AVX2 (8 lanes). Sums that must end in
// double (the batch-norm and merge statistics) add a register's lanes into two registers of doubles
// (lo: lanes [0, L/2), hi: [L/2, L)). Not defined at the generic level.
#pragma once

// GCC 12 warns inside the header that _mm512_undefined_*() operands are uninitialised (a known
// false positive of cvtps_pd / extract / max at -O2); the warning is located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#if SX_HAS_AVX2
namespace sx::model::cpu::SX_ISA_NS {

#if SX_HAS_AVX512
struct Simd {
  static constexpr int kLanes = 16, kRegs = 32;
  using V = __m512;   // 16 floats
  using I = __m512i;  // 16 lane indices
  using D = __m512d;  // 8 doubles
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_aligned(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_aligned(float* p, V v) { _mm512_store_ps(p, v); }
  static void stream(float* p, V v) { _mm512_stream_ps(p, v); }  // p aligned to the vector
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  // g where v > 0, else 0 (a ReLU mask taken from v).
  static V where_positive(V v, V g) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_GT_OQ), g); }
  static I index(const int* idx) { return _mm512_load_si512(idx); }
  // Lane l of the result = lane idx[l] of v. The masked form: the plain one's undefined
  // pass-through trips GCC 12's -Wuninitialized.
  static V permute(I idx, V v) { return _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), idx, v); }
  static D dzero() { return _mm512_setzero_pd(); }
  static D dset1(double v) { return _mm512_set1_pd(v); }
  static D dadd(D a, D b) { return _mm512_add_pd(a, b); }
  static D dsub(D a, D b) { return _mm512_sub_pd(a, b); }
  static D dmul(D a, D b) { return _mm512_mul_pd(a, b); }
  static D dfmadd(D a, D b, D c) { return _mm512_fmadd_pd(a, b, c); }
  static D lo(V v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static D hi(V v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
  static void store_pd(double* out, D lo, D hi) {  // out[0, L) = lanes of lo then hi
    _mm512_storeu_pd(out, lo);
    _mm512_storeu_pd(out + 8, hi);
  }
};
#else
struct Simd {
  static constexpr int kLanes = 8, kRegs = 16;
  using V = __m256;   // 8 floats
  using I = __m256i;  // 8 lane indices
  using D = __m256d;  // 4 doubles
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_aligned(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_aligned(float* p, V v) { _mm256_store_ps(p, v); }
  static void stream(float* p, V v) { _mm256_stream_ps(p, v); }  // p aligned to the vector
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V where_positive(V v, V g) { return _mm256_and_ps(_mm256_cmp_ps(v, zero(), _CMP_GT_OQ), g); }
  static I index(const int* idx) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(idx)); }
  static V permute(I idx, V v) { return _mm256_permutevar8x32_ps(v, idx); }
  static D dzero() { return _mm256_setzero_pd(); }
  static D dset1(double v) { return _mm256_set1_pd(v); }
  static D dadd(D a, D b) { return _mm256_add_pd(a, b); }
  static D dsub(D a, D b) { return _mm256_sub_pd(a, b); }
  static D dmul(D a, D b) { return _mm256_mul_pd(a, b); }
  static D dfmadd(D a, D b, D c) { return _mm256_fmadd_pd(a, b, c); }
  static D lo(V v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static D hi(V v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  static void store_pd(double* out, D lo, D hi) {
    _mm256_storeu_pd(out, lo);
    _mm256_storeu_pd(out + 4, hi);
  }
};
#endif

// True when p may take Simd::stream (aligned to a whole vector).
inline bool stream_aligned(const float* p) {
  return (reinterpret_cast<uintptr_t>(p) % (Simd::kLanes * sizeof(float))) == 0;
}

}  // namespace sx::model::cpu::SX_ISA_NS
#endif
