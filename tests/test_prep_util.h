// defines: helpers shared by the sx_prep tests: temp dirs, image files written with real OpenCV
// encoders, reading a shard back through the HDF5 C API, running the sx_prep binary.
#pragma once

#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace sx::dataplane::testing {

namespace fs = std::filesystem;

inline fs::path make_temp_dir(const std::string& tag) {
  fs::path base = fs::temp_directory_path() / ("sx_prep_test_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base);
  return base;
}

// An RGB image whose pixels differ by position and channel, so order mistakes show. (H, W, 3) RGB.
inline cv::Mat pattern_rgb(int h, int w, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b((x * 7 + seed) & 255, (y * 13 + 2 * seed) & 255, (x * y + 3 * seed) & 255);
  return m;
}

// Writes an RGB image with OpenCV (which takes BGR).
inline void write_rgb(const fs::path& p, const cv::Mat& rgb, std::vector<int> params = {}) {
  fs::create_directories(p.parent_path());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  ASSERT_TRUE(cv::imwrite(p.string(), bgr, params)) << p;
}

inline void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// One shard read back with plain HDF5 calls (independent of the writer's code).
struct ShardContents {
  std::vector<uint8_t> data;
  std::vector<int64_t> offsets;
  std::vector<int32_t> shapes;  // (n, 3)
  std::vector<int32_t> labels;
  int64_t num_samples = -1, first_index = -1;
  std::string encoding;
  bool ok = false;
};

template <typename T>
inline bool read_all(hid_t f, const char* name, hid_t type, std::vector<T>* out) {
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  if (ds < 0) return false;
  hid_t sp = H5Dget_space(ds);
  hssize_t n = H5Sget_simple_extent_npoints(sp);
  out->resize(static_cast<size_t>(n));
  herr_t r = H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out->data());
  H5Sclose(sp);
  H5Dclose(ds);
  return r >= 0;
}

inline ShardContents read_shard(const fs::path& p) {
  ShardContents s;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return s;
  bool ok = read_all(f, "data", H5T_NATIVE_UINT8, &s.data) && read_all(f, "offsets", H5T_NATIVE_INT64, &s.offsets) &&
            read_all(f, "shapes", H5T_NATIVE_INT32, &s.shapes) && read_all(f, "labels", H5T_NATIVE_INT32, &s.labels);
  hid_t a = H5Aopen(f, "num_samples", H5P_DEFAULT);
  ok = ok && a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &s.num_samples) >= 0;
  if (a >= 0) H5Aclose(a);
  a = H5Aopen(f, "first_index", H5P_DEFAULT);
  ok = ok && a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &s.first_index) >= 0;
  if (a >= 0) H5Aclose(a);
  a = H5Aopen(f, "encoding", H5P_DEFAULT);
  if (a >= 0) {
    hid_t t = H5Aget_type(a);
    std::string v(H5Tget_size(t), '\0');
    ok = ok && H5Aread(a, t, v.data()) >= 0;
    s.encoding = v.c_str();
    H5Tclose(t);
    H5Aclose(a);
  } else {
    ok = false;
  }
  H5Fclose(f);
  s.ok = ok;
  return s;
}

// Path of the sx_prep binary next to this test executable ("" if not built).
inline std::string sx_prep_binary() {
  fs::path self = fs::read_symlink("/proc/self/exe");
  fs::path p = self.parent_path() / "sx_prep";
  return fs::exists(p) ? p.string() : "";
}

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

inline RunResult run_command(const std::string& cmd) {
  RunResult r;
  std::FILE* pipe = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace sx::dataplane::testing
