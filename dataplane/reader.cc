#include "dataplane/reader.h"

#include <algorithm>
#include <span>
#include <utility>

#include "common/guard.h"

namespace sx::dataplane {

StatusOr<std::unique_ptr<Reader>> Reader::open(const std::string& dataset_dir, const ReaderConfig& config) {
  SX_CHECK_ARG(config.num_threads >= 1, "reader: num_threads must be >= 1");
  SX_CHECK_ARG(config.prefetch_depth >= 1, "reader: prefetch_depth must be >= 1");
  SX_TRY(validate_transform_config(config.transform));
  SX_ASSIGN_OR_RETURN(Manifest manifest, load_manifest(dataset_dir));
  if (manifest.encoding != "raw" && manifest.encoding != "jpeg")
    return Status::data_loss(dataset_dir + "/manifest.json: unknown encoding '" + manifest.encoding + "'");
  if (manifest.channels != 1 && manifest.channels != 3)
    return Status::data_loss(dataset_dir + "/manifest.json: channels must be 1 or 3");
  SamplerConfig sc;
  sc.num_samples = manifest.num_samples;
  sc.world_size = config.world_size;
  sc.rank = config.rank;
  sc.batch_size = config.batch_size;
  sc.shuffle = config.shuffle;
  sc.drop_last = config.drop_last;
  sc.seed = config.seed;
  SX_ASSIGN_OR_RETURN(Sampler sampler, Sampler::create(sc));
  std::unique_ptr<Reader> r(new Reader(dataset_dir, std::move(manifest), config, std::move(sampler)));
  for (int i = 0; i < config.num_threads; ++i) r->threads_.emplace_back([p = r.get()] { p->worker_loop(); });
  return r;
}

Reader::Reader(const std::string& dir, Manifest manifest, const ReaderConfig& config, Sampler sampler)
    : dir_(dir),
      manifest_(std::move(manifest)),
      config_(config),
      sampler_(std::move(sampler)),
      shards_(dir, manifest_, config.max_open_shards, config.chunk_cache_bytes),
      slots_(size_t(config.prefetch_depth) + 1) {
  for (Slot& s : slots_) {  // all batch memory is allocated here, once
    Batch& b = s.batch;
    b.n = config.batch_size;
    b.c = manifest_.channels;
    b.h = config.transform.out_h;
    b.w = config.transform.out_w;
    b.layout = config.layout;
    b.images.assign(size_t(b.n) * size_t(b.image_floats()), 0.0f);
    b.labels.assign(size_t(b.n), -1);
    b.indices.assign(size_t(b.n), -1);
  }
}

Reader::~Reader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

Status Reader::start_epoch(int64_t epoch, int64_t start_offset) {
  std::unique_lock<std::mutex> lock(mu_);
  paused_ = true;
  idle_cv_.wait(lock, [&] { return in_flight_ == 0; });
  Status st = sampler_.set_epoch(epoch, start_offset);
  if (!st.is_ok()) return st;
  for (Slot& s : slots_) {
    s.state = SlotState::kFree;
    s.error = Status::ok();
    s.error_row = -1;
  }
  epoch_ = epoch;
  num_steps_ = sampler_.num_steps();
  fill_step_ = consume_step_ = 0;
  fill_row_ = 0;
  held_ = -1;
  failed_ = Status::ok();
  started_ = true;
  paused_ = false;
  lock.unlock();
  work_cv_.notify_all();
  return Status::ok();
}

StatusOr<const Batch*> Reader::next_batch() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!started_) return Status::invalid_argument("reader: call start_epoch before next_batch");
  if (held_ >= 0) {  // the consumer is done with the previous batch: its slot can be refilled
    slots_[size_t(held_)].state = SlotState::kFree;
    held_ = -1;
    work_cv_.notify_all();
  }
  if (!failed_.is_ok()) return failed_;
  if (consume_step_ >= num_steps_) return static_cast<const Batch*>(nullptr);
  const int index = int(consume_step_ % int64_t(slots_.size()));
  Slot& s = slots_[size_t(index)];
  ready_cv_.wait(lock, [&] { return s.state == SlotState::kReady && s.batch.step == consume_step_; });
  if (!s.error.is_ok()) {
    failed_ = s.error;
    s.state = SlotState::kFree;
    return failed_;
  }
  s.state = SlotState::kHeld;
  held_ = index;
  ++consume_step_;
  return static_cast<const Batch*>(&s.batch);
}

