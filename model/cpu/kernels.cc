// CpuBackend's own kernels: global average pool, ReLU/sigmoid, the SE residual merge and its
// gradients, softmax cross-entropy, top-k counting and the fused SGD step.
//
// Activation kernels see any layout as [N][CB][HW][B] (layout_view.h) and run OpenMP-parallel over
// (n, channel block), one pass over memory, the inner loop over the B lanes of a block (16 floats
// of nChw16c = one vector; for nchw, B = 1 and the pixel loop is the vector loop). Lanes past C in
// a padded last block are written as 0 whatever the inputs hold there (add_into aside: it adds the
// padding too, 0 + 0). The arithmetic itself is model/elementwise.h.
//
// In-place is allowed where it makes sense: out may be x or shortcut, dshortcut may be dout, dx may
// be dz, y may be x, dx may be dy, dlogits may be logits (each element is read before it is written).
//
// Determinism: no floating-point reduction crosses threads (each (n, c) sum is done by one thread,
// the batch loss is summed serially), so results do not depend on the thread count or timing.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "model/cpu/avx512.h"
#include "model/cpu/cpu_backend.h"
#include "model/cpu/layout_view.h"
#include "model/elementwise.h"

namespace sx::model::cpu {
namespace {

bool same_shape(const Tensor& a, const Tensor& b) { return a.dims == b.dims && a.layout == b.layout; }

std::string shape_of(const Tensor& t) { return t.dims.to_string() + " " + layout_name(t.layout); }

Status check_same(const char* op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  if (same_shape(a, b)) return Status::ok();
  return Status::invalid_argument(std::string(op) + ": " + a_name + " is " + shape_of(a) + " but " + b_name + " is " +
                                  shape_of(b) + "; they must have the same dims and layout");
}

// ---- activation kernels, one template per op, K = block size or 0 ---------------------------------
// Vector loops are marked `omp simd`: over the pixels when B = 1, over the lanes of a pixel
// otherwise (without it GCC unrolls the 16 lanes into scalar code).

template <int K>
void gap_forward(const LayoutView& x, float* y) {  // y (N, C)
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
void gap_backward(const float* dy, const LayoutView& dx) {
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

#ifdef __AVX512F__
// One full nChw16c block of scale_add_relu_bwd: z = relu_grad(out, g) (ew::relu_grad: g where
// out > 0), ds += z · affine(x) over the hw pixels; two accumulators split the FMA dependency chain.
void scale_add_relu_bwd_block16(const float* g, const float* out, const float* x, float* z, float* ds, int64_t hw,
                                const float* xm, const float* xa, const float* xs) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps(), m = _mm512_loadu_ps(xm), a = _mm512_loadu_ps(xa),
               sh = _mm512_loadu_ps(xs);
  int64_t p = 0;
  auto one = [&](int64_t q, __m512& acc) {
    const __mmask16 pos = _mm512_cmp_ps_mask(_mm512_loadu_ps(out + q * 16), zero, _CMP_GT_OQ);
    const __m512 dz = _mm512_maskz_mov_ps(pos, _mm512_loadu_ps(g + q * 16));
    _mm512_storeu_ps(z + q * 16, dz);
    const __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_loadu_ps(x + q * 16), m), a, sh);  // ew::affine
    acc = _mm512_fmadd_ps(dz, v, acc);
  };
  for (; p + 1 < hw; p += 2) {
    one(p, acc0);
    one(p + 1, acc1);
  }
  if (p < hw) one(p, acc0);
  _mm512_storeu_ps(ds, _mm512_add_ps(acc0, acc1));
}
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
#ifdef __AVX512F__
        if (K == 16 && valid == 16) {  // the sums in registers: through the stack they chain store -> load
          scale_add_relu_bwd_block16(gb, ob, xb, zb, dsb, dout.hw, xm, xa, xs);
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

#ifdef __AVX512F__
// One full nChw16c block of scale_add_relu_bwd_sums: z = relu_grad(out, g), and per lane Σz,
// Σz·(x - xm), Σz·(sc - sm) (WithSc) in fp32 over chunks of 64 pixels, then added in double.
template <bool WithSc>
void merge_sums_block16(const float* g, const float* out, const float* x, const float* sc, float* z, int64_t hw,
                        const float* xm, const float* sm, double* o_dz, double* o_x, double* o_sc) {
  constexpr int64_t kChunk = 64;
  const __m512 zero = _mm512_setzero_ps(), mx = _mm512_loadu_ps(xm), ms = WithSc ? _mm512_loadu_ps(sm) : zero;
  __m512d d[3][2];
  for (auto& dd : d) dd[0] = dd[1] = _mm512_setzero_pd();
  for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
    const int64_t pe = std::min(hw, p0 + kChunk);
    __m512 a[3] = {zero, zero, zero};
    for (int64_t p = p0; p < pe; ++p) {
      const __mmask16 pos = _mm512_cmp_ps_mask(_mm512_loadu_ps(out + p * 16), zero, _CMP_GT_OQ);
      const __m512 dz = _mm512_maskz_mov_ps(pos, _mm512_loadu_ps(g + p * 16));
      _mm512_storeu_ps(z + p * 16, dz);
      a[0] = _mm512_add_ps(a[0], dz);
      a[1] = _mm512_fmadd_ps(dz, _mm512_sub_ps(_mm512_loadu_ps(x + p * 16), mx), a[1]);
      if constexpr (WithSc) a[2] = _mm512_fmadd_ps(dz, _mm512_sub_ps(_mm512_loadu_ps(sc + p * 16), ms), a[2]);
    }
    for (int k = 0; k < 3; ++k) {
      d[k][0] = _mm512_add_pd(d[k][0], lo_pd(a[k]));
      d[k][1] = _mm512_add_pd(d[k][1], hi_pd(a[k]));
    }
  }
  double* outs[3] = {o_dz, o_x, o_sc};
  for (int k = 0; k < (WithSc ? 3 : 2); ++k) store_pd(outs[k], d[k][0], d[k][1]);
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
#ifdef __AVX512F__
      if (K == 16 && valid == 16) {
        if (with_sc)
          merge_sums_block16<true>(gb, ob, xb, sb, zb, dout.hw, xm + j * 16, sm + j * 16, sums.dz + o, sums.dz_x + o,
                                   sums.dz_shortcut + o);
        else
          merge_sums_block16<false>(gb, ob, xb, nullptr, zb, dout.hw, xm + j * 16, nullptr, sums.dz + o,
                                    sums.dz_x + o, nullptr);
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
void sgd_segments(float* __restrict w, const float* __restrict g, float* __restrict v,
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

}  // namespace

// ---- global average pool ----------------------------------------------------------------------------

Status CpuBackend::global_avg_pool_forward(const Tensor& x, float* y) {
  if (x.dims.count() == 0) return Status::ok();
  SX_CHECK_ARG(x.data != nullptr && y != nullptr, "global_avg_pool_forward: null pointer");
  const LayoutView xv = LayoutView::of(x);
  dispatch_block(xv.b, [&](auto k) { gap_forward<decltype(k)::value>(xv, y); });
  return Status::ok();
}

Status CpuBackend::global_avg_pool_backward(const float* dy, const Tensor& dx) {
  if (dx.dims.count() == 0) return Status::ok();
  SX_CHECK_ARG(dx.data != nullptr && dy != nullptr, "global_avg_pool_backward: null pointer");
  const LayoutView dxv = LayoutView::of(dx);
  dispatch_block(dxv.b, [&](auto k) { gap_backward<decltype(k)::value>(dy, dxv); });
  return Status::ok();
}

// ---- 2-D element-wise ---------------------------------------------------------------------------------

Status CpuBackend::relu_forward(const float* x, float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) y[i] = ew::relu(x[i]);
  return Status::ok();
}

Status CpuBackend::relu_backward(const float* y, const float* dy, float* dx, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) dx[i] = ew::relu_grad(y[i], dy[i]);
  return Status::ok();
}

Status CpuBackend::sigmoid_forward(const float* x, float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) y[i] = ew::sigmoid(x[i]);
  return Status::ok();
}

