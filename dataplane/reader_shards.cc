#include "dataplane/reader_shards.h"

#include <utility>

namespace sx::dataplane {

ShardCache::ShardCache(std::string dir, const Manifest& manifest, int max_open, size_t chunk_cache_bytes)
    : dir_(std::move(dir)),
      manifest_(manifest),
      max_open_(max_open < 1 ? 1 : max_open),
      chunk_cache_bytes_(chunk_cache_bytes),
      open_(manifest.shards.size()),
      last_use_(manifest.shards.size(), 0) {}

StatusOr<std::shared_ptr<const ShardFile>> ShardCache::get(int index) {
  std::lock_guard<std::mutex> lock(mu_);
  last_use_[size_t(index)] = ++tick_;
  if (open_[size_t(index)]) return open_[size_t(index)];
  if (open_count_ >= max_open_) {  // close the least recently used; readers holding it keep it alive
    size_t victim = 0;
    uint64_t oldest = UINT64_MAX;
    for (size_t i = 0; i < open_.size(); ++i)
      if (open_[i] && last_use_[i] < oldest) oldest = last_use_[i], victim = i;
    open_[victim].reset();
    --open_count_;
  }
  const std::string path = shard_path(index);
  SX_ASSIGN_OR_RETURN(std::unique_ptr<ShardFile> shard, ShardFile::open(path, chunk_cache_bytes_));
  const ShardInfo& info = manifest_.shards[size_t(index)];
  if (shard->num_samples() != info.num_samples || shard->first_index() != info.first_index)
    return Status::data_loss(path + ": holds samples [" + std::to_string(shard->first_index()) + ", +" +
                             std::to_string(shard->num_samples()) + ") but the manifest says [" +
                             std::to_string(info.first_index) + ", +" + std::to_string(info.num_samples) +
                             "). HINT: the shard and manifest.json come from different sx_prep runs");
  const SampleEncoding want = manifest_.encoding == "jpeg" ? SampleEncoding::kJpeg : SampleEncoding::kRaw;
  if (shard->encoding() != want)
    return Status::data_loss(path + ": encoding differs from manifest.json ('" + manifest_.encoding + "')");
  open_[size_t(index)] = std::move(shard);
  ++open_count_;
  return open_[size_t(index)];
}

}  // namespace sx::dataplane
