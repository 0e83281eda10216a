// The loops behind CpuBackend's own kernels (kernels.cc), compiled once per instruction-set level
// (isa_begin.h): global average pool, ReLU/sigmoid, the SE residual merge and its gradients, the
// SE scale's backward, add_into, the fused SGD step, and the strided add of a 1x1 conv's input
// gradient (conv.cc).
//
// Activation kernels see any layout as [N][CB][HW][B] (layout_view.h) and run OpenMP-parallel over
// (n, channel block), one pass over memory, the inner loop over the B lanes of a block (8 or 16
// floats of nChw8c / nChw16c = one vector at the level the layout was chosen for; for nchw, B = 1
// and the pixel loop is the vector loop). Lanes past C in a padded last block are written as 0
// whatever the inputs hold there. The arithmetic itself is model/elementwise.h. Full blocks of one
// register (16 lanes with AVX-512, 8 with AVX2; Simd) take hand-written paths where the compiler's
// code was slower.
//
// Determinism: no floating-point reduction crosses threads (each (n, c) sum is done by one thread),
// so results do not depend on the thread count or timing. They may differ in the last bits between
// levels (the AVX-512 sums run in fp32 over chunks of 64 pixels before they are added in double).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "model/cpu/kernels_isa.h"
#include "model/cpu/layout_view.h"
#include "model/elementwise.h"

#include "model/cpu/isa_begin.h"
#include "model/cpu/simd.h"  // after isa_begin.h

namespace sx::model::cpu::SX_ISA_NS {
namespace {

// ---- activation kernels, one template per op, K = block size or 0 ---------------------------------
// Vector loops are marked `omp simd`: over the pixels when B = 1, over the lanes of a pixel
// otherwise (without it GCC unrolls the 16 lanes into scalar code).

template <int K>
void gap_fwd(const LayoutView& x, float* y) {  // y (N, C)
  const int B = K ? K : x.b;
  const float inv_hw = 1.f / float(x.hw);
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      float* yb = y + int64_t(n) * x.c + int64_t(j) * B;
      if constexpr (K == 1) {
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t p = 0; p < x.hw; ++p) sum += xb[p];
        yb[0] = sum * inv_hw;
      } else {
        Lanes<K> acc_lanes(B);
        float* acc = acc_lanes.data();
        for (int l = 0; l < B; ++l) acc[l] = 0.f;
        for (int64_t p = 0; p < x.hw; ++p) {
          const float* xp = xb + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) acc[l] += xp[l];
        }
        for (int l = 0, valid = x.valid_lanes(j); l < valid; ++l) yb[l] = acc[l] * inv_hw;
      }
    }
  }
}

template <int K>
void gap_bwd(const float* dy, const LayoutView& dx) {
  const int B = K ? K : dx.b;
  const float inv_hw = 1.f / float(dx.hw);
#pragma omp parallel for collapse(2) schedule(static) if (floats(dx) >= kParallelMin)
  for (int n = 0; n < dx.n; ++n) {
    for (int j = 0; j < dx.cb; ++j) {
      float* db = dx.block(n, j);
      const float* dyb = dy + int64_t(n) * dx.c + int64_t(j) * B;
      const int valid = dx.valid_lanes(j);
      Lanes<K> val_lanes(B);
      float* val = val_lanes.data();
      for (int l = 0; l < B; ++l) val[l] = l < valid ? dyb[l] * inv_hw : 0.f;
      if constexpr (K == 1) {
        const float v0 = val[0];
#pragma omp simd
        for (int64_t p = 0; p < dx.hw; ++p) db[p] = v0;
      } else {
        for (int64_t p = 0; p < dx.hw; ++p) {
          float* dp = db + p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) dp[l] = val[l];
        }
      }
    }
  }
}

// Per-lane constants of a ChannelAffine for block j: identity (0, 1, 0) where it is empty or past C.
template <int K>
struct AffineLanes {
  AffineLanes(const ChannelAffine& f, int b, int j, int valid) : m_(b), a_(b), s_(b) {
    for (int l = 0; l < b; ++l) {
      const bool on = f && l < valid;
      const int64_t c = int64_t(j) * b + l;
      m()[l] = on ? f.mean[c] : 0.f;
      a()[l] = on ? f.scale[c] : 1.f;
      s()[l] = on ? f.shift[c] : 0.f;
    }
  }
  float* m() { return m_.data(); }
  float* a() { return a_.data(); }
  float* s() { return s_.data(); }
  Lanes<K> m_, a_, s_;
};

