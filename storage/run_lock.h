// defines: sx::storage::RunLock, LockHolder, read_lock_holder — one job per directory.
// A lock file DIR/NAME held with flock(2) for the holder's lifetime (released by the kernel when the
// process dies, however it dies) and naming its holder: {"host", "pid", "start_ticks" (field 22 of
// /proc/PID/stat, so a reused pid is told apart), "started_unix", "program", "token"}.
//   - a second process asking for the same lock gets an error naming the holder, at once;
//   - a lock file left by a dead process is taken over (the previous holder is reported in
//     `taken_over()`); a file naming a live process on this host is never taken over, even where
//     flock is not enforced;
//   - `token`: a process started by the holder (sx_launch → mpirun → sx_worker rank 0) that is given
//     the holder's token inherits the lock instead of failing (acquire returns a null RunLock).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"

namespace sx::storage {

struct LockHolder {
  std::string host, program, token;
  int64_t pid = 0, start_ticks = 0, started_unix = 0;
  std::string describe() const;  // "sx_launch pid 1234 on host a (since 2026-12-03 17:00:21 UTC)"
};

// What /proc says about a process: its start time in clock ticks since boot, or -1 when it is gone.
int64_t process_start_ticks(int64_t pid);
std::string this_host_name();

StatusOr<LockHolder> read_lock_holder(const std::string& lock_path);

class RunLock {
 public:
  // Takes DIR/NAME (DIR must exist). Fails with kUnavailable naming the holder and the lock file.
  // With a non-empty `inherit_token`, a lock held by a live process whose token equals it is accepted:
  // the result is then a null pointer (nothing to release).
  static StatusOr<std::unique_ptr<RunLock>> acquire(const std::string& dir, const std::string& name,
                                                    const std::string& program, const std::string& token = "",
                                                    const std::string& inherit_token = "");
  ~RunLock();  // removes the file, then releases the flock
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }
  const std::optional<LockHolder>& taken_over() const { return taken_over_; }  // a dead holder's leftover

 private:
  RunLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
  std::optional<LockHolder> taken_over_;
};

}  // namespace sx::storage
