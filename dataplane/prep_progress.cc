#include "dataplane/prep_progress.h"

#include <string>

namespace sx::dataplane {

Progress::Progress(int64_t total, bool interactive, std::FILE* out)
    : total_(total), interactive_(interactive), line_(interactive ? "auto" : "on", true, out),
      start_(std::chrono::steady_clock::now()), last_(start_) {
  interactive_ = line_.redraws();  // "interactive" asks for redraws; a non-terminal gets lines
}

void Progress::update(int64_t done) {
  if (done >= total_) return;  // finish() prints the last line
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (interactive_) {
    if (since < 0.1) return;  // at most 10 redraws per second
  } else {
    int decile = total_ > 0 ? static_cast<int>(10 * done / total_) : 10;
    if (since < 10.0 && decile == last_decile_) return;
    last_decile_ = decile;
  }
  last_ = now;
  print(done, false);
}

void Progress::finish(int64_t done) { print(done, true); }

void Progress::print(int64_t done, bool final_line) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? done / secs : 0.0;
  double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  std::string tail = final_line ? "in " + format_duration(secs)
                                 : "ETA " + (rate > 0 ? format_duration((total_ - done) / rate) : std::string("?"));
  char text[256];
  if (interactive_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, ' ');
    std::snprintf(text, sizeof text, "[%s] %lld/%lld %5.1f%% %8.0f img/s %s", bar.c_str(), static_cast<long long>(done),
                  static_cast<long long>(total_), 100 * frac, rate, tail.c_str());
  } else {
    std::snprintf(text, sizeof text, "sx_prep: %lld/%lld (%.1f%%) %.0f img/s %s", static_cast<long long>(done),
                  static_cast<long long>(total_), 100 * frac, rate, tail.c_str());
  }
  if (final_line) line_.message(text);
  else line_.update(text);
}

}  // namespace sx::dataplane
