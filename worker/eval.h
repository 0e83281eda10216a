// defines: sx::worker::EvalResult, evaluate — top-1 / top-5 / loss of a network on a val reader,
// summed across ranks so every val sample counts exactly once (the reader pads the last step with
// masked rows, which are skipped here).
#pragma once

#include <cstdint>

#include "common/status.h"
#include "dataplane/reader.h"
#include "model/network.h"
#include "worker/comm_env.h"

namespace sx::worker {

struct EvalResult {
  int64_t samples = 0, top1 = 0, top5 = 0;
  double loss_sum = 0;  // cross-entropy (no smoothing), summed over samples
  int64_t nonfinite = 0, first_nonfinite = -1;  // samples with a NaN/inf logit (evaluate() then fails)
  double top1_pct() const { return samples ? 100.0 * double(top1) / double(samples) : 0.0; }
  double top5_pct() const { return samples ? 100.0 * double(top5) / double(samples) : 0.0; }
  double loss() const { return samples ? loss_sum / double(samples) : 0.0; }
};

// Runs one pass over the reader's epoch 0 with forward(false). The reader's per-rank batch must
// equal the network's batch. Collective over env (every rank must call it). A NaN or inf logit on
// any rank is a DataLoss error on every rank (a broken model gets no accuracy).
StatusOr<EvalResult> evaluate(model::Network& net, dataplane::Reader& reader, MpiEnv& env);

// Every parameter and BN statistic finite; else a DataLoss naming the first bad tensor. Checked
// before eval and inference because a NaN weight can be masked on the way to the logits (a ReLU
// computed as max(x, 0) turns NaN into 0), which would print a confident class for a broken model.
Status check_finite_parameters(model::Network& net);

// Top-k hits and the cross-entropy of one row of logits (K) against label; rank ties broken by
// class index as the backend's count_top_k does.
void score_row(const float* logits, int k, int label, EvalResult* out);

}  // namespace sx::worker
