// defines: sx::worker::MetricsLog (append-only JSON lines in the run directory, rank 0) and
// ProgressLine (the live "epoch, step, loss, LR, img/s, ETA" line on rank 0), format_duration.
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

// "1h02m", "4m12s", "37s".
std::string format_duration(double seconds);

class ProgressLine {
 public:
  // mode: "auto" (redraw when stderr is a terminal, else one line per update), "on" (one line per
  // update), "off".
  ProgressLine(const std::string& mode, bool enabled);
  void update(const std::string& text);  // redraws or prints
  void message(const std::string& text);  // a permanent line (ends a redrawn line first)

 private:
  bool enabled_ = false;
  bool redraw_ = false;
  bool dirty_ = false;  // a redrawn line is on screen
};

}  // namespace sx::worker
