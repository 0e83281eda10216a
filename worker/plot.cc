#include "worker/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace sx::worker {

StatusOr<std::vector<EpochPoint>> read_epoch_points(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::not_found(path + ": cannot open");
  std::map<int, EpochPoint> by_epoch;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || j.value("kind", "") != "epoch") continue;  // a torn last line is fine
    EpochPoint p;
    p.epoch = j.value("epoch", 0);
    p.train_loss = j.value("train_loss", 0.0);
    if (j.contains("top1") && j["top1"].is_number()) p.top1 = j["top1"].get<double>();
    if (j.contains("top5") && j["top5"].is_number()) p.top5 = j["top5"].get<double>();
    by_epoch[p.epoch] = p;
  }
  std::vector<EpochPoint> points;
  for (auto& [e, p] : by_epoch) points.push_back(p);
  return points;
}

namespace {

struct Panel {
  cv::Rect area;  // plot area inside the image
  double x0, x1, y0, y1;
  cv::Point at(double x, double y) const {
    const double fx = (x - x0) / std::max(x1 - x0, 1e-12), fy = (y - y0) / std::max(y1 - y0, 1e-12);
    return {area.x + int(std::lround(fx * area.width)), area.y + area.height - int(std::lround(fy * area.height))};
  }
};

void draw_axes(cv::Mat& img, const Panel& p, const std::string& title, const char* yfmt) {
  const cv::Scalar grid(225, 225, 225), ink(40, 40, 40);
  for (int i = 0; i <= 4; ++i) {
    const double y = p.y0 + (p.y1 - p.y0) * i / 4.0;
    cv::line(img, p.at(p.x0, y), p.at(p.x1, y), grid, 1);
    char buf[32];
    std::snprintf(buf, sizeof buf, yfmt, y);
    cv::putText(img, buf, p.at(p.x0, y) + cv::Point(-58, 4), cv::FONT_HERSHEY_SIMPLEX, 0.4, ink, 1, cv::LINE_AA);
  }
  const int nx = int(p.x1 - p.x0);
  const int every = std::max(1, nx / 10);
  for (int e = int(p.x0); e <= int(p.x1); e += every) {
    cv::line(img, p.at(e, p.y0), p.at(e, p.y0) + cv::Point(0, 4), ink, 1);
    cv::putText(img, std::to_string(e), p.at(e, p.y0) + cv::Point(-4, 18), cv::FONT_HERSHEY_SIMPLEX, 0.4, ink, 1,
                cv::LINE_AA);
  }
  cv::rectangle(img, p.area, ink, 1);
  cv::putText(img, title, {p.area.x, p.area.y - 10}, cv::FONT_HERSHEY_SIMPLEX, 0.55, ink, 1, cv::LINE_AA);
  cv::putText(img, "epoch", {p.area.x + p.area.width / 2 - 20, p.area.y + p.area.height + 36}, cv::FONT_HERSHEY_SIMPLEX,
              0.45, ink, 1, cv::LINE_AA);
}

void draw_series(cv::Mat& img, const Panel& p, const std::vector<std::pair<double, double>>& xy, cv::Scalar color) {
  for (size_t i = 0; i < xy.size(); ++i) {
    const cv::Point q = p.at(xy[i].first, xy[i].second);
    if (i > 0) cv::line(img, p.at(xy[i - 1].first, xy[i - 1].second), q, color, 2, cv::LINE_AA);
    cv::circle(img, q, 3, color, cv::FILLED, cv::LINE_AA);
  }
}

}  // namespace

Status plot_curves(const std::string& metrics_jsonl, const std::string& png_path) {
  SX_ASSIGN_OR_RETURN(std::vector<EpochPoint> points, read_epoch_points(metrics_jsonl));
  cv::Mat img(420, 960, CV_8UC3, cv::Scalar(255, 255, 255));
  const double last = points.empty() ? 1 : std::max(1, points.back().epoch);
  std::vector<std::pair<double, double>> loss, top1, top5;
  double lmax = 0, amin = 100;
  for (const EpochPoint& e : points) {
    loss.push_back({e.epoch, e.train_loss});
    lmax = std::max(lmax, e.train_loss);
    if (e.top1) {
      top1.push_back({e.epoch, *e.top1});
      amin = std::min(amin, *e.top1);
    }
    if (e.top5) top5.push_back({e.epoch, *e.top5});
  }
  Panel pl{cv::Rect(70, 40, 370, 320), 0, last, 0, lmax > 0 ? lmax * 1.05 : 1};
  const double alo = std::max(0.0, std::floor((amin - 2) / 5) * 5);
  Panel pa{cv::Rect(560, 40, 370, 320), 0, last, alo, 100};
  draw_axes(img, pl, "train loss", "%.3f");
  draw_axes(img, pa, "val accuracy (%): top-1 blue, top-5 green", "%.1f");
  draw_series(img, pl, loss, cv::Scalar(40, 40, 200));
  draw_series(img, pa, top5, cv::Scalar(60, 160, 60));
  draw_series(img, pa, top1, cv::Scalar(200, 90, 30));
  if (!top1.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "last top-1 %.2f%%", top1.back().second);
    cv::putText(img, buf, {pa.area.x + pa.area.width - 150, pa.area.y + pa.area.height - 10}, cv::FONT_HERSHEY_SIMPLEX,
                0.45, cv::Scalar(200, 90, 30), 1, cv::LINE_AA);
  }
  const std::string tmp = png_path + ".tmp.png";
  if (!cv::imwrite(tmp, img)) return Status::unavailable(png_path + ": cannot write the plot");
  if (std::rename(tmp.c_str(), png_path.c_str()) != 0) return Status::unavailable(png_path + ": cannot rename the plot");
  return Status::ok();
}

}  // namespace sx::worker
