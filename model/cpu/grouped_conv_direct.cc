// Direct grouped 3x3 convolution on blocked layouts, one vector register of channels per block:
// AVX-512 on nChw16c (4, 8 or 16 channels per group) and AVX2 on nChw8c (4 or 8), compiled once per
// instruction-set level (isa_begin.h; the generic level has none). L lanes per vector (16 or 8).
// N batch, C = OC channels, GS channels per group, CB = C/L channel blocks, H/W input and OH/OW
// output size, S stride (1 or 2), pad 1.
//
// All three passes share one scheme: rot_r, the lane permute that rotates each group of GS
// lanes by r (lane l takes channel (l/GS)·GS + (l % GS + r) % GS), lines up input channel
// (l % GS + r) % GS of lane l's group with lane l, so one FMA with a weight vector packed for
// rotation r does 16 multiply-adds of the right groups; weights come from L1:
//   forward          y[oh, ow]     += rot_r(x[oh·S - 1 + kh, ow·S - 1 + kw]) · wf[kh, kw, r]
//   backward-data    dx[ih, iw]    += rot_r(dy[oh, ow]) · wb[kh, kw, r]  (ih = oh·S - 1 + kh, ...)
//   backward-weights dwp[kh, kw, r] += dy[oh, ow] · rot_r(x[oh·S - 1 + kh, ow·S - 1 + kw])
// Forward and stride-1 backward-data rotate the outputs instead (conv_row_outrot: GS register
// accumulators per output pixel, one rotation each at the end); stride-2 backward-data and
// backward-weights load each input (dy) pixel of a row once and rotate it GS - 1 times in
// registers (r = 0 is free), each rotation feeding the 3 kw taps; backward-weights keeps the
// 3 kw × R rotations of one kh in registers across a row (R = 4 with 32 registers, 2 with 16). Each output element is
// written by one task in a fixed order, and backward-weights sums per-(n, cb) partials over n in
// order, so the results do not depend on the thread count.
#include "model/cpu/grouped_conv_direct.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "model/cpu/kernels_isa.h"

#include "model/cpu/isa_begin.h"
#include "model/cpu/simd.h"  // after isa_begin.h

