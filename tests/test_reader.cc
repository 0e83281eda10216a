// Reader: shards written here by a small HDF5 helper that follows dataplane/shard_format.h exactly
// (independent of sx_prep), then read back: thread-count independence, both layouts, per-rank
// coverage, np=2 vs np=1 equivalence, resume, and a corrupted chunk named by shard and sample.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "dataplane/reader.h"
#include "dataplane/shard_format.h"

namespace sx::dataplane {
namespace {

namespace fs = std::filesystem;

struct TestSample {
  std::vector<uint8_t> bytes;
  int h = 0, w = 0, c = 0;
  int32_t label = 0;
};

void put_attr_i64(hid_t obj, const char* name, int64_t v) {
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Sclose(space);
}

void put_attr_str(hid_t obj, const char* name, const std::string& v) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, v.size());
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, type, v.data());
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
}

// A chunked dataset with the fletcher32 filter, as the format requires.
void put_dataset(hid_t file, const char* name, hid_t file_type, hid_t mem_type, std::vector<hsize_t> dims,
                 hsize_t chunk0, const void* data) {
  hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  std::vector<hsize_t> chunk = dims;
  chunk[0] = std::max<hsize_t>(1, std::min(chunk0, dims[0]));
  H5Pset_chunk(dcpl, int(chunk.size()), chunk.data());
  H5Pset_fletcher32(dcpl);
  hid_t d = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  ASSERT_GE(d, 0) << name;
  ASSERT_GE(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
}

void write_shard(const std::string& path, const std::vector<TestSample>& samples, int64_t first,
                 const std::string& encoding, hsize_t data_chunk) {
  std::vector<uint8_t> data;
  std::vector<int64_t> offsets{0};
  std::vector<int32_t> shapes, labels;
  for (const TestSample& s : samples) {
    data.insert(data.end(), s.bytes.begin(), s.bytes.end());
    offsets.push_back(int64_t(data.size()));
    shapes.insert(shapes.end(), {s.h, s.w, s.c});
    labels.push_back(s.label);
  }
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  const hsize_t n = samples.size();
  put_dataset(f, "/data", H5T_STD_U8LE, H5T_NATIVE_UINT8, {data.size()}, data_chunk, data.data());
  put_dataset(f, "/offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, {n + 1}, 1024, offsets.data());
  put_dataset(f, "/shapes", H5T_STD_I32LE, H5T_NATIVE_INT32, {n, 3}, 1024, shapes.data());
  put_dataset(f, "/labels", H5T_STD_I32LE, H5T_NATIVE_INT32, {n}, 1024, labels.data());
  put_attr_i64(f, "format_version", kShardFormatVersion);
  put_attr_str(f, "encoding", encoding);
  put_attr_i64(f, "num_samples", int64_t(n));
  put_attr_i64(f, "first_index", first);
  H5Fclose(f);
}

uint32_t file_crc32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return uint32_t(crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), uInt(bytes.size())));
}

// Shards of `per_shard` samples plus manifest.json in dir.
void write_dataset(const std::string& dir, const std::vector<TestSample>& samples, int per_shard,
                   const std::string& encoding, int num_classes, hsize_t data_chunk = 4096) {
  fs::create_directories(dir);
  nlohmann::json shards = nlohmann::json::array();
  for (size_t first = 0; first < samples.size(); first += size_t(per_shard)) {
    const size_t end = std::min(samples.size(), first + size_t(per_shard));
    char name[32];
    std::snprintf(name, sizeof(name), "shard-%05zu.h5", first / size_t(per_shard));
    std::vector<TestSample> part(samples.begin() + long(first), samples.begin() + long(end));
    write_shard(dir + "/" + name, part, int64_t(first), encoding, data_chunk);
    char crc[9];
    std::snprintf(crc, sizeof(crc), "%08x", file_crc32(dir + "/" + name));
    shards.push_back({{"file", name}, {"num_samples", end - first}, {"first_index", first}, {"crc32", crc}});
  }
  nlohmann::json m = {{"format_version", kShardFormatVersion},
                      {"num_samples", samples.size()},
                      {"num_classes", num_classes},
                      {"encoding", encoding},
                      {"channels", samples[0].c},
                      {"short_side", 0},
                      {"center_crop", 0},
                      {"shards", shards},
                      {"command", "test_reader"}};
  std::ofstream(dir + "/manifest.json") << m.dump(2);
}