template <int K>
void scale_add_relu_fwd(const LayoutView& x, const float* s, const LayoutView& sc, const LayoutView& out,
                        const ChannelAffine& x_bn, const ChannelAffine& sc_bn) {
  const int B = K ? K : x.b;
#pragma omp parallel for collapse(2) schedule(static) if (floats(x) >= kParallelMin)
  for (int n = 0; n < x.n; ++n) {
    for (int j = 0; j < x.cb; ++j) {
      const float* xb = x.block(n, j);
      const float* scb = sc.block(n, j);
      float* ob = out.block(n, j);
      const int valid = x.valid_lanes(j);
      Lanes<K> scale_lanes(B);
      float* scale = scale_lanes.data();
      for (int l = 0; l < B; ++l) scale[l] = s && l < valid ? s[int64_t(n) * x.c + int64_t(j) * B + l] : 1.f;
      AffineLanes<K> xf(x_bn, B, j, valid), sf(sc_bn, B, j, valid);
      const float *xm = xf.m(), *xa = xf.a(), *xs = xf.s(), *sm = sf.m(), *sa = sf.a(), *ss = sf.s();
      if constexpr (K == 1) {  // nchw: no padding
        const float s0 = scale[0];
#pragma omp simd
        for (int64_t p = 0; p < x.hw; ++p)
          ob[p] = ew::scale_add_relu(ew::affine(xb[p], xm[0], xa[0], xs[0]), s0,
                                     ew::affine(scb[p], sm[0], sa[0], ss[0]));
      } else {
        for (int64_t p = 0; p < x.hw; ++p) {
          const int64_t o = p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l)
            ob[o + l] = l < valid ? ew::scale_add_relu(ew::affine(xb[o + l], xm[l], xa[l], xs[l]), scale[l],
                                                       ew::affine(scb[o + l], sm[l], sa[l], ss[l]))
                                  : 0.f;
        }
      }
    }
  }
}

#if SX_HAS_AVX2
// Blocks of this width (one register: 16 lanes with AVX-512, 8 with AVX2) take the paths below.
constexpr int kVecBlock = Simd::kLanes;

// One full block of scale_add_relu_bwd: z = relu_grad(out, g) (ew::relu_grad: g where out > 0),
// ds += z · affine(x) over the hw pixels; two accumulators split the FMA dependency chain.
void scale_add_relu_bwd_block(const float* g, const float* out, const float* x, float* z, float* ds, int64_t hw,
                              const float* xm, const float* xa, const float* xs) {
  constexpr int L = Simd::kLanes;
  Simd::V acc0 = Simd::zero(), acc1 = Simd::zero();
  const Simd::V m = Simd::load(xm), a = Simd::load(xa), sh = Simd::load(xs);
  int64_t p = 0;
  auto one = [&](int64_t q, Simd::V& acc) {
    const Simd::V dz = Simd::where_positive(Simd::load(out + q * L), Simd::load(g + q * L));
    Simd::store(z + q * L, dz);
    const Simd::V v = Simd::fmadd(Simd::sub(Simd::load(x + q * L), m), a, sh);  // ew::affine
    acc = Simd::fmadd(dz, v, acc);
  };
  for (; p + 1 < hw; p += 2) {
    one(p, acc0);
    one(p + 1, acc1);
  }
  if (p < hw) one(p, acc0);
  Simd::store(ds, Simd::add(acc0, acc1));
}
#else
constexpr int kVecBlock = -1;  // none at the generic level
#endif

