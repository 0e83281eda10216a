// defines: sx::launch::BatchPlan, plan_resize — what a relaunch on another number of ranks changes in
// the job config, as `-o key=value` overrides appended after the user's.
//   elastic.keep_global_batch: true  -> the global batch G stays; per-rank batch b = G / (W · A) with
//                                       the smallest accumulation A for which b divides G exactly and is
//                                       <= the base per-rank batch b0 (so memory per rank never grows);
//                                       an error when there is none; LR schedule untouched.
//   elastic.keep_global_batch: false -> b and A stay; G' = b · W · A0, every LR of the schedule scales
//                                       by G' / G (linear rule; schedule.scale_by_batch already does it).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/config.h"

namespace sx::launch {

struct BatchPlan {
  int64_t global_batch = 0;
  int per_rank = 0;
  int accumulate = 1;
  double lr_factor = 1;                // applied to the schedule's LRs (1 = unchanged)
  std::vector<std::string> overrides;  // "key=value"; empty at the base world size
  std::string describe() const;        // "batch 32/rank x 3 x 1 accum = 96, LR x1"
};

// `config` is the job as given for `base_world` ranks; `world` is the size of this launch.
StatusOr<BatchPlan> plan_resize(const worker::JobConfig& config, int base_world, int world);

}  // namespace sx::launch