// 8x8 RGB raw images whose pixels spell their index: R = g % 256, G = g / 256, B = position.
std::vector<TestSample> index_samples(int n, int num_classes) {
  std::vector<TestSample> out;
  for (int g = 0; g < n; ++g) {
    TestSample s{std::vector<uint8_t>(8 * 8 * 3), 8, 8, 3, g % num_classes};
    for (int i = 0; i < 64; ++i) {
      s.bytes[size_t(3 * i)] = uint8_t(g % 256);
      s.bytes[size_t(3 * i + 1)] = uint8_t(g / 256);
      s.bytes[size_t(3 * i + 2)] = uint8_t(i);
    }
    out.push_back(std::move(s));
  }
  return out;
}

// JPEG photos-in-miniature of varying sizes (both orientations) with smooth, sample-specific content.
std::vector<TestSample> jpeg_samples(int n) {
  std::vector<TestSample> out;
  for (int g = 0; g < n; ++g) {
    const int h = 40 + (g % 3) * 12, w = 64 - (g % 2) * 24;
    cv::Mat img(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        uint8_t* p = img.ptr<uint8_t>(y) + 3 * x;
        p[0] = uint8_t(128 + 100 * std::sin(0.1 * x + g));
        p[1] = uint8_t(128 + 100 * std::cos(0.13 * y + 2 * g));
        p[2] = uint8_t((x * y + 7 * g) % 256);
      }
    TestSample s{{}, h, w, 3, g % 5};
    EXPECT_TRUE(cv::imencode(".jpg", img, s.bytes));
    out.push_back(std::move(s));
  }
  return out;
}

class ReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("sx_test_reader_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

struct Copy {  // a batch copied out of the ring
  int valid = 0;
  std::vector<float> images;
  std::vector<int32_t> labels;
  std::vector<int64_t> indices;
};

std::vector<Copy> read_epoch(const std::string& dir, const ReaderConfig& config, int64_t epoch, int64_t offset = 0) {
  StatusOr<std::unique_ptr<Reader>> r = Reader::open(dir, config);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  if (!r.is_ok()) return {};
  EXPECT_TRUE((*r)->start_epoch(epoch, offset).is_ok());
  std::vector<Copy> out;
  for (;;) {
    StatusOr<const Batch*> b = (*r)->next_batch();
    EXPECT_TRUE(b.is_ok()) << b.status().to_string();
    if (!b.is_ok() || *b == nullptr) break;
    const Batch& x = **b;
    out.push_back({x.valid, x.images, x.labels, x.indices});
  }
  EXPECT_EQ(int64_t(out.size()), (*r)->num_steps());
  return out;
}

ReaderConfig train_config(int threads, ImageLayout layout) {
  ReaderConfig c;
  c.seed = 17;
  c.batch_size = 6;
  c.num_threads = threads;
  c.prefetch_depth = threads == 1 ? 1 : 3;
  c.layout = layout;
  c.transform.mode = TransformMode::kTrain;
  c.transform.out_h = c.transform.out_w = 24;
  c.transform.erase_prob = 0.5;
  return c;
}

TEST_F(ReaderTest, SameBatchesWhateverTheThreadCountInBothLayouts) {
  write_dataset(root_, jpeg_samples(40), 16, "jpeg", 5);
  std::map<ImageLayout, std::vector<Copy>> by_layout;
  for (ImageLayout layout : {ImageLayout::kNCHW, ImageLayout::kNHWC}) {
    std::vector<Copy> one = read_epoch(root_, train_config(1, layout), 3);
    std::vector<Copy> four = read_epoch(root_, train_config(4, layout), 3);
    ASSERT_EQ(one.size(), 40u / 6u);  // drop_last
    ASSERT_EQ(one.size(), four.size());
    for (size_t t = 0; t < one.size(); ++t) {
      EXPECT_EQ(one[t].images, four[t].images) << "step " << t << " " << image_layout_name(layout);
      EXPECT_EQ(one[t].labels, four[t].labels);
      EXPECT_EQ(one[t].indices, four[t].indices);
      for (int i = 0; i < 6; ++i) EXPECT_EQ(one[t].labels[size_t(i)], one[t].indices[size_t(i)] % 5);
    }
    by_layout[layout] = std::move(one);
  }
  // NHWC is the same pixels as NCHW, transposed.
  const std::vector<Copy>& a = by_layout[ImageLayout::kNCHW];
  const std::vector<Copy>& b = by_layout[ImageLayout::kNHWC];
  for (size_t t = 0; t < a.size(); ++t)
    for (int i = 0; i < 6; ++i)
      for (int k = 0; k < 3; ++k)
        for (int y = 0; y < 24; ++y)
          for (int x = 0; x < 24; ++x)
            ASSERT_EQ(a[t].images[size_t(((i * 3 + k) * 24 + y) * 24 + x)],
                      b[t].images[size_t(((i * 24 + y) * 24 + x) * 3 + k)]);
  // The next epoch reshuffles and re-augments.
  std::vector<Copy> next = read_epoch(root_, train_config(2, ImageLayout::kNCHW), 4);
  EXPECT_NE(next[0].indices, a[0].indices);
}

TEST_F(ReaderTest, EvalSeesEverySampleOnceAcrossThreeRanks) {
  const int n = 50;
  write_dataset(root_, index_samples(n, 10), 17, "raw", 10);
  for (bool shuffle : {false, true}) {
    std::vector<int> seen(n, 0);
    for (int rank = 0; rank < 3; ++rank) {
      ReaderConfig c;
      c.rank = rank;
      c.world_size = 3;
      c.batch_size = 4;
      c.shuffle = shuffle;
      c.drop_last = false;
      c.num_threads = 2;
      c.transform.mode = TransformMode::kSmallEval;
      c.transform.out_h = c.transform.out_w = 8;
      c.transform.mean = {0, 0, 0};
      c.transform.stddev = {1, 1, 1};
      std::vector<Copy> batches = read_epoch(root_, c, 0);
      ASSERT_EQ(batches.size(), 5u);  // ceil(50 / 12)
      for (const Copy& b : batches) {
        for (int i = 0; i < 4; ++i) {
          const float* img = b.images.data() + i * 3 * 64;  // NCHW
          if (i < b.valid) {
            const int64_t g = b.indices[size_t(i)];
            ASSERT_GE(g, 0);
            ASSERT_LT(g, n);
            ++seen[size_t(g)];
            EXPECT_EQ(std::lround(img[0] * 255) + 256 * std::lround(img[64] * 255), g) << "pixels of another sample";
            EXPECT_EQ(std::lround(img[128 + 37] * 255), 37);
            EXPECT_EQ(b.labels[size_t(i)], g % 10);
          } else {
            EXPECT_EQ(b.indices[size_t(i)], -1);
            EXPECT_EQ(b.labels[size_t(i)], -1);
            EXPECT_EQ(img[5], 0.0f);
          }
        }
      }
    }
    for (int g = 0; g < n; ++g) EXPECT_EQ(seen[size_t(g)], 1) << "sample " << g << " shuffle " << shuffle;
  }
}

TEST_F(ReaderTest, TwoRanksAtBatchBSeeWhatOneRankAtBatch2BSees) {
  write_dataset(root_, jpeg_samples(36), 10, "jpeg", 5);
  ReaderConfig one = train_config(2, ImageLayout::kNHWC);
  one.batch_size = 8;
  std::vector<Copy> whole = read_epoch(root_, one, 1);
  std::vector<std::vector<Copy>> halves;
  for (int rank = 0; rank < 2; ++rank) {
    ReaderConfig c = one;
    c.batch_size = 4;
    c.world_size = 2;
    c.rank = rank;
    c.num_threads = 1 + rank;  // and different thread counts per rank
    halves.push_back(read_epoch(root_, c, 1));
  }
  ASSERT_EQ(whole.size(), 4u);
  ASSERT_EQ(halves[0].size(), whole.size());
  for (size_t t = 0; t < whole.size(); ++t) {
    std::vector<float> both = halves[0][t].images;
    both.insert(both.end(), halves[1][t].images.begin(), halves[1][t].images.end());
    EXPECT_EQ(both, whole[t].images) << "step " << t;  // same samples, same augmentation
    std::vector<int64_t> idx = halves[0][t].indices;
    idx.insert(idx.end(), halves[1][t].indices.begin(), halves[1][t].indices.end());
    EXPECT_EQ(idx, whole[t].indices);
  }
}

TEST_F(ReaderTest, ResumeFromAnOffsetAndRestartMidEpoch) {
  write_dataset(root_, jpeg_samples(30), 7, "jpeg", 5);
  ReaderConfig c = train_config(2, ImageLayout::kNCHW);
  c.batch_size = 3;
  std::vector<Copy> full = read_epoch(root_, c, 2);
  ASSERT_EQ(full.size(), 10u);
  std::vector<Copy> resumed = read_epoch(root_, c, 2, /*offset=*/4 * 3);
  ASSERT_EQ(resumed.size(), 6u);
  for (size_t t = 0; t < resumed.size(); ++t) {
    EXPECT_EQ(resumed[t].images, full[t + 4].images) << "step " << t;
    EXPECT_EQ(resumed[t].indices, full[t + 4].indices);
  }
  // Restarting while batches are in flight, then reading on: same as a fresh epoch.
  StatusOr<std::unique_ptr<Reader>> r = Reader::open(root_, c);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE((*r)->start_epoch(5).is_ok());
  ASSERT_TRUE((*r)->next_batch().is_ok());
  ASSERT_TRUE((*r)->start_epoch(2).is_ok());
  for (size_t t = 0; t < full.size(); ++t) {
    StatusOr<const Batch*> b = (*r)->next_batch();
    ASSERT_TRUE(b.is_ok() && *b != nullptr);
    EXPECT_EQ((*b)->images, full[t].images);
    EXPECT_EQ((*b)->step, int64_t(t));
  }
  StatusOr<const Batch*> end = (*r)->next_batch();
  ASSERT_TRUE(end.is_ok());
  EXPECT_EQ(*end, nullptr);
  // Destroying a reader mid-epoch with a full ring does not hang.
  ASSERT_TRUE((*r)->start_epoch(3).is_ok());
  ASSERT_TRUE((*r)->next_batch().is_ok());
}

// Byte offset in the file of chunk `k` of /data.
haddr_t chunk_address(const std::string& path, hsize_t k, hsize_t* size) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, "/data", H5P_DEFAULT);
  hsize_t offset[1];
  unsigned mask = 0;
  haddr_t addr = 0;
  hid_t space = H5Dget_space(d);
  EXPECT_GE(H5Dget_chunk_info(d, space, k, offset, &mask, &addr, size), 0);
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(f);
  return addr;
}

