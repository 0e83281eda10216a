// defines: sx::dataplane::Progress — sx_prep's progress output: a redrawn bar with img/s and ETA
// when stderr is a terminal, plain lines (every 10 s or 10 %) otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>

#include "common/progress.h"

namespace sx::dataplane {

class Progress {
 public:
  // interactive: redraw one line with '\r'; otherwise print plain lines.
  Progress(int64_t total, bool interactive, std::FILE* out = stderr);
  void update(int64_t done);
  void finish(int64_t done);  // final line with total time and rate

 private:
  void print(int64_t done, bool final_line);
  int64_t total_;
  bool interactive_;
  ProgressLine line_;
  std::chrono::steady_clock::time_point start_, last_;
  int last_decile_ = 0;
};

}  // namespace sx::dataplane
