// defines: sx::coord::PlotSeries, read_metrics_log, plot_metrics — `sx_coord plot`: four panels
// (loss, accuracy, LR, img/s against epoch) drawn with OpenCV from DIR/metrics.jsonl.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::coord {

// One point per global step: loss/accuracy averaged over the ranks that reported it, img/s summed.
struct PlotSeries {
  std::vector<int64_t> step;
  std::vector<double> epoch, loss, accuracy, lr, img_per_sec;
  size_t skipped_lines = 0;  // unparsable lines (e.g. torn by a crash)
};

StatusOr<PlotSeries> read_metrics_log(const std::string& path);
Status plot_metrics(const std::string& metrics_path, const std::string& png_path, int width = 1200, int height = 800);

}  // namespace sx::coord
