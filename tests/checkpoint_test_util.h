// Helpers shared by tests/test_checkpoint*.cc and tests/long_checkpoint_fault.cc.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "storage/checkpoint.h"

namespace sx::storage::testing_util {

// A fresh directory under the gtest temp dir, removed on destruction.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    path = std::filesystem::path(::testing::TempDir()) /
           ("sx_ckpt_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// Owned tensors + the TensorRef/TensorSlot views the API takes.
struct Tensors {
  std::vector<OwnedTensor> t;
  void add(const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.push_back({name, std::move(shape), std::vector<float>(static_cast<size_t>(n), 0.0f)});
  }
  std::vector<TensorRef> refs() const {
    std::vector<TensorRef> r;
    for (const OwnedTensor& x : t) r.push_back({x.name, x.shape, x.data.data()});
    return r;
  }
  std::vector<TensorSlot> slots() {
    std::vector<TensorSlot> r;
    for (OwnedTensor& x : t) r.push_back({x.name, x.shape, x.data.data()});
    return r;
  }
  OwnedTensor* find(const std::string& name) {
    for (OwnedTensor& x : t)
      if (x.name == name) return &x;
    return nullptr;
  }
};

inline bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

inline std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

inline void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<std::string> dir_names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// Deterministic content for step `step` (the fault tests recompute it to check a load).
inline float pattern_value(int64_t step, size_t tensor, size_t i) {
  return static_cast<float>(static_cast<int64_t>((step * 7919 + static_cast<int64_t>(tensor) * 104729 + i) % 1048573)) *
         0.125f;
}

}  // namespace sx::storage::testing_util
