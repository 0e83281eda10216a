// defines: sx::launch::Child (a child process in its own process group, its output copied line by line
// to a log file and our stderr, and handed to a line callback), run_command (bounded wait).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace sx::launch {

class Child {
 public:
  using LineFn = std::function<void(const std::string&)>;
  // Starts argv[0] (PATH lookup) with stdout+stderr piped; each line goes to `log_path` (appended, ""
  // = none), to our stderr when `echo`, and to `on_line` (called on the reader thread).
  static StatusOr<std::unique_ptr<Child>> start(const std::vector<std::string>& argv, const std::string& log_path,
                                                bool echo, LineFn on_line = {});
  ~Child();  // kills the group (SIGKILL) if still running, joins the reader
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Non-blocking: true once exited; *code = exit code, or 128 + signal.
  bool poll(int* code);
  // SIGTERM to the group, up to grace_s to exit, then SIGKILL; returns the exit code.
  int stop(double grace_s);

 private:
  Child() = default;
  void read_loop(int fd, std::string log_path, bool echo, LineFn on_line);
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = 0;
  std::atomic<bool> quit_{false};  // the reader stops even if a grandchild still holds the pipe open
  std::thread reader_;
};

// Runs argv with output discarded; kills it (its group) after timeout_s. Returns the exit code, or -1
// on timeout / start failure.
int run_command(const std::vector<std::string>& argv, double timeout_s);

// Seconds on the steady clock.
double now_s();

}  // namespace sx::launch
