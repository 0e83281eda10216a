// Direct AVX-512 grouped 3x3 convolution on nChw16c for 4, 8 or 16 channels per group.
// N batch, C = OC channels, GS channels per group, CB = C/16 channel blocks, H/W input and
// OH/OW output size, S stride (1 or 2), pad 1.
//
// All three passes share one scheme. A task (image n, channel block cb, a few rows) first writes
// the rows it reads into a per-thread buffer, each pixel expanded to GS permuted vectors (entry
// j, lane l = channel (l/GS)·GS + j of the pixel) with a zero column each side for the padding.
// Then every FMA is one buffer vector (a memory operand) times one repacked weight vector:
//   forward          y[oh, ow]  += P_x[oh·S + kh, ow·S + kw][j]   · wf[kh, kw][j]
//   backward-data    dx[ih, iw] += P_dy[(ih+1-kh)/S, (iw+1-kw)/S][j] · wb[kh, kw][j]  (divisible taps)
//   backward-weights dwp[kh, kw][j] += dy[oh, ow] · P_x[oh·S + kh, ow·S + kw][j]
// forward/backward-data keep up to kMaxOwb output pixels in registers; backward-weights keeps
// the GS sums of one (kh, kw) in registers across a row. Each output element is written by one
// task in a fixed order, and backward-weights sums per-(n, cb) partials over n in order, so the
// results do not depend on the thread count.
#include "model/cpu/grouped_conv_direct.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace sx::model::cpu {

bool grouped_conv_direct_supports(const ConvDesc& d) {
#ifdef __AVX512F__
  if (d.groups <= 0 || d.in.c % 16 != 0 || d.oc != d.in.c || d.in.c % d.groups != 0) return false;
  const int gs = d.in.c / d.groups;
  return d.in_layout == Layout::kNChw16c && d.kh == 3 && d.kw == 3 && d.pad == 1 &&
         (d.stride == 1 || d.stride == 2) && (gs == 4 || gs == 8 || gs == 16) && d.in.n > 0 && d.in.h > 0 &&
         d.in.w > 0;
#else
  (void)d;
  return false;
#endif
}

#ifdef __AVX512F__
namespace {

constexpr int kLanes = 16;
constexpr int kMaxOwb = 14;   // output pixels per register block: 14 accumulators + 1 weight
constexpr int kRowBlock = 8;  // rows of output (dx for backward-data) per task

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

// Lane l selects lane (l/GS)·GS + j: input channel j of lane l's group.
template <int GS>
__m512i group_index(int j) {
  alignas(64) int idx[kLanes];
  for (int l = 0; l < kLanes; ++l) idx[l] = l / GS * GS + j;
  return _mm512_load_si512(idx);
}

// Writes rows [lo, hi] ∩ [0, h) of one image's channel block src (h, w, 16) into buf as
// (row - lo, w + 2, GS, 16): padded column c holds pixel c - 1 (columns 0 and w + 1 are zero),
// entry j the pixel permuted by group_index(j). Rows outside the image are not written.
template <int GS>
void permute_rows(const float* src, int h, int w, int lo, int hi, float* buf) {
  __m512i idx[GS];
  for (int j = 0; j < GS; ++j) idx[j] = group_index<GS>(j);
  const int64_t row_floats = int64_t(w + 2) * GS * kLanes;
  for (int r = std::max(lo, 0); r <= std::min(hi, h - 1); ++r) {
    float* row = buf + (r - lo) * row_floats;
    std::memset(row, 0, GS * kLanes * sizeof(float));
    std::memset(row + int64_t(w + 1) * GS * kLanes, 0, GS * kLanes * sizeof(float));
    const float* s = src + int64_t(r) * w * kLanes;
    for (int c = 0; c < w; ++c) {
      const __m512 v = _mm512_loadu_ps(s + c * kLanes);
      float* d = row + int64_t(c + 1) * GS * kLanes;
      // maskz form: the plain intrinsic trips GCC 12's -Wmaybe-uninitialized (its undefined vector).
      for (int j = 0; j < GS; ++j)
        _mm512_store_ps(d + j * kLanes, _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), idx[j], v));
    }
  }
}

