// BatchNormOp on our own fused kernels over the blocked layouts (layout_view.h), split so the
// per-channel sums can be reduced across processes (SyncBN) between the passes:
//   forward_train: pass 1 partial sums Σ(x-k), Σ(x-k)² → [reducer] → statistics → pass 2 y
//                  (no pass 2 under defer_output: the consumer applies output_affine() itself,
//                  and the SE pool comes from pass 1's per-plane sums)
//   backward:      pass 1 partial sums Σdy, Σdy·(x-μ)  → [reducer] → pass 2 dx
// N batch, C channels, H, W; M = N·H·W values per channel (the global count under SyncBN).
//
// Numerics: each (image, channel block) plane is summed by one thread into its own double slot (the
// AVX-512 path: fp32 over chunks of 64 pixels, then double), and the slots are added over the batch
// serially, so results do not depend on the thread count. Forward sums are taken relative to a
// shift (per plane: its first pixel, moved in double to the common k = the running mean, which is
// the same on every rank under SyncBN), so var = E[(x-k)²] - E[x-k]² does not cancel
// catastrophically (tested with |mean| = 1000·σ). The reducer carries the doubles (2C+1 values:
// sums and the count), so a sum of per-rank partials is as exact as one process's sum.
//
// The fused ReLU's mask is recomputed in backward from x and the forward's per-channel constants
// (same expression as forward), so no workspace is written or read.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "model/cpu/avx512.h"
#include "model/cpu/cpu_backend.h"
#include "model/cpu/layout_view.h"

