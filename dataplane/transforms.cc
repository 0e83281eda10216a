// Where the pixels may differ from torchvision (the box rules are the same):
//  - we crop BEFORE resizing, so eval's "resize short side, then center crop" becomes "center crop the
//    matching source region (rounded to whole pixels), then resize that region only";
//  - cv::resize INTER_LINEAR is not antialiased like PIL's bilinear; JPEGs whose crop shrinks by >= 2
//    are decoded at 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling (what cv::IMREAD_REDUCED_* does),
//    which does the coarse antialiasing and cuts decode time, so the INTER_LINEAR factor stays < 2.
#include "dataplane/transforms.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <opencv2/imgproc.hpp>


namespace sx::dataplane {

Status validate_transform_config(const TransformConfig& c) {
  SX_CHECK_ARG(c.out_h > 0 && c.out_w > 0, "transform: output size must be positive");
  SX_CHECK_ARG(c.scale_min > 0 && c.scale_min <= c.scale_max && c.scale_max <= 1.0,
               "transform: need 0 < scale_min <= scale_max <= 1");
  SX_CHECK_ARG(c.ratio_min > 0 && c.ratio_min <= c.ratio_max, "transform: need 0 < ratio_min <= ratio_max");
  SX_CHECK_ARG(c.resize_short >= 0 && c.pad >= 0, "transform: resize_short and pad must be >= 0");
  SX_CHECK_ARG(c.erase_prob >= 0 && c.erase_prob <= 1, "transform: erase_prob must be in [0, 1]");
  SX_CHECK_ARG(c.erase_scale_min > 0 && c.erase_scale_min <= c.erase_scale_max && c.erase_ratio_min > 0 &&
                   c.erase_ratio_min <= c.erase_ratio_max,
               "transform: bad random erasing scale/ratio range");
  for (float s : c.stddev) SX_CHECK_ARG(s > 0, "transform: stddev must be > 0");
  return Status::ok();
}

// torchvision RandomResizedCrop.get_params: 10 tries, then a central crop clamped to the ratio range.
CropBox random_resized_crop_box(int h, int w, double scale_min, double scale_max, double ratio_min,
                                double ratio_max, Rng& rng) {
  const double area = double(h) * w;
  const double log_rmin = std::log(ratio_min), log_rmax = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale_min, scale_max);
    const double ratio = std::exp(rng.uniform(log_rmin, log_rmax));
    const int cw = int(std::lround(std::sqrt(target * ratio)));
    const int ch = int(std::lround(std::sqrt(target / ratio)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      const int y = int(rng.below(uint64_t(h - ch) + 1));
      const int x = int(rng.below(uint64_t(w - cw) + 1));
      return {x, y, cw, ch};
    }
  }
  const double in_ratio = double(w) / h;
  int cw = w, ch = h;
  if (in_ratio < ratio_min) {
    ch = std::clamp(int(std::lround(w / ratio_min)), 1, h);
  } else if (in_ratio > ratio_max) {
    cw = std::clamp(int(std::lround(h * ratio_max)), 1, w);
  }
  return {(w - cw) / 2, (h - ch) / 2, cw, ch};
}

// The source region that "resize short side to resize_short, then center crop (OH, OW)" shows.
CropBox center_crop_box(int h, int w, int resize_short, int out_h, int out_w) {
  const double s = resize_short > 0 ? double(resize_short) / std::min(h, w) : 1.0;  // output px per source px
  const int cw = std::clamp(int(std::lround(out_w / s)), 1, w);
  const int ch = std::clamp(int(std::lround(out_h / s)), 1, h);
  return {(w - cw) / 2, (h - ch) / 2, cw, ch};
}

// torchvision RandomCrop(size, padding=pad): offsets into the zero-padded image, shifted back to
// source coordinates.
CropBox pad_crop_box(int h, int w, int pad, int out_h, int out_w, Rng& rng) {
  const int range_y = std::max(0, h + 2 * pad - out_h), range_x = std::max(0, w + 2 * pad - out_w);
  const int y = int(rng.below(uint64_t(range_y) + 1));
  const int x = int(rng.below(uint64_t(range_x) + 1));
  return {x - pad, y - pad, out_w, out_h};
}

bool random_erasing_box(int out_h, int out_w, const TransformConfig& c, Rng& rng, CropBox* box) {
  const double area = double(out_h) * out_w;
  const double log_rmin = std::log(c.erase_ratio_min), log_rmax = std::log(c.erase_ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(c.erase_scale_min, c.erase_scale_max);
    const double ratio = std::exp(rng.uniform(log_rmin, log_rmax));
    const int eh = int(std::lround(std::sqrt(target * ratio)));
    const int ew = int(std::lround(std::sqrt(target / ratio)));
    if (eh < out_h && ew < out_w && eh > 0 && ew > 0) {
      const int y = int(rng.below(uint64_t(out_h - eh) + 1));
      const int x = int(rng.below(uint64_t(out_w - ew) + 1));
      *box = {x, y, ew, eh};
      return true;
    }
  }
  return false;
}

