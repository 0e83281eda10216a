// sx_prep end to end with real files: list mode (CRLF, blank lines, paths with spaces), folder
// mode, idx mode on the real Fashion-MNIST, resize/crop/JPEG encoding, determinism across thread
// counts, the manifest's validation, and that an interrupted run leaves no complete-looking shard.
#include <signal.h>
#include <zlib.h>

#include <chrono>
#include <set>
#include <thread>

#include "dataplane/manifest.h"
#include "dataplane/prep_pipeline.h"
#include "dataplane/shard_format.h"
#include "tests/test_prep_util.h"

namespace sx::dataplane {
namespace {

using namespace sx::dataplane::testing;

const std::string kFmnist = "/usr/share/datasets/fashion-mnist/";

uint32_t zlib_crc(const fs::path& p) {
  std::vector<uint8_t> b = read_bytes(p);
  return static_cast<uint32_t>(::crc32(0L, b.data(), static_cast<uInt>(b.size())));
}

PrepOptions base_options(const std::string& format, const fs::path& out) {
  PrepOptions o;
  o.format = format;
  o.out = out.string();
  o.progress = false;
  o.threads = 2;
  o.command = "sx_prep (test)";
  return o;
}

// All samples of a prepared directory, in global order.
struct Loaded {
  Manifest m;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<std::array<int, 3>> shapes;
  std::vector<int> labels;
};

Loaded load_all(const fs::path& dir) {
  Loaded l;
  StatusOr<Manifest> m = load_manifest(dir.string());
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  if (!m.is_ok()) return l;
  l.m = *m;
  for (const ShardInfo& s : l.m.shards) {
    EXPECT_EQ(zlib_crc(dir / s.file), s.crc32) << s.file;
    ShardContents c = read_shard(dir / s.file);
    EXPECT_TRUE(c.ok) << s.file;
    EXPECT_EQ(c.num_samples, s.num_samples);
    EXPECT_EQ(c.first_index, s.first_index);
    EXPECT_EQ(c.encoding, l.m.encoding);
    EXPECT_EQ(static_cast<int64_t>(c.labels.size()), s.num_samples);
    EXPECT_EQ(c.offsets.front(), 0);
    EXPECT_EQ(c.offsets.back(), static_cast<int64_t>(c.data.size()));
    for (int64_t i = 0; i < s.num_samples; ++i) {
      l.bytes.emplace_back(c.data.begin() + c.offsets[i], c.data.begin() + c.offsets[i + 1]);
      l.shapes.push_back({c.shapes[3 * i], c.shapes[3 * i + 1], c.shapes[3 * i + 2]});
      l.labels.push_back(c.labels[i]);
    }
  }
  EXPECT_EQ(static_cast<int64_t>(l.labels.size()), l.m.num_samples);
  return l;
}

std::vector<uint8_t> mat_bytes(const cv::Mat& m) { return std::vector<uint8_t>(m.data, m.data + m.total() * m.elemSize()); }

// RGB pixels as OpenCV decodes the file (the reference for raw storage of a JPEG).
cv::Mat decode_rgb(const fs::path& p) {
  cv::Mat bgr = cv::imread(p.string(), cv::IMREAD_COLOR), rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

TEST(PrepManifest, RoundTripAndValidationNamesFileAndKey) {
  fs::path dir = make_temp_dir("manifest");
  Manifest m;
  m.format_version = kShardFormatVersion;
  m.num_samples = 5;
  m.num_classes = 2;
  m.class_names = {"a", "b"};
  m.encoding = "jpeg";
  m.channels = 3;
  m.shards = {{"shard-00000.h5", 3, 0, 0xdeadbeef}, {"shard-00001.h5", 2, 3, 0x1}};
  m.command = "sx_prep --x";
  ASSERT_TRUE(save_manifest(dir.string(), m).is_ok());
  StatusOr<Manifest> back = load_manifest(dir.string());
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->shards[0].crc32, 0xdeadbeefu);
  EXPECT_EQ(back->shards[1].first_index, 3);
  EXPECT_EQ(back->class_names[1], "b");
  EXPECT_EQ(back->shard_of(2), 0);
  EXPECT_EQ(back->shard_of(3), 1);
  EXPECT_EQ(back->shard_of(5), -1);
  const std::string path = (dir / kManifestName).string();

  auto expect_error = [&](nlohmann::json j, const std::string& key) {
    std::ofstream(dir / kManifestName) << j.dump();
    StatusOr<Manifest> r = load_manifest(dir.string());
    ASSERT_FALSE(r.is_ok()) << j.dump();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("'" + key + "'"), std::string::npos) << r.status().message();
  };
  nlohmann::json good = manifest_to_json(m);
  { auto j = good; j.erase("shards"); expect_error(j, "shards"); }
  { auto j = good; j["num_samples"] = "5"; expect_error(j, "num_samples"); }
  { auto j = good; j["num_samples"] = 6; expect_error(j, "num_samples"); }
  { auto j = good; j["shards"][1]["first_index"] = 4; expect_error(j, "first_index"); }
  { auto j = good; j["shards"][0]["crc32"] = "XYZ"; expect_error(j, "crc32"); }
  { auto j = good; j["shards"][0]["file"] = "../etc/passwd"; expect_error(j, "file"); }
  { auto j = good; j["class_names"] = {"only one"}; expect_error(j, "class_names"); }
  { auto j = good; j["encoding"] = "png"; expect_error(j, "encoding"); }
  { auto j = good; j["format_version"] = 99; expect_error(j, "format_version"); }

