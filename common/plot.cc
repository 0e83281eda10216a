#include "common/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace sx::plot {
namespace {

const cv::Scalar kInk(40, 40, 40), kGrid(225, 225, 225);

void text(cv::Mat& img, const std::string& s, cv::Point at, double scale, cv::Scalar color = kInk) {
  cv::putText(img, s, at, cv::FONT_HERSHEY_SIMPLEX, scale, color, 1, cv::LINE_AA);
}

bool finite(const std::pair<double, double>& p) { return std::isfinite(p.first) && std::isfinite(p.second); }

}  // namespace

cv::Point Panel::at(double x, double y) const {
  const double fx = (x - x0) / std::max(x1 - x0, 1e-12), fy = (y - y0) / std::max(y1 - y0, 1e-12);
  return {area.x + int(std::lround(fx * area.width)), area.y + area.height - int(std::lround(fy * area.height))};
}

std::optional<Panel> Panel::fit(cv::Rect area, const std::vector<const Series*>& series) {
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series* s : series)
    for (const auto& p : *s)
      if (finite(p)) {
        x0 = std::min(x0, p.first), x1 = std::max(x1, p.first);
        y0 = std::min(y0, p.second), y1 = std::max(y1, p.second);
      }
  if (x0 > x1) return std::nullopt;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= std::max(1e-6, std::fabs(y0) * 0.05), y1 += std::max(1e-6, std::fabs(y1) * 0.05);
  return Panel{area, x0, x1, y0, y1};
}

std::string format_tick(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, std::fabs(v) >= 1e4 || (v != 0 && std::fabs(v) < 1e-3) ? "%.2e" : "%.4g", v);
  return buf;
}

void draw_axes(cv::Mat& img, const Panel& p, const std::string& title, const std::string& xlabel) {
  for (int i = 0; i <= 4; ++i) {
    const double y = p.y0 + (p.y1 - p.y0) * i / 4.0;
    if (i > 0 && i < 4) cv::line(img, p.at(p.x0, y) + cv::Point(1, 0), p.at(p.x1, y) - cv::Point(1, 0), kGrid, 1);
    text(img, format_tick(y), p.at(p.x0, y) + cv::Point(-62, 4), 0.4);
  }
  for (int i = 0; i <= 4; ++i) {
    const double x = p.x0 + (p.x1 - p.x0) * i / 4.0;
    cv::line(img, p.at(x, p.y0), p.at(x, p.y0) + cv::Point(0, 4), kInk, 1);
    text(img, format_tick(x), p.at(x, p.y0) + cv::Point(-8, 18), 0.4);
  }
  cv::rectangle(img, p.area, kInk, 1);
  text(img, title, {p.area.x, p.area.y - 10}, 0.55);
  text(img, xlabel, {p.area.x + p.area.width / 2 - 20, p.area.y + p.area.height + 36}, 0.45);
}

void draw_empty(cv::Mat& img, cv::Rect area, const std::string& title) {
  cv::rectangle(img, area, kInk, 1);
  text(img, title, {area.x, area.y - 10}, 0.55);
  text(img, "no data", {area.x + area.width / 2 - 30, area.y + area.height / 2}, 0.5);
}

void draw_series(cv::Mat& img, const Panel& p, const Series& xy, cv::Scalar color) {
  std::optional<cv::Point> prev;
  for (const auto& pt : xy) {
    if (!finite(pt)) continue;
    const cv::Point q = p.at(pt.first, pt.second);
    if (prev) cv::line(img, *prev, q, color, 2, cv::LINE_AA);
    if (xy.size() <= 64) cv::circle(img, q, 3, color, cv::FILLED, cv::LINE_AA);  // markers while they can be told apart
    prev = q;
  }
}

void draw_note(cv::Mat& img, const Panel& p, const std::string& s, cv::Scalar color) {
  text(img, s, {p.area.x + p.area.width - 150, p.area.y + p.area.height - 10}, 0.45, color);
}

Status write_png(const cv::Mat& img, const std::string& path) {
  const std::string tmp = path + ".tmp.png";
  try {
    if (!cv::imwrite(tmp, img)) return Status::unavailable(path + ": cannot write the plot (" + tmp + ")");
  } catch (const cv::Exception& e) {
    return Status::unavailable(path + ": cannot write the plot: " + e.what());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::unavailable(path + ": cannot rename the plot into place");
  }
  return Status::ok();
}

}  // namespace sx::plot
