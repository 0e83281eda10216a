#include "common/progress.h"

#include <unistd.h>

#include <cmath>

namespace sx {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

ProgressLine::ProgressLine(const std::string& mode, bool enabled, std::FILE* out) : out_(out) {
  enabled_ = enabled && mode != "off";
  redraw_ = enabled_ && mode == "auto" && isatty(fileno(out));
}

void ProgressLine::update(const std::string& text) {
  if (!enabled_) return;
  if (redraw_) {
    std::fprintf(out_, "\r\033[K%s", text.c_str());
    dirty_ = true;
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::message(const std::string& text) {
  if (!enabled_) return;
  if (dirty_) std::fprintf(out_, "\r\033[K");
  dirty_ = false;
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

}  // namespace sx
