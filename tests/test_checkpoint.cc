// Checkpoint format, atomic save, retention, verification, fallback, mismatch handling, async writer.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>

#include "storage/async_writer.h"
#include "storage/checkpoint.h"
#include "tests/checkpoint_test_util.h"

namespace sx::storage {
namespace {

using testing_util::bits_equal;
using testing_util::dir_names;
using testing_util::read_bytes;
using testing_util::Tensors;
using testing_util::TempDir;
using testing_util::write_bytes;

// A miniature of the real layout: params, momentum, BN statistics, a scalar and an empty tensor.
Tensors make_model(int classes = 10) {
  Tensors m;
  m.add("params/stem.conv.weight", {16, 3, 3, 3});           // (OC, C, KH, KW)
  m.add("params/stage1.block0.conv2.weight", {32, 4, 3, 3});  // (OC, C/G, KH, KW), G = 8
  m.add("params/fc.weight", {classes, 64});
  m.add("params/fc.bias", {classes});
  m.add("params/scale", {});
  m.add("params/empty", {0, 4});
  m.add("momentum/stem.conv.weight", {16, 3, 3, 3});
  m.add("momentum/stage1.block0.conv2.weight", {32, 4, 3, 3});
  m.add("momentum/fc.weight", {classes, 64});
  m.add("momentum/fc.bias", {classes});
  m.add("bn_stats/stem.bn.running_mean", {16});
  m.add("bn_stats/stem.bn.running_var", {16});
  return m;
}

// Random values plus the awkward ones a bit-exact round trip must keep.
void fill(Tensors& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (OwnedTensor& t : m.t)
    for (float& v : t.data) v = dist(rng);
  OwnedTensor* w = m.find("params/stem.conv.weight");
  w->data[0] = -0.0f;
  w->data[1] = std::numeric_limits<float>::denorm_min();
  w->data[2] = std::numeric_limits<float>::infinity();
  w->data[3] = std::numeric_limits<float>::quiet_NaN();
  w->data[4] = std::numeric_limits<float>::max();
}

CheckpointMeta make_meta(int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.epoch = step / 10;
  m.samples_seen = step * 256;
  m.world_size = 4;
  m.global_batch = 256;
  m.config_text = "model:\n  depth: 50\n  cardinality: 32\nlr: 0.1  # ünïcode\n";
  m.model_preset = "se_resnext50_32x4d";
  m.rng_seed = 1234567890123LL;
  m.data_epoch = step / 10;
  m.data_offset = (step % 10) * 256;
  m.extra_json = R"({"lr_override":[31,0.01]})";
  return m;
}

CheckpointState state_of(const Tensors& m, int64_t step) { return {make_meta(step), m.refs()}; }

void expect_same(const Tensors& a, const Tensors& b) {
  ASSERT_EQ(a.t.size(), b.t.size());
  for (size_t i = 0; i < a.t.size(); ++i) {
    EXPECT_EQ(a.t[i].name, b.t[i].name);
    EXPECT_EQ(a.t[i].shape, b.t[i].shape) << a.t[i].name;
    EXPECT_TRUE(bits_equal(a.t[i].data, b.t[i].data)) << a.t[i].name;
  }
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Offset of `needle`'s bytes inside `hay` (the raw data of a known tensor), or npos.
size_t find_bytes(const std::vector<char>& hay, const std::vector<float>& needle) {
  const char* n = reinterpret_cast<const char*>(needle.data());
  const size_t len = needle.size() * sizeof(float);
  auto it = std::search(hay.begin(), hay.end(), n, n + len);
  return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

TEST(Checkpoint, RoundTripIsBitExactIncludingMetadata) {
  TempDir dir("roundtrip");
  Tensors saved = make_model();
  fill(saved, 1);
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 120)).is_ok());
  EXPECT_EQ(read_bytes(dir.file("latest")), std::vector<char>({'c', 'k', 'p', 't', '-', '0', '0', '0', '0', '0', '1',
                                                               '2', '0', '.', 'h', '5', '\n'}));

