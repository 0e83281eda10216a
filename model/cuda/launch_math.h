// defines: the index and launch-geometry arithmetic of the CUDA backend's kernels — NHWC / NCHW
// offsets, grid sizes, SGD segment lookup — as plain SX_HOST_DEVICE functions with no CUDA types, so
// the host tests (tests/test_cuda_launch_math.cc) check them on any machine and the kernels call the
// very same code. Dimension letters: N batch, C channels, H, W, HW = H·W pixels, P = N·HW rows.
#pragma once

#include <stdint.h>

#include "model/elementwise.h"  // SX_HOST_DEVICE

namespace sx::model::cuda {

// ---- layouts -------------------------------------------------------------------------------------
// Offset of (n, c, p) with p = h·W + w, in NHWC (channels innermost) and NCHW.
SX_HOST_DEVICE inline int64_t nhwc_offset(int64_t n, int64_t c, int64_t p, int64_t C, int64_t HW) {
  return (n * HW + p) * C + c;
}
SX_HOST_DEVICE inline int64_t nchw_offset(int64_t n, int64_t c, int64_t p, int64_t C, int64_t HW) {
  return (n * C + c) * HW + p;
}
// The NCHW offset of the element at NHWC offset i (the transposes walk one side linearly).
SX_HOST_DEVICE inline int64_t nchw_of_nhwc(int64_t i, int64_t C, int64_t HW) {
  const int64_t c = i % C, row = i / C;  // row = n·HW + p
  return nchw_offset(row / HW, c, row % HW, C, HW);
}
SX_HOST_DEVICE inline int64_t nhwc_of_nchw(int64_t i, int64_t C, int64_t HW) {
  const int64_t p = i % HW, nc = i / HW;  // nc = n·C + c
  return nhwc_offset(nc / C, nc % C, p, C, HW);
}

// Conv weights: the plain (OC, C/G, KH, KW) of the flat buffer <-> cuDNN's channels-last
// (OC, KH, KW, C/G) that NHWC convolutions want. i indexes the plain layout.
SX_HOST_DEVICE inline int64_t krsc_of_kcrs(int64_t i, int64_t cg, int64_t khw) {
  const int64_t rs = i % khw, kc = i / khw;  // kc = oc·CG + c
  return (kc / cg * khw + rs) * cg + kc % cg;
}

// ---- grids ------------------------------------------------------------------------------------------
// A 1-D grid-stride launch: enough blocks to cover `count` items once, at most `waves` blocks per SM
// (the grid-stride loop does the rest), at least one.
struct Grid1d {
  int blocks = 1;
  int threads = 256;
};
SX_HOST_DEVICE inline Grid1d grid_1d(int64_t count, int sm_count, int threads = 256, int waves = 8) {
  const int64_t want = (count + threads - 1) / threads;
  int64_t cap = int64_t(sm_count > 0 ? sm_count : 1) * waves;
  int64_t blocks = want < cap ? want : cap;
  return Grid1d{blocks < 1 ? 1 : int(blocks), threads};
}

// ---- SGD over segments ---------------------------------------------------------------------------------
// The segments' counts laid end to end: start[s] = count[0] + ... + count[s-1], start[S] = total. Item j of
// that concatenation belongs to the segment s with start[s] <= j < start[s+1] (binary search; empty
// segments are skipped because their start equals the next one's).
SX_HOST_DEVICE inline int segment_of(const int64_t* start, int segments, int64_t j) {
  int lo = 0, hi = segments;  // invariant: start[lo] <= j < start[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (start[mid] <= j)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace sx::model::cuda