namespace sx::model::cpu {
namespace {

// Outputs at least this large are written with non-temporal stores (AVX-512 path): they skip the
// read-for-ownership of the destination, which made the op ~1.4x faster in an op-level benchmark
// (README). Smaller ones may still be in L2 when the next layer reads them, so they are cached.
constexpr size_t kStreamBytes = size_t(4) << 20;

// Per-channel constants given to the kernels are padded to CP = CB·B floats with zeros past C, so a
// block's lanes are read in place (and padded lanes compute 0).
#ifdef __AVX512F__
// nChw16c planes with AVX-512: one channel block = one register. Sums run in fp32 over chunks of
// kChunk pixels (4 independent accumulators) and are then added into doubles, so precision is that
// of a 64-term fp32 sum. The forward sums are taken relative to the plane's first pixel (a per-lane
// shift close to the data) and moved to the common shift k in double at the end.
namespace avx {
constexpr int64_t kChunk = 64;

// Σ v(p) and Σ w(p) over the plane's pixels, for any per-pixel pair of contributions f(p, &v, &w).
template <class F>
inline void sum_plane(int64_t hw, F&& f, __m512d* s1, __m512d* s2) {
  __m512d d1l = _mm512_setzero_pd(), d1h = d1l, d2l = d1l, d2h = d1l;
  for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
    const int64_t pe = std::min(hw, p0 + kChunk);
    __m512 a[4], q[4];
    for (int u = 0; u < 4; ++u) a[u] = q[u] = _mm512_setzero_ps();
    int64_t p = p0;
    for (; p + 4 <= pe; p += 4)
      for (int u = 0; u < 4; ++u) f(p + u, a[u], q[u]);
    for (; p < pe; ++p) f(p, a[0], q[0]);
    const __m512 sa = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
    const __m512 sq = _mm512_add_ps(_mm512_add_ps(q[0], q[1]), _mm512_add_ps(q[2], q[3]));
    d1l = _mm512_add_pd(d1l, lo_pd(sa));
    d1h = _mm512_add_pd(d1h, hi_pd(sa));
    d2l = _mm512_add_pd(d2l, lo_pd(sq));
    d2h = _mm512_add_pd(d2h, hi_pd(sq));
  }
  s1[0] = d1l, s1[1] = d1h, s2[0] = d2l, s2[1] = d2h;
}

inline void stat_plane(const float* xb, int64_t hw, const float* k, double* o1, double* o2) {
  const __m512 kp = _mm512_loadu_ps(xb);  // plane shift: the first pixel
  __m512d s1[2], s2[2];
  sum_plane(
      hw,
      [&](int64_t p, __m512& a, __m512& q) {
        const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(xb + p * 16), kp);
        a = _mm512_add_ps(a, v);
        q = _mm512_fmadd_ps(v, v, q);
      },
      s1, s2);
  // Σ(x-k) = S1 + n·d, Σ(x-k)² = S2 + 2d·S1 + n·d², d = kp - k.
  const __m512d n = _mm512_set1_pd(double(hw));
  const __m512 kk = _mm512_loadu_ps(k);
  const __m512d d[2] = {_mm512_sub_pd(lo_pd(kp), lo_pd(kk)), _mm512_sub_pd(hi_pd(kp), hi_pd(kk))};
  __m512d r1[2], r2[2];
  for (int h = 0; h < 2; ++h) {
    r1[h] = _mm512_fmadd_pd(n, d[h], s1[h]);
    r2[h] = _mm512_add_pd(s2[h], _mm512_mul_pd(d[h], _mm512_fmadd_pd(n, d[h], _mm512_add_pd(s1[h], s1[h]))));
  }
  store_pd(o1, r1[0], r1[1]);
  store_pd(o2, r2[0], r2[1]);
}

inline __m512 bn_value(__m512 x, __m512 mu, __m512 sc, __m512 be) { return _mm512_fmadd_ps(_mm512_sub_ps(x, mu), sc, be); }

// Stores of the output plane: non-temporal (no read-for-ownership of the destination) or plain.
template <bool Stream>
inline void store(float* p, __m512 v) {
  if constexpr (Stream)
    _mm512_stream_ps(p, v);
  else
    _mm512_storeu_ps(p, v);
}

// Returns Σ_hw y per lane (the SE block's pooling, when asked for).
template <bool Relu, bool Stream>
inline __m512 apply_plane(const float* xb, int64_t hw, const float* mean, const float* scale, const float* beta,
                          float* yb) {
  const __m512 mu = _mm512_loadu_ps(mean), sc = _mm512_loadu_ps(scale), be = _mm512_loadu_ps(beta);
  const __m512 zero = _mm512_setzero_ps();
  __m512 sum = zero;
  for (int64_t p = 0; p < hw; ++p) {
    __m512 v = bn_value(_mm512_loadu_ps(xb + p * 16), mu, sc, be);
    if constexpr (Relu) v = _mm512_max_ps(v, zero);
    sum = _mm512_add_ps(sum, v);
    store<Stream>(yb + p * 16, v);
  }
  if constexpr (Stream) _mm_sfence();
  return sum;
}

// dy' = dy where the forward's pre-ReLU value was > 0 (Relu), else dy; dy = dz·gs + gt (see Grad).
template <bool Relu>
inline __m512 masked_dy(const float* xp, const float* gp, __m512 gs, __m512 gt, __m512 mu, __m512 sc, __m512 be) {
  const __m512 g = _mm512_fmadd_ps(_mm512_loadu_ps(gp), gs, gt);
  if constexpr (!Relu) return g;
  const __mmask16 m = _mm512_cmp_ps_mask(bn_value(_mm512_loadu_ps(xp), mu, sc, be), _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_maskz_mov_ps(m, g);
}

template <bool Relu>
inline void grad_plane(const float* xb, const float* gb, int64_t hw, const float* gsp, const float* gtp,
                       const float* mean, const float* scale, const float* beta, double* o1, double* o2) {
  const __m512 mu = _mm512_loadu_ps(mean), sc = _mm512_loadu_ps(scale), be = _mm512_loadu_ps(beta);
  const __m512 gs = _mm512_loadu_ps(gsp), gt = _mm512_loadu_ps(gtp);
  __m512d s1[2], s2[2];
  sum_plane(
      hw,
      [&](int64_t p, __m512& a, __m512& q) {
        const __m512 g = masked_dy<Relu>(xb + p * 16, gb + p * 16, gs, gt, mu, sc, be);
        a = _mm512_add_ps(a, g);
        q = _mm512_fmadd_ps(g, _mm512_sub_ps(_mm512_loadu_ps(xb + p * 16), mu), q);
      },
      s1, s2);
  store_pd(o1, s1[0], s1[1]);
  store_pd(o2, s2[0], s2[1]);
}

template <bool Relu, bool Stream>
inline void grad_apply_plane(const float* xb, const float* gb, int64_t hw, const float* gsp, const float* gtp,
                             const float* mean, const float* scale, const float* beta, const float* a, const float* b,
                             const float* c0, float* ob) {
  const __m512 mu = _mm512_loadu_ps(mean), sc = _mm512_loadu_ps(scale), be = _mm512_loadu_ps(beta);
  const __m512 gs = _mm512_loadu_ps(gsp), gt = _mm512_loadu_ps(gtp);
  const __m512 ka = _mm512_loadu_ps(a), kb = _mm512_loadu_ps(b), kc = _mm512_loadu_ps(c0);
  for (int64_t p = 0; p < hw; ++p) {
    const __m512 g = masked_dy<Relu>(xb + p * 16, gb + p * 16, gs, gt, mu, sc, be);
    const __m512 xm = _mm512_sub_ps(_mm512_loadu_ps(xb + p * 16), mu);
    store<Stream>(ob + p * 16, _mm512_fmadd_ps(ka, g, _mm512_fmadd_ps(kb, xm, kc)));
  }
  if constexpr (Stream) _mm_sfence();
}
}  // namespace avx
#endif

// s1[n·CP + c] = Σ_hw (x - k[c]), s2 = Σ_hw (x - k[c])², CP = CB·B (padded channels).
template <int K>
void stat_partials(const LayoutView& x, const float* k, double* s1, double* s2) {
  const int B = K ? K : x.b;
  const int64_t cp = int64_t(x.cb) * B;
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      double* o1 = s1 + n * cp + int64_t(j) * B;
      double* o2 = s2 + n * cp + int64_t(j) * B;
#ifdef __AVX512F__
      if constexpr (K == 16) {
        avx::stat_plane(xb, x.hw, k + int64_t(j) * 16, o1, o2);
        continue;
      }
#endif
      if constexpr (K == 1) {
        const double k0 = k[j];
        double a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
        for (int64_t p = 0; p < x.hw; ++p) {
          const double v = double(xb[p]) - k0;
          a1 += v;
          a2 += v * v;
        }
        o1[0] = a1;
        o2[0] = a2;
      } else {
        Lanes<K, double> l1(B), l2(B);
        const float* kk = k + int64_t(j) * B;
        double* a1 = l1.data();
        double* a2 = l2.data();
        for (int l = 0; l < B; ++l) a1[l] = a2[l] = 0;
        for (int64_t p = 0; p < x.hw; ++p) {
          const float* xp = xb + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) {
            const double v = double(xp[l]) - double(kk[l]);
            a1[l] += v;
            a2[l] += v * v;
          }
        }
        for (int l = 0; l < B; ++l) o1[l] = a1[l], o2[l] = a2[l];
      }
    }
  }
}