  Tensors loaded = make_model();
  auto r = load_latest(dir.path, loaded.slots());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->path, dir.file("ckpt-00000120.h5"));
  EXPECT_EQ(r->meta, make_meta(120));
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_TRUE(r->skipped.empty());
  expect_same(saved, loaded);

  // read_checkpoint gives the same tensors in save order; load_checkpoint accepts dir, latest, file.
  auto contents = read_checkpoint(r->path);
  ASSERT_TRUE(contents.is_ok()) << contents.status().to_string();
  Tensors read;
  read.t = contents->tensors;
  expect_same(saved, read);
  for (const std::string& p : {dir.path, dir.file("latest"), dir.file("ckpt-00000120.h5")}) {
    Tensors again = make_model();
    auto r2 = load_checkpoint(p, again.slots());
    ASSERT_TRUE(r2.is_ok()) << p << ": " << r2.status().to_string();
    expect_same(saved, again);
  }
  auto v = verify_checkpoint(r->path);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->tensors.size(), saved.t.size());
  EXPECT_EQ(v->tensors[0], "params/stem.conv.weight [16, 3, 3, 3]");
}

TEST(Checkpoint, H5pyReadsDatasetsAndMetadata) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) GTEST_SKIP() << "h5py not available";
  TempDir dir("h5py");
  Tensors saved = make_model();
  fill(saved, 2);
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 7)).is_ok());
  const std::string script =
      "import h5py, numpy as np\n"
      "f = h5py.File('" + dir.file("ckpt-00000007.h5") + "', 'r')\n"
      "w = f['params/fc.weight'][()]\n"
      "m = f['bn_stats']['stem.bn.running_var'][()]\n"
      "print(w.dtype, w.shape, repr(float(w.astype(np.float64).sum())), repr(float(m[3])))\n"
      "print(int(f.attrs['step']), int(f.attrs['world_size']), f.attrs['model_preset'].decode())\n"
      "print(f.attrs['config_text'].decode('utf-8') == " +
      "'model:\\n  depth: 50\\n  cardinality: 32\\nlr: 0.1  # \\u00fcn\\u00efcode\\n')\n"
      "print(len([k for k in f['momentum']]), int(f['params/fc.weight'].attrs['crc32']) > 0)\n";
  const std::string script_path = dir.file("read.py");
  write_bytes(script_path, std::vector<char>(script.begin(), script.end()));
  FILE* p = popen(("/usr/bin/python3 " + script_path + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  ASSERT_EQ(pclose(p), 0) << out;

  double sum = 0;
  for (float v : saved.find("params/fc.weight")->data) sum += v;
  char expect[256];
  std::snprintf(expect, sizeof(expect), "float32 (10, 64) %.17g", sum);
  // Python's repr of the same double; compare parsed numbers to avoid formatting differences.
  double py_sum = 0, py_var = 0;
  char dtype[32];
  int d0 = 0, d1 = 0;
  ASSERT_EQ(std::sscanf(out.c_str(), "%31s (%d, %d) %lf %lf", dtype, &d0, &d1, &py_sum, &py_var), 5) << out;
  EXPECT_STREQ(dtype, "float32");
  EXPECT_EQ(d0, 10);
  EXPECT_EQ(d1, 64);
  EXPECT_EQ(py_sum, sum) << expect;
  EXPECT_EQ(static_cast<float>(py_var), saved.find("bn_stats/stem.bn.running_var")->data[3]);
  EXPECT_TRUE(contains(out, "\n7 4 se_resnext50_32x4d\nTrue\n4 True\n")) << out;
}

TEST(Checkpoint, RetentionKeepsLastKAndCleansStaleTmp) {
  TempDir dir("retention");
  Tensors m = make_model();
  fill(m, 3);
  // Leftovers of an interrupted save must neither be loaded nor survive the next save.
  write_bytes(dir.file("ckpt-00000099.h5.tmp"), {'x'});
  write_bytes(dir.file("latest.tmp"), {'c', 'k', 'p', 't', '-', '9', '9', '.', 'h', '5'});
  write_bytes(dir.file("notes.txt"), {'k', 'e', 'e', 'p'});
  for (int64_t step = 1; step <= 6; ++step) {
    ASSERT_TRUE(save_checkpoint(dir.path, state_of(m, step * 100), {.keep_last = 3}).is_ok());
  }
  auto names = dir_names(dir.path);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-00000400.h5", "ckpt-00000500.h5", "ckpt-00000600.h5", "latest",
                                             "notes.txt"}));
  auto latest = find_latest(dir.path);
  ASSERT_TRUE(latest.is_ok());
  EXPECT_EQ(*latest, dir.file("ckpt-00000600.h5"));

  ASSERT_TRUE(save_checkpoint(dir.path, state_of(m, 700), {.keep_last = 1}).is_ok());
  names = dir_names(dir.path);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-00000700.h5", "latest", "notes.txt"}));
  EXPECT_FALSE(save_checkpoint(dir.path, state_of(m, 800), {.keep_last = 0}).is_ok());
}

