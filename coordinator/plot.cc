#include "coordinator/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

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

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), std::fabs(v) >= 1e4 || (v != 0 && std::fabs(v) < 1e-3) ? "%.2e" : "%.4g", v);
  return buf;
}

// One panel: frame, y range labels, x range labels, title, polyline of the finite points.
void draw_panel(cv::Mat& img, cv::Rect box, const std::string& title, const std::vector<double>& xs,
                const std::vector<double>& ys, cv::Scalar color) {
  const cv::Scalar ink(40, 40, 40), grid(220, 220, 220);
  cv::Rect plot(box.x + 70, box.y + 30, box.width - 90, box.height - 60);
  cv::rectangle(img, plot, ink, 1);
  cv::putText(img, title, {box.x + 70, box.y + 20}, cv::FONT_HERSHEY_SIMPLEX, 0.6, ink, 1, cv::LINE_AA);
  double x0 = std::numeric_limits<double>::max(), x1 = -x0, y0 = x0, y1 = -x0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!std::isfinite(xs[i]) || !std::isfinite(ys[i])) continue;
    x0 = std::min(x0, xs[i]), x1 = std::max(x1, xs[i]), y0 = std::min(y0, ys[i]), y1 = std::max(y1, ys[i]);
  }
  if (x0 > x1) {
    cv::putText(img, "no data", {plot.x + plot.width / 2 - 30, plot.y + plot.height / 2}, cv::FONT_HERSHEY_SIMPLEX, 0.5,
                ink, 1, cv::LINE_AA);
    return;
  }
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= std::max(1e-6, std::fabs(y0) * 0.05), y1 += std::max(1e-6, std::fabs(y1) * 0.05);
  for (int k = 1; k < 4; ++k) {
    int y = plot.y + plot.height * k / 4;
    cv::line(img, {plot.x + 1, y}, {plot.x + plot.width - 1, y}, grid, 1);
  }
  auto px = [&](double x, double y) {
    return cv::Point(plot.x + static_cast<int>(std::lround((x - x0) / (x1 - x0) * plot.width)),
                     plot.y + plot.height - static_cast<int>(std::lround((y - y0) / (y1 - y0) * plot.height)));
  };
  cv::Point prev(-1, -1);
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!std::isfinite(xs[i]) || !std::isfinite(ys[i])) continue;
    cv::Point p = px(xs[i], ys[i]);
    if (prev.x >= 0) cv::line(img, prev, p, color, 2, cv::LINE_AA);
    else cv::circle(img, p, 2, color, -1);
    prev = p;
  }
  const double fs = 0.45;
  cv::putText(img, fmt(y1), {box.x + 5, plot.y + 10}, cv::FONT_HERSHEY_SIMPLEX, fs, ink, 1, cv::LINE_AA);
  cv::putText(img, fmt(y0), {box.x + 5, plot.y + plot.height}, cv::FONT_HERSHEY_SIMPLEX, fs, ink, 1, cv::LINE_AA);
  cv::putText(img, fmt(x0), {plot.x, plot.y + plot.height + 18}, cv::FONT_HERSHEY_SIMPLEX, fs, ink, 1, cv::LINE_AA);
  cv::putText(img, fmt(x1), {plot.x + plot.width - 40, plot.y + plot.height + 18}, cv::FONT_HERSHEY_SIMPLEX, fs, ink, 1,
              cv::LINE_AA);
  cv::putText(img, "epoch", {plot.x + plot.width / 2 - 20, plot.y + plot.height + 18}, cv::FONT_HERSHEY_SIMPLEX, fs, ink,
              1, cv::LINE_AA);
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
  try {
    if (!cv::imwrite(png_path, img)) return Status::unavailable("could not write " + png_path);
  } catch (const cv::Exception& e) {
    return Status::unavailable("could not write " + png_path + ": " + e.what());
  }
  return Status::ok();
}

}  // namespace sx::coord
