// defines: sx::worker::EpochPoint, read_epoch_points, plot_curves — the per-epoch loss / accuracy
// PNG of a run (OpenCV drawing, no Python), from the "epoch" records of metrics.jsonl.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::worker {

struct EpochPoint {
  int epoch = 0;
  double train_loss = 0;
  std::optional<double> top1, top5;  // percent; absent when the epoch had no eval
};

// The last "epoch" record of each epoch (a resumed run may have repeated some), by epoch.
StatusOr<std::vector<EpochPoint>> read_epoch_points(const std::string& metrics_jsonl);

// Two panels side by side: train loss per epoch, and val top-1 (and top-5) per epoch.
Status plot_curves(const std::string& metrics_jsonl, const std::string& png_path);

}  // namespace sx::worker
