// defines: sx::dataplane::ShardFile — the read side of one HDF5 shard (format in shard_format.h):
// the small per-sample tables (/offsets, /shapes, /labels) are loaded at open; sample bytes are read
// one hyperslab of /data at a time. HDF5 is the thread-safe build, so read_sample may be called
// from several threads at once (the library serialises the calls).
#pragma once

#include <hdf5.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "storage/hdf5_util.h"
#include "dataplane/transforms.h"

namespace sx::dataplane {

using H5Id = sx::storage::H5Handle;  // RAII hid_t, shared with storage/


class ShardFile {
 public:
  // chunk_cache_bytes: HDF5 raw-data chunk cache of /data (0 = none, right for shuffled reads; a
  // chunk or two helps sequential eval reads).
  static StatusOr<std::unique_ptr<ShardFile>> open(const std::string& path, size_t chunk_cache_bytes);

  const std::string& path() const { return path_; }
  int64_t num_samples() const { return int64_t(labels_.size()); }
  int64_t first_index() const { return first_index_; }
  SampleEncoding encoding() const { return encoding_; }
  int32_t label(int64_t i) const { return labels_[size_t(i)]; }
  const std::array<int32_t, 3>& shape(int64_t i) const { return shapes_[size_t(i)]; }  // (H, W, C)
  int64_t sample_bytes(int64_t i) const { return offsets_[size_t(i) + 1] - offsets_[size_t(i)]; }

  // Reads local sample i's bytes into out (resized; capacity is kept across calls). A failed read
  // (e.g. a chunk whose fletcher32 checksum does not match) is data_loss naming the file and sample.
  Status read_sample(int64_t i, std::vector<uint8_t>& out) const;

 private:
  ShardFile() = default;
  std::string path_;
  H5Id file_, data_;
  int64_t first_index_ = 0;
  SampleEncoding encoding_ = SampleEncoding::kRaw;
  std::vector<int64_t> offsets_;                // (n + 1)
  std::vector<std::array<int32_t, 3>> shapes_;  // (n, 3)
  std::vector<int32_t> labels_;                 // (n)
};

// HDF5's error stack of this thread as text (innermost descriptions), then cleared.
std::string hdf5_error_text();

}  // namespace sx::dataplane
