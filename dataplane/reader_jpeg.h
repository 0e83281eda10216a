// defines: sx::dataplane::JpegDecoder — the reader's JPEG decode, straight on libjpeg(-turbo):
// decodes to RGB (or gray) in the caller's grow-only buffer, optionally scaled by 1/2, 1/4, 1/8 in
// the DCT domain. Compared with cv::imdecode it skips OpenCV's scalar RGB->BGR pass (~25% of the
// decode time here), allocates nothing per image (one libjpeg object per thread, reused), and
// refuses truncated data instead of returning grey rows.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"

namespace sx::dataplane {

class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  struct Image {
    int full_h = 0, full_w = 0;  // size in the file
    int h = 0, w = 0;            // decoded size: ceil(full / reduction)
  };
  // channels: 3 = RGB, 1 = gray. reduction: 1, 2, 4 or 8. expect_h/expect_w: the size /shapes records,
  // checked against the header before any pixel is decoded. out receives (h, w, channels) uint8.
  StatusOr<Image> decode(std::span<const uint8_t> bytes, int channels, int reduction, int expect_h, int expect_w,
                         std::vector<uint8_t>& out);

  struct State;  // libjpeg's objects, defined in reader_jpeg.cc (public only for its C callbacks)

 private:
  std::unique_ptr<State> state_;
};

}  // namespace sx::dataplane