TEST(Checkpoint, ResumeFromOlderStepIgnoresAbandonedNewerFiles) {
  TempDir dir("timeline");
  Tensors m = make_model();
  fill(m, 4);
  for (int64_t step : {100, 200, 300}) ASSERT_TRUE(save_checkpoint(dir.path, state_of(m, step)).is_ok());
  // A run resumed from an older checkpoint writes step 150: latest follows it, 200/300 stay on disk.
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(m, 150), {.keep_last = 3}).is_ok());
  auto names = dir_names(dir.path);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-00000100.h5", "ckpt-00000150.h5", "ckpt-00000200.h5",
                                             "ckpt-00000300.h5", "latest"}));
  // Corrupt 150: the fallback goes to 100 (older), never to the abandoned 200/300.
  write_bytes(dir.file("ckpt-00000150.h5"), {'b', 'a', 'd'});
  Tensors loaded = make_model();
  auto r = load_latest(dir.path, loaded.slots());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->meta.step, 100);
}

class CheckpointCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    older = make_model();
    newer = make_model();
    fill(older, 10);
    fill(newer, 11);
    ASSERT_TRUE(save_checkpoint(dir.path, state_of(older, 1)).is_ok());
    ASSERT_TRUE(save_checkpoint(dir.path, state_of(newer, 2)).is_ok());
    newest_path = dir.file("ckpt-00000002.h5");
  }
  // Loads with fallback and expects the older checkpoint, with a warning naming the newer file.
  void expect_fallback(const std::string& reason_fragment) {
    Tensors loaded = make_model();
    auto r = load_latest(dir.path, loaded.slots());
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->meta.step, 1);
    expect_same(older, loaded);
    ASSERT_EQ(r->warnings.size(), 2u);
    EXPECT_TRUE(contains(r->warnings[0], newest_path)) << r->warnings[0];
    EXPECT_TRUE(contains(r->warnings[0], reason_fragment)) << r->warnings[0];
    EXPECT_TRUE(contains(r->warnings[1], "fell back to " + dir.file("ckpt-00000001.h5"))) << r->warnings[1];
    // Without fallback the same damage is a DataLoss naming the file.
    Tensors strict = make_model();
    auto s = load_latest(dir.path, strict.slots(), {.fallback = false});
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << s.status().to_string();
    EXPECT_TRUE(contains(s.status().message(), newest_path)) << s.status().to_string();
    EXPECT_FALSE(verify_checkpoint(newest_path).is_ok());
  }
  TempDir dir{"corrupt"};
  Tensors older, newer;
  std::string newest_path;
};

TEST_F(CheckpointCorruption, FlippedByteInsideDatasetIsDetected) {
  std::vector<char> bytes = read_bytes(newest_path);
  const std::vector<float>& w = newer.find("params/stage1.block0.conv2.weight")->data;
  const size_t at = find_bytes(bytes, w);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1001] ^= 0x10;  // one bit of one value in the middle of the tensor
  write_bytes(newest_path, bytes);
  expect_fallback("stage1.block0.conv2.weight");
}

TEST_F(CheckpointCorruption, FlippedByteInMetadataIsDetected) {
  std::vector<char> bytes = read_bytes(newest_path);
  const std::string needle = "cardinality: 32";
  auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  ASSERT_NE(it, bytes.end());
  *(it + 13) = '4';  // "cardinality: 42"
  write_bytes(newest_path, bytes);
  expect_fallback(newest_path);
}

