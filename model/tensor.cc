#include "model/tensor.h"

namespace sx::model {

std::string Dims::to_string() const {
  return "(" + std::to_string(n) + ", " + std::to_string(c) + ", " + std::to_string(h) + ", " + std::to_string(w) + ")";
}

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::kNCHW: return "nchw";
    case Layout::kNHWC: return "nhwc";
    case Layout::kNChw8c: return "nChw8c";
    case Layout::kNChw16c: return "nChw16c";
  }
  return "?";
}

int layout_channel_block(Layout layout) {
  switch (layout) {
    case Layout::kNChw8c: return 8;
    case Layout::kNChw16c: return 16;
    default: return 1;
  }
}

}  // namespace sx::model