Status CpuBackend::sigmoid_backward(const float* y, const float* dy, float* dx, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) dx[i] = ew::sigmoid_grad(y[i], dy[i]);
  return Status::ok();
}

// ---- residual merge with SE scale ---------------------------------------------------------------------

Status CpuBackend::scale_add_relu_forward(const Tensor& x, const float* s, const Tensor& shortcut, const Tensor& out,
                                          ChannelAffine x_bn, ChannelAffine shortcut_bn) {
  SX_TRY(check_same("scale_add_relu_forward", x, "x", shortcut, "shortcut"));
  SX_TRY(check_same("scale_add_relu_forward", x, "x", out, "out"));
  if (x.dims.count() == 0) return Status::ok();
  const LayoutView xv = LayoutView::of(x), scv = LayoutView::of(shortcut), ov = LayoutView::of(out);
  dispatch_block(xv.b, [&](auto k) { scale_add_relu_fwd<decltype(k)::value>(xv, s, scv, ov, x_bn, shortcut_bn); });
  return Status::ok();
}

Status CpuBackend::scale_add_relu_backward(const Tensor& dout, const Tensor& out, const Tensor& x, const float* s,
                                           const Tensor& dshortcut, float* ds, ChannelAffine x_bn) {
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", out, "out"));
  SX_TRY(check_same("scale_add_relu_backward", dout, "dout", dshortcut, "dshortcut"));
  if (s != nullptr) {
    SX_TRY(check_same("scale_add_relu_backward", dout, "dout", x, "x"));
    SX_CHECK_ARG(ds != nullptr, "scale_add_relu_backward: ds is null but s is not (the SE scale needs its gradient)");
  }
  if (dout.dims.count() == 0) return Status::ok();
  const LayoutView gv = LayoutView::of(dout), ov = LayoutView::of(out), xv = LayoutView::of(x),
                   zv = LayoutView::of(dshortcut);
  float* ds_or_null = s != nullptr ? ds : nullptr;
  dispatch_block(gv.b, [&](auto k) { scale_add_relu_bwd<decltype(k)::value>(gv, ov, xv, ds_or_null, zv, x_bn); });
  return Status::ok();
}

