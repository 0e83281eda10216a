// defines: sx::format_duration ("1h02m", "4m12s", "37s") and sx::ProgressLine — the one live
// progress line of every tool: redrawn in place when stderr is a terminal, plain lines otherwise
// (logs, CI). sx_worker's step line and sx_prep's bar both print through it.
#pragma once

#include <cstdio>
#include <string>

namespace sx {

// "1h02m", "4m12s", "37s"; "?" for a negative or non-finite value.
std::string format_duration(double seconds);

class ProgressLine {
 public:
  // mode: "auto" (redraw when `out` is a terminal, else one line per update), "on" (one line per
  // update), "off" (nothing).
  ProgressLine(const std::string& mode, bool enabled, std::FILE* out = stderr);
  bool redraws() const { return redraw_; }
  void update(const std::string& text);   // redraws, or prints a line
  void message(const std::string& text);  // a permanent line (ends a redrawn line first)

 private:
  std::FILE* out_ = stderr;
  bool enabled_ = false;
  bool redraw_ = false;
  bool dirty_ = false;  // a redrawn line is on screen
};

}  // namespace sx
