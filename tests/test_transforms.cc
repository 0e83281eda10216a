// Transforms: crop-box rules against their definitions over many draws, and the fused pixel pass
// (flip, BGR->RGB, normalize, layout, padding, erasing) against naive double-precision references.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "dataplane/transforms.h"

namespace sx::dataplane {
namespace {

// (H, W, 3) uint8 with every pixel different enough to catch index mistakes.
cv::Mat test_image(int h, int w, uint64_t seed) {
  cv::Mat img(h, w, CV_8UC3);
  Rng rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < 3; ++k) img.ptr<uint8_t>(y)[x * 3 + k] = uint8_t(rng.below(256));
  return img;
}

// Smooth RGB gradient: resampling differences stay small.
cv::Mat smooth_image(int h, int w) {
  cv::Mat img(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.ptr<uint8_t>(y) + x * 3;
      p[0] = uint8_t(40 + 150.0 * x / w);
      p[1] = uint8_t(30 + 180.0 * y / h);
      p[2] = uint8_t(100 + 60.0 * std::sin(0.01 * (x + y)));
    }
  return img;
}

// Naive reference of one output value: source pixel (already cropped, not resized) -> normalized.
double ref_value(const cv::Mat& img, int y, int x, int k, bool bgr, const TransformConfig& c) {
  const int from = bgr ? 2 - k : k;
  return (img.ptr<uint8_t>(y)[x * img.channels() + from] / 255.0 - c.mean[size_t(k)]) / c.stddev[size_t(k)];
}

float at(const std::vector<float>& v, ImageLayout layout, int c, int h, int w, int k, int y, int x) {
  return layout == ImageLayout::kNCHW ? v[size_t((k * h + y) * w + x)] : v[size_t((y * w + x) * c + k)];
}

TEST(Transforms, RandomResizedCropObeysAreaAndRatioBounds) {
  Rng rng(1);
  const double smin = 0.08, smax = 1.0, rmin = 3.0 / 4, rmax = 4.0 / 3;
  int fallback = 0;
  double log_ratio_sum = 0;
  int64_t x_sum = 0;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    const int h = i % 2 ? 375 : 500, w = i % 2 ? 500 : 375;  // both orientations: no net ratio bias
    CropBox b = random_resized_crop_box(h, w, smin, smax, rmin, rmax, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_GT(b.w, 0);
    ASSERT_GT(b.h, 0);
    ASSERT_LE(b.x + b.w, w);
    ASSERT_LE(b.y + b.h, h);
    const bool is_fallback = (b.w == w || b.h == h) && b.x == (w - b.w) / 2 && b.y == (h - b.h) / 2;
    if (is_fallback && double(b.w) * b.h > smax * h * w * 1.01) {
      ++fallback;
      continue;
    }
    // w, h are rounded: allow half a pixel either way.
    EXPECT_GE((b.w + 0.5) * (b.h + 0.5), smin * h * w) << b.w << "x" << b.h;
    EXPECT_LE((b.w - 0.5) * (b.h - 0.5), smax * h * w) << b.w << "x" << b.h;
    EXPECT_GE((b.w + 0.5) / (b.h - 0.5), rmin) << b.w << "x" << b.h;
    EXPECT_LE((b.w - 0.5) / (b.h + 0.5), rmax) << b.w << "x" << b.h;
    log_ratio_sum += std::log(double(b.w) / b.h);
    x_sum += b.x;
  }
  EXPECT_LT(fallback, draws / 100);
  EXPECT_NEAR(log_ratio_sum / draws, 0.0, 0.02);  // log-uniform ratio, symmetric around 1
  EXPECT_GT(x_sum / draws, 20);                    // offsets spread, not pinned to 0
  // Fallback: a needle image no 3/4..4/3 crop fits -> central crop clamped to the ratio range.
  CropBox f = random_resized_crop_box(1000, 10, 0.5, 1.0, rmin, rmax, rng);
  EXPECT_EQ(f, (CropBox{0, (1000 - 13) / 2, 10, 13}));
}

TEST(Transforms, CenterCropBoxMatchesResizeThenCrop) {
  // 375x500 -> short side 256 (scale 256/375) -> center 224: the source region is 328 px square.
  EXPECT_EQ(center_crop_box(375, 500, 256, 224, 224), (CropBox{86, 23, 328, 328}));
  EXPECT_EQ(center_crop_box(500, 375, 256, 224, 224), (CropBox{23, 86, 328, 328}));
  EXPECT_EQ(center_crop_box(32, 32, 0, 28, 28), (CropBox{2, 2, 28, 28}));
}

TEST(Transforms, EvalPipelineMatchesResizeWholeImageThenCrop) {
  const cv::Mat img = smooth_image(375, 500);
  TransformConfig c;
  c.mode = TransformMode::kEval;
  c.resize_short = 128;
  c.out_h = c.out_w = 112;
  Rng rng(0);
  SamplePlan plan = plan_sample(img.rows, img.cols, c, rng);
  std::vector<float> out(size_t(3 * 112 * 112));
  cv::Mat scratch;
  write_sample(img, /*bgr=*/false, plan, c, ImageLayout::kNCHW, out.data(), scratch);
  // Reference: torchvision's order — resize the whole image (short side 128), then center crop.
  cv::Mat big;
  cv::resize(img, big, cv::Size(int(500 * 128 / 375), 128), 0, 0, cv::INTER_LINEAR);
  const int top = int(std::lround((big.rows - 112) / 2.0)), left = int(std::lround((big.cols - 112) / 2.0));
  double err = 0;
  for (int k = 0; k < 3; ++k)
    for (int y = 0; y < 112; ++y)
      for (int x = 0; x < 112; ++x)
        err += std::abs(out[size_t((k * 112 + y) * 112 + x)] - ref_value(big, top + y, left + x, k, false, c));
  EXPECT_LT(err / (3 * 112 * 112), 0.03);  // sub-pixel crop rounding only
}

TEST(Transforms, NormalizeFlipChannelOrderAndLayoutsMatchReference) {
  const cv::Mat img = test_image(9, 11, 3);
  TransformConfig c;
  c.mode = TransformMode::kEval;  // a crop the size of the output: no resampling
  c.out_h = 5;
  c.out_w = 7;
  c.mean = {0.4f, 0.5f, 0.6f};
  c.stddev = {0.2f, 0.25f, 0.3f};
  for (bool flip : {false, true})
    for (bool bgr : {false, true})
      for (ImageLayout layout : {ImageLayout::kNCHW, ImageLayout::kNHWC}) {
        SamplePlan plan;
        plan.crop = {2, 3, 7, 5};
        plan.flip = flip;
        std::vector<float> out(size_t(3 * 5 * 7));
        cv::Mat scratch;
        write_sample(img, bgr, plan, c, layout, out.data(), scratch);
        for (int k = 0; k < 3; ++k)
          for (int y = 0; y < 5; ++y)
            for (int x = 0; x < 7; ++x) {
              const int sx = 2 + (flip ? 6 - x : x);
              EXPECT_NEAR(at(out, layout, 3, 5, 7, k, y, x), ref_value(img, 3 + y, sx, k, bgr, c), 1e-5)
                  << "flip " << flip << " bgr " << bgr << " " << image_layout_name(layout);
            }
      }
}

TEST(Transforms, GrayscaleUsesFirstMeanAndStd) {
  cv::Mat img(4, 4, CV_8UC1);
  for (int i = 0; i < 16; ++i) img.data[i] = uint8_t(i * 16);
  TransformConfig c;
  c.mode = TransformMode::kSmallEval;
  c.out_h = c.out_w = 4;
  c.mean = {0.3f, 9.f, 9.f};
  c.stddev = {0.5f, 9.f, 9.f};
  Rng rng(0);
  SamplePlan plan = plan_sample(4, 4, c, rng);
  std::vector<float> out(16);
  cv::Mat scratch;
  write_sample(img, false, plan, c, ImageLayout::kNCHW, out.data(), scratch);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(out[size_t(i)], (i * 16 / 255.0 - 0.3) / 0.5, 1e-5);
}

TEST(Transforms, PadAndRandomCropStaysInBoundsAndMatchesReference) {
  const cv::Mat img = test_image(28, 28, 4);
  TransformConfig c;
  c.mode = TransformMode::kSmallTrain;
  c.out_h = c.out_w = 28;
  c.pad = 4;
  Rng rng(11);
  int min_x = 100, max_x = -100, flips = 0;
  for (int draw = 0; draw < 400; ++draw) {
    SamplePlan plan = plan_sample(28, 28, c, rng);
    ASSERT_GE(plan.crop.x, -4);
    ASSERT_LE(plan.crop.x, 4);
    ASSERT_GE(plan.crop.y, -4);
    ASSERT_LE(plan.crop.y, 4);
    min_x = std::min(min_x, plan.crop.x);
    max_x = std::max(max_x, plan.crop.x);
    flips += plan.flip;
    if (draw % 50 != 0) continue;
    for (ImageLayout layout : {ImageLayout::kNCHW, ImageLayout::kNHWC}) {
      std::vector<float> out(size_t(3 * 28 * 28));
      cv::Mat scratch;
      write_sample(img, false, plan, c, layout, out.data(), scratch);
      for (int k = 0; k < 3; ++k)
        for (int y = 0; y < 28; ++y)
          for (int x = 0; x < 28; ++x) {
            const int sy = plan.crop.y + y, sx = plan.crop.x + (plan.flip ? 27 - x : x);
            const bool inside = sy >= 0 && sy < 28 && sx >= 0 && sx < 28;
            const double want = inside ? ref_value(img, sy, sx, k, false, c) : -c.mean[size_t(k)] / c.stddev[size_t(k)];
            ASSERT_NEAR(at(out, layout, 3, 28, 28, k, y, x), want, 1e-5);
          }
    }
  }
  EXPECT_EQ(min_x, -4);
  EXPECT_EQ(max_x, 4);
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
}

TEST(Transforms, RandomErasingBoxBoundsAndZeroFill) {
  TransformConfig c;
  c.out_h = c.out_w = 32;
  Rng rng(5);
  int found = 0;
  for (int i = 0; i < 5000; ++i) {
    CropBox b;
    if (!random_erasing_box(32, 24, c, rng, &b)) continue;
    ++found;
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.w, 24);
    ASSERT_LE(b.y + b.h, 32);
    EXPECT_GE((b.w + 0.5) * (b.h + 0.5), c.erase_scale_min * 32 * 24);
    EXPECT_LE((b.w - 0.5) * (b.h - 0.5), c.erase_scale_max * 32 * 24);
    EXPECT_GE((b.h + 0.5) / (b.w - 0.5), c.erase_ratio_min);  // torchvision's ratio is h / w
    EXPECT_LE((b.h - 0.5) / (b.w + 0.5), c.erase_ratio_max);
  }
  EXPECT_GT(found, 4500);
  // In the pixel pass: the box is zero in every channel, the rest untouched.
  const cv::Mat img = test_image(32, 32, 6);
  c.mode = TransformMode::kEval;
  c.resize_short = 0;
  SamplePlan plan;
  plan.crop = {0, 0, 32, 32};
  plan.erase = true;
  plan.erase_box = {3, 5, 10, 7};
  std::vector<float> out(size_t(32 * 32 * 3));
  cv::Mat scratch;
  write_sample(img, false, plan, c, ImageLayout::kNHWC, out.data(), scratch);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int k = 0; k < 3; ++k) {
        const bool erased = x >= 3 && x < 13 && y >= 5 && y < 12;
        ASSERT_NEAR(at(out, ImageLayout::kNHWC, 3, 32, 32, k, y, x), erased ? 0.0 : ref_value(img, y, x, k, false, c), 1e-5);
      }
}

