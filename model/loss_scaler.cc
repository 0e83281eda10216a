// LossScaler: the grow / back-off rule of dynamic loss scaling.
#include "model/loss_scaler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

namespace sx::model {
namespace {

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

StatusOr<LossScaler> LossScaler::make(const LossScalerConfig& c) {
  auto bad = [](const char* field, const std::string& what) {
    return Status::invalid_argument(std::string("loss scaler: ") + field + " " + what);
  };
  for (auto [name, v] : {std::pair{"init_scale", c.init_scale}, std::pair{"min_scale", c.min_scale},
                         std::pair{"max_scale", c.max_scale}})
    if (!(std::isfinite(v) && v > 0 && v <= 3.0e38)) return bad(name, "must be in (0, 3e38], got " + num(v));
  if (!(c.growth_factor > 1 && std::isfinite(c.growth_factor)))
    return bad("growth_factor", "must be > 1, got " + num(c.growth_factor));
  if (!(c.backoff_factor > 0 && c.backoff_factor < 1))
    return bad("backoff_factor", "must be in (0, 1), got " + num(c.backoff_factor));
  if (c.growth_interval < 1) return bad("growth_interval", "must be >= 1, got " + std::to_string(c.growth_interval));
  if (c.dynamic && !(c.min_scale <= c.init_scale && c.init_scale <= c.max_scale))
    return bad("init_scale", "must be in [min_scale, max_scale] = [" + num(c.min_scale) + ", " + num(c.max_scale) +
                                 "], got " + num(c.init_scale));
  return LossScaler(c);
}

StatusOr<ScaledStep> LossScaler::update(bool grads_finite) {
  if (grads_finite) {
    if (c_.dynamic && ++good_steps_ >= c_.growth_interval) {
      scale_ = std::min(scale_ * c_.growth_factor, c_.max_scale);
      good_steps_ = 0;
    }
    return ScaledStep::kApply;
  }
  ++skipped_;
  good_steps_ = 0;
  if (!c_.dynamic) return ScaledStep::kSkip;
  scale_ *= c_.backoff_factor;
  if (scale_ < c_.min_scale)
    return Status::data_loss("the gradients hold inf/NaN at every loss scale down to " + num(c_.min_scale) + " (" +
                             std::to_string(skipped_) +
                             " skipped steps): the run diverged; HINT: lower optimizer.lr, lengthen "
                             "schedule.warmup_epochs or train in numerics.precision=bf16");
  return ScaledStep::kSkip;
}

Status LossScaler::restore(double scale, int64_t good_steps) {
  if (!(std::isfinite(scale) && scale > 0) || good_steps < 0)
    return Status::invalid_argument("loss scaler: a recorded scale " + num(scale) + " with " +
                                    std::to_string(good_steps) + " good steps is not a valid state");
  if (c_.dynamic) {
    scale_ = std::clamp(scale, c_.min_scale, c_.max_scale);
    good_steps_ = std::min<int64_t>(good_steps, c_.growth_interval - 1);
  }
  return Status::ok();
}

}  // namespace sx::model
