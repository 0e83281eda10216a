// defines: sx::plot::Panel, draw_axes, draw_series, write_png — the one drawing module behind every
// PNG curve (sx_worker's curves.png, `sx_coord plot`): a panel with grid, tick labels and title,
// polylines of the finite points, and a PNG written under a temporary name then renamed. OpenCV.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "common/status.h"

namespace sx::plot {

using Series = std::vector<std::pair<double, double>>;  // (x, y) points; non-finite ones are skipped

struct Panel {
  cv::Rect area;  // the plot area inside the image
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  cv::Point at(double x, double y) const;
  // The range of the series' finite points (widened when flat); nullopt when there are none.
  static std::optional<Panel> fit(cv::Rect area, const std::vector<const Series*>& series);
};

// Frame, 4 horizontal grid lines with y labels, 5 x labels, the title above, xlabel below.
void draw_axes(cv::Mat& img, const Panel& p, const std::string& title, const std::string& xlabel);
// "no data" in the middle of an empty panel area, with its frame and title.
void draw_empty(cv::Mat& img, cv::Rect area, const std::string& title);
void draw_series(cv::Mat& img, const Panel& p, const Series& xy, cv::Scalar color);
// A short text in the panel's lower right corner (e.g. the last value).
void draw_note(cv::Mat& img, const Panel& p, const std::string& text, cv::Scalar color);
// "%.4g", or "%.2e" for very large or small magnitudes.
std::string format_tick(double v);

// Writes PATH.tmp.png, then renames it to PATH: a reader never sees a half-written plot.
Status write_png(const cv::Mat& img, const std::string& path);

}  // namespace sx::plot
