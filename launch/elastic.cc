#include "launch/elastic.h"

#include <cstdio>

namespace sx::launch {
namespace {

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string kv(const std::string& key, const std::string& value) {
  std::string s = key;
  s += '=';
  s += value;
  return s;
}

}  // namespace

std::string BatchPlan::describe() const {
  std::string s = "batch ";  // appended piecewise: GCC 12 warns (-Wrestrict) on "literal" + std::string temporaries
  s += std::to_string(per_rank) + "/rank x " + std::to_string(global_batch / (int64_t(per_rank) * accumulate));
  s += " x " + std::to_string(accumulate) + " accum = " + std::to_string(global_batch) + ", LR x" + num(lr_factor);
  return s;
}

StatusOr<BatchPlan> plan_resize(const worker::JobConfig& c, int base_world, int world) {
  if (base_world < 1 || world < 1) return Status::invalid_argument("plan_resize: world sizes must be >= 1");
  const int a0 = c.batch.accumulate;
  const int64_t g0 = c.batch.global > 0 ? c.batch.global : int64_t(c.batch.per_rank) * base_world * a0;
  if (g0 % (int64_t(base_world) * a0) != 0)
    return Status::invalid_argument("batch.global " + std::to_string(g0) + " is not divisible by " +
                                    std::to_string(base_world) + " ranks x batch.accumulate " + std::to_string(a0));
  const int b0 = c.batch.per_rank > 0 ? c.batch.per_rank : int(g0 / (int64_t(base_world) * a0));
  BatchPlan p;
  if (world == base_world) {
    p.global_batch = g0;
    p.per_rank = b0;
    p.accumulate = a0;
    return p;
  }
  if (c.elastic.keep_global_batch) {
    // The fewest micro-batches whose per-rank batch divides G exactly and does not exceed the one the
    // job ran with (a rank's memory never grows with a shrink; a grow may use a smaller batch).
    for (int a = 1; int64_t(world) * a <= g0; ++a) {
      if (g0 % (int64_t(world) * a) != 0 || g0 / (int64_t(world) * a) > b0) continue;
      p.global_batch = g0;
      p.accumulate = a;
      p.per_rank = int(g0 / (int64_t(world) * a));
      p.overrides = {kv("batch.global", std::to_string(g0)), "batch.per_rank=0", kv("batch.accumulate", std::to_string(a))};
      return p;
    }
    return Status::invalid_argument(
        "elastic.keep_global_batch: the global batch " + std::to_string(g0) + " cannot be split evenly over " +
        std::to_string(world) + " ranks with at most " + std::to_string(b0) + " images per rank; HINT: pick a global batch with more divisors "
        "(a multiple of 12 fits 1-4 ranks) or set elastic.keep_global_batch=false");
  }
  p.per_rank = b0;
  p.accumulate = a0;
  p.global_batch = int64_t(b0) * world * a0;
  p.lr_factor = double(p.global_batch) / double(g0);
  p.overrides = {kv("batch.per_rank", std::to_string(b0)), "batch.global=0", kv("batch.accumulate", std::to_string(a0))};
  if (!c.schedule.scale_by_batch) {  // with scale_by_batch the worker rescales from the new global batch itself
    const double f = p.lr_factor;
    p.overrides.push_back(kv("optimizer.lr", num(c.optimizer.lr * f)));
    p.overrides.push_back(kv("schedule.warmup_start_lr", num(c.schedule.warmup_start_lr * f)));
    p.overrides.push_back(kv("schedule.min_lr", num(c.schedule.min_lr * f)));
    if (!c.schedule.values.empty()) {
      std::string v = "[";
      for (size_t i = 0; i < c.schedule.values.size(); ++i) {
        if (i) v += ",";
        v += num(c.schedule.values[i] * f);
      }
      p.overrides.push_back(kv("schedule.values", v + "]"));
    }
  }
  return p;
}

}  // namespace sx::launch