template <int K>
void scale_add_relu_bwd(const LayoutView& dout, const LayoutView& out, const LayoutView& x, float* ds,
                        const LayoutView& dsc, const ChannelAffine& x_bn) {
  const int B = K ? K : dout.b;
#pragma omp parallel for collapse(2) schedule(static) if (floats(dout) >= kParallelMin)
  for (int n = 0; n < dout.n; ++n) {
    for (int j = 0; j < dout.cb; ++j) {
      const float* gb = dout.block(n, j);
      const float* ob = out.block(n, j);
      float* zb = dsc.block(n, j);
      const int valid = dout.valid_lanes(j);
      if (ds == nullptr) {  // plain ResNeXt: only the relu mask
        if constexpr (K == 1) {
#pragma omp simd
          for (int64_t p = 0; p < dout.hw; ++p) zb[p] = ew::relu_grad(ob[p], gb[p]);
        } else {
          for (int64_t p = 0; p < dout.hw; ++p) {
            const int64_t o = p * B;
#pragma omp simd
            for (int l = 0; l < B; ++l) zb[o + l] = l < valid ? ew::relu_grad(ob[o + l], gb[o + l]) : 0.f;
          }
        }
        continue;
      }
      const float* xb = x.block(n, j);
      float* dsb = ds + int64_t(n) * dout.c + int64_t(j) * B;
      AffineLanes<K> xf(x_bn, B, j, valid);
      const float *xm = xf.m(), *xa = xf.a(), *xs = xf.s();
      if constexpr (K == 1) {
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t p = 0; p < dout.hw; ++p) {
          const float dz = ew::relu_grad(ob[p], gb[p]);
          zb[p] = dz;
          sum += dz * ew::affine(xb[p], xm[0], xa[0], xs[0]);
        }
        dsb[0] = sum;
      } else {
#if SX_HAS_AVX2
        if (K == kVecBlock && valid == K) {  // the sums in registers: through the stack they chain store -> load
          scale_add_relu_bwd_block(gb, ob, xb, zb, dsb, dout.hw, xm, xa, xs);
          continue;
        }
#endif
        Lanes<K> acc_lanes(B);
        float* acc = acc_lanes.data();
        for (int l = 0; l < B; ++l) acc[l] = 0.f;
        for (int64_t p = 0; p < dout.hw; ++p) {
          const int64_t o = p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) {
            const float dz = l < valid ? ew::relu_grad(ob[o + l], gb[o + l]) : 0.f;
            zb[o + l] = dz;
            acc[l] += dz * ew::affine(xb[o + l], xm[l], xa[l], xs[l]);
          }
        }
        for (int l = 0; l < valid; ++l) dsb[l] = acc[l];
      }
    }
  }
}

#if SX_HAS_AVX2
// One full block of scale_add_relu_bwd_sums: z = relu_grad(out, g), and per lane Σz, Σz·(x - xm),
// Σz·(sc - sm) (WithSc) in fp32 over chunks of 64 pixels, then added in double.
template <bool WithSc>
void merge_sums_block(const float* g, const float* out, const float* x, const float* sc, float* z, int64_t hw,
                      const float* xm, const float* sm, double* o_dz, double* o_x, double* o_sc) {
  constexpr int L = Simd::kLanes;
  constexpr int64_t kChunk = 64;
  const Simd::V zero = Simd::zero(), mx = Simd::load(xm), ms = WithSc ? Simd::load(sm) : zero;
  Simd::D d[3][2];
  for (auto& dd : d) dd[0] = dd[1] = Simd::dzero();
  for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
    const int64_t pe = std::min(hw, p0 + kChunk);
    Simd::V a[3] = {zero, zero, zero};
    for (int64_t p = p0; p < pe; ++p) {
      const Simd::V dz = Simd::where_positive(Simd::load(out + p * L), Simd::load(g + p * L));
      Simd::store(z + p * L, dz);
      a[0] = Simd::add(a[0], dz);
      a[1] = Simd::fmadd(dz, Simd::sub(Simd::load(x + p * L), mx), a[1]);
      if constexpr (WithSc) a[2] = Simd::fmadd(dz, Simd::sub(Simd::load(sc + p * L), ms), a[2]);
    }
    for (int k = 0; k < 3; ++k) {
      d[k][0] = Simd::dadd(d[k][0], Simd::lo(a[k]));
      d[k][1] = Simd::dadd(d[k][1], Simd::hi(a[k]));
    }
  }
  double* outs[3] = {o_dz, o_x, o_sc};
  for (int k = 0; k < (WithSc ? 3 : 2); ++k) Simd::store_pd(outs[k], d[k][0], d[k][1]);
}
#endif