  std::ofstream(dir / kManifestName) << "{ not json";
  EXPECT_FALSE(load_manifest(dir.string()).is_ok());
  fs::remove(dir / kManifestName);
  StatusOr<Manifest> none = load_manifest(dir.string());
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().message().find("incomplete"), std::string::npos) << none.status().message();
  fs::remove_all(dir);
}

TEST(PrepList, CrlfBlankLinesSpacesPngAndJpeg) {
  fs::path dir = make_temp_dir("list");
  fs::path root = dir / "root";
  std::vector<cv::Mat> imgs = {pattern_rgb(12, 16, 1), pattern_rgb(20, 10, 2), pattern_rgb(9, 9, 3), pattern_rgb(14, 15, 4),
                               pattern_rgb(16, 16, 5)};
  write_rgb(root / "a.png", imgs[0]);
  write_rgb(root / "sub/b.png", imgs[1]);
  write_rgb(root / "with space/c d.png", imgs[2]);
  write_rgb(root / "sub/e.jpg", imgs[3], {cv::IMWRITE_JPEG_QUALITY, 90});
  write_rgb(root / "f.jpeg", imgs[4]);
  // CRLF endings, blank lines (also whitespace-only ones), a path with spaces.
  write_text(dir / "list.txt", "a.png 0\r\n\r\nsub/b.png 3\r\n   \r\nwith space/c d.png 1\r\n \t\r\nsub/e.jpg 2\nf.jpeg 3\n\n");
  PrepOptions o = base_options("list", dir / "out");
  o.list = (dir / "list.txt").string();
  o.root = root.string();
  o.samples_per_shard = 2;
  StatusOr<PrepResult> r = run_prep(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  Loaded l = load_all(dir / "out");
  EXPECT_EQ(l.m.num_samples, 5);
  EXPECT_EQ(l.m.num_classes, 4);  // max label + 1
  EXPECT_EQ(l.m.shards.size(), 3u);
  EXPECT_EQ(l.m.channels, 3);
  EXPECT_EQ(l.m.encoding, "raw");
  EXPECT_EQ(l.m.command, "sx_prep (test)");
  EXPECT_EQ(l.labels, (std::vector<int>{0, 3, 1, 2, 3}));
  for (int i : {0, 1, 2}) {  // PNG: exact pixels, RGB order
    EXPECT_EQ(l.shapes[i], (std::array<int, 3>{imgs[i].rows, imgs[i].cols, 3}));
    EXPECT_EQ(l.bytes[i], mat_bytes(imgs[i])) << "sample " << i;
  }
  EXPECT_EQ(l.bytes[3], mat_bytes(decode_rgb(root / "sub/e.jpg")));
  EXPECT_EQ(l.bytes[4], mat_bytes(decode_rgb(root / "f.jpeg")));
  EXPECT_TRUE(r->skipped.empty());
  fs::remove_all(dir);
}

TEST(PrepFolder, SortedClassFoldersNamesAndIgnoredFiles) {
  fs::path dir = make_temp_dir("folder");
  fs::path root = dir / "tree";
  write_rgb(root / "dog/2.png", pattern_rgb(8, 8, 10));
  write_rgb(root / "dog/1.png", pattern_rgb(8, 8, 11));
  write_rgb(root / "ant/x.PNG", pattern_rgb(8, 8, 12));
  write_rgb(root / "cat/deep/nested/y.jpg", pattern_rgb(8, 8, 13));
  write_text(root / "cat/notes.txt", "not an image");
  write_rgb(root / "cat/.hidden.png", pattern_rgb(8, 8, 14));
  write_rgb(root / ".trash/z.png", pattern_rgb(8, 8, 15));
  PrepOptions o = base_options("folder", dir / "out");
  o.root = root.string();
  StatusOr<PrepResult> r = run_prep(o);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  Loaded l = load_all(dir / "out");
  EXPECT_EQ(l.m.class_names, (std::vector<std::string>{"ant", "cat", "dog"}));
  EXPECT_EQ(l.m.num_classes, 3);
  EXPECT_EQ(l.labels, (std::vector<int>{0, 1, 2, 2}));
  EXPECT_EQ(l.bytes[2], mat_bytes(pattern_rgb(8, 8, 11)));  // dog/1.png before dog/2.png
  EXPECT_EQ(l.bytes[3], mat_bytes(pattern_rgb(8, 8, 10)));
  EXPECT_NE(r->notes.find("ignored 1 files"), std::string::npos) << r->notes;
  fs::remove_all(dir);
}

TEST(PrepTransform, ShortSideCenterCropAndJpegEncoding) {
  fs::path dir = make_temp_dir("transform");
  cv::Mat wide = pattern_rgb(20, 40, 7), small = pattern_rgb(6, 9, 8);
  write_rgb(dir / "root/wide.png", wide);
  write_rgb(dir / "root/small.png", small);
  write_text(dir / "list.txt", "wide.png 0\nsmall.png 1\n");
  PrepOptions o = base_options("list", dir / "out");
  o.list = (dir / "list.txt").string();
  o.root = (dir / "root").string();
  o.short_side = 10;
  ASSERT_TRUE(run_prep(o).is_ok());
  Loaded l = load_all(dir / "out");
  EXPECT_EQ(l.m.short_side, 10);
  cv::Mat ref;
  cv::resize(wide, ref, cv::Size(20, 10), 0, 0, cv::INTER_AREA);  // shrinking: area
  EXPECT_EQ(l.shapes[0], (std::array<int, 3>{10, 20, 3}));
  EXPECT_EQ(l.bytes[0], mat_bytes(ref));
  cv::resize(small, ref, cv::Size(15, 10), 0, 0, cv::INTER_CUBIC);  // enlarging: cubic
  EXPECT_EQ(l.shapes[1], (std::array<int, 3>{10, 15, 3}));
  EXPECT_EQ(l.bytes[1], mat_bytes(ref));

  o.center_crop = 8;
  o.encode = "jpeg";
  o.quality = 90;
  ASSERT_TRUE(run_prep(o).is_ok());
  l = load_all(dir / "out");
  EXPECT_EQ(l.m.encoding, "jpeg");
  EXPECT_EQ(l.m.center_crop, 8);
  cv::resize(wide, ref, cv::Size(20, 10), 0, 0, cv::INTER_AREA);
  cv::Mat crop = ref(cv::Rect(6, 1, 8, 8));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(l.shapes[i], (std::array<int, 3>{8, 8, 3}));
    cv::Mat dec = cv::imdecode(l.bytes[i], cv::IMREAD_COLOR);
    ASSERT_FALSE(dec.empty()) << "stored JPEG " << i << " does not decode";
    EXPECT_EQ(dec.rows, 8);
    EXPECT_EQ(dec.cols, 8);
    if (i == 0) {  // lossy, but close to the centre crop of the resized image
      cv::Mat rgb;
      cv::cvtColor(dec, rgb, cv::COLOR_BGR2RGB);
      EXPECT_LT(cv::norm(rgb, crop, cv::NORM_L1) / crop.total() / 3, 12.0);
    }
  }
  fs::remove_all(dir);
}