TEST(Transforms, JpegReductionFactor) {
  TransformConfig c;  // 224 output
  SamplePlan p;
  p.crop = {0, 0, 400, 400};
  EXPECT_EQ(jpeg_reduction(p, c), 1);
  p.crop = {0, 0, 500, 448};
  EXPECT_EQ(jpeg_reduction(p, c), 2);
  p.crop = {0, 0, 2000, 1800};
  EXPECT_EQ(jpeg_reduction(p, c), 8);
  c.jpeg_reduced_decode = false;
  EXPECT_EQ(jpeg_reduction(p, c), 1);
}

TEST(Transforms, ReducedJpegDecodeMatchesFullDecode) {
  const cv::Mat rgb = smooth_image(375, 500);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, 95}));
  TransformConfig c;
  c.mode = TransformMode::kTrain;
  c.out_h = c.out_w = 56;  // small output: most crops shrink by >= 2
  int reduced = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    std::vector<float> fast(size_t(3 * 56 * 56)), full(fast.size());
    TransformScratch s1, s2;
    ASSERT_TRUE(transform_sample(jpeg, SampleEncoding::kJpeg, 375, 500, 3, c, seed, ImageLayout::kNCHW, fast.data(), s1).is_ok());
    TransformConfig c_full = c;
    c_full.jpeg_reduced_decode = false;
    ASSERT_TRUE(transform_sample(jpeg, SampleEncoding::kJpeg, 375, 500, 3, c_full, seed, ImageLayout::kNCHW, full.data(), s2).is_ok());
    Rng rng(seed);
    reduced += jpeg_reduction(plan_sample(375, 500, c, rng), c) > 1;
    double err = 0;
    for (size_t i = 0; i < fast.size(); ++i) err += std::abs(fast[i] - full[i]);
    EXPECT_LT(err / double(fast.size()), 0.06) << "seed " << seed;  // same crop, same colours (RGB order)
  }
  EXPECT_GT(reduced, 15);
}