namespace sx::model::cpu::SX_ISA_NS {

#if SX_HAS_AVX2
namespace {

// One vector of L floats (simd.h) and the layout and name of the op at this level.
struct Vec : Simd {
  static constexpr Layout kLayout = Simd::kLanes == 16 ? Layout::kNChw16c : Layout::kNChw8c;
  static constexpr const char* kName = Simd::kLanes == 16 ? "direct_avx512_grouped" : "direct_avx2_grouped";
};

constexpr int kLanes = Vec::kLanes;
constexpr int kMaxOwb = Vec::kRegs == 32 ? 14 : 6;  // dx pixels per conv_row_scatter2 block (accumulators)
constexpr int kDwRot = Vec::kRegs == 32 ? 4 : 2;    // rotations per dw_row_rot pass: 3·kDwRot accumulators
constexpr int kRowBlock = 8;                        // output rows (dx rows for backward-data) per task

// 64-byte aligned float scratch; grows, never shrinks.
class AlignedBuf {
 public:
  float* get(size_t floats) {
    if (floats > size_) {
      p_.reset(static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64)));
      size_ = floats;
    }
    return p_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  size_t size_ = 0;
};

// Calls f(start, count) over n pixels split into nearly equal blocks of at most max_block.
template <typename F>
void for_each_block(int n, F f, int max_block = kMaxOwb) {
  const int nb = (n + max_block - 1) / max_block;
  int start = 0;
  for (int b = 0; b < nb; ++b) {
    const int count = n / nb + (b < n % nb ? 1 : 0);
    f(start, count);
    start += count;
  }
}

// Lane l selects lane (l/GS)·GS + (l % GS + r) % GS: the group rotated by r (r = 0 is the
// identity, so a pixel needs GS - 1 permutes, not GS).
template <int GS>
Vec::I rot_index(int r) {
  alignas(64) int idx[kLanes];
  for (int l = 0; l < kLanes; ++l) idx[l] = l / GS * GS + (l % GS + r) % GS;
  return Vec::index(idx);
}

using RotFn = void (*)(const float* const*, int, int, const float*, float*, int);

// Output pixels per block of conv_row_outrot: GS accumulators each, 3/4 of the registers.
template <int GS>
constexpr int kOutRotOwb = GS >= Vec::kRegs * 3 / 4 ? 1 : Vec::kRegs * 3 / 4 / GS;

// out[o·out_step] = Σ_kh Σ_kw Σ_r rot_r(rows[kh][(start + o)·S - 1 + kw]) · P[kh, kw, r] for o < OWB,
// rows[kh] an input row (W, L) or null (outside the image), P (3, 3, GS, L) packed by rotation
// (pack_weights_rot). The permutes are moved to the outputs: rot_r(x) · P_r = rot_r(x · rot_r^-1(P_r)),
// so acc[o][r] += x · wo[kh, kw, r] with unpermuted input pixels and out[o] = Σ_r rot_r(acc[o][r]):
// GS - 1 permutes per output pixel rather than per input pixel and kh (stride 2 reads twice the
// pixels it writes); ~15 % faster than rotating the inputs in the small model (perf, both strides).
// wo = P with entry r's lanes moved by rot_r^-1 (pack_out_rot); weights come from L1.
template <int GS, int S, int OWB>
void conv_row_outrot(const float* const* rows, int w, int start, const float* wo, float* out, int out_step) {
  Vec::V acc[OWB][GS];
#pragma GCC unroll 16
  for (int o = 0; o < OWB; ++o)
#pragma GCC unroll 16
    for (int r = 0; r < GS; ++r) acc[o][r] = Vec::zero();
  for (int kh = 0; kh < 3; ++kh) {
    const float* row = rows[kh];
    if (row == nullptr) continue;
    const float* wk = wo + kh * 3 * GS * kLanes;
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      Vec::V xv[OWB];
#pragma GCC unroll 16
      for (int o = 0; o < OWB; ++o) {
        const int ic = (start + o) * S - 1 + kw;
        xv[o] = ic >= 0 && ic < w ? Vec::load(row + int64_t(ic) * kLanes) : Vec::zero();
      }
#pragma GCC unroll 16
      for (int r = 0; r < GS; ++r) {
        const Vec::V wv = Vec::load_aligned(wk + (kw * GS + r) * kLanes);
#pragma GCC unroll 16
        for (int o = 0; o < OWB; ++o) acc[o][r] = Vec::fmadd(xv[o], wv, acc[o][r]);
      }
    }
  }
#pragma GCC unroll 16
  for (int o = 0; o < OWB; ++o) {
    Vec::V y = acc[o][0];
#pragma GCC unroll 16
    for (int r = 1; r < GS; ++r) y = Vec::add(y, Vec::permute(rot_index<GS>(r), acc[o][r]));
    Vec::store(out + int64_t(o) * out_step, y);
  }
}

template <int GS, int S, size_t... I>
constexpr std::array<RotFn, sizeof...(I)> outrot_table(std::index_sequence<I...>) {
  return {{&conv_row_outrot<GS, S, int(I) + 1>...}};
}

template <int GS>
RotFn outrot_fn(int s, int count) {
  static constexpr auto t1 = outrot_table<GS, 1>(std::make_index_sequence<kOutRotOwb<GS>>());
  static constexpr auto t2 = outrot_table<GS, 2>(std::make_index_sequence<kOutRotOwb<GS>>());
  return (s == 1 ? t1 : t2)[count - 1];
}

