#include "worker/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/plot.h"

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

Status plot_curves(const std::string& metrics_jsonl, const std::string& png_path) {
  SX_ASSIGN_OR_RETURN(std::vector<EpochPoint> points, read_epoch_points(metrics_jsonl));
  cv::Mat img(420, 960, CV_8UC3, cv::Scalar(255, 255, 255));
  const double last = points.empty() ? 1 : std::max(1, points.back().epoch);
  plot::Series loss, top1, top5;
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
  const plot::Panel pl{cv::Rect(70, 40, 370, 320), 0, last, 0, lmax > 0 ? lmax * 1.05 : 1};
  const double alo = std::max(0.0, std::floor((amin - 2) / 5) * 5);
  const plot::Panel pa{cv::Rect(560, 40, 370, 320), 0, last, alo, 100};
  plot::draw_axes(img, pl, "train loss", "epoch");
  plot::draw_axes(img, pa, "val accuracy (%): top-1 blue, top-5 green", "epoch");
  plot::draw_series(img, pl, loss, cv::Scalar(40, 40, 200));
  plot::draw_series(img, pa, top5, cv::Scalar(60, 160, 60));
  plot::draw_series(img, pa, top1, cv::Scalar(200, 90, 30));
  if (!top1.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "last top-1 %.2f%%", top1.back().second);
    plot::draw_note(img, pa, buf, cv::Scalar(200, 90, 30));
  }
  return plot::write_png(img, png_path);
}

}  // namespace sx::worker