TEST(JpegDecoder, MatchesOpenCvDecodeInRgbOrderAndRefusesTruncatedData) {
  const cv::Mat rgb = test_image(45, 61, 9);  // odd sizes: reduced sizes round up
  std::vector<uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", rgb, jpeg, {cv::IMWRITE_JPEG_QUALITY, 90}));
  JpegDecoder dec;
  std::vector<uint8_t> out;
  const std::pair<int, int> flags[] = {{1, cv::IMREAD_COLOR}, {2, cv::IMREAD_REDUCED_COLOR_2},
                                       {4, cv::IMREAD_REDUCED_COLOR_4}, {8, cv::IMREAD_REDUCED_COLOR_8}};
  for (auto [d, flag] : flags) {
    StatusOr<JpegDecoder::Image> img = dec.decode(jpeg, 3, d, 45, 61, out);
    ASSERT_TRUE(img.is_ok()) << img.status().to_string();
    const cv::Mat ref = cv::imdecode(jpeg, flag);  // BGR
    ASSERT_EQ(img->h, ref.rows) << "reduction " << d;
    ASSERT_EQ(img->w, ref.cols) << "reduction " << d;
    int mismatches = 0;
    for (int y = 0; y < ref.rows; ++y)
      for (int x = 0; x < ref.cols; ++x)
        for (int k = 0; k < 3; ++k)
          mismatches += out[size_t((y * ref.cols + x) * 3 + k)] != ref.ptr<uint8_t>(y)[x * 3 + 2 - k];
    EXPECT_EQ(mismatches, 0) << "reduction " << d;
  }
  StatusOr<JpegDecoder::Image> gray = dec.decode(jpeg, 1, 1, 45, 61, out);
  ASSERT_TRUE(gray.is_ok());
  const cv::Mat ref_gray = cv::imdecode(jpeg, cv::IMREAD_GRAYSCALE);
  EXPECT_EQ(std::vector<uint8_t>(out.begin(), out.begin() + 45 * 61), std::vector<uint8_t>(ref_gray.data, ref_gray.data + 45 * 61));
  Status truncated = dec.decode(std::span<const uint8_t>(jpeg).first(jpeg.size() / 2), 3, 1, 45, 61, out).status();
  EXPECT_EQ(truncated.code(), StatusCode::kDataLoss);
  EXPECT_NE(truncated.message().find("truncated"), std::string::npos) << truncated.message();
  EXPECT_FALSE(dec.decode(std::span<const uint8_t>(jpeg).first(20), 3, 1, 45, 61, out).is_ok());
  EXPECT_FALSE(dec.decode(jpeg, 3, 1, 46, 61, out).is_ok()) << "/shapes mismatch";
  EXPECT_TRUE(dec.decode(jpeg, 3, 1, 45, 61, out).is_ok()) << "the decoder is reusable after errors";
}