void Reader::begin_slot(Slot& slot, int64_t step) {
  Batch& b = slot.batch;
  b.epoch = epoch_;
  b.step = step;
  b.valid = sampler_.rank_batch(step, std::span<int64_t>(b.indices));
  slot.state = SlotState::kFilling;
  slot.remaining = b.valid;
  slot.error = Status::ok();
  slot.error_row = -1;
  if (b.valid < b.n) {  // eval padding at the end of the epoch: zero images, label -1
    std::fill(b.images.begin() + b.valid * b.image_floats(), b.images.end(), 0.0f);
    std::fill(b.labels.begin() + b.valid, b.labels.end(), -1);
  }
}

bool Reader::take_work(int64_t* step, int* row) {
  if (paused_) return false;
  while (fill_step_ < num_steps_) {
    Slot& s = slots_[size_t(fill_step_ % int64_t(slots_.size()))];
    if (fill_row_ == 0) {
      if (s.state != SlotState::kFree) return false;  // ring full: wait for the consumer
      begin_slot(s, fill_step_);
      if (s.batch.valid == 0) {  // a rank with nothing left in the last eval step
        s.state = SlotState::kReady;
        ready_cv_.notify_all();
        ++fill_step_;
        continue;
      }
    }
    *step = fill_step_;
    *row = fill_row_++;
    if (fill_row_ == s.batch.valid) {
      ++fill_step_;
      fill_row_ = 0;
    }
    return true;
  }
  return false;
}

void Reader::worker_loop() {
  TransformScratch scratch;
  std::vector<uint8_t> bytes;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    int64_t step = 0;
    int row = 0;
    work_cv_.wait(lock, [&] { return stop_ || take_work(&step, &row); });
    if (stop_) return;
    Slot& s = slots_[size_t(step % int64_t(slots_.size()))];
    ++in_flight_;
    lock.unlock();
    // The thread boundary: an exception (a bad_alloc for a size a file claimed) is this sample's error.
    Status st = guarded("reader thread", [&] { return load_sample(s.batch, row, scratch, bytes); });
    lock.lock();
    --in_flight_;
    if (!st.is_ok() && (s.error_row < 0 || row < s.error_row)) {
      s.error = std::move(st);
      s.error_row = row;
    }
    if (--s.remaining == 0) {
      s.state = SlotState::kReady;
      ready_cv_.notify_all();
    }
    if (in_flight_ == 0) idle_cv_.notify_all();
  }
}

Status Reader::load_sample(Batch& batch, int row, TransformScratch& scratch, std::vector<uint8_t>& bytes) {
  const int64_t g = batch.indices[size_t(row)];
  const int shard_index = manifest_.shard_of(g);
  if (shard_index < 0)
    return Status::data_loss(dir_ + "/manifest.json: no shard holds sample " + std::to_string(g));
  SX_ASSIGN_OR_RETURN(std::shared_ptr<const ShardFile> shard, shards_.get(shard_index));
  const int64_t local = g - shard->first_index();
  SX_TRY(shard->read_sample(local, bytes));
  const auto& shape = shard->shape(local);  // (H, W, C)
  const int32_t label = shard->label(local);
  const std::string where = shard->path() + ": sample " + std::to_string(g);
  if (shape[2] != batch.c)
    return Status::data_loss(where + " has " + std::to_string(shape[2]) + " channels, manifest.json says " +
                             std::to_string(batch.c));
  if (label < 0 || (manifest_.num_classes > 0 && label >= manifest_.num_classes))
    return Status::data_loss(where + " has label " + std::to_string(label) + ", outside [0, " +
                             std::to_string(manifest_.num_classes) + ")");
  Status st = transform_sample(bytes, shard->encoding(), shape[0], shape[1], shape[2], config_.transform,
                               sample_seed(config_.seed, batch.epoch, g), batch.layout, batch.image(row), scratch);
  if (!st.is_ok()) return Status::data_loss(where + ": " + st.message());
  batch.labels[size_t(row)] = label;
  return Status::ok();
}

}  // namespace sx::dataplane
