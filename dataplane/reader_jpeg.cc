#include "dataplane/reader_jpeg.h"

// jpeglib.h needs FILE and size_t declared first.
#include <csetjmp>
#include <cstdio>
#include <string>

#include <jerror.h>
#include <jpeglib.h>

namespace sx::dataplane {

struct JpegDecoder::State {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr err{};
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
  bool truncated = false;
};

namespace {

JpegDecoder::State* state_of(j_common_ptr cinfo) { return static_cast<JpegDecoder::State*>(cinfo->client_data); }

[[noreturn]] void on_error(j_common_ptr cinfo) {
  JpegDecoder::State* s = state_of(cinfo);
  cinfo->err->format_message(cinfo, s->message);
  std::longjmp(s->jump, 1);
}

void on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  // Warnings: most are harmless quirks of real-world files; a premature end is not (grey rows).
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    JpegDecoder::State* s = state_of(cinfo);
    s->truncated = true;
    cinfo->err->format_message(cinfo, s->message);
  }
}

}  // namespace

JpegDecoder::JpegDecoder() : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.cinfo.err = jpeg_std_error(&s.err);
  s.err.error_exit = on_error;
  s.err.emit_message = on_message;
  s.cinfo.client_data = &s;
  jpeg_create_decompress(&s.cinfo);
}

JpegDecoder::~JpegDecoder() { jpeg_destroy_decompress(&state_->cinfo); }

StatusOr<JpegDecoder::Image> JpegDecoder::decode(std::span<const uint8_t> bytes, int channels, int reduction,
                                                 int expect_h, int expect_w, std::vector<uint8_t>& out) {
  State& s = *state_;
  jpeg_decompress_struct& cinfo = s.cinfo;
  Image img;
  s.truncated = false;
  s.message[0] = '\0';
  // Nothing with a destructor lives in this frame between setjmp and the last libjpeg call.
  if (setjmp(s.jump)) {
    jpeg_abort_decompress(&cinfo);
    return Status::data_loss(std::string("undecodable JPEG: ") + s.message);
  }
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  img.full_h = int(cinfo.image_height);
  img.full_w = int(cinfo.image_width);
  if (img.full_h != expect_h || img.full_w != expect_w) {
    jpeg_abort_decompress(&cinfo);
    return Status::data_loss("JPEG header says " + std::to_string(img.full_h) + "x" + std::to_string(img.full_w) +
                             ", /shapes says " + std::to_string(expect_h) + "x" + std::to_string(expect_w));
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;  // libjpeg converts CMYK/YCCK/gray too
  cinfo.scale_num = 1;
  cinfo.scale_denom = unsigned(reduction);
  cinfo.dct_method = JDCT_ISLOW;  // libjpeg-turbo's SIMD ISLOW is as fast as IFAST and exact
  jpeg_start_decompress(&cinfo);
  img.h = int(cinfo.output_height);
  img.w = int(cinfo.output_width);
  const size_t row = size_t(img.w) * size_t(channels);
  if (int(cinfo.output_components) != channels) {
    jpeg_abort_decompress(&cinfo);
    return Status::data_loss("JPEG decodes to " + std::to_string(cinfo.output_components) + " components, expected " +
                             std::to_string(channels));
  }
  if (out.size() < row * size_t(img.h)) out.resize(row * size_t(img.h));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = out.data() + row * std::min<size_t>(cinfo.output_scanline + i, img.h - 1);
    jpeg_read_scanlines(&cinfo, rows, 4);
  }
  jpeg_finish_decompress(&cinfo);
  if (s.truncated) return Status::data_loss(std::string("truncated JPEG: ") + s.message);
  return img;
}

}  // namespace sx::dataplane
