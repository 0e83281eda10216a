// defines: sx::model::LossScalerConfig, LossScaler — loss scaling for fp16 training (the rule of
// PyTorch's GradScaler / NVIDIA Apex): the loss gradient is multiplied by `scale` so that small
// gradients survive fp16, the SGD pass divides it out again (SgdHyper::grad_scale), and a step whose
// gradients hold an inf or NaN is skipped. Dynamic: the scale halves on every overflow and doubles
// after `growth_interval` good steps in a row. Pure host logic (the trainer asks the backend whether
// the reduced gradient buffer is finite and feeds the answer here), so every machine tests it.
//
// With the default factors the scale stays a power of two, so scaling and unscaling are exact in
// floating point: a run that never overflows is bitwise the run without scaling.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace sx::model {

struct LossScalerConfig {
  bool dynamic = true;            // false: a static scale (overflowing steps are still skipped)
  double init_scale = 65536.0;    // 2^16 (PyTorch's default)
  double growth_factor = 2.0;     // applied after growth_interval finite steps in a row
  double backoff_factor = 0.5;    // applied on an overflow
  int64_t growth_interval = 2000;
  double min_scale = 1.0 / 65536; // dynamic: falling below it is an error (inf/NaN at every scale)
  double max_scale = 16777216.0;  // 2^24: growth stops here (dlogits · scale must stay finite in fp32)
};

// What to do with the step whose gradients were just checked.
enum class ScaledStep : uint8_t {
  kApply,  // finite: run the optimizer with grad_scale / scale()
  kSkip,   // inf or NaN: leave parameters and momentum unchanged
};

class LossScaler {
 public:
  // Checks the config (positive finite scales, growth > 1, 0 < backoff < 1, interval >= 1,
  // min <= init <= max); errors name the field.
  static StatusOr<LossScaler> make(const LossScalerConfig& config);

  float scale() const { return float(scale_); }   // multiply the loss gradient by this
  float inv_scale() const { return float(1.0 / scale_); }
  // Feeds one step's overflow check. Returns whether to apply it; an error when a dynamic scale has
  // shrunk below min_scale (the gradients are not finite at any scale: the run diverged).
  StatusOr<ScaledStep> update(bool grads_finite);

  int64_t good_steps() const { return good_steps_; }  // finite steps since the last change of scale
  int64_t skipped_steps() const { return skipped_; }  // overflows so far (this process's lifetime)
  // Resume: the scale and good-step count a checkpoint recorded (checked against the config's range).
  Status restore(double scale, int64_t good_steps);

 private:
  explicit LossScaler(const LossScalerConfig& config) : c_(config), scale_(config.init_scale) {}
  LossScalerConfig c_;
  double scale_;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace sx::model
