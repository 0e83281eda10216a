#include "dataplane/prep_progress.h"

#include <string>

namespace sx::dataplane {
namespace {

std::string hms(double seconds) {
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof(buf), "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace

Progress::Progress(int64_t total, bool interactive, std::FILE* out)
    : total_(total), interactive_(interactive), out_(out), start_(std::chrono::steady_clock::now()), last_(start_) {}

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
  std::string tail = final_line ? "in " + hms(secs) : "ETA " + (rate > 0 ? hms((total_ - done) / rate) : std::string("?"));
  if (interactive_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, ' ');
    std::fprintf(out_, "\r[%s] %lld/%lld %5.1f%% %8.0f img/s %s\033[K%s", bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), 100 * frac, rate, tail.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(out_, "sx_prep: %lld/%lld (%.1f%%) %.0f img/s %s\n", static_cast<long long>(done),
                 static_cast<long long>(total_), 100 * frac, rate, tail.c_str());
  }
  std::fflush(out_);
}

}  // namespace sx::dataplane
