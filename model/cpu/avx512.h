// defines: the intrinsics include, with GCC 12's false positive silenced, and the AVX-512 fp32 →
// double helpers our chunked sums share (batch_norm_loops.cc, kernel_loops.cc): sums run in fp32
// over a chunk of pixels, then each 16-lane register is added into two 8-lane double registers.
// Include it after isa_begin.h (the helpers exist at the AVX-512 level, in its namespace).
#pragma once

// GCC 12 warns inside the header that _mm512_undefined_*() operands are uninitialised (a known
// false positive of cvtps_pd / extract / max at -O2); the warning is located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#if SX_HAS_AVX512
namespace sx::model::cpu::SX_ISA_NS {

// Lanes 0-7 and 8-15 of v in double.
inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
// out[0, 16) = lanes of lo then hi.
inline void store_pd(double* out, __m512d lo, __m512d hi) {
  _mm512_storeu_pd(out, lo);
  _mm512_storeu_pd(out + 8, hi);
}

}  // namespace sx::model::cpu::SX_ISA_NS
#endif