TEST_F(CheckpointCorruption, TruncationIsDetected) {
  std::vector<char> bytes = read_bytes(newest_path);
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t{100}, size_t{0}}) {
    write_bytes(newest_path, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(keep)));
    SCOPED_TRACE("truncated to " + std::to_string(keep));
    expect_fallback("cannot open");
  }
}

TEST_F(CheckpointCorruption, NotHdf5AndWrongFormatVersion) {
  write_bytes(newest_path, std::vector<char>(4096, 'z'));
  expect_fallback("cannot open");

  ASSERT_TRUE(save_checkpoint(dir.path, state_of(newer, 2)).is_ok());
  {  // Rewrite format_version as a future version, with plain HDF5 calls.
    hid_t f = H5Fopen(newest_path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t v = 99;
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
  }
  Tensors loaded = make_model();
  auto r = load_checkpoint(newest_path, loaded.slots());
  ASSERT_FALSE(r.is_ok());
  EXPECT_TRUE(contains(r.status().message(), newest_path + " has checkpoint format version 99")) << r.status().to_string();
  auto fb = load_latest(dir.path, loaded.slots());
  ASSERT_TRUE(fb.is_ok());
  EXPECT_EQ(fb->meta.step, 1);
}

TEST_F(CheckpointCorruption, EveryCandidateBadGivesOneErrorListingEachFile) {
  write_bytes(newest_path, {'x'});
  write_bytes(dir.file("ckpt-00000001.h5"), {'y'});
  Tensors loaded = make_model();
  auto r = load_latest(dir.path, loaded.slots());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(contains(r.status().message(), "no loadable checkpoint in " + dir.path));
  EXPECT_TRUE(contains(r.status().message(), newest_path));
  EXPECT_TRUE(contains(r.status().message(), dir.file("ckpt-00000001.h5")));
}

// Random single-bit flips anywhere in the file: a load either fails naming the file or returns
// exactly the saved tensors and metadata. Never silently different data.
TEST(Checkpoint, RandomBitFlipsAreDetectedOrHarmless) {
  TempDir dir("flips");
  Tensors saved = make_model();
  fill(saved, 5);
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 3)).is_ok());
  const std::string path = dir.file("ckpt-00000003.h5");
  const std::vector<char> original = read_bytes(path);
  std::mt19937 rng(42);
  int detected = 0, harmless = 0;
  const int trials = 400;
  for (int i = 0; i < trials; ++i) {
    std::vector<char> bytes = original;
    const size_t at = std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng);
    bytes[at] = static_cast<char>(bytes[at] ^ (1 << (i % 8)));
    write_bytes(path, bytes);
    auto r = read_checkpoint(path);
    if (!r.is_ok()) {
      ++detected;
      EXPECT_TRUE(contains(r.status().message(), path)) << "offset " << at << ": " << r.status().to_string();
      continue;
    }
    ++harmless;
    Tensors got;
    got.t = r->tensors;
    EXPECT_EQ(r->meta, make_meta(3)) << "offset " << at;
    expect_same(saved, got);
    if (::testing::Test::HasFailure()) FAIL() << "silent corruption from a flip at offset " << at;
  }
  std::printf("[ info ] %d flips in a %zu-byte file: %d detected, %d in unused bytes (data intact)\n", trials,
              original.size(), detected, harmless);
  EXPECT_GT(detected, trials / 2);
}

