// sx_prep on bad input. The corpus is made here with OpenCV's real encoders (plus the committed
// tests/data/cmyk_32x24.jpg, which OpenCV cannot write; see tests/data/make_cmyk_jpeg.c): missing,
// zero-byte, truncated, undecodable and non-image files, decompression bombs, bad labels, lines
// without a label; and images that must be converted, not refused: CMYK, 16-bit, gray, alpha.
// Default: stop with a message naming list line, file and problem, exit non-zero, no manifest; a run
// that fails while reading its inputs leaves an earlier dataset in OUT whole.
// --skip-bad: every bad input is in the report and the rest is converted.
#include <zlib.h>

#include "dataplane/image_decode.h"
#include "dataplane/manifest.h"
#include "dataplane/prep_pipeline.h"
#include "dataplane/shard_format.h"
#include "tests/test_prep_util.h"

namespace sx::dataplane {
namespace {

using namespace sx::dataplane::testing;

const fs::path kDataDir = fs::path(SX_TESTS_DIR) / "data";

struct BadCase {
  std::string file;    // as written in the list
  std::string label;   // as written in the list
  std::string reason;  // expected in the message
};

std::vector<uint8_t> encode(const cv::Mat& bgr, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uint8_t> b;
  EXPECT_TRUE(cv::imencode(ext, bgr, b, params));
  return b;
}

// Sets a PNG's IHDR width/height and fixes the chunk CRC, so only the declared size is "wrong".
std::vector<uint8_t> png_with_size(std::vector<uint8_t> png, uint32_t w, uint32_t h) {
  auto put = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  };
  put(16, w);
  put(20, h);
  put(29, static_cast<uint32_t>(::crc32(0L, png.data() + 12, 17)));  // crc over "IHDR" + 13 data bytes
  return png;
}

// Writes the bad half of the corpus under root and returns the cases.
std::vector<BadCase> make_bad_corpus(const fs::path& root) {
  cv::Mat img = pattern_rgb(40, 48, 3);
  std::vector<uint8_t> jpg = encode(img, ".jpg"), png = encode(img, ".png");
  write_bytes(root / "empty.jpg", {});
  write_bytes(root / "truncated.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() * 6 / 10));
  write_bytes(root / "truncated.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() * 6 / 10));
  write_bytes(root / "header_only.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + 20));
  write_text(root / "not_an_image.jpg", "<html>404 Not Found</html>\n");
  std::vector<uint8_t> corrupt = png;
  for (size_t i = 60; i + 16 < corrupt.size(); i += 7) corrupt[i] ^= 0x5a;  // scramble IDAT, keep IEND
  write_bytes(root / "corrupt_data.png", corrupt);
  write_bytes(root / "bomb.png", png_with_size(encode(cv::Mat(8, 8, CV_8UC1, cv::Scalar(0)), ".png"), 100000, 100000));
  // A real, decodable image that is over the run's --max-pixels (1e6): refused from its header.
  write_bytes(root / "too_big.png", encode(cv::Mat(1000, 1200, CV_8UC1, cv::Scalar(7)), ".png"));
  write_bytes(root / "fine.png", png);
  return {
      {"missing.jpg", "0", "missing file"},
      {"empty.jpg", "0", "empty file (0 bytes)"},
      {"truncated.jpg", "1", "truncated JPEG"},
      {"truncated.png", "1", "truncated PNG"},
      {"header_only.jpg", "1", "JPEG (no frame header found)"},
      {"not_an_image.jpg", "2", "not a JPEG or PNG image"},
      {"corrupt_data.png", "2", "undecodable PNG"},
      {"bomb.png", "3", "100000x100000 = 10000000000 pixels exceeds --max-pixels 1000000"},
      {"too_big.png", "3", "1200x1000 = 1200000 pixels exceeds --max-pixels 1000000"},
      {"fine.png", "abc", "label 'abc' is not an integer"},
      {"fine.png", "1.5", "label '1.5' is not an integer"},
      {"fine.png", "7", "label 7 is out of range [0, 4)"},
      {"fine.png", "-1", "label -1 is out of range [0, 4)"},
  };
}

PrepOptions list_options(const fs::path& dir, const fs::path& list) {
  PrepOptions o;
  o.format = "list";
  o.list = list.string();
  o.root = (dir / "root").string();
  o.out = (dir / "out").string();
  o.num_classes = 4;
  o.max_pixels = 1000000;
  o.progress = false;
  o.threads = 2;
  return o;
}

TEST(PrepBadInput, EachCaseStopsWithLineFileAndReason) {
  fs::path dir = make_temp_dir("bad_each");
  std::vector<BadCase> cases = make_bad_corpus(dir / "root");
  write_rgb(dir / "root/good.png", pattern_rgb(10, 10, 1));
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.file + " " + c.label);
    // good line, blank line (CRLF), then the bad one on line 3.
    write_text(dir / "list.txt", "good.png 0\r\n\r\n" + c.file + " " + c.label + "\r\ngood.png 1\r\n");
    StatusOr<PrepResult> r = run_prep(list_options(dir, dir / "list.txt"));
    ASSERT_FALSE(r.is_ok());
    const std::string& msg = r.status().message();
    EXPECT_NE(msg.find("list.txt line 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.file), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dir / "out" / kManifestName)) << msg;
  }
  // A line with no label at all.
  write_text(dir / "list.txt", "good.png 0\nno_label_here.png\n");
  StatusOr<PrepResult> r = run_prep(list_options(dir, dir / "list.txt"));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("list.txt line 2: expected '<relative/path> <label>'"), std::string::npos)
      << r.status().message();
  fs::remove_all(dir);
}

TEST(PrepBadInput, SkipBadReportsEveryCaseAndConvertsTheRest) {
  fs::path dir = make_temp_dir("bad_skip");
  std::vector<BadCase> cases = make_bad_corpus(dir / "root");
  std::string list;
  std::vector<int> good_labels;
  int line = 0;
  std::vector<int> bad_lines;
  for (size_t i = 0; i < cases.size(); ++i) {
    write_rgb(dir / "root" / ("good" + std::to_string(i) + ".png"), pattern_rgb(10, 12, static_cast<int>(i)));
    list += "good" + std::to_string(i) + ".png " + std::to_string(i % 4) + "\n";
    good_labels.push_back(static_cast<int>(i % 4));
    ++line;
    list += cases[i].file + " " + cases[i].label + "\n";
    bad_lines.push_back(++line);
  }
  list += "no_label_here.png\n";
  bad_lines.push_back(++line);
  write_text(dir / "list.txt", list);
  PrepOptions o = list_options(dir, dir / "list.txt");
  o.skip_bad = true;
  o.samples_per_shard = 5;
  StatusOr<PrepResult> r = run_prep(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->skipped.size(), cases.size() + 1);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(r->skipped[i].where, "list.txt line " + std::to_string(bad_lines[i]));
    EXPECT_EQ(r->skipped[i].file, cases[i].file);
    EXPECT_NE(r->skipped[i].reason.find(cases[i].reason), std::string::npos) << r->skipped[i].reason;
  }
  // The report file lists them, one per line, in list order.
  std::ifstream report(dir / "out/skipped.txt");
  ASSERT_TRUE(report) << "no report";
  std::string text((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    size_t at = text.find("list.txt line " + std::to_string(bad_lines[i]) + "\t" + cases[i].file + "\t", pos);
    EXPECT_NE(at, std::string::npos) << cases[i].file << " not in report:\n" << text;
    if (at != std::string::npos) pos = at;
  }
  StatusOr<Manifest> m = load_manifest((dir / "out").string());
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->num_samples, static_cast<int64_t>(cases.size()));
  EXPECT_EQ(m->skipped, static_cast<int64_t>(cases.size() + 1));
  EXPECT_EQ(m->num_classes, 4);
  std::vector<int> labels;
  for (const ShardInfo& s : m->shards) {
    ShardContents c = read_shard(dir / "out" / s.file);
    ASSERT_TRUE(c.ok);
    labels.insert(labels.end(), c.labels.begin(), c.labels.end());
  }
  EXPECT_EQ(labels, good_labels);
  fs::remove_all(dir);
}

// Decoded (H, W, C) pixels of sample i of a one-shard output.
std::vector<uint8_t> sample_bytes(const ShardContents& c, int i) {
  return std::vector<uint8_t>(c.data.begin() + c.offsets[i], c.data.begin() + c.offsets[i + 1]);
}

TEST(PrepBadInput, CmykSixteenBitGrayAlphaAreConverted) {
  fs::path dir = make_temp_dir("convert");
  fs::path root = dir / "root";
  fs::create_directories(root);
  ASSERT_TRUE(fs::exists(kDataDir / "cmyk_32x24.jpg")) << kDataDir;
  fs::copy_file(kDataDir / "cmyk_32x24.jpg", root / "cmyk.jpg");
  cv::Mat rgb = pattern_rgb(6, 5, 9);
  cv::Mat gray(6, 5, CV_8UC1);
  for (int i = 0; i < 30; ++i) gray.data[i] = static_cast<uint8_t>(i * 8);
  cv::Mat bgr16(6, 5, CV_16UC3), gray16(6, 5, CV_16UC1);
  for (int i = 0; i < 90; ++i) reinterpret_cast<uint16_t*>(bgr16.data)[i] = static_cast<uint16_t>(i * 700 + 3);
  for (int i = 0; i < 30; ++i) reinterpret_cast<uint16_t*>(gray16.data)[i] = static_cast<uint16_t>(65535 - i * 2000);
  cv::Mat bgra;
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  for (int i = 0; i < 30; ++i) bgra.data[4 * i + 3] = static_cast<uint8_t>(i);  // varied alpha
  ASSERT_TRUE(cv::imwrite((root / "gray.png").string(), gray));
  ASSERT_TRUE(cv::imwrite((root / "rgb16.png").string(), bgr16));
  ASSERT_TRUE(cv::imwrite((root / "gray16.png").string(), gray16));
  ASSERT_TRUE(cv::imwrite((root / "rgba.png").string(), bgra));
  ASSERT_TRUE(cv::imwrite((root / "gray.jpg").string(), gray));
  write_text(dir / "list.txt", "cmyk.jpg 0\ngray.png 1\nrgb16.png 2\ngray16.png 3\nrgba.png 0\ngray.jpg 1\n");

  for (int channels : {3, 1}) {
    SCOPED_TRACE("channels " + std::to_string(channels));
    PrepOptions o = list_options(dir, dir / "list.txt");
    o.channels = channels;
    StatusOr<PrepResult> r = run_prep(o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    StatusOr<Manifest> m = load_manifest(o.out);
    ASSERT_TRUE(m.is_ok());
    EXPECT_EQ(m->channels, channels);
    ShardContents c = read_shard(fs::path(o.out) / m->shards[0].file);
    ASSERT_TRUE(c.ok);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(c.shapes[3 * i + 2], channels) << "sample " << i;
    EXPECT_EQ(c.shapes[0], 24);  // CMYK: (24, 32)
    EXPECT_EQ(c.shapes[1], 32);

    // The references, built from the pixels written, in the stored layout.
    auto to_out = [&](const cv::Mat& rgb8) {
      cv::Mat o2;
      if (channels == 3) o2 = rgb8;
      else cv::cvtColor(rgb8, o2, cv::COLOR_RGB2GRAY);
      return std::vector<uint8_t>(o2.data, o2.data + o2.total() * o2.elemSize());
    };
    cv::Mat gray_rgb;
    cv::cvtColor(gray, gray_rgb, cv::COLOR_GRAY2RGB);
    std::vector<uint8_t> gray_ref = channels == 3 ? to_out(gray_rgb) : std::vector<uint8_t>(gray.data, gray.data + 30);
    EXPECT_EQ(sample_bytes(c, 1), gray_ref);
    cv::Mat rgb16_8, tmp;
    bgr16.convertTo(tmp, CV_8U, 1.0 / 257.0);
    cv::cvtColor(tmp, rgb16_8, cv::COLOR_BGR2RGB);
    EXPECT_EQ(sample_bytes(c, 2), to_out(rgb16_8));
    std::vector<uint8_t> g16 = sample_bytes(c, 3);
    ASSERT_EQ(g16.size(), static_cast<size_t>(30 * channels));
    for (int i = 0; i < 30; ++i)  // 16 -> 8 bit: v / 257 rounded
      EXPECT_EQ(g16[i * channels], static_cast<uint8_t>(std::lround((65535 - i * 2000) / 257.0))) << i;
    EXPECT_EQ(sample_bytes(c, 4), to_out(rgb));  // alpha dropped, colour kept
    // CMYK: left half cyan, right half yellow (JPEG-lossy, so within a tolerance).
    std::vector<uint8_t> cmyk = sample_bytes(c, 0);
    auto px = [&](int y, int x, int ch) { return static_cast<int>(cmyk[(y * 32 + x) * channels + ch]); };
    if (channels == 3) {
      EXPECT_LT(px(12, 4, 0), 30);
      EXPECT_GT(px(12, 4, 1), 225);
      EXPECT_GT(px(12, 4, 2), 225);
      EXPECT_GT(px(12, 28, 0), 225);
      EXPECT_GT(px(12, 28, 1), 225);
      EXPECT_LT(px(12, 28, 2), 30);
    } else {
      EXPECT_NEAR(px(12, 4, 0), 0.299 * 0 + 0.587 * 255 + 0.114 * 255, 12);
      EXPECT_NEAR(px(12, 28, 0), 0.299 * 255 + 0.587 * 255, 12);
    }
  }
  fs::remove_all(dir);
}

TEST(PrepBadInput, HeaderParserReadsSizesWithoutDecoding) {
  cv::Mat bgr(17, 23, CV_8UC3, cv::Scalar(1, 2, 3));
  for (const char* ext : {".jpg", ".png"}) {
    std::vector<uint8_t> b = encode(bgr, ext);
    StatusOr<ImageHeader> h = read_image_header(b);
    ASSERT_TRUE(h.is_ok()) << ext;
    EXPECT_EQ(h->width, 23);
    EXPECT_EQ(h->height, 17);
    EXPECT_EQ(h->channels, 3);
  }
  std::vector<uint8_t> bomb = png_with_size(encode(cv::Mat(8, 8, CV_8UC1, cv::Scalar(0)), ".png"), 70000, 80000);
  StatusOr<ImageHeader> h = read_image_header(bomb);
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->width, 70000);
  EXPECT_EQ(h->height, 80000);
  StatusOr<cv::Mat> d = decode_image(bomb, DecodeOptions{});
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("decompression bomb"), std::string::npos) << d.status().message();
}

TEST(PrepBadInput, FolderModeNamesTheFile) {
  fs::path dir = make_temp_dir("bad_folder");
  write_rgb(dir / "tree/a/ok.png", pattern_rgb(8, 8, 1));
  std::vector<uint8_t> jpg = encode(pattern_rgb(30, 30, 2), ".jpg");
  write_bytes(dir / "tree/b/cut.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2));
  PrepOptions o;
  o.format = "folder";
  o.root = (dir / "tree").string();
  o.out = (dir / "out").string();
  o.progress = false;
  StatusOr<PrepResult> r = run_prep(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("b/cut.jpg: truncated JPEG"), std::string::npos) << r.status().message();
  EXPECT_FALSE(fs::exists(dir / "out" / kManifestName));
  fs::remove_all(dir);
}

// Small idx files written here: 3 images of 4x5, labels {2, 0, 1}.
void write_idx(const fs::path& images, const fs::path& labels, bool gz, size_t cut_images = 0,
               uint32_t image_magic = 0x803) {
  std::vector<uint8_t> im = {0, 0, static_cast<uint8_t>(image_magic >> 8), static_cast<uint8_t>(image_magic), 0, 0, 0, 3,
                             0, 0, 0, 4, 0, 0, 0, 5};
  for (int i = 0; i < 60; ++i) im.push_back(static_cast<uint8_t>(i * 4));
  std::vector<uint8_t> lb = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1};
  if (cut_images) im.resize(im.size() - cut_images);
  auto put = [&](const fs::path& p, const std::vector<uint8_t>& b) {
    if (!gz) return write_bytes(p, b);
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
  };
  put(images, im);
  put(labels, lb);
}

TEST(PrepBadInput, IdxPlainGzAndBrokenFiles) {
  fs::path dir = make_temp_dir("bad_idx");
  PrepOptions o;
  o.format = "idx";
  o.images = (dir / "img.idx").string();
  o.labels = (dir / "lab.idx").string();
  o.out = (dir / "out").string();
  o.progress = false;
  for (bool gz : {false, true}) {
    write_idx(o.images, o.labels, gz);
    StatusOr<PrepResult> r = run_prep(o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    ShardContents c = read_shard(dir / "out/shard-00000.h5");
    ASSERT_TRUE(c.ok);
    EXPECT_EQ(c.labels, (std::vector<int32_t>{2, 0, 1}));
    EXPECT_EQ(c.shapes, (std::vector<int32_t>{4, 5, 1, 4, 5, 1, 4, 5, 1}));
    for (int i = 0; i < 60; ++i) EXPECT_EQ(c.data[i], static_cast<uint8_t>(i * 4));
    EXPECT_EQ(r->manifest.class_names, (std::vector<std::string>{"0", "1", "2"}));  // no "fashion" in the path
  }
  write_idx(o.images, o.labels, true, 7);  // truncated pixel data
  StatusOr<PrepResult> r = run_prep(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(o.images + ": truncated"), std::string::npos) << r.status().message();
  // Failing on its inputs, the run leaves the earlier dataset in OUT whole.
  StatusOr<Manifest> kept = load_manifest(o.out);
  ASSERT_TRUE(kept.is_ok()) << kept.status().to_string();
  EXPECT_EQ(kept->num_samples, 3);
  EXPECT_TRUE(read_shard(dir / "out/shard-00000.h5").ok);
  write_idx(o.images, o.labels, false, 0, 0x801);  // a labels file given as --images
  r = run_prep(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("bad idx magic"), std::string::npos) << r.status().message();
  write_idx(o.images, o.labels, false);
  o.num_classes = 2;  // label 2 is out of range
  r = run_prep(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("label 2 of sample 0 is out of range [0, 2)"), std::string::npos)
      << r.status().message();
  o.num_classes = 0;
  o.labels = (dir / "nope.idx").string();
  r = run_prep(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("nope.idx"), std::string::npos) << r.status().message();
  fs::remove_all(dir);
}

TEST(PrepBadInput, BinaryExitsNonZeroAndSaysWhy) {
  std::string bin = sx_prep_binary();
  if (bin.empty()) GTEST_SKIP() << "sx_prep not built next to the test";
  fs::path dir = make_temp_dir("bad_binary");
  make_bad_corpus(dir / "root");
  write_rgb(dir / "root/good.png", pattern_rgb(10, 10, 1));
  write_text(dir / "list.txt", "good.png 0\ntruncated.jpg 1\ngood.png 1\n");
  std::string cmd = bin + " --format list --list " + (dir / "list.txt").string() + " --root " + (dir / "root").string() +
                    " --out " + (dir / "out").string();
  RunResult r = run_command(cmd);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("list.txt line 2: truncated.jpg: truncated JPEG"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "out" / kManifestName));
  r = run_command(cmd + " --skip-bad");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("skipped 1 bad inputs"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / "out" / kManifestName));
  r = run_command(bin + " --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--format", "--short-side", "--center-crop", "--encode", "--quality", "--samples-per-shard",
                          "--threads", "--skip-bad", "--max-pixels", "--num-classes", "--class-names"})
    EXPECT_NE(r.output.find(opt), std::string::npos) << opt;
  r = run_command(bin + " --format list --out " + (dir / "o2").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--list"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::dataplane
