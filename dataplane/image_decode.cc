#include "dataplane/image_decode.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstring>

namespace sx::dataplane {
namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | uint32_t{p[1]}; }

constexpr uint8_t kPngSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

StatusOr<ImageHeader> png_header(std::span<const uint8_t> b) {
  // signature (8) + IHDR length (4) + "IHDR" (4) + 13 bytes of data + crc (4)
  if (b.size() < 33) return Status::data_loss("truncated PNG (file ends inside the header)");
  if (be32(&b[8]) != 13 || std::memcmp(&b[12], "IHDR", 4) != 0)
    return Status::data_loss("corrupt PNG (first chunk is not IHDR)");
  ImageHeader h;
  h.format = ImageFormat::kPng;
  h.width = be32(&b[16]);
  h.height = be32(&b[20]);
  h.bit_depth = b[24];
  switch (b[25]) {  // colour type
    case 0: h.channels = 1; break;
    case 2: h.channels = 3; break;
    case 3: h.channels = 3; break;  // palette
    case 4: h.channels = 2; break;
    case 6: h.channels = 4; break;
    default: return Status::data_loss("corrupt PNG (colour type " + std::to_string(b[25]) + ")");
  }
  return h;
}

StatusOr<ImageHeader> jpeg_header(std::span<const uint8_t> b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (b[i] != 0xFF) return Status::data_loss("corrupt JPEG (expected a marker at byte " + std::to_string(i) + ")");
    uint8_t marker = b[i + 1];
    if (marker == 0xFF) { ++i; continue; }  // fill byte
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { i += 2; continue; }
    if (marker == 0xD9 || marker == 0xDA) break;  // EOI / start of scan before any frame header
    uint32_t len = be16(&b[i + 2]);
    bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 2 + 8 > b.size()) break;
      ImageHeader h;
      h.format = ImageFormat::kJpeg;
      h.bit_depth = b[i + 4];
      h.height = be16(&b[i + 5]);
      h.width = be16(&b[i + 7]);
      h.channels = b[i + 9];
      return h;
    }
    i += 2 + len;
  }
  return Status::data_loss("truncated or corrupt JPEG (no frame header found)");
}

// A JPEG whose entropy-coded data is cut short still "decodes" in libjpeg (the rest is grey) —
// refuse it: the end-of-image marker must follow the first start-of-scan. Inside scan data 0xFF
// is always stuffed (FF 00) or a restart marker, so FF D9 there is the real end.
bool jpeg_has_end(std::span<const uint8_t> b) {
  size_t i = 2;
  while (i + 4 <= b.size()) {  // walk segments to the first SOS
    if (b[i] != 0xFF) return false;
    uint8_t marker = b[i + 1];
    if (marker == 0xFF) { ++i; continue; }
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { i += 2; continue; }
    if (marker == 0xD9) return false;
    i += 2 + be16(&b[i + 2]);
    if (marker == 0xDA) break;
  }
  for (; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == 0xD9) return true;
  return false;
}

bool png_has_end(std::span<const uint8_t> b) {
  // The IEND chunk: length 0, "IEND", crc; allow trailing bytes after it as some writers add them.
  static const uint8_t kIend[8] = {0, 0, 0, 0, 'I', 'E', 'N', 'D'};
  for (size_t i = b.size() >= 12 ? b.size() - 12 : 0; i + 8 <= b.size();) {
    if (std::memcmp(&b[i], kIend, 8) == 0) return true;
    if (i == 0) break;
    --i;
    if (b.size() - i > 4096) break;  // look only near the end
  }
  return false;
}

}  // namespace

StatusOr<ImageHeader> read_image_header(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return Status::data_loss("empty file (0 bytes)");
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPngSig, 8) == 0) return png_header(bytes);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return jpeg_header(bytes);
  return Status::data_loss("not a JPEG or PNG image (unrecognised first bytes; " + std::to_string(bytes.size()) +
                           " bytes)");
}

StatusOr<cv::Mat> decode_image(std::span<const uint8_t> bytes, const DecodeOptions& options) {
  SX_ASSIGN_OR_RETURN(ImageHeader h, read_image_header(bytes));
  const char* kind = h.format == ImageFormat::kJpeg ? "JPEG" : "PNG";
  if (h.width <= 0 || h.height <= 0)
    return Status::data_loss(std::string("corrupt ") + kind + " (header says " + std::to_string(h.width) + "x" +
                             std::to_string(h.height) + ")");
  if (h.width * h.height > options.max_pixels)
    return Status::invalid_argument(std::string(kind) + " of " + std::to_string(h.width) + "x" +
                                    std::to_string(h.height) + " = " + std::to_string(h.width * h.height) +
                                    " pixels exceeds --max-pixels " + std::to_string(options.max_pixels) +
                                    " (possible decompression bomb); not decoded");
  if (h.format == ImageFormat::kJpeg && h.bit_depth != 8)
    return Status::unimplemented("JPEG with " + std::to_string(h.bit_depth) + "-bit samples is not supported");
  bool complete = h.format == ImageFormat::kJpeg ? jpeg_has_end(bytes) : png_has_end(bytes);
  if (!complete)
    return Status::data_loss(std::string("truncated ") + kind + " (no end-of-image " +
                             (h.format == ImageFormat::kJpeg ? "marker" : "chunk") + ")");

  cv::Mat raw;
  try {
    // UNCHANGED keeps 16-bit, alpha and gray as they are; we normalise below. (The cv::Mat header
    // wraps the caller's bytes without copying.)
    raw = cv::imdecode(cv::Mat(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data())),
                       cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return Status::data_loss(std::string("undecodable ") + kind + " (OpenCV: " + e.what() + ")");
  }
  if (raw.empty()) return Status::data_loss(std::string("undecodable ") + kind + " (OpenCV imdecode failed)");
  if (raw.cols != h.width || raw.rows != h.height)
    return Status::data_loss(std::string("corrupt ") + kind + " (decoded size differs from header)");

  cv::Mat img8;
  if (raw.depth() == CV_8U) {
    img8 = raw;
  } else if (raw.depth() == CV_16U) {
    raw.convertTo(img8, CV_8U, 1.0 / 257.0);  // 65535 -> 255, rounds to nearest
  } else {
    return Status::unimplemented(std::string(kind) + " with pixel depth " + std::to_string(raw.depth()) +
                                 " is not supported");
  }
  if (img8.channels() == 2) {  // gray + alpha: keep the gray plane
    cv::Mat gray;
    cv::extractChannel(img8, gray, 0);
    img8 = gray;
  }
  cv::Mat out;
  const int cn = img8.channels();
  if (options.channels == 3) {
    switch (cn) {
      case 1: cv::cvtColor(img8, out, cv::COLOR_GRAY2RGB); break;
      case 3: cv::cvtColor(img8, out, cv::COLOR_BGR2RGB); break;
      case 4: cv::cvtColor(img8, out, cv::COLOR_BGRA2RGB); break;
      default: return Status::unimplemented(std::to_string(cn) + "-channel image");
    }
  } else if (options.channels == 1) {
    switch (cn) {
      case 1: out = img8; break;
      case 3: cv::cvtColor(img8, out, cv::COLOR_BGR2GRAY); break;
      case 4: cv::cvtColor(img8, out, cv::COLOR_BGRA2GRAY); break;
      default: return Status::unimplemented(std::to_string(cn) + "-channel image");
    }
  } else {
    return Status::invalid_argument("decode_image: channels must be 1 or 3, got " + std::to_string(options.channels));
  }
  if (!out.isContinuous()) out = out.clone();
  return out;
}

}  // namespace sx::dataplane
