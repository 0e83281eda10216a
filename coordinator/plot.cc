#include "coordinator/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <map>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "common/plot.h"

namespace sx::coord {
namespace {

struct StepAgg {
  double epoch = NAN, lr = NAN;
  double loss_sum = 0, acc_sum = 0, img_s = 0;
  int loss_n = 0, acc_n = 0;
};

double num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

// One panel of `sx_coord plot`: y against epoch, over the range of its finite points.
void draw_panel(cv::Mat& img, cv::Rect box, const std::string& title, const std::vector<double>& xs,
                const std::vector<double>& ys, cv::Scalar color) {
  plot::Series xy;
  for (size_t i = 0; i < xs.size(); ++i) xy.push_back({xs[i], ys[i]});
  const cv::Rect area(box.x + 75, box.y + 30, box.width - 95, box.height - 75);
  const std::optional<plot::Panel> p = plot::Panel::fit(area, {&xy});
  if (!p) return plot::draw_empty(img, area, title);
  plot::draw_axes(img, *p, title, "epoch");
  plot::draw_series(img, *p, xy, color);
}

}  // namespace

StatusOr<PlotSeries> read_metrics_log(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::not_found("no metrics log " + path + ": has `sx_coord serve` run for this job dir?");
  // The newest generation wins for a repeated step (a relaunch from a checkpoint replays steps).
  std::map<int64_t, std::pair<uint32_t, StepAgg>> by_step;
  std::string line;
  size_t lineno = 0, bad = 0;
  while (std::getline(in, line)) {
    ++lineno;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      ++bad;  // a torn last line after a crash is expected; skip it
      continue;
    }
    int64_t step = j["step"].get<int64_t>();
    uint32_t gen = j.value("gen", 0u);
    auto& [g, agg] = by_step[step];
    if (gen > g) g = gen, agg = StepAgg{};
    else if (gen < g) continue;
    double spe = num(j, "spe"), epoch = num(j, "epoch");
    agg.epoch = spe > 0 ? static_cast<double>(step) / spe : epoch;
    double loss = num(j, "loss"), acc = num(j, "acc"), lr = num(j, "lr"), img_s = num(j, "img_s");
    if (std::isfinite(loss)) agg.loss_sum += loss, agg.loss_n++;
    if (std::isfinite(acc)) agg.acc_sum += acc, agg.acc_n++;
    if (std::isfinite(lr)) agg.lr = lr;
    if (std::isfinite(img_s)) agg.img_s += img_s;
  }
  PlotSeries s;
  s.skipped_lines = bad;
  for (const auto& [step, ga] : by_step) {
    const StepAgg& a = ga.second;
    s.step.push_back(step);
    s.epoch.push_back(a.epoch);
    s.loss.push_back(a.loss_n ? a.loss_sum / a.loss_n : NAN);
    s.accuracy.push_back(a.acc_n ? a.acc_sum / a.acc_n : NAN);
    s.lr.push_back(a.lr);
    s.img_per_sec.push_back(a.img_s);
  }
  return s;
}

Status plot_metrics(const std::string& metrics_path, const std::string& png_path, int width, int height) {
  SX_CHECK_ARG(width >= 400 && height >= 300, "plot size must be at least 400x300");
  SX_ASSIGN_OR_RETURN(PlotSeries s, read_metrics_log(metrics_path));
  if (s.step.empty()) return Status::not_found(metrics_path + " has no metrics yet (no heartbeat carried a step)");
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  int w = width / 2, h = height / 2;
  draw_panel(img, {0, 0, w, h}, "loss (mean over ranks)", s.epoch, s.loss, cv::Scalar(180, 60, 20));
  draw_panel(img, {w, 0, w, h}, "accuracy", s.epoch, s.accuracy, cv::Scalar(40, 150, 40));
  draw_panel(img, {0, h, w, h}, "learning rate", s.epoch, s.lr, cv::Scalar(30, 30, 200));
  draw_panel(img, {w, h, w, h}, "img/s (sum over ranks)", s.epoch, s.img_per_sec, cv::Scalar(150, 40, 150));
  return plot::write_png(img, png_path);
}

}  // namespace sx::coord
