// defines: sx::dataplane::ShardWriter (one HDF5 shard, format in shard_format.h).
// Output is byte-identical for identical input: no object timestamps, fixed chunk sizes, datasets
// created once at their final size from an in-memory buffer of the shard.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/hdf5_util.h"

namespace sx::dataplane {

using H5Handle = sx::storage::H5Handle;  // RAII hid_t, shared with storage/


// Buffers one shard's samples, then writes the whole file at once.
class ShardWriter {
 public:
  // bytes: JPEG file bytes or raw H·W·C pixels.
  void add(std::span<const uint8_t> bytes, int h, int w, int c, int32_t label);
  int64_t num_samples() const { return static_cast<int64_t>(labels_.size()); }
  // Writes "<dir>/.<name>.partial", closes it, computes its crc32, renames it to "<dir>/<name>"
  // (fsync'd; the caller fsyncs the directory) and clears the buffer. Returns the crc32. Removes the partial file on failure.
  StatusOr<uint32_t> finish(const std::string& dir, const std::string& name, const std::string& encoding,
                            int64_t first_index);

 private:
  Status write_file(const std::string& path, const std::string& encoding, int64_t first_index);
  std::vector<uint8_t> data_;           // (total_bytes)
  std::vector<int64_t> offsets_{0};     // (n + 1)
  std::vector<int32_t> shapes_;         // (n, 3) H, W, C
  std::vector<int32_t> labels_;         // (n)
};

// The partial name a shard is written under until it is complete.
std::string partial_shard_name(const std::string& name);

}  // namespace sx::dataplane