// Stride-2 backward-data: dx[iw0 + o] (o < OWB) = Σ over dy rows[kh] (null: none) and dy pixels
// ow with iw0 + o = 2·ow - 1 + kw of rot_r(dy[ow]) · wt[8 - (kh·3 + kw), r], wt packed by
// pack_weights_rot(flip). P = (iw0 + 1) % 2 fixes which block pixels each dy pixel reaches, so
// the accumulator indices are compile-time. Each dy pixel is loaded and rotated once per row.
template <int GS, int P, int OWB>
void conv_row_scatter2(const float* const* rows, int ow_n, int iw0, const float* wt, float* out, int out_step) {
  Vec::I idx[GS];
  for (int r = 0; r < GS; ++r) idx[r] = rot_index<GS>(r);
  Vec::V acc[OWB];
#pragma GCC unroll 16
  for (int o = 0; o < OWB; ++o) acc[o] = Vec::zero();
  const int ow0 = (iw0 + 1 - P) / 2;  // o = 2·(ow - ow0) + kw - P
  for (int kh = 0; kh < 3; ++kh) {
    const float* row = rows[kh];
    if (row == nullptr) continue;
    const float* wk = wt + (2 - kh) * 3 * GS * kLanes;
#pragma GCC unroll 16
    for (int m = -1; m <= (OWB + 1) / 2; ++m) {
      const int ow = ow0 + m;
      if (ow < 0 || ow >= ow_n) continue;
      const Vec::V v = Vec::load(row + int64_t(ow) * kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < GS; ++r) {
        const Vec::V p = r == 0 ? v : Vec::permute(idx[r], v);
#pragma GCC unroll 3
        for (int kw = 0; kw < 3; ++kw) {
          const int o = 2 * m + kw - P;
          if (o < 0 || o >= OWB) continue;
          acc[o] = Vec::fmadd(p, Vec::load_aligned(wk + ((2 - kw) * GS + r) * kLanes), acc[o]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int o = 0; o < OWB; ++o) Vec::store(out + int64_t(o) * out_step, acc[o]);
}

template <int GS, int P, size_t... I>
constexpr std::array<RotFn, sizeof...(I)> scatter_table(std::index_sequence<I...>) {
  return {{&conv_row_scatter2<GS, P, int(I) + 1>...}};
}

template <int GS>
RotFn scatter_fn(int p, int count) {
  static constexpr auto t0 = scatter_table<GS, 0>(std::make_index_sequence<kMaxOwb>());
  static constexpr auto t1 = scatter_table<GS, 1>(std::make_index_sequence<kMaxOwb>());
  return (p == 0 ? t0 : t1)[count - 1];
}

// Rotations [R0, R0 + kDwRot) of one input pixel v into acc[kw][r - R0] += rot_r(v) · dy[kw] for
// the taps Kk that hit an output pixel (dy[kw] is that pixel's dy vector).
template <int GS, int R0, bool K0, bool K1, bool K2>
__attribute__((always_inline)) inline void dw_pixel(const Vec::I* idx, Vec::V v, const float* const* dyp,
                                                    Vec::V (&acc)[3][kDwRot]) {
#pragma GCC unroll 4
  for (int r = 0; r < kDwRot; ++r) {
    const Vec::V p = R0 + r == 0 ? v : Vec::permute(idx[r], v);
    if (K0) acc[0][r] = Vec::fmadd(p, Vec::load(dyp[0]), acc[0][r]);
    if (K1) acc[1][r] = Vec::fmadd(p, Vec::load(dyp[1]), acc[1][r]);
    if (K2) acc[2][r] = Vec::fmadd(p, Vec::load(dyp[2]), acc[2][r]);
  }
}

// part[kw][r] += Σ_ow dy[ow] · rot_r(xrow[ow·S - 1 + kw]) for r in [R0, R0 + kDwRot); part
// (3, GS, L) is one kh. Walks the input pixels so each is loaded once and rotated in registers;
// 3·kDwRot independent sums hide the FMA latency.
template <int GS, int S, int R0>
void dw_row_rot(const float* xrow, const float* dy, int w, int ow_n, float* part) {
  Vec::I idx[kDwRot];
  for (int r = 0; r < kDwRot; ++r) idx[r] = rot_index<GS>(R0 + r);
  Vec::V acc[3][kDwRot];
  for (int k = 0; k < 3; ++k)
    for (int r = 0; r < kDwRot; ++r) acc[k][r] = Vec::zero();
  auto x = [&](int ic) { return Vec::load(xrow + int64_t(ic) * kLanes); };
  auto d = [&](int ow) { return dy + int64_t(ow) * kLanes; };  // may point outside: only used when valid
  if constexpr (S == 1) {  // pixel ic feeds ow = ic + 1 - kw
    if (w == 1) {
      const float* p[3] = {nullptr, d(0), nullptr};
      dw_pixel<GS, R0, false, true, false>(idx, x(0), p, acc);
    } else {
      const float* p0[3] = {d(1), d(0), nullptr};
      dw_pixel<GS, R0, true, true, false>(idx, x(0), p0, acc);
      for (int ic = 1; ic < w - 1; ++ic) {
        const float* p[3] = {d(ic + 1), d(ic), d(ic - 1)};
        dw_pixel<GS, R0, true, true, true>(idx, x(ic), p, acc);
      }
      const float* pl[3] = {nullptr, d(w - 1), d(w - 2)};
      dw_pixel<GS, R0, false, true, true>(idx, x(w - 1), pl, acc);
    }
  } else {  // even ic = 2k feeds ow = k (kw 1); odd ic = 2k + 1 feeds ow = k + 1 (kw 0), k (kw 2)
    for (int k = 0; k < ow_n; ++k) {
      const float* pe[3] = {nullptr, d(k), nullptr};
      dw_pixel<GS, R0, false, true, false>(idx, x(2 * k), pe, acc);
      if (2 * k + 1 >= w) break;
      const float* po[3] = {d(k + 1), nullptr, d(k)};
      if (k + 1 < ow_n)
        dw_pixel<GS, R0, true, false, true>(idx, x(2 * k + 1), po, acc);
      else
        dw_pixel<GS, R0, false, false, true>(idx, x(2 * k + 1), po, acc);
    }
  }
  for (int k = 0; k < 3; ++k)
    for (int r = 0; r < kDwRot; ++r) {
      float* q = part + (k * GS + R0 + r) * kLanes;
      Vec::store_aligned(q, Vec::add(Vec::load_aligned(q), acc[k][r]));
    }
}

template <int GS, int S, int... R0>
void dw_row_rot_all(const float* xrow, const float* dy, int w, int ow_n, float* part,
                    std::integer_sequence<int, R0...>) {
  (dw_row_rot<GS, S, R0 * kDwRot>(xrow, dy, w, ow_n, part), ...);
}

template <int GS>
class GroupedConvDirect final : public CpuConv {
 public:
  explicit GroupedConvDirect(const ConvDesc& d)
      : d_(d), s_(d.stride), h_(d.in.h), w_(d.in.w), oh_((d.in.h - 1) / d.stride + 1),
        ow_((d.in.w - 1) / d.stride + 1), cb_(d.in.c / kLanes), out_{d.in.n, d.oc, oh_, ow_} {}

  Dims out_dims() const override { return out_; }
  Layout out_layout() const override { return Vec::kLayout; }
  std::string impl_info() const override { return std::string(Vec::kName) + ":gs" + std::to_string(GS); }

  Status forward(const Tensor& x, const float* w, const Tensor& y) override {
    SX_TRY(check(x, d_.in, "grouped conv forward x"));
    SX_TRY(check(y, out_, "grouped conv forward y"));
    SX_CHECK_ARG(w != nullptr, "grouped conv forward: null weights");
    const float* wf = pack_out_rot(pack_weights_rot(w, /*flip=*/false));
    const int nrb = (oh_ + kRowBlock - 1) / kRowBlock;
    const int64_t tasks = int64_t(d_.in.n) * cb_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t ncb = 0; ncb < tasks; ++ncb)  // n·CB + cb
      for (int rb = 0; rb < nrb; ++rb) {
        const int cb = int(ncb % cb_);
        const float* src = x.data + ncb * h_ * w_ * kLanes;  // (H, W, L)
        float* dst = y.data + ncb * oh_ * ow_ * kLanes;      // (OH, OW, L)
        const float* wt = wf + int64_t(cb) * 9 * GS * kLanes;
        for (int oh = rb * kRowBlock; oh < std::min(oh_, (rb + 1) * kRowBlock); ++oh) {
          const float* rows[3];
          for (int kh = 0; kh < 3; ++kh) {
            const int ih = oh * s_ - 1 + kh;
            rows[kh] = ih < 0 || ih >= h_ ? nullptr : src + int64_t(ih) * w_ * kLanes;
          }
          for_each_block(ow_, [&](int start, int count) {
            outrot_fn<GS>(s_, count)(rows, w_, start, wt, dst + (int64_t(oh) * ow_ + start) * kLanes, kLanes);
          }, kOutRotOwb<GS>);
        }
      }
    return Status::ok();
  }

  Status backward_data(const Tensor& dy, const float* w, const Tensor& dx) override {
    SX_TRY(check(dy, out_, "grouped conv backward_data dy"));
    SX_TRY(check(dx, d_.in, "grouped conv backward_data dx"));
    SX_CHECK_ARG(w != nullptr, "grouped conv backward_data: null weights");
    return s_ == 1 ? backward_data_s1(dy, w, dx) : backward_data_s2(dy, w, dx);
  }

  Status backward_weights(const Tensor& x, const Tensor& dy, float* dw, bool accumulate) override {
    SX_TRY(check(x, d_.in, "grouped conv backward_weights x"));
    SX_TRY(check(dy, out_, "grouped conv backward_weights dy"));
    SX_CHECK_ARG(dw != nullptr, "grouped conv backward_weights: null dw");
    const int n_img = d_.in.n;
    const int64_t part_floats = 9 * GS * kLanes;  // (3, 3, GS, L) per (n, cb)
    float* parts = parts_.get(size_t(n_img) * cb_ * part_floats);
#pragma omp parallel for schedule(static)
    for (int64_t ncb = 0; ncb < int64_t(n_img) * cb_; ++ncb) {
      float* part = parts + ncb * part_floats;
      std::memset(part, 0, part_floats * sizeof(float));
      const float* src = x.data + ncb * h_ * w_ * kLanes;
      const float* dys = dy.data + ncb * oh_ * ow_ * kLanes;
      for (int oh = 0; oh < oh_; ++oh)
        for (int kh = 0; kh < 3; ++kh) {
          const int ih = oh * s_ - 1 + kh;
          if (ih < 0 || ih >= h_) continue;
          const float* xrow = src + int64_t(ih) * w_ * kLanes;
          const float* dyrow = dys + int64_t(oh) * ow_ * kLanes;
          float* pk = part + kh * 3 * GS * kLanes;
          if (s_ == 1)
            dw_row_rot_all<GS, 1>(xrow, dyrow, w_, ow_, pk, std::make_integer_sequence<int, GS / kDwRot>());
          else
            dw_row_rot_all<GS, 2>(xrow, dyrow, w_, ow_, pk, std::make_integer_sequence<int, GS / kDwRot>());
        }
    }
    // dw[oc = cb·L + l, j = (l % GS + r) % GS, kh, kw] (+)= Σ_n parts[n, cb, kh, kw, r, l], n in order.
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < cb_; ++cb)
      for (int t = 0; t < 9; ++t)
        for (int r = 0; r < GS; ++r)
          for (int l = 0; l < kLanes; ++l) {
            float sum = 0.f;
            for (int n = 0; n < n_img; ++n)
              sum += parts[(int64_t(n) * cb_ + cb) * part_floats + (t * GS + r) * kLanes + l];
            float& out = dw[(int64_t(cb * kLanes + l) * GS + (l % GS + r) % GS) * 9 + t];
            out = accumulate ? out + sum : sum;
          }
    return Status::ok();
  }

 private:
  static Status check(const Tensor& t, const Dims& dims, const char* what) {
    if (t.dims == dims && t.layout == Vec::kLayout && t.data != nullptr) return Status::ok();
    return Status::invalid_argument(std::string(what) + ": expected " + dims.to_string() + " " +
                                    layout_name(Vec::kLayout) + ", got " + t.dims.to_string() + " " +
                                    layout_name(t.layout));
  }

  // Stride 2: each dy pixel is scattered to the dx pixels 2·ow - 1 + kw of its block.
  Status backward_data_s2(const Tensor& dy, const float* w, const Tensor& dx) {
    const float* wb = pack_weights_rot(w, /*flip=*/true);
    const int nrb = (h_ + kRowBlock - 1) / kRowBlock;
    const int64_t tasks = int64_t(d_.in.n) * cb_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t ncb = 0; ncb < tasks; ++ncb)
      for (int rb = 0; rb < nrb; ++rb) {
        const int cb = int(ncb % cb_);
        const float* src = dy.data + ncb * oh_ * ow_ * kLanes;  // (OH, OW, L)
        float* dst = dx.data + ncb * h_ * w_ * kLanes;          // (H, W, L)
        const float* wt = wb + int64_t(cb) * 9 * GS * kLanes;
        for (int ih = rb * kRowBlock; ih < std::min(h_, (rb + 1) * kRowBlock); ++ih) {
          const float* rows[3];
          for (int kh = 0; kh < 3; ++kh) {
            const int num = ih + 1 - kh;  // 2·oh
            rows[kh] = num < 0 || num % 2 != 0 || num / 2 >= oh_ ? nullptr : src + int64_t(num / 2) * ow_ * kLanes;
          }
          for_each_block(w_, [&](int start, int count) {
            scatter_fn<GS>((start + 1) % 2, count)(rows, ow_, start, wt, dst + (int64_t(ih) * w_ + start) * kLanes,
                                                   kLanes);
          });
        }
      }
    return Status::ok();
  }

  // Stride 1: dx is a forward conv of dy with the transposed, flipped kernel.
  Status backward_data_s1(const Tensor& dy, const float* w, const Tensor& dx) {
    const float* wb = pack_out_rot(pack_weights_rot(w, /*flip=*/true));
    const int nrb = (h_ + kRowBlock - 1) / kRowBlock;
    const int64_t tasks = int64_t(d_.in.n) * cb_;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t ncb = 0; ncb < tasks; ++ncb)
      for (int rb = 0; rb < nrb; ++rb) {
        const int cb = int(ncb % cb_);
        const float* src = dy.data + ncb * h_ * w_ * kLanes;  // (OH = H, OW = W, L)
        float* dst = dx.data + ncb * h_ * w_ * kLanes;        // (H, W, L)
        const float* wt = wb + int64_t(cb) * 9 * GS * kLanes;
        for (int ih = rb * kRowBlock; ih < std::min(h_, (rb + 1) * kRowBlock); ++ih) {
          const float* rows[3];
          for (int kh = 0; kh < 3; ++kh) {
            const int r = ih - 1 + kh;
            rows[kh] = r < 0 || r >= h_ ? nullptr : src + int64_t(r) * w_ * kLanes;
          }
          for_each_block(w_, [&](int start, int count) {
            outrot_fn<GS>(1, count)(rows, w_, start, wt, dst + (int64_t(ih) * w_ + start) * kLanes, kLanes);
          }, kOutRotOwb<GS>);
        }
      }
    return Status::ok();
  }

  // Repacks plain w (OC, GS, 3, 3) into (CB, 9, GS, L), rotation-packed: tap t = kh·3 + kw,
  // entry r, lane l (output channel cb·16 + l) = w[oc, j = (l % GS + r) % GS, t]. flip (for
  // stride-1 backward-data, a forward conv with the transposed kernel) reads tap 8 - t and swaps
  // the roles: lane l is input channel ic = cb·16 + l, summing over oc = group + (l % GS + r) % GS.
  const float* pack_weights_rot(const float* w, bool flip) {
    float* p = (flip ? wb_ : wf_).get(size_t(cb_) * 9 * GS * kLanes);
    for (int cb = 0; cb < cb_; ++cb)
      for (int t = 0; t < 9; ++t)
        for (int r = 0; r < GS; ++r)
          for (int l = 0; l < kLanes; ++l) {
            const int self = cb * kLanes + l, other = cb * kLanes + l / GS * GS + (l % GS + r) % GS;
            const int oc = flip ? other : self, ic = flip ? l % GS : (l % GS + r) % GS;
            p[((int64_t(cb) * 9 + t) * GS + r) * kLanes + l] = w[(int64_t(oc) * GS + ic) * 9 + (flip ? 8 - t : t)];
          }
    return p;
  }


  // Moves lane m of each packed entry r to lane rot_r^-1(m), in place: the weights of conv_row_outrot.
  float* pack_out_rot(const float* packed) {
    float* p = const_cast<float*>(packed);
    for (int64_t e = 0; e < int64_t(cb_) * 9 * GS; ++e) {  // entry (cb, t, r)
      const int r = int(e % GS);
      float tmp[kLanes];
      for (int m = 0; m < kLanes; ++m) tmp[m] = p[e * kLanes + m / GS * GS + (m % GS - r + GS) % GS];
      std::memcpy(p + e * kLanes, tmp, sizeof(tmp));
    }
    return p;
  }

  ConvDesc d_;
  int s_, h_, w_, oh_, ow_, cb_;  // S, H, W, OH, OW, CB
  Dims out_;                      // (N, OC, OH, OW)
  AlignedBuf wf_, wb_;            // (CB, 9, GS, L) forward / backward-data weights
  AlignedBuf parts_;              // (N, CB, 9, GS, L) backward-weights partial sums
};

}  // namespace