// Reads an idx file with zlib directly, as an independent reference.
std::vector<uint8_t> gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  std::vector<uint8_t> out;
  if (!f) return out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  gzclose(f);
  return out;
}

TEST(PrepIdx, RealFashionMnistCountsLabelsPixels) {
  if (!fs::exists(kFmnist + "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "Fashion-MNIST not installed at " << kFmnist;
  fs::path dir = make_temp_dir("idx");
  for (std::string split : {"t10k", "train"}) {
    PrepOptions o = base_options("idx", dir / split);
    o.images = kFmnist + split + "-images-idx3-ubyte.gz";
    o.labels = kFmnist + split + "-labels-idx1-ubyte.gz";
    auto t0 = std::chrono::steady_clock::now();
    StatusOr<PrepResult> r = run_prep(o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    std::printf("idx %s: %.2f s\n", split.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    Loaded l = load_all(dir / split);
    const int64_t n = split == "train" ? 60000 : 10000;
    EXPECT_EQ(l.m.num_samples, n);
    EXPECT_EQ(l.m.num_classes, 10);
    EXPECT_EQ(l.m.channels, 1);
    EXPECT_EQ(l.m.class_names[0], "T-shirt/top");
    EXPECT_EQ(l.m.class_names[9], "Ankle boot");
    std::vector<int> first(l.labels.begin(), l.labels.begin() + 10);
    EXPECT_EQ(first, split == "train" ? (std::vector<int>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5})
                                      : (std::vector<int>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));
    EXPECT_EQ(l.labels.back(), 5);
    std::vector<uint8_t> ref = gunzip(o.images);
    std::vector<uint8_t> ref_labels = gunzip(o.labels);
    ASSERT_EQ(ref.size(), static_cast<size_t>(16 + n * 784));
    int64_t mismatched = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(l.shapes[i], (std::array<int, 3>{28, 28, 1}));
      mismatched += l.bytes[i] != std::vector<uint8_t>(ref.begin() + 16 + i * 784, ref.begin() + 16 + (i + 1) * 784);
      mismatched += l.labels[i] != ref_labels[8 + i];
    }
    EXPECT_EQ(mismatched, 0);
  }
  fs::remove_all(dir);
}

// --range splits one input into consecutive parts (a validation split held out from the training
// set): the parts hold exactly the input's samples FIRST..END-1, in order.
TEST(PrepIdx, RangeSplitsTheInputInOrder) {
  if (!fs::exists(kFmnist + "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "Fashion-MNIST not installed at " << kFmnist;
  fs::path dir = make_temp_dir("range");
  PrepOptions o = base_options("idx", dir / "all");
  o.images = kFmnist + "t10k-images-idx3-ubyte.gz";
  o.labels = kFmnist + "t10k-labels-idx1-ubyte.gz";
  ASSERT_TRUE(run_prep(o).is_ok());
  PrepOptions head = o, tail = o;
  head.out = (dir / "head").string();
  head.end = 9000;
  tail.out = (dir / "tail").string();
  tail.first = 9000;
  tail.end = 10000;
  ASSERT_TRUE(run_prep(head).is_ok());
  ASSERT_TRUE(run_prep(tail).is_ok());
  Loaded all = load_all(dir / "all"), h = load_all(dir / "head"), t = load_all(dir / "tail");
  ASSERT_EQ(h.m.num_samples, 9000);
  ASSERT_EQ(t.m.num_samples, 1000);
  EXPECT_EQ(t.m.class_names, all.m.class_names);
  for (int64_t i = 0; i < 10000; ++i) {
    const Loaded& part = i < 9000 ? h : t;
    const int64_t j = i < 9000 ? i : i - 9000;
    ASSERT_EQ(part.labels[size_t(j)], all.labels[size_t(i)]) << "sample " << i;
    ASSERT_EQ(part.bytes[size_t(j)], all.bytes[size_t(i)]) << "sample " << i;
  }

  // A range outside the input is refused before OUT is touched.
  PrepOptions bad = o;
  bad.out = (dir / "head").string();
  bad.first = 9000;
  bad.end = 10001;
  StatusOr<PrepResult> r = run_prep(bad);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--range 9000:10001"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("10000 samples"), std::string::npos) << r.status().message();
  EXPECT_EQ(load_all(dir / "head").m.num_samples, 9000);
  fs::remove_all(dir);
}

std::set<std::string> shard_files(const fs::path& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
  return s;
}

void expect_identical_dirs(const fs::path& a, const fs::path& b) {
  ASSERT_EQ(shard_files(a), shard_files(b));
  for (const std::string& f : shard_files(a)) {
    if (f == kManifestName) continue;
    EXPECT_TRUE(read_bytes(a / f) == read_bytes(b / f)) << f << " differs";
  }
  StatusOr<Manifest> ma = load_manifest(a.string()), mb = load_manifest(b.string());
  ASSERT_TRUE(ma.is_ok() && mb.is_ok());
  nlohmann::json ja = manifest_to_json(*ma), jb = manifest_to_json(*mb);
  ja.erase("command");
  jb.erase("command");
  EXPECT_EQ(ja, jb);
}

TEST(PrepDeterminism, ThreadCountDoesNotChangeABit) {
  fs::path dir = make_temp_dir("determinism");
  std::string list;
  for (int i = 0; i < 40; ++i) {
    std::string name = "img" + std::to_string(i) + (i % 2 ? ".png" : ".jpg");
    write_rgb(dir / "root" / name, pattern_rgb(30 + i, 50 - i, i));
    list += name + " " + std::to_string(i % 5) + "\n";
  }
  write_text(dir / "list.txt", list);
  for (std::string enc : {"raw", "jpeg"}) {
    for (int threads : {1, 2, 4}) {
      PrepOptions o = base_options("list", dir / (enc + std::to_string(threads)));
      o.list = (dir / "list.txt").string();
      o.root = (dir / "root").string();
      o.encode = enc;
      o.short_side = 24;
      o.samples_per_shard = 7;
      o.threads = threads;
      o.command = "run with " + std::to_string(threads);
      ASSERT_TRUE(run_prep(o).is_ok());
    }
    expect_identical_dirs(dir / (enc + "1"), dir / (enc + "2"));
    expect_identical_dirs(dir / (enc + "1"), dir / (enc + "4"));
  }
  // A second run into the same directory gives the same bytes too.
  PrepOptions o = base_options("list", dir / "raw1");
  o.list = (dir / "list.txt").string();
  o.root = (dir / "root").string();
  o.short_side = 24;
  o.samples_per_shard = 7;
  o.threads = 3;
  ASSERT_TRUE(run_prep(o).is_ok());
  expect_identical_dirs(dir / "raw1", dir / "raw2");
  fs::remove_all(dir);
}

TEST(PrepDeterminism, IdxWithDifferentThreads) {
  if (!fs::exists(kFmnist + "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "Fashion-MNIST not installed";
  fs::path dir = make_temp_dir("determinism_idx");
  for (int threads : {1, 2}) {
    PrepOptions o = base_options("idx", dir / std::to_string(threads));
    o.images = kFmnist + "t10k-images-idx3-ubyte.gz";
    o.labels = kFmnist + "t10k-labels-idx1-ubyte.gz";
    o.threads = threads;
    o.samples_per_shard = 3000;
    ASSERT_TRUE(run_prep(o).is_ok());
  }
  expect_identical_dirs(dir / "1", dir / "2");
  fs::remove_all(dir);
}

// Kills a running sx_prep while it writes; every file that ever carried a finished shard's name
// must have been a complete shard at that moment, and no manifest may exist afterwards.
TEST(PrepInterrupted, NoCompleteLookingShardBeforeItIsComplete) {
  std::string bin = sx_prep_binary();
  if (bin.empty()) GTEST_SKIP() << "sx_prep binary not built next to the test";
  if (!fs::exists(kFmnist + "train-images-idx3-ubyte.gz")) GTEST_SKIP() << "Fashion-MNIST not installed";
  fs::path dir = make_temp_dir("interrupted");
  fs::path out = dir / "out";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::FILE* devnull = std::freopen("/dev/null", "w", stderr);
    (void)devnull;
    std::string images = kFmnist + "train-images-idx3-ubyte.gz", labels = kFmnist + "train-labels-idx1-ubyte.gz";
    ::execl(bin.c_str(), bin.c_str(), "--format", "idx", "--images", images.c_str(), "--labels", labels.c_str(), "--out",
            out.c_str(), "--encode", "jpeg", "--short-side", "112", "--samples-per-shard", "500", "--threads", "1",
            "--no-progress", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::set<std::string> checked;
  int polls = 0;
  bool killed = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    ++polls;
    if (fs::exists(out)) {
      for (const std::string& f : shard_files(out)) {
        if (f.rfind("shard-", 0) != 0 || checked.count(f)) continue;
        ShardContents c = read_shard(out / f);  // must be complete the moment it has this name
        EXPECT_TRUE(c.ok) << f << " has a finished shard's name but does not read";
        EXPECT_EQ(c.num_samples, 500) << f;
        EXPECT_EQ(c.labels.size(), 500u) << f;
        checked.insert(f);
      }
      for (const std::string& f : shard_files(out))
        if (f.rfind("shard-", 0) != 0 && f[0] != '.') ADD_FAILURE() << "unexpected file " << f;
    }
    if (checked.size() >= 3) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "sx_prep finished or stalled before 3 shards; polls " << polls;
  EXPECT_FALSE(fs::exists(out / kManifestName)) << "manifest of an interrupted run";
  EXPECT_FALSE(load_manifest(out.string()).is_ok());
  for (const std::string& f : shard_files(out)) {
    if (f.rfind("shard-", 0) == 0) {
      EXPECT_TRUE(read_shard(out / f).ok) << f;
    } else {
      EXPECT_TRUE(f.rfind(".shard-", 0) == 0 && f.find(".partial") != std::string::npos) << f;
    }
  }
  std::printf("interrupted after %zu complete shards (%d polls)\n", checked.size(), polls);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::dataplane
