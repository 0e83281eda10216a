// defines: sx::dataplane::ReaderConfig, Reader — this rank's batches of a prepared dataset.
// Which samples: Sampler (sampler.h: permutation from (seed, epoch), rank slices of each global step,
// any start offset for resume). How: a pool of threads pulls samples one at a time, reads their bytes
// from the shards, decodes and augments them (transforms.h, randomness from (seed, epoch, sample)) and
// writes them straight into their row of a batch slot; a ring of prefetch_depth + 1 preallocated slots
// holds ready batches. So batches are the same whatever the thread count.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "dataplane/batch.h"
#include "dataplane/manifest.h"
#include "dataplane/reader_shards.h"
#include "dataplane/sampler.h"
#include "dataplane/transforms.h"

namespace sx::dataplane {

struct ReaderConfig {
  uint64_t seed = 0;
  int rank = 0, world_size = 1;
  int batch_size = 32;          // per rank
  bool shuffle = true;          // eval: false (dataset order)
  bool drop_last = true;        // eval: false — the last step is padded (Batch::valid < n)
  int num_threads = 2;          // decode + augment threads
  int prefetch_depth = 2;       // ready batches kept ahead of the consumer
  ImageLayout layout = ImageLayout::kNCHW;
  TransformConfig transform;    // output size, mode, mean/std, ...
  int max_open_shards = 64;
  size_t chunk_cache_bytes = size_t(1) << 20;  // per open shard's /data
};

class Reader {
 public:
  // Loads <dataset_dir>/manifest.json and starts the threads; call start_epoch before next_batch.
  static StatusOr<std::unique_ptr<Reader>> open(const std::string& dataset_dir, const ReaderConfig& config);
  ~Reader();  // stops and joins the threads
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Begins (or restarts) reading epoch `epoch` at global sample offset `start_offset` (a position in
  // the epoch's order; use a multiple of world_size·batch_size to resume on the same step grid).
  // Waits for in-flight samples of the previous epoch; any batch pointer handed out becomes invalid.
  Status start_epoch(int64_t epoch, int64_t start_offset = 0);

  // This rank's next batch, or nullptr at the end of the epoch. Blocks only when no batch is ready.
  // The batch stays valid until the next call of next_batch or start_epoch. A sample that cannot be
  // read or decoded gives data_loss naming the shard file and the global sample index; the error
  // repeats on later calls until start_epoch.
  StatusOr<const Batch*> next_batch();

  int64_t num_steps() const { return num_steps_; }  // steps of the current epoch from its start offset
  const Manifest& manifest() const { return manifest_; }
  const ReaderConfig& config() const { return config_; }

 private:
  enum class SlotState { kFree, kFilling, kReady, kHeld };
  struct Slot {
    Batch batch;
    SlotState state = SlotState::kFree;
    int remaining = 0;     // samples still being decoded
    Status error;          // of the lowest failing row
    int error_row = -1;
  };

  Reader(const std::string& dir, Manifest manifest, const ReaderConfig& config, Sampler sampler);
  void worker_loop();
  bool take_work(int64_t* step, int* row);  // under mu_
  void begin_slot(Slot& slot, int64_t step);  // under mu_
  Status load_sample(Batch& batch, int row, TransformScratch& scratch, std::vector<uint8_t>& bytes);

  const std::string dir_;
  const Manifest manifest_;
  const ReaderConfig config_;
  Sampler sampler_;
  ShardCache shards_;
  std::vector<Slot> slots_;
  std::vector<std::thread> threads_;

  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_, idle_cv_;
  bool stop_ = false;
  bool started_ = false;
  bool paused_ = true;    // no new work while an epoch is being (re)started
  int64_t epoch_ = 0;
  int64_t num_steps_ = 0;
  int64_t fill_step_ = 0;  // next step whose samples are handed out
  int fill_row_ = 0;       // next row of fill_step_
  int64_t consume_step_ = 0;
  int held_ = -1;          // slot the consumer holds
  int in_flight_ = 0;      // samples being decoded
  Status failed_;          // sticky error of this epoch
};

}  // namespace sx::dataplane
