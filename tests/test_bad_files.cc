// Validate, then allocate: crafted files whose headers claim more than they hold — idx, manifest,
// shard, checkpoint — and sx_prep inputs outside --root, not regular or too big. Each is refused
// with a message naming the file and what was expected, a non-zero exit for the binaries, nothing
// half-written; the binaries run under `ulimit -v` (2 GiB), so a claim that were allocated would
// end in bad_alloc / a crash instead of the message.
#include <hdf5.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dataplane/manifest.h"
#include "dataplane/prep_idx.h"
#include "dataplane/reader.h"
#include "dataplane/shard_file.h"
#include "storage/checkpoint.h"
#include "tests/test_prep_util.h"

namespace sx::dataplane {
namespace {

using namespace sx::dataplane::testing;

const std::string kUlimit = "ulimit -v 2097152; ";  // KiB: 2 GiB of address space

void put_be32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char(uint8_t(v >> (24 - 8 * i))));
}

std::string idx_header(uint32_t magic, std::vector<uint32_t> dims) {
  std::string s;
  put_be32(s, magic);
  for (uint32_t d : dims) put_be32(s, d);
  return s;
}

void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(f);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// idx headers that claim 4 billion 65536² images, or a million images in a 1 KB file.
TEST(BadFiles, IdxHeaderClaimsAreCheckedBeforeAllocating) {
  const fs::path dir = make_temp_dir("bad_idx");
  write_text(dir / "labels", idx_header(0x801, {1000000}) + std::string(100, '\1'));
  write_text(dir / "huge", idx_header(0x803, {0xffffffffu, 65536, 65536}) + std::string(1000, 'x'));
  auto r = read_idx((dir / "huge").string(), (dir / "labels").string());
  ASSERT_FALSE(r.is_ok());  // the counts differ first; make them agree
  write_text(dir / "labels_big", idx_header(0x801, {0xffffffffu}) + std::string(100, '\1'));
  r = read_idx((dir / "huge").string(), (dir / "labels_big").string());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find((dir / "huge").string() + ": the header declares 4294967295 images of 65536x65536"),
            std::string::npos)
      << r.status().message();

  // A plain file: its size must hold what the header declares.
  write_text(dir / "short", idx_header(0x803, {1000000, 28, 28}) + std::string(1000, 'x'));
  r = read_idx((dir / "short").string(), (dir / "labels").string());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find((dir / "short").string() + ": truncated: the header declares 784000000 data bytes"),
            std::string::npos)
      << r.status().message();

  // Gzipped (size unknown until the end): read in steps; the sx_prep binary under a 2 GiB address
  // limit with a header claiming 4 billion 256² images = 256 TiB... capped; 16 million 256² = 1 TiB
  // exactly passes the cap and fails as truncated without allocating it.
  write_gz(dir / "gz-images.gz", idx_header(0x803, {1u << 24, 256, 256}) + std::string(5000, 'x'));
  write_gz(dir / "gz-labels.gz", idx_header(0x801, {1u << 24}) + std::string(5000, '\1'));
  const fs::path out = dir / "out";
  RunResult run = run_command(kUlimit + sx_prep_binary() + " --format idx --images " + (dir / "gz-images.gz").string() +
                              " --labels " + (dir / "gz-labels.gz").string() + " --out " + out.string() +
                              " --no-progress --threads 1");
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find((dir / "gz-images.gz").string() + ": truncated: the pixel data needs 1099511627776 bytes"),
            std::string::npos)
      << run.output;
  EXPECT_FALSE(fs::exists(out / "manifest.json"));
  fs::remove_all(dir);
}

// A real dataset made by sx_prep, to be tampered with.
fs::path make_dataset(const fs::path& dir) {
  write_text(dir / "img-labels", idx_header(0x801, {8}) + std::string(8, '\1'));
  write_text(dir / "img-images", idx_header(0x803, {8, 4, 4}) + std::string(8 * 16, '\x40'));
  const fs::path out = dir / "data";
  RunResult run = run_command(sx_prep_binary() + " --format idx --images " + (dir / "img-images").string() + " --labels " +
                              (dir / "img-labels").string() + " --out " + out.string() + " --no-progress --threads 1");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  return out;
}