// One kernel tap for a run of output pixels.
struct Tap {
  const float* row;  // a permuted buffer row (padded columns, GS, 16)
  int col;           // padded column read for output pixel 0 (before col0)
  const float* w;    // GS weight vectors
};

// out[i·out_step] = Σ_taps Σ_j row[col0 + i·CS + col][j] · w[j] for i < OWB (overwrites).
template <int GS, int CS, int OWB>
void conv_row(const Tap* taps, int ntaps, int col0, float* out, int out_step) {
  __m512 acc[OWB];
#pragma GCC unroll 16
  for (int i = 0; i < OWB; ++i) acc[i] = _mm512_setzero_ps();
  for (int t = 0; t < ntaps; ++t) {
    const float* base = taps[t].row + int64_t(col0 + taps[t].col) * GS * kLanes;
    const float* wt = taps[t].w;
    for (int j = 0; j < GS; ++j) {
      const __m512 wv = _mm512_load_ps(wt + j * kLanes);
#pragma GCC unroll 16
      for (int i = 0; i < OWB; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_load_ps(base + (i * CS * GS + j) * kLanes), wv, acc[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < OWB; ++i) _mm512_storeu_ps(out + int64_t(i) * out_step, acc[i]);
}

using RowFn = void (*)(const Tap*, int, int, float*, int);

template <int GS, int CS, size_t... I>
constexpr std::array<RowFn, sizeof...(I)> row_table(std::index_sequence<I...>) {
  return {{&conv_row<GS, CS, int(I) + 1>...}};
}

// The conv_row for `count` pixels (1..kMaxOwb) at column stride cs.
template <int GS>
RowFn row_fn(int cs, int count) {
  static constexpr auto t1 = row_table<GS, 1>(std::make_index_sequence<kMaxOwb>());
  static constexpr auto t2 = row_table<GS, 2>(std::make_index_sequence<kMaxOwb>());
  return (cs == 1 ? t1 : t2)[count - 1];
}

// Calls f(start, count) over n pixels split into nearly equal blocks of at most kMaxOwb.
template <typename F>
void for_each_block(int n, F f) {
  const int nb = (n + kMaxOwb - 1) / kMaxOwb;
  int start = 0;
  for (int b = 0; b < nb; ++b) {
    const int count = n / nb + (b < n % nb ? 1 : 0);
    f(start, count);
    start += count;
  }
}

// part[kw][j] += Σ_ow dy[ow] · row[ow·CS + kw][j]; part is (3, GS, 16), one kh. One kw at a time
// (all three at once let GCC carry loads across iterations and spill); U interleaved pixel
// phases give GS·U >= 8 independent sums so the FMA latency is hidden.
template <int GS, int CS>
void dw_row(const float* row, const float* dy, int ow_count, int kw, float* part) {
  constexpr int U = GS == 4 ? 2 : 1;
  __m512 acc[U][GS];
  for (int u = 0; u < U; ++u)
    for (int j = 0; j < GS; ++j) acc[u][j] = _mm512_setzero_ps();
  int ow = 0;
  for (; ow + U <= ow_count; ow += U)
#pragma GCC unroll 2
    for (int u = 0; u < U; ++u) {
      const __m512 d = _mm512_loadu_ps(dy + (ow + u) * kLanes);
      const float* p = row + int64_t((ow + u) * CS + kw) * GS * kLanes;
#pragma GCC unroll 16
      for (int j = 0; j < GS; ++j) acc[u][j] = _mm512_fmadd_ps(d, _mm512_load_ps(p + j * kLanes), acc[u][j]);
    }
  for (; ow < ow_count; ++ow) {
    const __m512 d = _mm512_loadu_ps(dy + ow * kLanes);
    const float* p = row + int64_t(ow * CS + kw) * GS * kLanes;
    for (int j = 0; j < GS; ++j) acc[0][j] = _mm512_fmadd_ps(d, _mm512_load_ps(p + j * kLanes), acc[0][j]);
  }
  for (int j = 0; j < GS; ++j) {
    __m512 sum = acc[0][j];
    for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][j]);
    float* q = part + (kw * GS + j) * kLanes;
    _mm512_store_ps(q, _mm512_add_ps(_mm512_load_ps(q), sum));
  }
}

template <int GS>
class GroupedConvDirect final : public CpuConv {
 public:
  explicit GroupedConvDirect(const ConvDesc& d)
      : d_(d), s_(d.stride), h_(d.in.h), w_(d.in.w), oh_((d.in.h - 1) / d.stride + 1),
        ow_((d.in.w - 1) / d.stride + 1), cb_(d.in.c / kLanes), out_{d.in.n, d.oc, oh_, ow_} {}

  Dims out_dims() const override { return out_; }
  Layout out_layout() const override { return Layout::kNChw16c; }
  std::string impl_info() const override { return "direct_avx512_grouped:gs" + std::to_string(GS); }

  Status forward(const Tensor& x, const float* w, const Tensor& y) override {
    SX_TRY(check(x, d_.in, "grouped conv forward x"));
    SX_TRY(check(y, out_, "grouped conv forward y"));
    SX_CHECK_ARG(w != nullptr, "grouped conv forward: null weights");
    const float* wf = pack_weights(w, /*for_data=*/false);
    const int nrb = (oh_ + kRowBlock - 1) / kRowBlock;
    const int64_t tasks = int64_t(d_.in.n) * cb_ * nrb;
    const int64_t row_floats = int64_t(w_ + 2) * GS * kLanes;
    const size_t buf_floats = size_t(kRowBlock * s_ + 2) * row_floats;
    prepare_scratch();
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t ncb = task / nrb;  // n·CB + cb
      const int cb = int(ncb % cb_), r0 = int(task % nrb) * kRowBlock, r1 = std::min(oh_, r0 + kRowBlock);
      const float* src = x.data + ncb * h_ * w_ * kLanes;  // (H, W, 16)
      float* dst = y.data + ncb * oh_ * ow_ * kLanes;      // (OH, OW, 16)
      const int lo = r0 * s_ - 1;
      float* buf = scratch_[omp_get_thread_num()].get(buf_floats);
      permute_rows<GS>(src, h_, w_, lo, (r1 - 1) * s_ + 1, buf);
      // Column strips outside, rows inside: the 3 buffer rows a strip reads stay in L1 (whole
      // rows do not: 3 · 14.8 KB at 56 pixels, GS = 4, and the FMAs slow ~5x from L2).
      for_each_block(ow_, [&](int start, int count) {
        const RowFn fn = row_fn<GS>(s_, count);
        for (int oh = r0; oh < r1; ++oh) {
          Tap taps[9];
          int nt = 0;
          for (int kh = 0; kh < 3; ++kh) {
            const int ih = oh * s_ - 1 + kh;
            if (ih < 0 || ih >= h_) continue;
            for (int kw = 0; kw < 3; ++kw)
              taps[nt++] = Tap{buf + (ih - lo) * row_floats, kw, wf + int64_t(cb * 9 + kh * 3 + kw) * GS * kLanes};
          }
          fn(taps, nt, start * s_, dst + (int64_t(oh) * ow_ + start) * kLanes, kLanes);
        }
      });
    }
    return Status::ok();
  }

  Status backward_data(const Tensor& dy, const float* w, const Tensor& dx) override {
    SX_TRY(check(dy, out_, "grouped conv backward_data dy"));
    SX_TRY(check(dx, d_.in, "grouped conv backward_data dx"));
    SX_CHECK_ARG(w != nullptr, "grouped conv backward_data: null weights");
    const float* wb = pack_weights(w, /*for_data=*/true);
    const int nrb = (h_ + kRowBlock - 1) / kRowBlock;
    const int64_t tasks = int64_t(d_.in.n) * cb_ * nrb;
    const int64_t row_floats = int64_t(ow_ + 2) * GS * kLanes;
    const size_t buf_floats = size_t(kRowBlock + 3) * row_floats;
    prepare_scratch();
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t ncb = task / nrb;
      const int cb = int(ncb % cb_), r0 = int(task % nrb) * kRowBlock, r1 = std::min(h_, r0 + kRowBlock);
      const float* src = dy.data + ncb * oh_ * ow_ * kLanes;  // (OH, OW, 16)
      float* dst = dx.data + ncb * h_ * w_ * kLanes;          // (H, W, 16)
      // dy rows (ih + 1 - kh) / S for ih in [r0, r1).
      const int lo = r0 == 0 ? 0 : (r0 - 1) / s_, hi = std::min(oh_ - 1, r1 / s_);
      float* buf = scratch_[omp_get_thread_num()].get(buf_floats);
      permute_rows<GS>(src, oh_, ow_, lo, hi, buf);
      // Pixels iw = S·m + pw share their taps: those with (iw + 1 - kw) divisible by S. Column
      // strips outside, rows inside, as in forward.
      for (int pw = 0; pw < s_; ++pw) {
        const int count = (w_ - pw + s_ - 1) / s_;
        if (count <= 0) continue;
        for_each_block(count, [&](int start, int n) {
          const RowFn fn = row_fn<GS>(1, n);
          for (int ih = r0; ih < r1; ++ih) {
            Tap taps[9];
            int nt = 0;
            for (int kh = 0; kh < 3; ++kh) {
              const int num = ih + 1 - kh;
              if (num < 0 || num % s_ != 0 || num / s_ >= oh_) continue;
              const float* row = buf + (num / s_ - lo) * row_floats;
              for (int kw = 0; kw < 3; ++kw) {
                const int numw = pw + 1 - kw;  // may be -1 (S = 1: dy column -1, the zero pad)
                if (numw % s_ != 0) continue;
                taps[nt++] = Tap{row, numw / s_ + 1, wb + int64_t(cb * 9 + kh * 3 + kw) * GS * kLanes};
              }
            }
            fn(taps, nt, start, dst + (int64_t(ih) * w_ + start * s_ + pw) * kLanes, s_ * kLanes);
          }
        });
      }
    }
    return Status::ok();
  }

  Status backward_weights(const Tensor& x, const Tensor& dy, float* dw, bool accumulate) override {
    SX_TRY(check(x, d_.in, "grouped conv backward_weights x"));
    SX_TRY(check(dy, out_, "grouped conv backward_weights dy"));
    SX_CHECK_ARG(dw != nullptr, "grouped conv backward_weights: null dw");
    const int n_img = d_.in.n;
    const int64_t part_floats = 9 * GS * kLanes;  // (3, 3, GS, 16) per (n, cb)
    float* parts = parts_.get(size_t(n_img) * cb_ * part_floats);
    const int64_t row_floats = int64_t(w_ + 2) * GS * kLanes;
    const size_t buf_floats = size_t(kRowBlock * s_ + 2) * row_floats;
    prepare_scratch();
#pragma omp parallel for schedule(static)
    for (int64_t ncb = 0; ncb < int64_t(n_img) * cb_; ++ncb) {
      float* part = parts + ncb * part_floats;
      std::memset(part, 0, part_floats * sizeof(float));
      const float* src = x.data + ncb * h_ * w_ * kLanes;
      const float* dys = dy.data + ncb * oh_ * ow_ * kLanes;
      float* buf = scratch_[omp_get_thread_num()].get(buf_floats);
      for (int r0 = 0; r0 < oh_; r0 += kRowBlock) {
        const int r1 = std::min(oh_, r0 + kRowBlock), lo = r0 * s_ - 1;
        permute_rows<GS>(src, h_, w_, lo, (r1 - 1) * s_ + 1, buf);
        for (int oh = r0; oh < r1; ++oh)
          for (int kh = 0; kh < 3; ++kh) {
            const int ih = oh * s_ - 1 + kh;
            if (ih < 0 || ih >= h_) continue;
            const float* row = buf + (ih - lo) * row_floats;
            const float* dyrow = dys + int64_t(oh) * ow_ * kLanes;
            dw_rows(row, dyrow, part + kh * 3 * GS * kLanes);
          }
      }
    }
    // dw[oc = cb·16 + l, j, kh, kw] (+)= Σ_n parts[n, cb, kh, kw, j, l], n in order.
#pragma omp parallel for schedule(static)
    for (int cb = 0; cb < cb_; ++cb)
      for (int t = 0; t < 9; ++t)
        for (int j = 0; j < GS; ++j)
          for (int l = 0; l < kLanes; ++l) {
            float sum = 0.f;
            for (int n = 0; n < n_img; ++n)
              sum += parts[(int64_t(n) * cb_ + cb) * part_floats + (t * GS + j) * kLanes + l];
            float& out = dw[(int64_t(cb * kLanes + l) * GS + j) * 9 + t];
            out = accumulate ? out + sum : sum;
          }
    return Status::ok();
  }

 private:
  static Status check(const Tensor& t, const Dims& dims, const char* what) {
    if (t.dims == dims && t.layout == Layout::kNChw16c && t.data != nullptr) return Status::ok();
    return Status::invalid_argument(std::string(what) + ": expected " + dims.to_string() + " nChw16c, got " +
                                    t.dims.to_string() + " " + layout_name(t.layout));
  }

  // One kh of backward-weights.
  void dw_rows(const float* row, const float* dyrow, float* part_kh) const {
    for (int kw = 0; kw < 3; ++kw) (s_ == 1 ? dw_row<GS, 1> : dw_row<GS, 2>)(row, dyrow, ow_, kw, part_kh);
  }

  // Repacks plain w (OC, GS, 3, 3), tap t = kh·3 + kw, into (CB, 9, GS, 16):
  //   forward   lane l = w[oc = cb·16 + l, j, t]
  //   for_data  lane l (input channel cb·16 + l) = w[oc = cb·16 + (l/GS)·GS + j, l % GS, t]
  // Cheap (C·GS·9 floats), so done on every call: the weights may change in place between calls.
  const float* pack_weights(const float* w, bool for_data) {
    float* p = (for_data ? wb_ : wf_).get(size_t(cb_) * 9 * GS * kLanes);
    for (int cb = 0; cb < cb_; ++cb)
      for (int t = 0; t < 9; ++t)
        for (int j = 0; j < GS; ++j)
          for (int l = 0; l < kLanes; ++l) {
            const int oc = for_data ? cb * kLanes + l / GS * GS + j : cb * kLanes + l;
            const int ic = for_data ? l % GS : j;
            p[((int64_t(cb) * 9 + t) * GS + j) * kLanes + l] = w[(int64_t(oc) * GS + ic) * 9 + t];
          }
    return p;
  }

  // One scratch buffer per OpenMP thread, created outside the parallel region.
  void prepare_scratch() {
    const size_t threads = size_t(std::max(1, omp_get_max_threads()));
    if (scratch_.size() < threads) scratch_.resize(threads);
  }

  ConvDesc d_;
  int s_, h_, w_, oh_, ow_, cb_;  // S, H, W, OH, OW, CB
  Dims out_;                      // (N, OC, OH, OW)
  AlignedBuf wf_, wb_;            // (CB, 9, GS, 16) forward / backward-data weights
  AlignedBuf parts_;              // (N, CB, 9, GS, 16) backward-weights partial sums
  std::vector<AlignedBuf> scratch_;
};

}  // namespace
#endif  // __AVX512F__

StatusOr<std::unique_ptr<CpuConv>> make_grouped_conv_direct(const ConvDesc& desc) {
  SX_CHECK_ARG(grouped_conv_direct_supports(desc), "grouped_conv_direct: unsupported shape or no AVX-512");
#ifdef __AVX512F__
  switch (desc.in.c / desc.groups) {
    case 4: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<4>>(desc));
    case 8: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<8>>(desc));
    case 16: return std::unique_ptr<CpuConv>(std::make_unique<GroupedConvDirect<16>>(desc));
    default: break;
  }
#endif
  return Status::unimplemented("grouped_conv_direct: channels per group not 4, 8 or 16");
}

}  // namespace sx::model::cpu