SamplePlan plan_sample(int h, int w, const TransformConfig& c, Rng& rng) {
  SamplePlan plan;
  bool train = false;
  switch (c.mode) {
    case TransformMode::kTrain:
      plan.crop = random_resized_crop_box(h, w, c.scale_min, c.scale_max, c.ratio_min, c.ratio_max, rng);
      train = true;
      break;
    case TransformMode::kEval:
      plan.crop = center_crop_box(h, w, c.resize_short, c.out_h, c.out_w);
      break;
    case TransformMode::kSmallTrain:
      plan.crop = pad_crop_box(h, w, c.pad, c.out_h, c.out_w, rng);
      train = true;
      break;
    case TransformMode::kSmallEval:
      plan.crop = {(w - c.out_w) / 2, (h - c.out_h) / 2, c.out_w, c.out_h};
      break;
  }
  if (train) {
    plan.flip = c.flip && rng.uniform() < 0.5;
    if (c.erase_prob > 0 && rng.uniform() < c.erase_prob)
      plan.erase = random_erasing_box(c.out_h, c.out_w, c, rng, &plan.erase_box);
  }
  return plan;
}

int jpeg_reduction(const SamplePlan& plan, const TransformConfig& c) {
  if (!c.jpeg_reduced_decode || c.mode == TransformMode::kSmallTrain || c.mode == TransformMode::kSmallEval)
    return 1;
  int d = 8;
  while (d > 1 && (plan.crop.w < d * c.out_w || plan.crop.h < d * c.out_h)) d /= 2;
  return d;
}

namespace {

struct Affine {
  float scale[3], bias[3];
};

Affine make_affine(const TransformConfig& c, int channels) {
  Affine a{};
  for (int k = 0; k < channels; ++k) {
    a.scale[k] = 1.0f / (255.0f * c.stddev[size_t(k)]);
    a.bias[k] = -c.mean[size_t(k)] / c.stddev[size_t(k)];
  }
  return a;
}

// src: (OH, OW, C) uint8 fully inside the image. One pass: flip, channel order, normalize, layout.
template <int C>
void write_inside(const cv::Mat& src, bool bgr, bool flip, const Affine& a, ImageLayout layout, int oh, int ow,
                  float* dst) {
  int from[3] = {0, 1, 2};
  if (C == 3 && bgr) from[0] = 2, from[2] = 0;
  const int64_t plane = int64_t(oh) * ow;
  for (int y = 0; y < oh; ++y) {
    const uint8_t* row = src.ptr<uint8_t>(y);
    if (layout == ImageLayout::kNCHW) {
      for (int k = 0; k < C; ++k) {
        float* d = dst + k * plane + int64_t(y) * ow;
        const uint8_t* s = row + from[k];
        const float sc = a.scale[k], bi = a.bias[k];
        if (flip) {
          for (int x = 0; x < ow; ++x) d[x] = float(s[(ow - 1 - x) * C]) * sc + bi;
        } else {
          for (int x = 0; x < ow; ++x) d[x] = float(s[x * C]) * sc + bi;
        }
      }
    } else {
      float* d = dst + int64_t(y) * ow * C;
      for (int x = 0; x < ow; ++x) {
        const uint8_t* p = row + (flip ? ow - 1 - x : x) * C;
        for (int k = 0; k < C; ++k) d[x * C + k] = float(p[from[k]]) * a.scale[k] + a.bias[k];
      }
    }
  }
}

// Small modes: the crop may reach into the zero padding around img; no resize.
void write_padded(const cv::Mat& img, int channels, bool bgr, const SamplePlan& plan, const Affine& a,
                  ImageLayout layout, int oh, int ow, float* dst) {
  const int64_t plane = int64_t(oh) * ow;
  for (int y = 0; y < oh; ++y) {
    const int sy = plan.crop.y + y;
    const bool row_in = sy >= 0 && sy < img.rows;
    const uint8_t* row = row_in ? img.ptr<uint8_t>(sy) : nullptr;
    for (int x = 0; x < ow; ++x) {
      const int sx = plan.crop.x + (plan.flip ? ow - 1 - x : x);
      const bool in = row_in && sx >= 0 && sx < img.cols;
      for (int k = 0; k < channels; ++k) {
        const int from = (channels == 3 && bgr) ? 2 - k : k;
        const float v = in ? float(row[sx * channels + from]) * a.scale[k] + a.bias[k] : a.bias[k];
        const int64_t at = layout == ImageLayout::kNCHW ? k * plane + int64_t(y) * ow + x
                                                        : (int64_t(y) * ow + x) * channels + k;
        dst[at] = v;
      }
    }
  }
}

void erase(const CropBox& box, int channels, ImageLayout layout, int oh, int ow, float* dst) {
  const int64_t plane = int64_t(oh) * ow;
  for (int y = box.y; y < box.y + box.h; ++y) {
    if (layout == ImageLayout::kNCHW) {
      for (int k = 0; k < channels; ++k) std::fill_n(dst + k * plane + int64_t(y) * ow + box.x, box.w, 0.0f);
    } else {
      std::fill_n(dst + (int64_t(y) * ow + box.x) * channels, int64_t(box.w) * channels, 0.0f);
    }
  }
}

std::string shape_string(int h, int w, int c) {
  std::string s = "(";  // appended piecewise: GCC 12 warns (-Wrestrict) on "(" + std::to_string(...)
  s += std::to_string(h);
  s += ", ";
  s += std::to_string(w);
  s += ", ";
  s += std::to_string(c);
  s += ")";
  return s;
}

}  // namespace

