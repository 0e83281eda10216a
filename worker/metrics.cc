#include "worker/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include <unistd.h>

namespace sx::worker {

StatusOr<MetricsLog> MetricsLog::open(const std::string& path) {
  MetricsLog log;
  log.file_ = std::fopen(path.c_str(), "a");
  if (log.file_ == nullptr)
    return Status::unavailable(path + ": cannot open the metrics log: " + std::strerror(errno));
  log.path_ = path;
  return log;
}

MetricsLog& MetricsLog::operator=(MetricsLog&& other) noexcept {
  if (this != &other) {
    if (file_) std::fclose(file_);
    file_ = other.file_;
    path_ = std::move(other.path_);
    other.file_ = nullptr;
  }
  return *this;
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

Status MetricsLog::write(const nlohmann::ordered_json& record) {
  if (!file_) return Status::ok();
  const std::string line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    return Status::unavailable(path_ + ": cannot append to the metrics log: " + std::strerror(errno));
  return Status::ok();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

ProgressLine::ProgressLine(const std::string& mode, bool enabled) {
  enabled_ = enabled && mode != "off";
  redraw_ = mode == "auto" && isatty(STDERR_FILENO);
}

void ProgressLine::update(const std::string& text) {
  if (!enabled_) return;
  if (redraw_) {
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    dirty_ = true;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::message(const std::string& text) {
  if (!enabled_) return;
  if (dirty_) std::fprintf(stderr, "\r\033[K");
  dirty_ = false;
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

}  // namespace sx::worker