bool grouped_conv_direct_supports(const ConvDesc& d) {
  if (d.groups <= 0 || d.in.c % kLanes != 0 || d.oc != d.in.c || d.in.c % d.groups != 0) return false;
  const int gs = d.in.c / d.groups;
  return d.in_layout == Vec::kLayout && d.kh == 3 && d.kw == 3 && d.pad == 1 && (d.stride == 1 || d.stride == 2) &&
         (gs == 4 || gs == 8 || (gs == 16 && kLanes == 16)) && d.in.n > 0 && d.in.h > 0 && d.in.w > 0;
}

StatusOr<std::unique_ptr<CpuConv>> make_grouped_conv_direct(const ConvDesc& desc) {
  SX_CHECK_ARG(grouped_conv_direct_supports(desc), std::string("grouped_conv_direct: unsupported shape for ") + Vec::kName);
  switch (desc.in.c / desc.groups) {
    case 4: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<4>>(desc));
    case 8: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<8>>(desc));
#if SX_HAS_AVX512
    case 16: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<16>>(desc));
#endif
    default: break;
  }
  return Status::unimplemented("grouped_conv_direct: channels per group not 4, 8 or 16");
}

#else  // the generic level: no direct grouped conv (oneDNN's path is used)

bool grouped_conv_direct_supports(const ConvDesc&) { return false; }

StatusOr<std::unique_ptr<CpuConv>> make_grouped_conv_direct(const ConvDesc&) {
  return Status::unimplemented("grouped_conv_direct: needs AVX2 or AVX-512");
}

#endif

}  // namespace sx::model::cpu::SX_ISA_NS

