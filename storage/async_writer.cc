#include "storage/async_writer.h"

#include <chrono>
#include <cstring>

#include "common/guard.h"

namespace sx::storage {
namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
// Negative dimensions count as empty here; save_checkpoint rejects them with a message.
int64_t shape_numel_or_zero(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n = d < 0 ? 0 : n * d;
  return n;
}
}  // namespace

AsyncCheckpointWriter::AsyncCheckpointWriter(std::string dir, SaveOptions options)
    : dir_(std::move(dir)), options_(options), thread_([this] { run(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !pending_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status AsyncCheckpointWriter::submit(const CheckpointState& state) {
  const auto t0 = std::chrono::steady_clock::now();
  Status previous;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !pending_; });
    previous = std::exchange(error_, Status::ok());
  }
  // The writer thread is idle: the snapshot is ours to refill.
  size_t total = 0;
  for (const TensorRef& t : state.tensors) total += static_cast<size_t>(shape_numel_or_zero(t.shape));
  buffer_.resize(total);
  snapshot_.meta = state.meta;
  snapshot_.tensors.clear();
  size_t offset = 0;
  for (const TensorRef& t : state.tensors) {
    const size_t n = static_cast<size_t>(shape_numel_or_zero(t.shape));
    if (n > 0 && t.data) std::memcpy(buffer_.data() + offset, t.data, n * sizeof(float));
    // A null source stays null so save_checkpoint reports it, instead of writing zeros.
    snapshot_.tensors.push_back({t.name, t.shape, t.data ? buffer_.data() + offset : nullptr});
    offset += n;
  }
  {
    std::lock_guard lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();
  snapshot_seconds_ = seconds_since(t0);
  return previous;
}

Status AsyncCheckpointWriter::wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !pending_; });
  return std::exchange(error_, Status::ok());
}

bool AsyncCheckpointWriter::busy() const {
  std::lock_guard lock(mu_);
  return pending_;
}

double AsyncCheckpointWriter::last_write_seconds() const {
  std::lock_guard lock(mu_);
  return write_seconds_;
}

void AsyncCheckpointWriter::run() {
  while (true) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return pending_ || stop_; });
      if (stop_ && !pending_) return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    Status st = guarded("checkpoint writer thread", [&] { return save_checkpoint(dir_, snapshot_, options_); });
    {
      std::lock_guard lock(mu_);
      error_ = std::move(st);
      write_seconds_ = seconds_since(t0);
      pending_ = false;
    }
    cv_.notify_all();
  }
}

}  // namespace sx::storage