TEST_F(ReaderTest, CorruptedChunkNamesShardAndSample) {
  // 30 raw samples of 192 bytes, 15 per shard; /data chunks of 256 bytes.
  write_dataset(root_, index_samples(30, 10), 15, "raw", 10, /*data_chunk=*/256);
  const std::string shard = root_ + "/shard-00001.h5";
  hsize_t size = 0;
  const haddr_t addr = chunk_address(shard, 2, &size);  // bytes [512, 768) of /data: local samples 2..3
  ASSERT_EQ(size, 256u + 4u);                           // data + fletcher32 checksum
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(addr + 100));
    char byte = 0;
    f.read(&byte, 1);
    byte = char(byte ^ 0x5A);
    f.seekp(std::streamoff(addr + 100));
    f.write(&byte, 1);
  }
  ReaderConfig c;
  c.batch_size = 4;
  c.shuffle = false;
  c.drop_last = false;
  c.num_threads = 3;
  c.transform.mode = TransformMode::kSmallEval;
  c.transform.out_h = c.transform.out_w = 8;
  StatusOr<std::unique_ptr<Reader>> r = Reader::open(root_, c);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_TRUE((*r)->start_epoch(0).is_ok());
  for (int step = 0; step < 4; ++step) {  // samples 0..15 are fine
    StatusOr<const Batch*> b = (*r)->next_batch();
    ASSERT_TRUE(b.is_ok()) << "step " << step << ": " << b.status().to_string();
  }
  StatusOr<const Batch*> bad = (*r)->next_batch();  // samples 16..19: 17 (local 2) is the first hit
  ASSERT_FALSE(bad.is_ok());
  const std::string msg = bad.status().message();
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("sample 17"), std::string::npos) << msg;
  EXPECT_FALSE((*r)->next_batch().is_ok()) << "the error is sticky until start_epoch";
  std::printf("corrupt chunk error: %s\n", bad.status().to_string().c_str());
}

