// defines: sx::dataplane::ImageLayout, Batch — what the reader hands to the trainer.
// Dimension letters: N batch (per rank), C channels, H height, W width.
#pragma once

#include <cstdint>
#include <vector>

namespace sx::dataplane {

// Memory layout of the float images in a Batch; the backend says which one it wants.
// (Same meaning as sx::model::Layout::kNCHW / kNHWC; the data plane does not depend on model/.)
enum class ImageLayout : uint8_t { kNCHW, kNHWC };

inline const char* image_layout_name(ImageLayout l) { return l == ImageLayout::kNCHW ? "NCHW" : "NHWC"; }

struct Batch {
  int n = 0, c = 0, h = 0, w = 0;     // images are (N, C, H, W) or (N, H, W, C) by layout
  ImageLayout layout = ImageLayout::kNCHW;
  int valid = 0;                      // the first `valid` rows are real; the rest are eval padding
                                      // (zero images, label -1, index -1)
  int64_t epoch = 0;
  int64_t step = 0;                   // step within the epoch, counted from the start offset
  std::vector<float> images;          // (N, C, H, W) or (N, H, W, C), normalized
  std::vector<int32_t> labels;        // (N)
  std::vector<int64_t> indices;       // (N) global sample index of each row, -1 for padding

  int64_t image_floats() const { return int64_t(c) * h * w; }
  float* image(int i) { return images.data() + i * image_floats(); }
  const float* image(int i) const { return images.data() + i * image_floats(); }
};

}  // namespace sx::dataplane
