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

}  // namespace sx::worker
