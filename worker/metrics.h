// defines: sx::worker::MetricsLog (append-only JSON lines in the run directory, rank 0) and
// the names of the shared ProgressLine / format_duration (common/progress.h) it uses for the live line.
//
// metrics.jsonl records (one JSON object per line, "kind" first):
//   {"kind":"train","step":S,"epoch":E.fraction,"loss":L,"lr":LR,"img_s":R,"time_s":T}
//   {"kind":"eval","step":S,"epoch":E,"top1":P,"top5":P,"loss":L,"samples":N,"time_s":T}
//   {"kind":"epoch","epoch":E,"step":S,"train_loss":L,"top1":P|null,"top5":P|null,"time_s":T}
// A resumed run appends; readers keep the last record of each epoch.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "common/status.h"

namespace sx::worker {

class MetricsLog {
 public:
  MetricsLog() = default;  // disabled (ranks other than 0)
  static StatusOr<MetricsLog> open(const std::string& path);
  MetricsLog(MetricsLog&& other) noexcept : file_(other.file_), path_(std::move(other.path_)) { other.file_ = nullptr; }
  MetricsLog& operator=(MetricsLog&& other) noexcept;
  ~MetricsLog();

  Status write(const nlohmann::ordered_json& record);  // one line, flushed
  const std::string& path() const { return path_; }
  bool enabled() const { return file_ != nullptr; }

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

// The live step line and format_duration: common/progress.h (shared with sx_prep).
using sx::format_duration;
using sx::ProgressLine;

}  // namespace sx::worker
