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

// ---- NHWC channel kernels ---------------------------------------------------------------------------
// Kernels that need the channel of each element run blocks of kChannelLanes x kRowLanes threads: x walks
// the channels of a row (c = x, x + 32, ...: a warp reads 32 neighbours), y the rows (pixels) of the
// block, and the grid strides over rows. No division per element.
constexpr int kChannelLanes = 32, kRowLanes = 8;
SX_HOST_DEVICE inline int row_blocks(int64_t rows, int sm_count, int waves = 8) {
  const int64_t want = (rows + kRowLanes - 1) / kRowLanes;
  const int64_t cap = int64_t(sm_count > 0 ? sm_count : 1) * waves;
  const int64_t blocks = want < cap ? want : cap;
  return blocks < 1 ? 1 : int(blocks);
}

// Per-channel reductions over rows (batch norm): blocks of kChannelLanes x kRowLanes threads, grid
// (tiles, splits): tile t owns channels [32t, 32t + 32), split s the rows s·8 + y, stepping by splits·8.
// Each thread sums its rows; the 8 row lanes of a block are added in order, then the splits in order,
// so the result does not depend on timing.
struct ReduceGrid {
  int tiles = 1;
  int splits = 1;
};
SX_HOST_DEVICE inline ReduceGrid reduce_grid(int64_t rows, int64_t channels, int sm_count) {
  ReduceGrid g;
  g.tiles = int((channels + kChannelLanes - 1) / kChannelLanes);
  if (g.tiles < 1) g.tiles = 1;
  const int64_t target = int64_t(sm_count > 0 ? sm_count : 1) * 4;   // blocks to fill the device
  const int64_t by_rows = (rows + 32 * kRowLanes - 1) / (32 * kRowLanes);  // >= 32 rows per thread
  int64_t splits = (target + g.tiles - 1) / g.tiles;
  if (splits > by_rows) splits = by_rows;
  g.splits = splits < 1 ? 1 : int(splits);
  return g;
}
SX_HOST_DEVICE inline int64_t reduce_row_start(int split, int row_lane) { return int64_t(split) * kRowLanes + row_lane; }
SX_HOST_DEVICE inline int64_t reduce_row_step(int splits) { return int64_t(splits) * kRowLanes; }

// ---- pooling windows (PyTorch semantics) -----------------------------------------------------------------
// Output size; in ceil mode the last window must start inside the input or the left padding.
SX_HOST_DEVICE inline int pooled_size(int in, int k, int s, int p, bool ceil_mode) {
  const int span = in + 2 * p - k;
  int out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}
// The in-bounds input range [lo, hi) of output o's window (padding never counts: max ignores it, and
// the average divides by hi - lo per dimension, PyTorch's count_include_pad=False).
SX_HOST_DEVICE inline void pool_window(int o, int k, int s, int p, int in, int* lo, int* hi) {
  const int start = o * s - p;
  *lo = start < 0 ? 0 : start;
  *hi = start + k < in ? start + k : in;
}
// The outputs [lo, hi) whose windows contain input i (backward gathers from them: no atomics).
SX_HOST_DEVICE inline void pool_outputs_covering(int i, int k, int s, int p, int out, int* lo, int* hi) {
  const int first = i + p - k + 1;  // o·s - p + k - 1 >= i
  *lo = first <= 0 ? 0 : (first + s - 1) / s;
  const int last = (i + p) / s + 1;  // o·s - p <= i
  *hi = last < out ? last : out;
  if (*hi < *lo) *hi = *lo;
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