void write_sample(const cv::Mat& img, bool bgr, const SamplePlan& plan, const TransformConfig& c,
                  ImageLayout layout, float* dst, cv::Mat& resized) {
  const int channels = img.channels();
  const Affine a = make_affine(c, channels);
  if (c.mode == TransformMode::kSmallTrain || c.mode == TransformMode::kSmallEval) {
    write_padded(img, channels, bgr, plan, a, layout, c.out_h, c.out_w, dst);
  } else {
    const cv::Mat roi = img(cv::Rect(plan.crop.x, plan.crop.y, plan.crop.w, plan.crop.h));
    const cv::Mat* src = &roi;
    if (plan.crop.w != c.out_w || plan.crop.h != c.out_h) {
      cv::resize(roi, resized, cv::Size(c.out_w, c.out_h), 0, 0, cv::INTER_LINEAR);
      src = &resized;
    }
    if (channels == 3) {
      write_inside<3>(*src, bgr, plan.flip, a, layout, c.out_h, c.out_w, dst);
    } else {
      write_inside<1>(*src, bgr, plan.flip, a, layout, c.out_h, c.out_w, dst);
    }
  }
  if (plan.erase) erase(plan.erase_box, channels, layout, c.out_h, c.out_w, dst);
}

Status transform_sample(std::span<const uint8_t> bytes, SampleEncoding encoding, int h, int w, int c,
                        const TransformConfig& config, uint64_t seed, ImageLayout layout, float* dst,
                        TransformScratch& scratch) {
  if (h <= 0 || w <= 0 || (c != 1 && c != 3))
    return Status::data_loss("bad sample shape " + shape_string(h, w, c) + " (expected H, W > 0 and C = 1 or 3)");
  Rng rng(seed);
  SamplePlan plan = plan_sample(h, w, config, rng);
  if (encoding == SampleEncoding::kRaw) {
    if (bytes.size() != size_t(h) * w * c)
      return Status::data_loss("raw sample has " + std::to_string(bytes.size()) + " bytes, shape " +
                               shape_string(h, w, c) + " needs " + std::to_string(size_t(h) * w * c));
    const cv::Mat img(h, w, CV_8UC(c), const_cast<uint8_t*>(bytes.data()));
    write_sample(img, /*bgr=*/false, plan, config, layout, dst, scratch.resized);
    return Status::ok();
  }
  const int d = jpeg_reduction(plan, config);
  StatusOr<JpegDecoder::Image> img = scratch.jpeg.decode(bytes, c, d, h, w, scratch.decoded_storage);
  if (!img.is_ok()) return img.status();
  const int dh = img->h, dw = img->w;
  if (d > 1) {  // the crop in reduced pixels, kept inside the reduced image
    CropBox& b = plan.crop;
    const int x0 = b.x / d, y0 = b.y / d;
    const int x1 = std::min(dw, int(std::lround(double(b.x + b.w) / d)));
    const int y1 = std::min(dh, int(std::lround(double(b.y + b.h) / d)));
    b = {x0, y0, std::max(1, x1 - x0), std::max(1, y1 - y0)};
  }
  const cv::Mat decoded(dh, dw, CV_8UC(c), scratch.decoded_storage.data());
  write_sample(decoded, /*bgr=*/false, plan, config, layout, dst, scratch.resized);
  return Status::ok();
}

}  // namespace sx::dataplane