TEST(Checkpoint, MissingOrBadLatestPointer) {
  TempDir dir("latest");
  Tensors m = make_model();
  fill(m, 6);
  auto none = load_latest(dir.path, m.slots());
  ASSERT_FALSE(none.is_ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(contains(none.status().message(), dir.file("latest") + " does not exist")) << none.status().to_string();
  auto nodir = load_latest(dir.file("nope"), m.slots());
  EXPECT_EQ(nodir.status().code(), StatusCode::kNotFound);

  // latest names a file that is gone, and nothing else exists.
  write_bytes(dir.file("latest"), {'c', 'k', 'p', 't', '-', '5', '.', 'h', '5', '\n'});
  auto gone = load_latest(dir.path, m.slots());
  ASSERT_FALSE(gone.is_ok());
  EXPECT_TRUE(contains(gone.status().message(), "names ckpt-5.h5, which does not exist")) << gone.status().to_string();

  // ... but a complete checkpoint file exists: fallback uses it and says why.
  ASSERT_TRUE(write_checkpoint_file(dir.file("ckpt-00000004.h5"), state_of(m, 4)).is_ok());
  Tensors loaded = make_model();
  auto fb = load_latest(dir.path, loaded.slots());
  ASSERT_TRUE(fb.is_ok()) << fb.status().to_string();
  EXPECT_EQ(fb->meta.step, 4);
  ASSERT_FALSE(fb->warnings.empty());
  EXPECT_TRUE(contains(fb->warnings[0], "ckpt-5.h5")) << fb->warnings[0];
  EXPECT_FALSE(load_latest(dir.path, loaded.slots(), {.fallback = false}).is_ok());

  write_bytes(dir.file("latest"), {'.', '.', '/', 'e', 't', 'c'});
  auto garbage = load_latest(dir.path, loaded.slots(), {.fallback = false});
  ASSERT_FALSE(garbage.is_ok());
  EXPECT_EQ(garbage.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(contains(garbage.status().message(), "does not name a checkpoint file")) << garbage.status().to_string();
}

TEST(Checkpoint, ArchitectureMismatchNamesFirstMismatchedTensor) {
  TempDir dir("mismatch");
  Tensors saved = make_model(10);
  fill(saved, 7);
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 1)).is_ok());
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 2)).is_ok());

  Tensors other = make_model(20);  // another class count: fc.weight is the first different tensor
  for (OwnedTensor& t : other.t) std::fill(t.data.begin(), t.data.end(), 7.0f);
  auto r = load_latest(dir.path, other.slots());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  EXPECT_TRUE(contains(msg, dir.file("ckpt-00000002.h5"))) << msg;  // no fallback on a mismatch
  EXPECT_TRUE(contains(msg, "tensor params/fc.weight: model expects shape [20, 64], checkpoint has [10, 64]")) << msg;
  EXPECT_TRUE(contains(msg, "HINT")) << msg;
  for (const OwnedTensor& t : other.t)  // the slots were not touched
    for (float v : t.data) ASSERT_EQ(v, 7.0f) << t.name;

  Tensors missing = make_model(10);
  missing.t.insert(missing.t.begin() + 1, OwnedTensor{"params/stem.se.fc1.weight", {4, 16}, std::vector<float>(64)});
  auto r2 = load_latest(dir.path, missing.slots());
  ASSERT_FALSE(r2.is_ok());
  EXPECT_TRUE(contains(r2.status().message(), "tensor params/stem.se.fc1.weight [4, 16] is missing from the checkpoint"))
      << r2.status().to_string();

  Tensors fewer = make_model(10);
  fewer.t.pop_back();
  auto r3 = load_latest(dir.path, fewer.slots());
  ASSERT_FALSE(r3.is_ok());
  EXPECT_TRUE(contains(r3.status().message(), "checkpoint has tensor bn_stats/stem.bn.running_var that the model does not"))
      << r3.status().to_string();
}

TEST(Checkpoint, SkipMismatchedLoadsEverythingElse) {
  TempDir dir("finetune");
  Tensors saved = make_model(1000);
  fill(saved, 8);
  ASSERT_TRUE(save_checkpoint(dir.path, state_of(saved, 5)).is_ok());

  Tensors ft = make_model(10);
  ft.t.push_back(OwnedTensor{"params/head2.weight", {3}, std::vector<float>(3, 5.0f)});
  for (const char* n : {"params/fc.weight", "params/fc.bias", "momentum/fc.weight", "momentum/fc.bias"}) {
    auto& d = ft.find(n)->data;
    std::fill(d.begin(), d.end(), 5.0f);
  }
  ft.t.erase(ft.t.begin() + 11);  // drop bn_stats/stem.bn.running_var: it becomes "unused"
  auto r = load_latest(dir.path, ft.slots(), {.skip_mismatched = true});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->skipped.size(), 5u);
  EXPECT_TRUE(contains(r->skipped[0], "params/fc.weight")) << r->skipped[0];
  EXPECT_TRUE(contains(r->skipped[4], "params/head2.weight")) << r->skipped[4];
  EXPECT_EQ(r->unused, std::vector<std::string>{"bn_stats/stem.bn.running_var"});
  for (OwnedTensor& t : ft.t) {
    const bool kept_init = contains(t.name, "fc.") || contains(t.name, "head2");
    if (kept_init) {
      for (float v : t.data) ASSERT_EQ(v, 5.0f) << t.name;
    } else {
      EXPECT_TRUE(bits_equal(t.data, saved.find(t.name)->data)) << t.name;
    }
  }
}

