// defines: sx::worker::run_job — what sx_worker does with a validated JobConfig on an MpiEnv:
// mode=train (the data-parallel training loop with eval, checkpoints, resume, metrics) or
// mode=eval (evaluate a checkpoint on data.val).
//
// One optimizer step (global batch G = W·b·A, b per rank, A micro-batches):
//   for each micro-batch: reader batch -> (mixup) -> forward -> loss -> backward; earlier
//   micro-batches' gradients are summed into a host buffer, and the last backward adds that sum to
//   each finished gradient prefix and hands it to the Communicator, which allreduces bucket by
//   bucket while backward continues -> wait_all -> grads /= A -> SGD with LR = schedule(step).
// The sample order is the data plane's pure function of (seed, epoch, position), so a resumed run
// restarts the reader at (epoch, step·G) and continues exactly.
#pragma once

#include "common/status.h"
#include "worker/comm_env.h"
#include "worker/config.h"

namespace sx::worker {

Status run_job(const JobConfig& config, MpiEnv& env);

}  // namespace sx::worker