void set_i64_attr(const fs::path& file, const char* name, int64_t v) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  ASSERT_GE(a, 0);
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
  H5Aclose(a);
  H5Fclose(f);
}

// A manifest claiming 2^50 samples: refused against the shard file's size before the reader sizes its
// 8-bytes-a-sample permutation; with the shard file gone, the claim is capped.
TEST(BadFiles, ManifestCountsAreCheckedAgainstTheShardFiles) {
  const fs::path dir = make_temp_dir("bad_manifest");
  const fs::path data = make_dataset(dir);
  std::string text = read_text(data / "manifest.json");
  auto j = nlohmann::json::parse(text);
  j["num_samples"] = int64_t{1} << 29;
  j["shards"][0]["num_samples"] = int64_t{1} << 29;
  write_text(data / "manifest.json", j.dump());
  auto m = load_manifest(data.string());
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find((data / "manifest.json").string() + " shards[0]: key 'num_samples': is 536870912 but " +
                                      (data / "shard-00000.h5").string() + " has only"),
            std::string::npos)
      << m.status().message();

  j["num_samples"] = int64_t{1} << 50;
  j["shards"][0]["num_samples"] = int64_t{1} << 50;
  write_text(data / "manifest.json", j.dump());
  m = load_manifest(data.string());
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("key 'num_samples': value 1125899906842624 out of range"), std::string::npos)
      << m.status().message();

  j["num_samples"] = int64_t{1} << 29;
  j["shards"][0]["num_samples"] = int64_t{1} << 29;
  j["shards"][0]["file"] = "gone.h5";
  write_text(data / "manifest.json", j.dump());
  m = load_manifest(data.string());
  ASSERT_FALSE(m.is_ok());
  EXPECT_NE(m.status().message().find("shard files holding 536870912 samples are missing"), std::string::npos)
      << m.status().message();
  fs::remove_all(dir);
}

TEST(BadFiles, ShardCountsAndShapesAreCheckedBeforeAllocating) {
  const fs::path dir = make_temp_dir("bad_shard");
  const fs::path data = make_dataset(dir);
  const fs::path shard = data / "shard-00000.h5";
  fs::copy_file(shard, dir / "orig.h5");

  set_i64_attr(shard, "num_samples", int64_t{1} << 40);
  auto s = ShardFile::open(shard.string(), 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find(shard.string() + ": num_samples = 1099511627776 is not plausible"), std::string::npos)
      << s.status().message();

  fs::copy_file(dir / "orig.h5", shard, fs::copy_options::overwrite_existing);
  set_i64_attr(shard, "num_samples", 7);  // the datasets have 8 (+1) rows
  s = ShardFile::open(shard.string(), 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("dataset /offsets has 9 rows, expected 8"), std::string::npos) << s.status().message();

  // /shapes row 3 = (65535, 65535, 3): 4.3 G pixels, more than any sample may have.
  fs::copy_file(dir / "orig.h5", shard, fs::copy_options::overwrite_existing);
  {
    hid_t f = H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/shapes", H5P_DEFAULT);
    std::vector<int32_t> shapes(8 * 3);
    ASSERT_GE(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, shapes.data()), 0);
    shapes[9] = shapes[10] = 65535;
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, shapes.data()), 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  s = ShardFile::open(shard.string(), 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find(shard.string() + ": /shapes row 3 is (65535, 65535, 1); expected"), std::string::npos)
      << s.status().message();
  fs::remove_all(dir);
}