// y = [relu]((x - mean[c]) · scale[c] + beta[c]). The backward recomputes the mask with mask_of().
inline float bn_value(float x, float mean, float scale, float beta) { return (x - mean) * scale + beta; }

// pooled (plain (N, C), may be null) = mean over H, W of y: the SE block's global average pool,
// taken while y is in registers instead of in a pass of its own.
template <int K, bool Relu>
void apply(const LayoutView& x, const float* mean, const float* scale, const float* beta, const LayoutView& y,
           [[maybe_unused]] bool stream, float* pooled) {
  const int B = K ? K : x.b;
  const float inv_hw = 1.f / float(x.hw);
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      float* yb = y.block(n, j);
      const float *mu = mean + int64_t(j) * B, *sc = scale + int64_t(j) * B, *be = beta + int64_t(j) * B;
      float* pb = pooled ? pooled + int64_t(n) * x.c + int64_t(j) * B : nullptr;
      Lanes<K> sum_lanes(B);
      float* sum = sum_lanes.data();
#ifdef __AVX512F__
      if constexpr (K == 16) {
        const __m512 v = stream && (reinterpret_cast<uintptr_t>(yb) & 63) == 0
                             ? avx::apply_plane<Relu, true>(xb, x.hw, mu, sc, be, yb)
                             : avx::apply_plane<Relu, false>(xb, x.hw, mu, sc, be, yb);
        if (pb) {
          _mm512_storeu_ps(sum, v);
          for (int l = 0, valid = x.valid_lanes(j); l < valid; ++l) pb[l] = sum[l] * inv_hw;
        }
        continue;
      }
#endif
      if constexpr (K == 1) {
        const float m0 = mu[0], s0 = sc[0], b0 = be[0];
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < x.hw; ++p) {
          float v = bn_value(xb[p], m0, s0, b0);
          v = Relu ? (v > 0.f ? v : 0.f) : v;
          yb[p] = v;
          acc += v;
        }
        if (pb) pb[0] = acc * inv_hw;
      } else {
        for (int l = 0; l < B; ++l) sum[l] = 0.f;
        for (int64_t p = 0; p < x.hw; ++p) {
          const float* xp = xb + p * B;
          float* yp = yb + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) {
            float v = bn_value(xp[l], mu[l], sc[l], be[l]);
            v = Relu ? (v > 0.f ? v : 0.f) : v;
            yp[l] = v;
            sum[l] += v;
          }
        }
        if (pb)
          for (int l = 0, valid = x.valid_lanes(j); l < valid; ++l) pb[l] = sum[l] * inv_hw;
      }
    }
  }
}

