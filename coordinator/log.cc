#include "coordinator/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace sx::coord {

void log_line(const char* level, const std::string& who, const std::string& msg) {
  static std::mutex mu;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "[%s.%03d] [%s] %s %s\n", ts, static_cast<int>(ms), who.c_str(), level, msg.c_str());
}

std::string num_str(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", x);
  return buf;
}

}  // namespace sx::coord