// A checkpoint whose dataset declares 2^40 x 2^20 floats (no storage behind it): verify refuses it by
// name; `sx_ckpt verify` (what sx_launch runs on resume) exits 1 with the message under a 2 GiB limit.
TEST(BadFiles, CheckpointShapesAreCheckedAgainstTheFileSize) {
  const fs::path dir = make_temp_dir("bad_ckpt");
  const fs::path file = dir / "ckpt-00000001.h5";
  std::vector<float> w = {1, 2};
  storage::CheckpointState st;
  st.meta.step = 1;
  st.tensors.push_back({"params/w", {2}, w.data()});
  ASSERT_TRUE(storage::write_checkpoint_file(file.string(), st).is_ok());
  {
    hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(H5Ldelete(f, "params/w", H5P_DEFAULT), 0);
    hsize_t dims[2] = {hsize_t{1} << 40, hsize_t{1} << 20}, chunk[2] = {1, 1024};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(f, "params/w", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    uint32_t crc = 0;
    hid_t as = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(d, "crc32", H5T_NATIVE_UINT32, as, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT32, &crc);
    H5Aclose(a);
    H5Sclose(as);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  auto v = storage::verify_checkpoint(file.string());
  ASSERT_FALSE(v.is_ok());
  EXPECT_NE(v.status().message().find("dataset params/w declares shape [1099511627776, 1048576], more float32 data than"),
            std::string::npos)
      << v.status().message();
  EXPECT_NE(v.status().message().find(file.string()), std::string::npos) << v.status().message();
  const fs::path ckpt_bin = fs::path(sx_prep_binary()).parent_path() / "sx_ckpt";
  RunResult run = run_command(kUlimit + ckpt_bin.string() + " verify " + file.string());
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("declares shape [1099511627776, 1048576]"), std::string::npos) << run.output;
  fs::remove_all(dir);
}

// sx_prep list paths: outside --root (absolute, ..) refused by line unless --allow-outside-root; a
// FIFO and /dev/zero refused as not regular files (and the FIFO does not hang the run); a file above
// --max-file-bytes refused unread. No manifest after any refusal.
TEST(BadFiles, PrepInputsStayInsideRootAreRegularAndBounded) {
  const fs::path dir = make_temp_dir("bad_prep_inputs");
  fs::create_directories(dir / "root");
  write_rgb(dir / "root" / "a.png", pattern_rgb(8, 8, 1));
  write_rgb(dir / "outside.png", pattern_rgb(8, 8, 2));
  ASSERT_EQ(::mkfifo((dir / "root" / "fifo.png").c_str(), 0644), 0);
  const std::string base = sx_prep_binary() + " --format list --root " + (dir / "root").string() + " --list " +
                           (dir / "list.txt").string() + " --no-progress --threads 1 --out ";
  struct Case {
    std::string line, expect, extra;
  };
  const std::vector<Case> cases = {
      {"../outside.png 0", "list.txt line 2: ../outside.png: path leaves --root", ""},
      {"sub/../../outside.png 0", "list.txt line 2: sub/../../outside.png: path leaves --root", ""},
      {(dir / "outside.png").string() + " 0", "path leaves --root", ""},
      {"fifo.png 0", "fifo.png: not a regular file", ""},
      {"/dev/zero 0", "/dev/zero: not a regular file", " --allow-outside-root"},
      {"a.png 0", "a.png: " , " --max-file-bytes 10"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    write_text(dir / "list.txt", "a.png 0\n" + cases[i].line + "\n");
    const fs::path out = dir / ("out" + std::to_string(i));
    RunResult run = run_command(kUlimit + base + out.string() + cases[i].extra);
    EXPECT_EQ(run.exit_code, 1) << cases[i].line << "\n" << run.output;
    EXPECT_NE(run.output.find(cases[i].expect), std::string::npos) << cases[i].line << "\n" << run.output;
    if (cases[i].extra == " --max-file-bytes 10") {
      EXPECT_NE(run.output.find("more than --max-file-bytes 10"), std::string::npos) << run.output;
    }
    EXPECT_FALSE(fs::exists(out / "manifest.json"));
  }
  // Allowed on request: the same list converts.
  write_text(dir / "list.txt", "a.png 0\n../outside.png 1\n");
  RunResult run = run_command(base + (dir / "ok").string() + " --allow-outside-root");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(fs::exists(dir / "ok" / "manifest.json"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::dataplane