// The incoming gradient as the kernels read it: dy = dz·gs[n·CP + c] + gt[n·CP + c] (1 and 0 for a
// plain backward; the SE scale and pooled-mean gradient for backward_scaled).
struct Grad {
  LayoutView dz;
  const float* gs;
  const float* gt;
};

// g1[n·CP + c] = Σ_hw dy', g2 = Σ_hw dy'·(x - mean[c]); dy' = dy masked by the forward's ReLU.
template <int K, bool Relu>
void grad_partials(const LayoutView& x, const Grad& dy, const float* mean, const float* scale,
                   const float* beta, double* g1, double* g2) {
  const int B = K ? K : x.b;
  const int64_t cp = int64_t(x.cb) * B;
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      const float* gb = dy.dz.block(n, j);
      const int64_t nj = n * cp + int64_t(j) * B;
      const float *gs = dy.gs + nj, *gt = dy.gt + nj;
      double* o1 = g1 + nj;
      double* o2 = g2 + nj;
      const float *mu = mean + int64_t(j) * B, *sc = scale + int64_t(j) * B, *be = beta + int64_t(j) * B;
#ifdef __AVX512F__
      if constexpr (K == 16) {
        avx::grad_plane<Relu>(xb, gb, x.hw, gs, gt, mu, sc, be, o1, o2);
        continue;
      }
#endif
      if constexpr (K == 1) {
        const float m0 = mu[0], s0 = sc[0], b0 = be[0], gs0 = gs[0], gt0 = gt[0];
        double a1 = 0, a2 = 0;
#pragma omp simd reduction(+ : a1, a2)
        for (int64_t p = 0; p < x.hw; ++p) {
          const float g = Relu && !(bn_value(xb[p], m0, s0, b0) > 0.f) ? 0.f : std::fma(gb[p], gs0, gt0);
          a1 += double(g);
          a2 += double(g) * double(xb[p] - m0);
        }
        o1[0] = a1;
        o2[0] = a2;
      } else {
        Lanes<K, double> l1(B), l2(B);
        double* a1 = l1.data();
        double* a2 = l2.data();
        for (int l = 0; l < B; ++l) a1[l] = a2[l] = 0;
        for (int64_t p = 0; p < x.hw; ++p) {
          const float* xp = xb + p * B;
          const float* gp = gb + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) {
            const float g = Relu && !(bn_value(xp[l], mu[l], sc[l], be[l]) > 0.f) ? 0.f : std::fma(gp[l], gs[l], gt[l]);
            a1[l] += double(g);
            a2[l] += double(g) * double(xp[l] - mu[l]);
          }
        }
        for (int l = 0; l < B; ++l) o1[l] = a1[l], o2[l] = a2[l];
      }
    }
  }
}

