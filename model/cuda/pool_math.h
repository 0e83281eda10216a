// defines: the per-element work of the CUDA pooling kernels — one output of the forward, one input's
// gathered gradient of the backward — as SX_HOST_DEVICE functions on NHWC images, so the host tests
// (tests/test_cuda_pool_math.cc) run them over whole tensors and compare with the CPU backend.
// N batch, C channels, H, W input, OH, OW output; K kernel, S stride, P pad (square).
#pragma once

#include <math.h>
#include <stdint.h>

#include "model/cuda/launch_math.h"
#include "model/elementwise.h"

namespace sx::model::cuda {

struct PoolGeo {
  int64_t n = 0, c = 0;
  int h = 0, w = 0, oh = 0, ow = 0, k = 0, s = 0, p = 0;
};

// Output (oh, ow, channel c) of one image x (H, W, C): the maximum of the in-bounds window (the first
// one in scan order; *at = its h·W + w) or its average (padding excluded).
template <class T, bool Max>
SX_HOST_DEVICE inline float pool_output(const PoolGeo& g, const T* x, int oh, int ow, int64_t c, int32_t* at) {
  int h0, h1, w0, w1;
  pool_window(oh, g.k, g.s, g.p, g.h, &h0, &h1);
  pool_window(ow, g.k, g.s, g.p, g.w, &w0, &w1);
  float best = -INFINITY, sum = 0.f;
  int32_t where = h0 * g.w + w0;
  for (int ih = h0; ih < h1; ++ih)
    for (int iw = w0; iw < w1; ++iw) {
      const float v = ew::to_float(x[(int64_t(ih) * g.w + iw) * g.c + c]);
      if (Max) {
        if (v > best) best = v, where = ih * g.w + iw;
      } else {
        sum += v;
      }
    }
  if (Max) {
    *at = where;
    return best;
  }
  return sum / float((h1 - h0) * (w1 - w0));
}

// Gradient of input (ih, iw, channel c) of one image: the sum over the outputs whose windows cover it of
// dy (max: where the output's argmax is this input; average: dy / the output's window size).
// dy and argmax: that image's (OH, OW, C).
template <class T, bool Max>
SX_HOST_DEVICE inline float pool_input_grad(const PoolGeo& g, const T* dy, const int32_t* argmax, int ih, int iw,
                                            int64_t c) {
  int oh0, oh1, ow0, ow1;
  pool_outputs_covering(ih, g.k, g.s, g.p, g.oh, &oh0, &oh1);
  pool_outputs_covering(iw, g.k, g.s, g.p, g.ow, &ow0, &ow1);
  const int32_t me = ih * g.w + iw;
  float acc = 0.f;
  for (int oh = oh0; oh < oh1; ++oh)
    for (int ow = ow0; ow < ow1; ++ow) {
      const int64_t o = (int64_t(oh) * g.ow + ow) * g.c + c;
      if (Max) {
        if (argmax[o] == me) acc += ew::to_float(dy[o]);
      } else {
        int h0, h1, w0, w1;
        pool_window(oh, g.k, g.s, g.p, g.h, &h0, &h1);
        pool_window(ow, g.k, g.s, g.p, g.w, &w0, &w1);
        acc += ew::to_float(dy[o]) / float((h1 - h0) * (w1 - w0));
      }
    }
  return acc;
}

}  // namespace sx::model::cuda
