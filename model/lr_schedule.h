// defines: sx::model::LrScheduleConfig, LrSchedule — the learning rate as a pure function of the
// global step (PaddleClas names: Piecewise, Cosine, Linear, and the same with "Warmup" appended).
//
// Every rank evaluates the same function of the same step, so no LR state needs to be exchanged;
// a resumed job gets the same LR from the step alone.
//
// Timeline (steps; epochs are converted with steps_per_epoch):
//   [0, W)      linear warm-up from warmup_start_lr to the decay phase's first value (W = warmup_epochs)
//   [W, T]      the decay:  Cosine  lr = min + (base - min)·(1 + cos(π·t/D))/2
//                           Linear  lr = end + (base - end)·(1 - t/D)^power
//               with t = step - W, D = T - W, T = epochs (t clipped to D);
//               Piecewise   values[i] where i = number of boundaries <= step (boundaries are
//                           absolute epochs, warm-up included), or base·gamma^floor(epoch/step_epochs).
// Batch scaling (Goyal et al.): with scale_by_batch, every LR of the decay phase (base, values,
// min/end) is multiplied by global_batch/256; warmup_start_lr is absolute.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::model {

enum class LrDecay : uint8_t { kPiecewise, kCosine, kLinear };

struct LrScheduleConfig {
  std::string name = "Piecewise";            // Piecewise|Cosine|Linear, optionally + "Warmup"
  double base_lr = 0.1;
  int64_t steps_per_epoch = 1;
  double epochs = 0;                         // total training length; needed by Cosine and Linear

  // Piecewise: either boundaries with values (values.size() == boundaries.size() + 1) ...
  std::vector<double> boundary_epochs;
  std::vector<double> values;
  // ... or decay by gamma every step_epochs (when boundaries are empty).
  double step_epochs = 30;
  double gamma = 0.1;

  double min_lr = 0;                         // Cosine floor, Linear end value
  double power = 1.0;                        // Linear: polynomial power

  // Warm-up; unset means 5 epochs for "...Warmup" names (PaddleClas default) and none otherwise.
  std::optional<double> warmup_epochs;
  double warmup_start_lr = 0;

  bool scale_by_batch = false;               // multiply by global_batch / 256
  int64_t global_batch = 256;
};

class LrSchedule {
 public:
  // Validates the config (names the bad field).
  static StatusOr<LrSchedule> make(const LrScheduleConfig& config);
  double lr_at(int64_t global_step) const;
  LrDecay decay() const { return decay_; }
  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  double decay_lr(int64_t step) const;  // the schedule without warm-up, at an absolute step

  LrScheduleConfig config_;
  LrDecay decay_ = LrDecay::kPiecewise;
  double scale_ = 1.0;
  int64_t warmup_steps_ = 0, total_steps_ = 0;
  std::vector<int64_t> boundary_steps_;
};

}  // namespace sx::model
