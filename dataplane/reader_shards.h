// defines: sx::dataplane::ShardCache — opens a dataset's shards on first use and keeps at most
// max_open of them open (least recently used is closed), so 1000+ shard datasets stay under the
// file-descriptor limit. Thread-safe; a reader thread keeps its shard alive through the shared_ptr.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/manifest.h"
#include "dataplane/shard_file.h"

namespace sx::dataplane {

class ShardCache {
 public:
  ShardCache(std::string dir, const Manifest& manifest, int max_open, size_t chunk_cache_bytes);
  // Shard `index` of the manifest, opened and checked against it (sample count, first index, encoding).
  StatusOr<std::shared_ptr<const ShardFile>> get(int index);
  std::string shard_path(int index) const { return dir_ + "/" + manifest_.shards[size_t(index)].file; }

 private:
  std::string dir_;
  const Manifest& manifest_;
  int max_open_;
  size_t chunk_cache_bytes_;
  std::mutex mu_;
  std::vector<std::shared_ptr<const ShardFile>> open_;  // by shard index; null = closed
  std::vector<uint64_t> last_use_;
  int open_count_ = 0;
  uint64_t tick_ = 0;
};

}  // namespace sx::dataplane
