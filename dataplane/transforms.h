// defines: TransformConfig, CropBox, SamplePlan and the per-sample pipeline: plan (all randomness,
// from the sample's own seed) -> decode (JPEG reduced by 2/4/8 when the crop is downscaled at least
// that much) -> crop -> resize the crop only (INTER_LINEAR) -> one fused pass that flips, swaps
// BGR->RGB, normalizes by mean/std and writes floats in the batch layout -> optional random erasing.
// Crop boxes follow torchvision's RandomResizedCrop / CenterCrop / RandomCrop(padding) /
// RandomErasing parameter rules; see transforms.cc for where the pixels may differ slightly.
// Dimension letters: H, W source image; C channels; OH, OW output image.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include <opencv2/core.hpp>

#include "common/status.h"
#include "dataplane/batch.h"
#include "dataplane/reader_jpeg.h"
#include "dataplane/sampler.h"

namespace sx::dataplane {

enum class SampleEncoding : uint8_t { kRaw, kJpeg };  // shard_format.h: "raw" | "jpeg"

enum class TransformMode : uint8_t {
  kTrain,      // random-resized-crop + horizontal flip (+ optional random erasing)
  kEval,       // resize short side to resize_short, center crop (OH, OW)
  kSmallTrain, // `small` images (28–32 px): zero-pad by `pad`, random crop (OH, OW), flip
  kSmallEval,  // `small` images: center crop (OH, OW) of the padded image, i.e. identity when sizes match
};

struct TransformConfig {
  TransformMode mode = TransformMode::kTrain;
  int out_h = 224, out_w = 224;                         // OH, OW
  double scale_min = 0.08, scale_max = 1.0;             // random-resized-crop area fraction
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // random-resized-crop aspect ratio w/h
  bool flip = true;                                     // train modes: horizontal flip with p = 0.5
  int resize_short = 256;                               // eval: short side before the center crop (0 = none)
  int pad = 4;                                          // small modes: zero padding on each side
  // Normalization on pixels scaled to [0, 1]: out = (px/255 - mean[c]) / stddev[c]; gray uses [0].
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> stddev = {0.229f, 0.224f, 0.225f};
  double erase_prob = 0.0;                              // random erasing (train modes); 0 = off
  double erase_scale_min = 0.02, erase_scale_max = 0.33;
  double erase_ratio_min = 0.3, erase_ratio_max = 3.3;
  bool jpeg_reduced_decode = true;                      // allow IMREAD_REDUCED_* (see jpeg_reduction)
};

Status validate_transform_config(const TransformConfig& config);

// A rectangle in source pixels; in the small modes x, y may be negative / reach past the image
// (those pixels are the zero padding).
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
  bool operator==(const CropBox&) const = default;
};

// Everything random about one sample, drawn in a fixed order: crop, flip, erasing.
struct SamplePlan {
  CropBox crop;       // in source pixels (H, W)
  bool flip = false;
  bool erase = false;
  CropBox erase_box;  // in output pixels (OH, OW)
};

CropBox random_resized_crop_box(int h, int w, double scale_min, double scale_max, double ratio_min,
                                double ratio_max, Rng& rng);
CropBox center_crop_box(int h, int w, int resize_short, int out_h, int out_w);
CropBox pad_crop_box(int h, int w, int pad, int out_h, int out_w, Rng& rng);
// torchvision RandomErasing's box on an (OH, OW) image, or nothing after 10 failed tries.
bool random_erasing_box(int out_h, int out_w, const TransformConfig& config, Rng& rng, CropBox* box);

SamplePlan plan_sample(int h, int w, const TransformConfig& config, Rng& rng);

// JPEG DCT-domain downscale factor (1, 2, 4 or 8): the largest d with crop.w / d >= OW and
// crop.h / d >= OH, so the reduced decode never upsamples what the resize then shrinks.
int jpeg_reduction(const SamplePlan& plan, const TransformConfig& config);

// Pixel stage. img: (H, W, C) uint8, C = 1 or 3, BGR when `bgr` (OpenCV decode) else RGB; plan.crop
// in img's pixels. Writes one normalized (C, OH, OW) or (OH, OW, C) float image to dst.
// resized: the caller's reusable scratch for the resized crop.
void write_sample(const cv::Mat& img, bool bgr, const SamplePlan& plan, const TransformConfig& config,
                  ImageLayout layout, float* dst, cv::Mat& resized);

// Per-thread buffers, grown once and reused, so steady-state samples allocate nothing.
struct TransformScratch {
  JpegDecoder jpeg;
  std::vector<uint8_t> decoded_storage;  // (H, W, C) decoded pixels
  cv::Mat resized;                       // (OH, OW, C) resized crop
};

// Decode + augment one sample. bytes: the sample's bytes from the shard; (h, w, c): its decoded shape
// from /shapes; seed: sample_seed(seed, epoch, global index). Errors are data_loss (undecodable,
// shape mismatch); the caller adds which shard and sample.
Status transform_sample(std::span<const uint8_t> bytes, SampleEncoding encoding, int h, int w, int c,
                        const TransformConfig& config, uint64_t seed, ImageLayout layout, float* dst,
                        TransformScratch& scratch);

}  // namespace sx::dataplane
