// defines: sx::storage::AsyncCheckpointWriter — snapshot host buffers, write in a background thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage/checkpoint.h"

namespace sx::storage {

// One write in flight at a time. submit() waits for the previous write, copies every tensor into
// a snapshot buffer (reused between writes) and returns; training may then modify its buffers
// while the background thread runs save_checkpoint on the snapshot. A failed write is reported by
// the next submit() or wait() (the new write is still started, so a transient error costs one
// checkpoint, not all later ones).
class AsyncCheckpointWriter {
 public:
  explicit AsyncCheckpointWriter(std::string dir, SaveOptions options = {});
  ~AsyncCheckpointWriter();  // finishes the write in flight
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // Returns the error of the previous write if it failed; the new write starts regardless.
  Status submit(const CheckpointState& state);
  // Blocks until nothing is in flight; returns (and clears) the last write's error.
  Status wait();
  bool busy() const;
  double last_snapshot_seconds() const { return snapshot_seconds_; }  // time submit() held the caller
  double last_write_seconds() const;

 private:
  void run();

  const std::string dir_;
  const SaveOptions options_;
  // Snapshot: all tensors back to back in `buffer_`, refs point into it.
  std::vector<float> buffer_;
  CheckpointState snapshot_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;  // a snapshot waits for or is in the writer thread
  bool stop_ = false;
  Status error_;
  double write_seconds_ = 0;
  double snapshot_seconds_ = 0;
  std::thread thread_;
};

}  // namespace sx::storage
