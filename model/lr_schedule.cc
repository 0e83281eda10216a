// LR schedules evaluated from the global step; see lr_schedule.h for the formulas.
#include "model/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace sx::model {

namespace {
Status bad(const std::string& field, const std::string& what) {
  return Status::invalid_argument("lr schedule: " + field + " " + what);
}
int64_t to_steps(double epochs, int64_t steps_per_epoch) {
  return int64_t(std::llround(epochs * double(steps_per_epoch)));
}
}  // namespace

StatusOr<LrSchedule> LrSchedule::make(const LrScheduleConfig& c) {
  LrSchedule s;
  s.config_ = c;
  std::string base = c.name;
  bool warmup_name = false;
  const std::string suffix = "Warmup";
  if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
    warmup_name = true;
    base.resize(base.size() - suffix.size());
  }
  if (base == "Piecewise") {
    s.decay_ = LrDecay::kPiecewise;
  } else if (base == "Cosine") {
    s.decay_ = LrDecay::kCosine;
  } else if (base == "Linear") {
    s.decay_ = LrDecay::kLinear;
  } else {
    return bad("name", "'" + c.name + "' is not one of Piecewise, Cosine, Linear (optionally + Warmup)");
  }
  if (c.steps_per_epoch < 1) return bad("steps_per_epoch", "= " + std::to_string(c.steps_per_epoch) + ": must be >= 1");
  if (!(c.base_lr >= 0)) return bad("base_lr", "must be >= 0");
  double warmup = c.warmup_epochs.value_or(warmup_name ? 5.0 : 0.0);
  if (!(warmup >= 0)) return bad("warmup_epochs", "must be >= 0");
  s.warmup_steps_ = to_steps(warmup, c.steps_per_epoch);
  s.total_steps_ = to_steps(c.epochs, c.steps_per_epoch);
  if (s.decay_ != LrDecay::kPiecewise && s.total_steps_ <= s.warmup_steps_)
    return bad("epochs", "= " + std::to_string(c.epochs) + ": " + base + " needs more epochs than the warm-up (" +
                             std::to_string(warmup) + ")");
  if (s.decay_ == LrDecay::kPiecewise) {
    if (!c.boundary_epochs.empty() || !c.values.empty()) {
      if (c.values.size() != c.boundary_epochs.size() + 1)
        return bad("values", "has " + std::to_string(c.values.size()) + " entries; need boundary_epochs + 1 = " +
                                 std::to_string(c.boundary_epochs.size() + 1));
      for (size_t i = 0; i < c.boundary_epochs.size(); ++i) {
        if (i > 0 && !(c.boundary_epochs[i] > c.boundary_epochs[i - 1]))
          return bad("boundary_epochs[" + std::to_string(i) + "]", "must be greater than the previous boundary");
        s.boundary_steps_.push_back(to_steps(c.boundary_epochs[i], c.steps_per_epoch));
      }
    } else if (!(c.step_epochs > 0)) {
      return bad("step_epochs", "must be > 0 (or give boundary_epochs and values)");
    }
  }
  if (s.decay_ == LrDecay::kLinear && !(c.power > 0)) return bad("power", "must be > 0");
  if (c.scale_by_batch) {
    if (c.global_batch < 1) return bad("global_batch", "must be >= 1 when scale_by_batch is set");
    s.scale_ = double(c.global_batch) / 256.0;
  }
  return s;
}

double LrSchedule::decay_lr(int64_t step) const {
  const LrScheduleConfig& c = config_;
  switch (decay_) {
    case LrDecay::kPiecewise: {
      if (!boundary_steps_.empty() || !c.values.empty()) {
        size_t i = size_t(std::upper_bound(boundary_steps_.begin(), boundary_steps_.end(), step) - boundary_steps_.begin());
        return scale_ * c.values[i];
      }
      int64_t period = std::max<int64_t>(1, to_steps(c.step_epochs, c.steps_per_epoch));
      return scale_ * c.base_lr * std::pow(c.gamma, double(step / period));
    }
    case LrDecay::kCosine: {
      double t = double(std::clamp<int64_t>(step - warmup_steps_, 0, total_steps_ - warmup_steps_));
      double d = double(total_steps_ - warmup_steps_);
      return scale_ * (c.min_lr + (c.base_lr - c.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * t / d)));
    }
    case LrDecay::kLinear: {
      double t = double(std::clamp<int64_t>(step - warmup_steps_, 0, total_steps_ - warmup_steps_));
      double d = double(total_steps_ - warmup_steps_);
      return scale_ * (c.min_lr + (c.base_lr - c.min_lr) * std::pow(1.0 - t / d, c.power));
    }
  }
  return 0;
}

double LrSchedule::lr_at(int64_t step) const {
  if (step < 0) step = 0;
  if (step < warmup_steps_) {
    double target = decay_lr(warmup_steps_);
    return config_.warmup_start_lr + (target - config_.warmup_start_lr) * double(step) / double(warmup_steps_);
  }
  return decay_lr(step);
}

}  // namespace sx::model
