// defines: sx::dataplane::Manifest, ShardInfo, load_manifest, save_manifest, manifest_to_json.
// The manifest.json of a prepared dataset (layout in shard_format.h). sx_prep writes it last
// (temp name + rename); the shard reader loads and validates it with load_manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace sx::dataplane {

struct ShardInfo {
  std::string file;         // relative to the manifest's directory, e.g. "shard-00000.h5"
  int64_t num_samples = 0;  // samples in this shard
  int64_t first_index = 0;  // global index of its first sample
  uint32_t crc32 = 0;       // zlib crc32 of the whole file (written as 8 lowercase hex digits)
};

struct Manifest {
  int format_version = 0;
  int64_t num_samples = 0;
  int num_classes = 0;
  std::vector<std::string> class_names;  // size num_classes
  std::string encoding;                   // "raw" | "jpeg"
  int channels = 0;                       // 1 | 3
  int short_side = 0;                     // 0 = not resized
  int center_crop = 0;                    // 0 = not cropped
  std::vector<ShardInfo> shards;          // in global index order, contiguous
  std::string command;                    // the sx_prep command line that made it
  int64_t skipped = 0;                    // inputs left out by --skip-bad (optional key)

  // Index of the shard holding global sample g (binary search), or -1 if out of range.
  int shard_of(int64_t g) const;
};

std::string crc32_hex(uint32_t crc);
nlohmann::json manifest_to_json(const Manifest& m);
// Validates every key; `source` names the file in error messages.
StatusOr<Manifest> manifest_from_json(const nlohmann::json& j, const std::string& source);
// Reads and validates <dir>/manifest.json.
StatusOr<Manifest> load_manifest(const std::string& dir);
// Writes <dir>/manifest.json via a temp name, fsync and rename.
Status save_manifest(const std::string& dir, const Manifest& m);

}  // namespace sx::dataplane