// dx = a[c]·dy' + b[c]·(x - mean[c]) + c0[c] (the BN input gradient with its per-channel constants).
template <int K, bool Relu>
void grad_apply(const LayoutView& x, const Grad& dy, const float* mean, const float* scale, const float* beta,
                const float* a, const float* b, const float* c0, const LayoutView& dx, [[maybe_unused]] bool stream) {
  const int64_t cp = int64_t(x.cb) * (K ? K : x.b);
  const int B = K ? K : x.b;
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      const float* gb = dy.dz.block(n, j);
      float* ob = dx.block(n, j);
      const int64_t o = int64_t(j) * B;
      const float *mu = mean + o, *sc = scale + o, *be = beta + o, *ka = a + o, *kb = b + o, *kc = c0 + o;
      const float *gs = dy.gs + n * cp + o, *gt = dy.gt + n * cp + o;
#ifdef __AVX512F__
      if constexpr (K == 16) {
        if (stream && (reinterpret_cast<uintptr_t>(ob) & 63) == 0)
          avx::grad_apply_plane<Relu, true>(xb, gb, x.hw, gs, gt, mu, sc, be, ka, kb, kc, ob);
        else
          avx::grad_apply_plane<Relu, false>(xb, gb, x.hw, gs, gt, mu, sc, be, ka, kb, kc, ob);
        continue;
      }
#endif
      if constexpr (K == 1) {
        const float m0 = mu[0], s0 = sc[0], b0 = be[0], a0 = ka[0], bb = kb[0], cc = kc[0], gs0 = gs[0], gt0 = gt[0];
#pragma omp simd
        for (int64_t p = 0; p < x.hw; ++p) {
          const float g = Relu && !(bn_value(xb[p], m0, s0, b0) > 0.f) ? 0.f : std::fma(gb[p], gs0, gt0);
          ob[p] = a0 * g + bb * (xb[p] - m0) + cc;
        }
      } else {
        for (int64_t p = 0; p < x.hw; ++p) {
          const float* xp = xb + p * B;
          const float* gp = gb + p * B;
          float* op = ob + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) {
            const float g = Relu && !(bn_value(xp[l], mu[l], sc[l], be[l]) > 0.f) ? 0.f : std::fma(gp[l], gs[l], gt[l]);
            op[l] = ka[l] * g + kb[l] * (xp[l] - mu[l]) + kc[l];
          }
        }
      }
    }
  }
}

template <class F>
void dispatch(int b, bool relu, F&& f) {
  dispatch_block(b, [&](auto k) {
    if (relu)
      f(k, std::true_type{});
    else
      f(k, std::false_type{});
  });
}

class FusedBatchNormOp final : public BatchNormOp {
 public:
  explicit FusedBatchNormOp(const BatchNormDesc& d) : d_(d) {
    Tensor probe{d.dims, d.layout, nullptr};
    const LayoutView v = LayoutView::of(probe);
    const size_t c = size_t(d.dims.c);
    cp_ = int64_t(v.cb) * v.b;
    part1_.resize(size_t(d.dims.n * cp_));
    part2_.resize(size_t(d.dims.n * cp_));
    sums_.resize(2 * c + 1);
    stream_ = probe.bytes() >= kStreamBytes;
    for (auto* a : {&shift_, &mean_, &scale_, &beta_, &bmean_, &ka_, &kb_, &kc_, &eval_mean_, &eval_scale_, &eval_beta_})
      a->assign(size_t(cp_), 0.f);
    const size_t planes = size_t(d.dims.n * cp_);
    ones_.assign(planes, 1.f);
    zeros_.assign(planes, 0.f);
    gs_.assign(planes, 0.f);
    gt_.assign(planes, 0.f);
  }

