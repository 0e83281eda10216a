// The fused batch norm's passes (batch_norm_fused.cc has the op and its arithmetic of the per-channel
// constants), compiled once per instruction-set level (isa_begin.h). Each (image, channel block)
// plane is summed by one thread into its own double slot; full blocks take hand-written paths:
// AVX-512 (16 lanes) and AVX2 (8 lanes) sum in fp32 over chunks of 64 pixels, then in double; the
// other cases sum each value in double. Outputs marked `stream` are written with non-temporal
// stores on the hand-written paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "model/cpu/kernels_isa.h"
#include "model/cpu/layout_view.h"
#include "model/elementwise.h"

#include "model/cpu/isa_begin.h"
#include "model/cpu/simd.h"  // after isa_begin.h

namespace sx::model::cpu::SX_ISA_NS {
namespace {

// Per-channel constants given to the kernels are padded to CP = CB·B floats with zeros past C, so a
// block's lanes are read in place (and padded lanes compute 0).
#if SX_HAS_AVX2
// Whole blocks of the level's width (nChw16c with AVX-512, nChw8c with AVX2): one channel block = one
// register (Simd, L lanes). Sums run in fp32 over chunks of kChunk pixels (4 independent
// accumulators) and are then added into doubles, so precision is that of a 64-term fp32 sum. The
// forward sums are taken relative to the plane's first pixel (a per-lane shift close to the data)
// and moved to the common shift k in double at the end.
namespace avx {
using V = Simd::V;
using D = Simd::D;
constexpr int L = Simd::kLanes;
constexpr int64_t kChunk = 64;

// Σ v(p) and Σ w(p) over the plane's pixels, for any per-pixel pair of contributions f(p, &v, &w).
template <class F>
inline void sum_plane(int64_t hw, F&& f, D* s1, D* s2) {
  D d1l = Simd::dzero(), d1h = d1l, d2l = d1l, d2h = d1l;
  for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
    const int64_t pe = std::min(hw, p0 + kChunk);
    V a[4], q[4];
    for (int u = 0; u < 4; ++u) a[u] = q[u] = Simd::zero();
    int64_t p = p0;
    for (; p + 4 <= pe; p += 4)
      for (int u = 0; u < 4; ++u) f(p + u, a[u], q[u]);
    for (; p < pe; ++p) f(p, a[0], q[0]);
    const V sa = Simd::add(Simd::add(a[0], a[1]), Simd::add(a[2], a[3]));
    const V sq = Simd::add(Simd::add(q[0], q[1]), Simd::add(q[2], q[3]));
    d1l = Simd::dadd(d1l, Simd::lo(sa));
    d1h = Simd::dadd(d1h, Simd::hi(sa));
    d2l = Simd::dadd(d2l, Simd::lo(sq));
    d2h = Simd::dadd(d2h, Simd::hi(sq));
  }
  s1[0] = d1l, s1[1] = d1h, s2[0] = d2l, s2[1] = d2h;
}

inline void stat_plane(const float* xb, int64_t hw, const float* k, double* o1, double* o2) {
  const V kp = Simd::load(xb);  // plane shift: the first pixel
  D s1[2], s2[2];
  sum_plane(
      hw,
      [&](int64_t p, V& a, V& q) {
        const V v = Simd::sub(Simd::load(xb + p * L), kp);
        a = Simd::add(a, v);
        q = Simd::fmadd(v, v, q);
      },
      s1, s2);
  // Σ(x-k) = S1 + n·d, Σ(x-k)² = S2 + 2d·S1 + n·d², d = kp - k.
  const D n = Simd::dset1(double(hw));
  const V kk = Simd::load(k);
  const D d[2] = {Simd::dsub(Simd::lo(kp), Simd::lo(kk)), Simd::dsub(Simd::hi(kp), Simd::hi(kk))};
  D r1[2], r2[2];
  for (int h = 0; h < 2; ++h) {
    r1[h] = Simd::dfmadd(n, d[h], s1[h]);
    r2[h] = Simd::dadd(s2[h], Simd::dmul(d[h], Simd::dfmadd(n, d[h], Simd::dadd(s1[h], s1[h]))));
  }
  Simd::store_pd(o1, r1[0], r1[1]);
  Simd::store_pd(o2, r2[0], r2[1]);
}

inline V bn_value(V x, V mu, V sc, V be) { return Simd::fmadd(Simd::sub(x, mu), sc, be); }

// Stores of the output plane: non-temporal (no read-for-ownership of the destination) or plain.
template <bool Stream>
inline void store(float* p, V v) {
  if constexpr (Stream)
    Simd::stream(p, v);
  else
    Simd::store(p, v);
}

// Returns Σ_hw y per lane (the SE block's pooling, when asked for).
template <bool Relu, bool Stream>
inline V apply_plane(const float* xb, int64_t hw, const float* mean, const float* scale, const float* beta,
                     float* yb) {
  const V mu = Simd::load(mean), sc = Simd::load(scale), be = Simd::load(beta);
  const V zero = Simd::zero();
  V sum = zero;
  for (int64_t p = 0; p < hw; ++p) {
    V v = bn_value(Simd::load(xb + p * L), mu, sc, be);
    if constexpr (Relu) v = Simd::max(zero, v);  // max returns its second operand on NaN: NaN stays NaN
    sum = Simd::add(sum, v);
    store<Stream>(yb + p * L, v);
  }
  if constexpr (Stream) _mm_sfence();
  return sum;
}

// dy' = dy where the forward's pre-ReLU value was > 0 (Relu), else dy; dy = dz·gs + gt (see BnGrad).
template <bool Relu>
inline V masked_dy(const float* xp, const float* gp, V gs, V gt, V mu, V sc, V be) {
  const V g = Simd::fmadd(Simd::load(gp), gs, gt);
  if constexpr (!Relu) return g;
  return Simd::where_positive(bn_value(Simd::load(xp), mu, sc, be), g);
}

template <bool Relu>
inline void grad_plane(const float* xb, const float* gb, int64_t hw, const float* gsp, const float* gtp,
                       const float* mean, const float* scale, const float* beta, double* o1, double* o2) {
  const V mu = Simd::load(mean), sc = Simd::load(scale), be = Simd::load(beta);
  const V gs = Simd::load(gsp), gt = Simd::load(gtp);
  D s1[2], s2[2];
  sum_plane(
      hw,
      [&](int64_t p, V& a, V& q) {
        const V g = masked_dy<Relu>(xb + p * L, gb + p * L, gs, gt, mu, sc, be);
        a = Simd::add(a, g);
        q = Simd::fmadd(g, Simd::sub(Simd::load(xb + p * L), mu), q);
      },
      s1, s2);
  Simd::store_pd(o1, s1[0], s1[1]);
  Simd::store_pd(o2, s2[0], s2[1]);
}

template <bool Relu, bool Stream>
inline void grad_apply_plane(const float* xb, const float* gb, int64_t hw, const float* gsp, const float* gtp,
                             const float* mean, const float* scale, const float* beta, const float* a, const float* b,
                             const float* c0, float* ob) {
  const V mu = Simd::load(mean), sc = Simd::load(scale), be = Simd::load(beta);
  const V gs = Simd::load(gsp), gt = Simd::load(gtp);
  const V ka = Simd::load(a), kb = Simd::load(b), kc = Simd::load(c0);
  for (int64_t p = 0; p < hw; ++p) {
    const V g = masked_dy<Relu>(xb + p * L, gb + p * L, gs, gt, mu, sc, be);
    const V xm = Simd::sub(Simd::load(xb + p * L), mu);
    store<Stream>(ob + p * L, Simd::fmadd(ka, g, Simd::fmadd(kb, xm, kc)));
  }
  if constexpr (Stream) _mm_sfence();
}
}  // namespace avx
// Blocks of this width take the hand-written paths above.
constexpr int kVecBlock = Simd::kLanes;
#else
constexpr int kVecBlock = -1;  // none at the generic level
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
#if SX_HAS_AVX2
      if constexpr (K == kVecBlock) {
        avx::stat_plane(xb, x.hw, k + int64_t(j) * K, o1, o2);
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
void apply_t(const LayoutView& x, const float* mean, const float* scale, const float* beta, const LayoutView& y,
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
#if SX_HAS_AVX2
      if constexpr (K == kVecBlock) {
        const Simd::V v = stream && stream_aligned(yb) ? avx::apply_plane<Relu, true>(xb, x.hw, mu, sc, be, yb)
                                                       : avx::apply_plane<Relu, false>(xb, x.hw, mu, sc, be, yb);
        if (pb) {
          Simd::store(sum, v);
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
          v = Relu ? ew::relu(v) : v;
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
            v = Relu ? ew::relu(v) : v;
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

// g1[n·CP + c] = Σ_hw dy', g2 = Σ_hw dy'·(x - mean[c]); dy' = dy masked by the forward's ReLU.
template <int K, bool Relu>
void grad_partials(const LayoutView& x, const BnGrad& dy, const float* mean, const float* scale,
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
#if SX_HAS_AVX2
      if constexpr (K == kVecBlock) {
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
void grad_apply(const LayoutView& x, const BnGrad& dy, const float* mean, const float* scale, const float* beta,
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
#if SX_HAS_AVX2
      if constexpr (K == kVecBlock) {
        if (stream && stream_aligned(ob))
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


}  // namespace

void bn_stat_partials(const LayoutView& x, const float* k, double* s1, double* s2) {
  dispatch_block(x.b, [&](auto kb) { stat_partials<decltype(kb)::value>(x, k, s1, s2); });
}

void bn_apply(const LayoutView& x, bool relu, const float* mean, const float* scale, const float* beta,
              const LayoutView& y, bool stream, float* pooled) {
  dispatch(x.b, relu, [&](auto k, auto r) {
    apply_t<decltype(k)::value, decltype(r)::value>(x, mean, scale, beta, y, stream, pooled);
  });
}

void bn_grad_partials(const LayoutView& x, bool relu, const BnGrad& dy, const float* mean, const float* scale,
                      const float* beta, double* g1, double* g2) {
  dispatch(x.b, relu, [&](auto k, auto r) {
    grad_partials<decltype(k)::value, decltype(r)::value>(x, dy, mean, scale, beta, g1, g2);
  });
}

void bn_grad_apply(const LayoutView& x, bool relu, const BnGrad& dy, const float* mean, const float* scale,
                   const float* beta, const float* a, const float* b, const float* c0, const LayoutView& dx,
                   bool stream) {
  dispatch(x.b, relu, [&](auto k, auto r) {
    grad_apply<decltype(k)::value, decltype(r)::value>(x, dy, mean, scale, beta, a, b, c0, dx, stream);
  });
}

}  // namespace sx::model::cpu::SX_ISA_NS