// scale_add_relu_bwd with the deferred BNs' first backward pass: see Backend::scale_add_relu_backward_sums.
template <int K>
void scale_add_relu_bwd_sums(const LayoutView& dout, const LayoutView& out, const LayoutView& x, const float* xm,
                             const LayoutView& sc, const float* sm, const LayoutView& dsc,
                             const Backend::MergeSums& sums) {
  const int B = K ? K : dout.b;
  const bool with_sc = sums.dz_shortcut != nullptr;
#pragma omp parallel for collapse(2) schedule(static) if (floats(dout) >= kParallelMin)
  for (int n = 0; n < dout.n; ++n) {
    for (int j = 0; j < dout.cb; ++j) {
      const float* gb = dout.block(n, j);
      const float* ob = out.block(n, j);
      const float* xb = x.block(n, j);
      const float* sb = with_sc ? sc.block(n, j) : nullptr;
      float* zb = dsc.block(n, j);
      const int valid = dout.valid_lanes(j);
      const int64_t o = int64_t(n) * dout.c + int64_t(j) * B;
#if SX_HAS_AVX2
      if (K == kVecBlock && valid == K) {
        if (with_sc)
          merge_sums_block<true>(gb, ob, xb, sb, zb, dout.hw, xm + j * K, sm + j * K, sums.dz + o, sums.dz_x + o,
                                 sums.dz_shortcut + o);
        else
          merge_sums_block<false>(gb, ob, xb, nullptr, zb, dout.hw, xm + j * K, nullptr, sums.dz + o, sums.dz_x + o,
                                  nullptr);
        continue;
      }
#endif
      Lanes<K, double> l0(B), l1(B), l2(B);
      double *a0 = l0.data(), *a1 = l1.data(), *a2 = l2.data();
      for (int l = 0; l < B; ++l) a0[l] = a1[l] = a2[l] = 0;
      for (int64_t p = 0; p < dout.hw; ++p) {
        const int64_t q = p * B;
        for (int l = 0; l < B; ++l) {
          const float dz = l < valid ? ew::relu_grad(ob[q + l], gb[q + l]) : 0.f;
          zb[q + l] = dz;
          if (l >= valid) continue;
          const int64_t c = int64_t(j) * B + l;
          a0[l] += dz;
          a1[l] += double(dz) * double(xb[q + l] - xm[c]);
          if (with_sc) a2[l] += double(dz) * double(sb[q + l] - sm[c]);
        }
      }
      for (int l = 0; l < valid; ++l) {
        sums.dz[o + l] = a0[l];
        sums.dz_x[o + l] = a1[l];
        if (with_sc) sums.dz_shortcut[o + l] = a2[l];
      }
    }
  }
}

template <int K>
void scale_bwd(const LayoutView& dz, const float* s, const float* dmean, const LayoutView& dx) {
  const int B = K ? K : dz.b;
  const float inv_hw = 1.f / float(dz.hw);
#pragma omp parallel for collapse(2) schedule(static) if (floats(dz) >= kParallelMin)
  for (int n = 0; n < dz.n; ++n) {
    for (int j = 0; j < dz.cb; ++j) {
      const float* zb = dz.block(n, j);
      float* xb = dx.block(n, j);
      const int valid = dz.valid_lanes(j);
      const int64_t c0 = int64_t(n) * dz.c + int64_t(j) * B;
      Lanes<K> scale_lanes(B), add_lanes(B);
      float* scale = scale_lanes.data();
      float* add = add_lanes.data();
      for (int l = 0; l < B; ++l) {
        scale[l] = l >= valid ? 0.f : s ? s[c0 + l] : 1.f;
        add[l] = l >= valid || dmean == nullptr ? 0.f : dmean[c0 + l] * inv_hw;
      }
      if constexpr (K == 1) {
        const float s0 = scale[0], a0 = add[0];
#pragma omp simd
        for (int64_t p = 0; p < dz.hw; ++p) xb[p] = ew::scale_grad(zb[p], s0, a0);
      } else {
        for (int64_t p = 0; p < dz.hw; ++p) {
          const int64_t o = p * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) xb[o + l] = l < valid ? ew::scale_grad(zb[o + l], scale[l], add[l]) : 0.f;
        }
      }
    }
  }
}