  Status forward_train(const Tensor& x, const float* gamma, const float* beta, const Tensor& y, float* save_mean,
                       float* save_var, float* running_mean, float* running_var, float momentum) override {
    SX_TRY(check(x, "bn forward x"));
    if (!deferred_) SX_TRY(check(y, "bn forward y"));
    const int C = d_.dims.c;
    const LayoutView xv = LayoutView::of(x);
    std::copy(running_mean, running_mean + C, shift_.begin());
    dispatch_block(xv.b, [&](auto k) { stat_partials<decltype(k)::value>(xv, shift_.data(), part1_.data(), part2_.data()); });
    if (!d_.fuse_relu) fwd_part1_ = part1_;  // backward_scaled_sums' Σ(x - μ) per plane
    sum_over_batch(C);
    sums_[size_t(2 * C)] = double(d_.dims.n) * d_.dims.h * d_.dims.w;
    if (d_.reducer) SX_TRY(d_.reducer(sums_.data(), 2 * C + 1).with_context("SyncBN statistics"));
    const double m = sums_[size_t(2 * C)];
    const double unbias = m > 1 ? m / (m - 1) : 1.0;
    for (int c = 0; c < C; ++c) {
      const double d1 = sums_[size_t(c)] / m, d2 = sums_[size_t(C + c)] / m;
      const double var = std::max(0.0, d2 - d1 * d1);
      const double mean = double(running_mean[c]) + d1;
      save_mean[c] = float(mean);
      save_var[c] = float(var);
      mean_[size_t(c)] = float(mean);
      scale_[size_t(c)] = float(double(gamma[c]) / std::sqrt(var + double(d_.eps)));
      beta_[size_t(c)] = beta[c];
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * float(mean);
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * float(var * unbias);
    }
    affine_ = ChannelAffine{mean_.data(), scale_.data(), beta_.data()};
    if (deferred_) {
      // The SE pool from the statistics pass: mean over H, W of y = (plane mean - μ)·scale + β,
      // both means relative to the shift, in double.
      if (pooled_) pool_from_sums(C, [&](int c) { return sums_[size_t(c)] / m; });
      return Status::ok();
    }
    const LayoutView yv = LayoutView::of(y);
    dispatch(xv.b, d_.fuse_relu, [&](auto k, auto relu) {
      apply<decltype(k)::value, decltype(relu)::value>(xv, mean_.data(), scale_.data(), beta_.data(), yv, stream_,
                                                        pooled_);
    });
    return Status::ok();
  }

  Status forward_eval(const Tensor& x, const float* gamma, const float* beta, const float* running_mean,
                      const float* running_var, const Tensor& y) override {
    SX_TRY(check(x, "bn forward_eval x"));
    if (!deferred_) SX_TRY(check(y, "bn forward_eval y"));
    // Own constants: the training forward's stay for a backward that may follow.
    for (int c = 0; c < d_.dims.c; ++c) {
      eval_mean_[size_t(c)] = running_mean[c];
      eval_scale_[size_t(c)] = float(double(gamma[c]) / std::sqrt(double(running_var[c]) + double(d_.eps)));
      eval_beta_[size_t(c)] = beta[c];
    }
    const LayoutView xv = LayoutView::of(x), yv = LayoutView::of(y);
    affine_ = ChannelAffine{eval_mean_.data(), eval_scale_.data(), eval_beta_.data()};
    if (deferred_) {
      if (pooled_) {  // a read-only pass for the plane means (relative to the running mean)
        dispatch_block(xv.b, [&](auto k) {
          stat_partials<decltype(k)::value>(xv, eval_mean_.data(), part1_.data(), part2_.data());
        });
        pool_from_sums(d_.dims.c, [](int) { return 0.0; });
      }
      return Status::ok();
    }
    dispatch(xv.b, d_.fuse_relu, [&](auto k, auto relu) {
      apply<decltype(k)::value, decltype(relu)::value>(xv, eval_mean_.data(), eval_scale_.data(), eval_beta_.data(), yv,
                                                        stream_, pooled_);
    });
    return Status::ok();
  }

  Status backward(const Tensor& x, const Tensor& /*y: the mask is recomputed from x*/, const Tensor& dy,
                  const float* gamma, const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                  float* dbeta, bool accumulate) override {
    SX_TRY(check(dy, "bn backward dy"));
    return backward_impl(x, Grad{LayoutView::of(dy), ones_.data(), zeros_.data()}, gamma, save_mean, save_var, dx,
                         dgamma, dbeta, accumulate);
  }

  bool scales_dy() const override { return true; }
  bool defer_output() override {
    if (d_.fuse_relu) return false;  // the consumer's affine has no ReLU
    deferred_ = true;
    return true;
  }
  ChannelAffine output_affine() const override { return affine_; }
  bool pool_output_into(float* pooled) override {
    pooled_ = pooled;
    return true;
  }
  Status backward_scaled(const Tensor& x, const Tensor& /*y*/, const Tensor& dz, const float* s, const float* dmean,
                         const float* gamma, const float* save_mean, const float* save_var, const Tensor& dx,
                         float* dgamma, float* dbeta, bool accumulate) override {
    return scaled_backward(x, dz, s, dmean, gamma, save_mean, save_var, dx, dgamma, dbeta, accumulate, nullptr);
  }
  bool takes_sums() const override { return !d_.fuse_relu; }
  Status backward_scaled_sums(const Tensor& x, const Tensor& dz, const float* s, const float* dmean,
                              const double* sum_dz, const double* sum_dzx, const float* gamma, const float* save_mean,
                              const float* save_var, const Tensor& dx, float* dgamma, float* dbeta,
                              bool accumulate) override {
    if (d_.fuse_relu) return Status::unimplemented("batch norm backward_scaled_sums with a fused ReLU");
    SX_CHECK_ARG(sum_dz != nullptr && sum_dzx != nullptr, "bn backward_scaled_sums: null sums");
    const Sums sums{sum_dz, sum_dzx};
    return scaled_backward(x, dz, s, dmean, gamma, save_mean, save_var, dx, dgamma, dbeta, accumulate, &sums);
  }