Status CpuBackend::scale_add_relu_backward_sums(const Tensor& dout, const Tensor& out, const Tensor& x,
                                                ChannelAffine x_bn, const float* s, const Tensor& shortcut,
                                                ChannelAffine shortcut_bn, const Tensor& dshortcut, float* ds,
                                                const MergeSums& sums) {
  const char* what = "scale_add_relu_backward_sums";
  SX_TRY(check_same(what, dout, "dout", out, "out"));
  SX_TRY(check_same(what, dout, "dout", dshortcut, "dshortcut"));
  SX_TRY(check_same(what, dout, "dout", x, "x"));
  SX_CHECK_ARG(x_bn && sums.dz && sums.dz_x, "scale_add_relu_backward_sums: needs x_bn and the dz, dz_x sums");
  SX_CHECK_ARG(bool(shortcut_bn) == (sums.dz_shortcut != nullptr),
               "scale_add_relu_backward_sums: dz_shortcut is taken exactly when shortcut_bn is set");
  if (shortcut_bn) SX_TRY(check_same(what, dout, "dout", shortcut, "shortcut"));
  SX_CHECK_ARG(s == nullptr || ds != nullptr, "scale_add_relu_backward_sums: ds is null but s is not");
  if (dout.dims.count() == 0) return Status::ok();
  const LayoutView gv = LayoutView::of(dout), ov = LayoutView::of(out), xv = LayoutView::of(x),
                   sv = LayoutView::of(shortcut), zv = LayoutView::of(dshortcut);
  dispatch_block(gv.b, [&](auto k) {
    scale_add_relu_bwd_sums<decltype(k)::value>(gv, ov, xv, x_bn.mean, sv, shortcut_bn.mean, zv, sums);
  });
  if (s != nullptr) {  // ds = Σ dz·((x - m)·a + b) from the same sums
    const int c = dout.dims.c;
    for (int64_t i = 0; i < int64_t(dout.dims.n) * c; ++i)
      ds[i] = float(double(x_bn.scale[i % c]) * sums.dz_x[i] + double(x_bn.shift[i % c]) * sums.dz[i]);
  }
  return Status::ok();
}

Status CpuBackend::scale_backward(const Tensor& dz, const float* s, const float* dmean, const Tensor& dx) {
  SX_TRY(check_same("scale_backward", dz, "dz", dx, "dx"));
  if (dz.dims.count() == 0) return Status::ok();
  const LayoutView zv = LayoutView::of(dz), xv = LayoutView::of(dx);
  dispatch_block(zv.b, [&](auto k) { scale_bwd<decltype(k)::value>(zv, s, dmean, xv); });
  return Status::ok();
}

Status CpuBackend::add_into(const Tensor& dst, const Tensor& src) {
  SX_TRY(check_same("add_into", dst, "dst", src, "src"));
  // Padding is 0 in both, so the flat sum keeps it 0 and needs no layout at all.
  float* d = dst.data;
  const float* a = src.data;
  const int64_t count = dst.padded_count();
#pragma omp parallel for simd schedule(static) if (count >= kParallelMin)
  for (int64_t i = 0; i < count; ++i) d[i] += a[i];
  return Status::ok();
}

// ---- loss and metrics ---------------------------------------------------------------------------------