template <bool kNesterov>
void sgd_run(float* __restrict w, const float* __restrict g, float* __restrict v,
                  std::span<const SgdSegment> segments, float lr, float m, float gs) {
  int64_t total = 0;
  for (const SgdSegment& seg : segments) total += seg.count;
#pragma omp parallel if (total >= kParallelMin)
  for (const SgdSegment& seg : segments) {
    const float wd = seg.weight_decay;
    const int64_t end = seg.offset + seg.count;
    // Segments are disjoint: no barrier between them, each thread moves on to its share of the next.
#pragma omp for schedule(static) nowait
    for (int64_t i = seg.offset; i < end; ++i) ew::sgd_update(w[i], g[i], v[i], lr, m, wd, kNesterov, gs);
  }
}

// dx[n, c, oh·S, ow·S] += t[n, c, oh, ow]: the input gradient of a strided 1x1 conv, which is zero
// at every other pixel. t (N, C, OH, OW) and dx (N, C, H, W) share a layout.
void add_strided_impl(const LayoutView& t, int oh_n, int ow_n, const LayoutView& dx, int w, int s) {
  const int B = t.b;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < t.n; ++n)
    for (int j = 0; j < t.cb; ++j) {
      const float* tb = t.block(n, j);
      float* db = dx.block(n, j);
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow) {
          const float* a = tb + (int64_t(oh) * ow_n + ow) * B;
          float* d = db + (int64_t(oh) * s * w + int64_t(ow) * s) * B;
#pragma omp simd
          for (int l = 0; l < B; ++l) d[l] += a[l];
        }
    }
}


}  // namespace

// ---- entries (kernels_isa.inc) ---------------------------------------------------------------------

void gap_forward(const LayoutView& x, float* y) {
  dispatch_block(x.b, [&](auto k) { gap_fwd<decltype(k)::value>(x, y); });
}

void gap_backward(const float* dy, const LayoutView& dx) {
  dispatch_block(dx.b, [&](auto k) { gap_bwd<decltype(k)::value>(dy, dx); });
}

void relu_forward(const float* x, float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) y[i] = ew::relu(x[i]);
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) dx[i] = ew::relu_grad(y[i], dy[i]);
}

void sigmoid_forward(const float* x, float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) y[i] = ew::sigmoid(x[i]);
}

void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) dx[i] = ew::sigmoid_grad(y[i], dy[i]);
}

void scale_add_relu_forward(const LayoutView& x, const float* s, const LayoutView& shortcut, const LayoutView& out,
                            const ChannelAffine& x_bn, const ChannelAffine& shortcut_bn) {
  dispatch_block(x.b, [&](auto k) { scale_add_relu_fwd<decltype(k)::value>(x, s, shortcut, out, x_bn, shortcut_bn); });
}

void scale_add_relu_backward(const LayoutView& dout, const LayoutView& out, const LayoutView& x, float* ds,
                             const LayoutView& dshortcut, const ChannelAffine& x_bn) {
  dispatch_block(dout.b, [&](auto k) { scale_add_relu_bwd<decltype(k)::value>(dout, out, x, ds, dshortcut, x_bn); });
}

void scale_add_relu_backward_sums(const LayoutView& dout, const LayoutView& out, const LayoutView& x,
                                  const float* x_mean, const LayoutView& shortcut, const float* shortcut_mean,
                                  const LayoutView& dshortcut, const Backend::MergeSums& sums) {
  dispatch_block(dout.b, [&](auto k) {
    scale_add_relu_bwd_sums<decltype(k)::value>(dout, out, x, x_mean, shortcut, shortcut_mean, dshortcut, sums);
  });
}

void scale_backward(const LayoutView& dz, const float* s, const float* dmean, const LayoutView& dx) {
  dispatch_block(dz.b, [&](auto k) { scale_bwd<decltype(k)::value>(dz, s, dmean, dx); });
}

void add_into(float* dst, const float* src, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) dst[i] += src[i];
}

void sgd_segments(float* w, const float* g, float* v, std::span<const SgdSegment> segments, const SgdHyper& hyper) {
  if (hyper.nesterov)
    sgd_run<true>(w, g, v, segments, hyper.lr, hyper.momentum, hyper.grad_scale);
  else
    sgd_run<false>(w, g, v, segments, hyper.lr, hyper.momentum, hyper.grad_scale);
}

void add_strided(const LayoutView& t, int oh_n, int ow_n, const LayoutView& dx, int w, int s) {
  add_strided_impl(t, oh_n, ow_n, dx, w, s);
}

}  // namespace sx::model::cpu::SX_ISA_NS