 private:
  // Per-plane sums of backward's first pass taken by the caller (backward_scaled_sums), plain (N, C).
  struct Sums {
    const double* dz;   // Σ_hw dz
    const double* dzx;  // Σ_hw dz·(x - save_mean)
  };
  // backward_scaled, with the first pass's sums given (backward_scaled_sums) or taken here (null).
  Status scaled_backward(const Tensor& x, const Tensor& dz, const float* s, const float* dmean, const float* gamma,
                         const float* save_mean, const float* save_var, const Tensor& dx, float* dgamma,
                         float* dbeta, bool accumulate, const Sums* sums) {
    SX_TRY(check(dz, "bn backward dz"));
    // Per-plane constants of dy = dz·s + dmean/(H·W), zero on the padded lanes past C.
    const int C = d_.dims.c;
    const float inv_hw = 1.f / float(d_.dims.h * d_.dims.w);
    for (int n = 0; n < d_.dims.n; ++n)
      for (int c = 0; c < C; ++c) {
        const size_t i = size_t(n * cp_ + c), src = size_t(n) * C + c;
        gs_[i] = s ? s[src] : 1.f;
        gt_[i] = dmean ? dmean[src] * inv_hw : 0.f;
      }
    return backward_impl(x, Grad{LayoutView::of(dz), gs_.data(), gt_.data()}, gamma, save_mean, save_var, dx,
                         dgamma, dbeta, accumulate, sums);
  }

  Status backward_impl(const Tensor& x, const Grad& gv, const float* gamma, const float* save_mean,
                       const float* save_var, const Tensor& dx, float* dgamma, float* dbeta, bool accumulate,
                       const Sums* sums = nullptr) {
    SX_TRY(check(x, "bn backward x"));
    SX_TRY(check(dx, "bn backward dx"));
    const int C = d_.dims.c;
    const LayoutView xv = LayoutView::of(x), ov = LayoutView::of(dx);
    // save_mean is the forward's mean_, so the recomputed ReLU mask matches the forward's.
    std::copy(save_mean, save_mean + C, bmean_.begin());
    const float* mu = bmean_.data();
    if (sums) {
      // The first pass from the caller's sums: Σ dy = gs·Σdz + HW·gt and Σ dy·(x-μ) = gs·Σdz·(x-μ) +
      // gt·Σ(x-μ), the last from the forward's per-plane sums Σ(x-k) (k = shift_).
      const double hw = double(d_.dims.h) * d_.dims.w;
      for (int n = 0; n < d_.dims.n; ++n)
        for (int c = 0; c < C; ++c) {
          const size_t i = size_t(n * cp_ + c), src = size_t(n) * C + c;
          const double gs = gv.gs[i], gt = gv.gt[i];
          const double dev = fwd_part1_[i] - hw * (double(mu[c]) - double(shift_[size_t(c)]));
          part1_[i] = gs * sums->dz[src] + hw * gt;
          part2_[i] = gs * sums->dzx[src] + gt * dev;
        }
    } else {
      dispatch(xv.b, d_.fuse_relu, [&](auto k, auto relu) {
        grad_partials<decltype(k)::value, decltype(relu)::value>(xv, gv, mu, scale_.data(), beta_.data(),
                                                                  part1_.data(), part2_.data());
      });
    }
    sum_over_batch(C);
    // This process's dgamma/dbeta: the gradient allreduce adds the other ranks' shares.
    for (int c = 0; c < C; ++c) {
      const double inv = 1.0 / std::sqrt(double(save_var[c]) + double(d_.eps));
      const float db = float(sums_[size_t(c)]), dg = float(sums_[size_t(C + c)] * inv);
      dgamma[c] = accumulate ? dgamma[c] + dg : dg;
      dbeta[c] = accumulate ? dbeta[c] + db : db;
    }
    sums_[size_t(2 * C)] = double(d_.dims.n) * d_.dims.h * d_.dims.w;
    if (d_.reducer) SX_TRY(d_.reducer(sums_.data(), 2 * C + 1).with_context("SyncBN gradient sums"));
    const double m = sums_[size_t(2 * C)];
    for (int c = 0; c < C; ++c) {
      // dx = γ/σ · (dy' - mean(dy') - x̂·mean(dy'·x̂)), x̂ = (x-μ)/σ, means over the (global) batch.
      const double inv = 1.0 / std::sqrt(double(save_var[c]) + double(d_.eps));
      const double a = double(gamma[c]) * inv;
      ka_[size_t(c)] = float(a);
      kb_[size_t(c)] = float(-a * inv * inv * sums_[size_t(C + c)] / m);
      kc_[size_t(c)] = float(-a * sums_[size_t(c)] / m);
    }
    dispatch(xv.b, d_.fuse_relu, [&](auto k, auto relu) {
      grad_apply<decltype(k)::value, decltype(relu)::value>(xv, gv, mu, scale_.data(), beta_.data(),
                                                             ka_.data(), kb_.data(), kc_.data(), ov, stream_);
    });
    return Status::ok();
  }