TEST(Checkpoint, AsyncWriterMatchesSyncAndSnapshotsBuffers) {
  TempDir sync_dir("sync"), async_dir("async");
  Tensors m = make_model();
  {
    AsyncCheckpointWriter writer(async_dir.path, {.keep_last = 2});
    for (int64_t step = 1; step <= 4; ++step) {
      fill(m, static_cast<uint32_t>(100 + step));
      ASSERT_TRUE(save_checkpoint(sync_dir.path, state_of(m, step), {.keep_last = 2}).is_ok());
      ASSERT_TRUE(writer.submit(state_of(m, step)).is_ok());
      // Training goes on at once: overwriting the buffers must not change what gets written.
      for (OwnedTensor& t : m.t) std::fill(t.data.begin(), t.data.end(), -1.0f);
    }
    ASSERT_TRUE(writer.wait().is_ok());
    EXPECT_FALSE(writer.busy());
    EXPECT_GE(writer.last_write_seconds(), 0.0);
  }
  auto names_sync = dir_names(sync_dir.path), names_async = dir_names(async_dir.path);
  std::sort(names_sync.begin(), names_sync.end());
  std::sort(names_async.begin(), names_async.end());
  EXPECT_EQ(names_sync, names_async);
  for (const char* name : {"ckpt-00000003.h5", "ckpt-00000004.h5"}) {
    auto a = read_checkpoint(async_dir.file(name));
    auto s = read_checkpoint(sync_dir.file(name));
    ASSERT_TRUE(a.is_ok() && s.is_ok());
    EXPECT_EQ(a->meta, s->meta);
    Tensors ta, ts;
    ta.t = a->tensors;
    ts.t = s->tensors;
    expect_same(ts, ta);
  }
}

TEST(Checkpoint, AsyncWriterReportsErrorsOnNextCall) {
  TempDir dir("asyncerr");
  const std::string not_a_dir = dir.file("file");
  write_bytes(not_a_dir, {'x'});
  Tensors m = make_model();
  fill(m, 9);
  AsyncCheckpointWriter writer(not_a_dir);
  EXPECT_TRUE(writer.submit(state_of(m, 1)).is_ok());
  Status second = writer.submit(state_of(m, 2));  // reports the failure of step 1
  EXPECT_FALSE(second.is_ok());
  EXPECT_TRUE(contains(second.message(), not_a_dir)) << second.to_string();
  EXPECT_FALSE(writer.wait().is_ok());  // step 2 failed too
  EXPECT_TRUE(writer.wait().is_ok());   // errors are reported once
}

TEST(Checkpoint, RejectsBadTensors) {
  TempDir dir("bad");
  std::vector<float> v(4);
  CheckpointState dup{make_meta(1), {{"params/a", {4}, v.data()}, {"params/a", {4}, v.data()}}};
  EXPECT_EQ(save_checkpoint(dir.path, dup).code(), StatusCode::kInvalidArgument);
  CheckpointState null_data{make_meta(1), {{"params/a", {4}, nullptr}}};
  EXPECT_EQ(save_checkpoint(dir.path, null_data).code(), StatusCode::kInvalidArgument);
  CheckpointState neg{make_meta(1), {{"params/a", {-1}, v.data()}}};
  EXPECT_EQ(save_checkpoint(dir.path, neg).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(dir_names(dir.path).empty());  // nothing half-written left behind
}

}  // namespace
}  // namespace sx::storage
