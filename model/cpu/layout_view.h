// defines: sx::model::cpu::LayoutView — every activation layout of ours seen as one 4-D array
// [N][CB][HW][B] (CB channel blocks of B channels, HW = H·W pixels), so a kernel is written once:
//   nchw    B = 1, CB = C          nhwc    B = C, CB = 1
//   nChw8c  B = 8, CB = ceil(C/8)  nChw16c B = 16, CB = ceil(C/16) (lanes past C are padding, 0)
// Channel c lives in block c / B, lane c % B.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "model/tensor.h"

namespace sx::model::cpu {

struct LayoutView {
  float* data = nullptr;
  int n = 0;       // N
  int c = 0;       // logical channels C (padding excluded)
  int cb = 0;      // channel blocks CB
  int b = 0;       // channels per block B
  int64_t hw = 0;  // H·W

  static LayoutView of(const Tensor& t) {
    LayoutView v;
    v.data = t.data;
    v.n = t.dims.n;
    v.c = t.dims.c;
    v.hw = int64_t(t.dims.h) * t.dims.w;
    if (t.layout == Layout::kNHWC) {
      v.b = t.dims.c;
      v.cb = 1;
    } else {
      v.b = layout_channel_block(t.layout);
      v.cb = padded_channels(t.dims.c, t.layout) / v.b;
    }
    return v;
  }

  // The [HW][B] block of image n, channel block j.
  float* block(int in, int j) const { return data + (int64_t(in) * cb + j) * hw * b; }
  // Lanes of block j that hold real channels (B except in a padded last block).
  int valid_lanes(int j) const { return std::min(b, c - j * b); }
};

// Below this many floats a loop runs on the calling thread: waking the team costs more than the
// work (SE and classifier vectors), and on a busy machine a descheduled helper stalls the join.
constexpr int64_t kParallelMin = 1 << 14;

inline int64_t floats(const LayoutView& v) { return int64_t(v.n) * v.cb * v.hw * v.b; }

// Per-lane values of one block (channel scales, partial sums): on the stack when the block size K
// is a compile-time constant, on the heap (K = 0) for nhwc with an odd channel count.
template <int K, class T = float>
struct Lanes {
  explicit Lanes(int) {}
  T* data() { return v; }
  alignas(64) T v[K];
};
template <class T>
struct Lanes<0, T> {
  explicit Lanes(int b) : v(size_t(b)) {}
  T* data() { return v.data(); }
  std::vector<T> v;
};

// Runs f(std::integral_constant<int, K>{}) with K = B for the block sizes worth specialising
// (1: nchw, 8 and 16: blocked, nhwc with that many channels) and K = 0 (runtime B) otherwise.
template <class F>
void dispatch_block(int b, F&& f) {
  switch (b) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

}  // namespace sx::model::cpu