  Status check(const Tensor& t, const char* what) const { return check_bn_tensor(d_, t, what); }
  // pooled_[n, c] = (part1_[n, c]/(H·W) - centre(c))·scale + β with affine_'s constants: the mean
  // over H, W of y from the per-plane sums part1_ (taken relative to the same shift as centre).
  template <class Centre>
  void pool_from_sums(int C, Centre centre) {
    const double inv_hw = 1.0 / (double(d_.dims.h) * d_.dims.w);
    for (int n = 0; n < d_.dims.n; ++n)
      for (int c = 0; c < C; ++c) {
        const double dev = part1_[size_t(n * cp_ + c)] * inv_hw - centre(c);
        pooled_[size_t(n) * C + c] = float(dev * double(affine_.scale[c]) + double(affine_.shift[c]));
      }
  }
  // sums_[c] = Σ_n part1_[n][c], sums_[C + c] = Σ_n part2_[n][c], in batch order.
  void sum_over_batch(int C) {
    for (int c = 0; c < C; ++c) {
      double s1 = 0, s2 = 0;
      for (int n = 0; n < d_.dims.n; ++n) {
        s1 += part1_[size_t(n * cp_ + c)];
        s2 += part2_[size_t(n * cp_ + c)];
      }
      sums_[size_t(c)] = s1;
      sums_[size_t(C + c)] = s2;
    }
  }

  BatchNormDesc d_;
  bool stream_ = false;
  int64_t cp_ = 0;                            // padded channels CB·B
  std::vector<double> part1_, part2_;         // (N, CP) per-plane partial sums
  std::vector<double> fwd_part1_;             // (N, CP) the last forward_train's Σ(x - shift_) (no ReLU only)
  std::vector<double> sums_;                  // (2C + 1): the two sums per channel and the count M
  // Per-channel constants, (CP) each, zero past C.
  std::vector<float> shift_;                  // running mean at the forward: the sums' shift k
  std::vector<float> mean_, scale_, beta_;    // the last training forward's (and its ReLU mask's)
  std::vector<float> bmean_;                  // backward's save_mean
  std::vector<float> ka_, kb_, kc_;           // backward's dx constants
  std::vector<float> eval_mean_, eval_scale_, eval_beta_;  // forward_eval's
  // (N, CP) per-plane maps of the incoming gradient (Grad): identity, and backward_scaled's.
  std::vector<float> ones_, zeros_, gs_, gt_;
  float* pooled_ = nullptr;  // pool_output_into's (N, C) destination
  bool deferred_ = false;    // defer_output(): forwards write no y
  ChannelAffine affine_;     // the last forward's y = affine(x)
};

}  // namespace

StatusOr<std::unique_ptr<BatchNormOp>> make_fused_batch_norm(const BatchNormDesc& desc) {
  return std::unique_ptr<BatchNormOp>(std::make_unique<FusedBatchNormOp>(desc));
}

}  // namespace sx::model::cpu
