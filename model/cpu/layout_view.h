// defines: sx::model::cpu::LayoutView — every activation layout of ours seen as one 4-D array
// [N][CB][HW][B] (CB channel blocks of B channels, HW = H·W pixels), so a kernel is written once:
//   nchw    B = 1, CB = C          nhwc    B = C, CB = 1
//   nChw8c  B = 8, CB = ceil(C/8)  nChw16c B = 16, CB = ceil(C/16) (lanes past C are padding, 0)
// Channel c lives in block c / B, lane c % B.
#pragma once

#include <algorithm>
#include <cstdint>

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

}  // namespace sx::model::cpu