Status CpuBackend::softmax_cross_entropy(const float* logits, const int32_t* labels, const float* soft_targets, int n,
                                         int k, float label_smoothing, float grad_scale, float* dlogits,
                                         float* host_loss) {
  SX_CHECK_ARG(n > 0 && k > 0, "softmax_cross_entropy: empty batch or no classes");
  SX_CHECK_ARG(logits != nullptr && dlogits != nullptr && host_loss != nullptr, "softmax_cross_entropy: null pointer");
  SX_CHECK_ARG(soft_targets != nullptr || labels != nullptr, "softmax_cross_entropy: neither labels nor soft targets");
  SX_CHECK_ARG(label_smoothing >= 0.f && label_smoothing <= 1.f,
               "softmax_cross_entropy: label_smoothing not in [0, 1]");
  if (soft_targets == nullptr) {
    for (int i = 0; i < n; ++i) {
      if (labels[i] < 0 || labels[i] >= k)
        return Status::invalid_argument("softmax_cross_entropy: label " + std::to_string(labels[i]) + " of sample " +
                                        std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
    }
  }
  // Soft targets (mixup, cutmix) are expected to sum to 1 per row, as dlogits = softmax - target assumes.
  const float scale = grad_scale / float(n);
  const float inv_k = 1.f / float(k);
  std::vector<double> row_loss(size_t(n), 0.0);
#pragma omp parallel for schedule(static) if (int64_t(n) * k >= kParallelMin)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    float* dz = dlogits + int64_t(i) * k;
    float mx = z[0];
    for (int c = 1; c < k; ++c) mx = std::max(mx, z[c]);
    double sum = 0.0;
    for (int c = 0; c < k; ++c) sum += std::exp(double(z[c]) - mx);
    const double lse = mx + std::log(sum);  // log Σ exp z, without overflow
    double loss = 0.0;
    for (int c = 0; c < k; ++c) {
      const float t = soft_targets ? soft_targets[int64_t(i) * k + c]
                                   : ew::smoothed_target(c == labels[i], label_smoothing, inv_k);
      const double zc = z[c];
      loss += t * (lse - zc);  // -t · log softmax
      dz[c] = ew::softmax_ce_grad(float(std::exp(zc - lse)), t, scale);
    }
    row_loss[size_t(i)] = loss;
  }
  double total = 0.0;
  for (double l : row_loss) total += l;  // serial: the same bits whatever the thread count
  *host_loss = float(total / n);
  return Status::ok();
}

// Rank of the label = classes with a higher logit + classes with an equal logit and a lower index
// (the order of a stable descending sort); top-k hit when rank < k. A NaN label logit is a miss.
Status CpuBackend::count_top_k(const float* logits, const int32_t* labels, int n, int k, int64_t* host_top1,
                               int64_t* host_top5) {
  SX_CHECK_ARG(n >= 0 && k > 0, "count_top_k: bad shape");
  SX_CHECK_ARG(host_top1 != nullptr && host_top5 != nullptr, "count_top_k: null counter");
  if (n == 0) return Status::ok();
  SX_CHECK_ARG(logits != nullptr && labels != nullptr, "count_top_k: null pointer");
  for (int i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= k)
      return Status::invalid_argument("count_top_k: label " + std::to_string(labels[i]) + " of sample " +
                                      std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
  }
  int64_t top1 = 0, top5 = 0;
#pragma omp parallel for schedule(static) reduction(+ : top1, top5) if (int64_t(n) * k >= kParallelMin)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    const int label = labels[i];
    const float zl = z[label];
    if (std::isnan(zl)) continue;
    int rank = 0;
    for (int c = 0; c < k; ++c) rank += (z[c] > zl) || (z[c] == zl && c < label);
    top1 += rank < 1;
    top5 += rank < 5;
  }
  *host_top1 += top1;
  *host_top5 += top5;
  return Status::ok();
}

// ---- optimizer ----------------------------------------------------------------------------------------

Status CpuBackend::sgd_step(float* params, const float* grads, float* momentum_buf,
                            std::span<const SgdSegment> segments, const SgdHyper& hyper) {
  // Segments run without a barrier between them, so they must not overlap.
  std::vector<SgdSegment> sorted(segments.begin(), segments.end());
  std::sort(sorted.begin(), sorted.end(), [](const SgdSegment& a, const SgdSegment& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    SX_CHECK_ARG(sorted[i].offset >= 0 && sorted[i].count >= 0, "sgd_step: segment with negative offset or count");
    SX_CHECK_ARG(i == 0 || sorted[i - 1].offset + sorted[i - 1].count <= sorted[i].offset,
                 "sgd_step: overlapping segments");
  }
  SX_CHECK_ARG(params != nullptr && grads != nullptr && momentum_buf != nullptr, "sgd_step: null buffer");
  if (hyper.nesterov) {
    sgd_segments<true>(params, grads, momentum_buf, segments, hyper.lr, hyper.momentum, hyper.grad_scale);
  } else {
    sgd_segments<false>(params, grads, momentum_buf, segments, hyper.lr, hyper.momentum, hyper.grad_scale);
  }
  return Status::ok();
}

}  // namespace sx::model::cpu
