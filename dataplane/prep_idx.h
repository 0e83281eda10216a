// defines: sx::dataplane::IdxDataset, read_idx — MNIST / Fashion-MNIST idx files, plain or gzipped
// (zlib's gzread reads both), and the built-in class names of the known idx datasets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::dataplane {

struct IdxDataset {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // (count, rows, cols) gray
  std::vector<uint8_t> labels;  // (count)
};

// Reads an idx3-ubyte image file and an idx1-ubyte label file; checks magic numbers, sizes, that
// the counts agree and that neither file is truncated. Errors name the file and what was wrong.
StatusOr<IdxDataset> read_idx(const std::string& images_path, const std::string& labels_path);

std::vector<std::string> fashion_mnist_class_names();
std::vector<std::string> mnist_class_names();

}  // namespace sx::dataplane
