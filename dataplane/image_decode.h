// defines: sx::dataplane::ImageHeader, read_image_header, decode_image, DecodeOptions.
// Decode JPEG/PNG bytes to 8-bit RGB (or gray) with the checks bad inputs need: the header is
// parsed here BEFORE OpenCV allocates anything, so a decompression bomb is refused by its
// declared size; truncated files are refused instead of decoding to grey garbage; CMYK, 16-bit,
// gray and alpha images are normalised. Used by sx_prep and the shard reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <opencv2/core.hpp>

#include "common/status.h"

namespace sx::dataplane {

enum class ImageFormat { kJpeg, kPng };

struct ImageHeader {
  ImageFormat format = ImageFormat::kJpeg;
  int64_t width = 0, height = 0;
  int channels = 0;   // components in the file: JPEG 1/3/4(CMYK), PNG 1..4
  int bit_depth = 8;  // per channel
};

// Parses width/height/channels from a JPEG SOF or PNG IHDR without decoding. Errors for empty,
// unknown-format or truncated-before-the-header inputs. Messages do not name the file; callers add it.
StatusOr<ImageHeader> read_image_header(std::span<const uint8_t> bytes);

struct DecodeOptions {
  int64_t max_pixels = 89478485;  // PIL's default decompression-bomb limit
  int channels = 3;               // output: 3 = RGB, 1 = gray
};

// Returns an 8-bit (H, W, channels) cv::Mat, RGB order when channels = 3. Alpha is dropped (as
// PIL's convert("RGB")), 16-bit is scaled to 8-bit (v / 257, rounded), CMYK JPEG is converted by libjpeg.
StatusOr<cv::Mat> decode_image(std::span<const uint8_t> bytes, const DecodeOptions& options);

}  // namespace sx::dataplane
