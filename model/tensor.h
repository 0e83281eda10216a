// defines: sx::model::Dims, Layout, Tensor, Buffer — the shapes and memory the Backend works on.
// Dimension letters used across model/: N batch, C channels, H height, W width, K classes,
// G groups, OC output channels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace sx::model {

// Logical shape of an activation, always named in NCHW order whatever the physical layout.
// A 2-D tensor (N, C) is Dims{n, c, 1, 1}.
struct Dims {
  int n = 0, c = 0, h = 1, w = 1;
  int64_t count() const { return int64_t(n) * c * h * w; }
  bool operator==(const Dims&) const = default;
  std::string to_string() const;
};

// Physical layout of an activation in backend memory. Plain layouts (kNCHW, kNHWC) are what
// the data plane and tests read and write; blocked ones (channels in blocks of 8 or 16, the
// channel count padded up to a whole block with zeros) stay inside the backend.
enum class Layout : uint8_t { kNCHW, kNHWC, kNChw8c, kNChw16c };

const char* layout_name(Layout layout);
int layout_channel_block(Layout layout);  // 1 for plain layouts, 8 or 16 for blocked
// Channels rounded up to the layout's block.
inline int padded_channels(int c, Layout layout) {
  int b = layout_channel_block(layout);
  return (c + b - 1) / b * b;
}
// Number of floats the tensor occupies, padding included.
inline int64_t padded_count(const Dims& d, Layout layout) {
  return int64_t(d.n) * padded_channels(d.c, layout) * d.h * d.w;
}

// Backend-owned memory (host for the CPU backend, device for CUDA). Freed by the backend's deleter.
using Buffer = std::unique_ptr<void, std::function<void(void*)>>;

// A view of an activation or activation-gradient in backend memory. Does not own memory.
// Parameters are not Tensors: they are (offset, count) views into the flat fp32 buffers, always in
// plain layout (conv weights (OC, C/G, KH, KW), linear weights (OUT, IN)).
struct Tensor {
  Dims dims;
  Layout layout = Layout::kNCHW;
  float* data = nullptr;
  int64_t padded_count() const { return sx::model::padded_count(dims, layout); }
  size_t bytes() const { return size_t(padded_count()) * sizeof(float); }
};

}  // namespace sx::model