TEST(Transforms, SameSeedSameOutputAndBadInputIsDataLoss) {
  const cv::Mat img = test_image(40, 30, 8);
  std::vector<uint8_t> raw(img.data, img.data + img.total() * 3);
  TransformConfig c;
  c.out_h = c.out_w = 16;
  c.erase_prob = 0.5;
  std::vector<float> a(size_t(3 * 16 * 16)), b(a.size()), d(a.size());
  TransformScratch s;
  ASSERT_TRUE(transform_sample(raw, SampleEncoding::kRaw, 40, 30, 3, c, 42, ImageLayout::kNHWC, a.data(), s).is_ok());
  ASSERT_TRUE(transform_sample(raw, SampleEncoding::kRaw, 40, 30, 3, c, 42, ImageLayout::kNHWC, b.data(), s).is_ok());
  ASSERT_TRUE(transform_sample(raw, SampleEncoding::kRaw, 40, 30, 3, c, 43, ImageLayout::kNHWC, d.data(), s).is_ok());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  Status st = transform_sample(std::span<const uint8_t>(raw).first(100), SampleEncoding::kRaw, 40, 30, 3, c, 42,
                               ImageLayout::kNHWC, a.data(), s);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  std::vector<uint8_t> junk(500, 0x55);
  st = transform_sample(junk, SampleEncoding::kJpeg, 40, 30, 3, c, 42, ImageLayout::kNHWC, a.data(), s);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
  std::vector<uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", img, jpeg));
  st = transform_sample(jpeg, SampleEncoding::kJpeg, 41, 30, 3, c, 42, ImageLayout::kNHWC, a.data(), s);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << "shape mismatch with /shapes must be caught";
  EXPECT_NE(st.message().find("/shapes"), std::string::npos) << st.message();
  TransformConfig bad = c;
  bad.scale_min = 0;
  EXPECT_FALSE(validate_transform_config(bad).is_ok());
}

}  // namespace
}  // namespace sx::dataplane