TEST_F(ReaderTest, GraySmallImagesPadCropAndNormalize) {
  // Fashion-MNIST-like: 28x28x1 raw, pixel = (g + y * 28 + x) % 256.
  std::vector<TestSample> samples;
  for (int g = 0; g < 24; ++g) {
    TestSample s{std::vector<uint8_t>(28 * 28), 28, 28, 1, g % 10};
    for (int i = 0; i < 28 * 28; ++i) s.bytes[size_t(i)] = uint8_t((g + i) % 256);
    samples.push_back(std::move(s));
  }
  write_dataset(root_, samples, 10, "raw", 10);
  ReaderConfig c;
  c.batch_size = 8;
  c.transform.mode = TransformMode::kSmallTrain;
  c.transform.out_h = c.transform.out_w = 28;
  c.transform.mean = {0.25f, 0, 0};
  c.transform.stddev = {0.5f, 1, 1};
  std::vector<Copy> batches = read_epoch(root_, c, 0);
  ASSERT_EQ(batches.size(), 3u);
  int padded_rows = 0;
  for (const Copy& b : batches)
    for (int i = 0; i < 8; ++i) {
      const int64_t g = b.indices[size_t(i)];
      const float* img = b.images.data() + i * 28 * 28;  // (1, 28, 28)
      // Every output value is either zero padding or a source pixel of sample g, normalized.
      for (int p = 0; p < 28 * 28; ++p) {
        const double px = img[p] * 0.5 + 0.25;
        const double v = px * 255;
        ASSERT_NEAR(v, std::round(v), 1e-3);
      }
      // The crop is a shifted (maybe flipped) window of the padded image: a row through the middle holds
      // 28 - |shift| real pixels in +-1 steps of (g + i) % 256.
      const float* row = img + 14 * 28;
      int zeros = 0;
      for (int x = 0; x < 28; ++x) zeros += std::lround((row[x] * 0.5 + 0.25) * 255) == 0;
      EXPECT_LE(zeros, 4 + 1);  // at most `pad` padding columns (+1 if a real pixel is 0)
      padded_rows += zeros > 0;
      EXPECT_EQ(b.labels[size_t(i)], g % 10);
    }
  EXPECT_GT(padded_rows, 0);
}

TEST_F(ReaderTest, MissingShardAndBadConfigAreClearErrors) {
  write_dataset(root_, index_samples(20, 10), 10, "raw", 10);
  fs::remove(root_ + "/shard-00001.h5");
  ReaderConfig c;
  c.batch_size = 5;
  c.shuffle = false;
  c.transform.mode = TransformMode::kSmallEval;
  c.transform.out_h = c.transform.out_w = 8;
  StatusOr<std::unique_ptr<Reader>> r = Reader::open(root_, c);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE((*r)->start_epoch(0).is_ok());
  ASSERT_TRUE((*r)->next_batch().is_ok());
  ASSERT_TRUE((*r)->next_batch().is_ok());
  StatusOr<const Batch*> bad = (*r)->next_batch();
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("shard-00001.h5"), std::string::npos) << bad.status().to_string();
  c.num_threads = 0;
  EXPECT_FALSE(Reader::open(root_, c).is_ok());
  EXPECT_FALSE(Reader::open(root_ + "/nope", ReaderConfig{}).is_ok());
}

}  // namespace
}  // namespace sx::dataplane
