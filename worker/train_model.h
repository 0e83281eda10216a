// defines: sx::worker::ResolvedJob (the config turned into concrete sizes for this world),
// resolve_job, make_model_spec, data_transform, checkpoint tensors of a Network (params/, momentum/,
// bn_stats/ as storage/ names them), the thread count per rank, and the network options (with the
// SyncBN reducer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/manifest.h"
#include "dataplane/transforms.h"
#include "model/network.h"
#include "model/se_resnext.h"
#include "storage/checkpoint.h"
#include "worker/comm_env.h"
#include "worker/config.h"

namespace sx::worker {

struct ResolvedJob {
  model::ModelSpec spec;
  int image_size = 0;
  int per_rank = 0;            // micro-batch per rank (b)
  int accumulate = 1;          // A
  int64_t global_batch = 0;    // W·b·A images per optimizer step
  int threads = 1;             // compute threads of this rank
  int64_t train_samples = 0;   // N of the training set (0 when there is none)
  int64_t steps_per_epoch = 0; // floor(N / global_batch)
  int64_t total_steps = 0;     // optimizer steps of the whole run
};

// manifest: the training set's (or the val set's in eval mode), for classes / channels.
StatusOr<ResolvedJob> resolve_job(const JobConfig& config, const dataplane::Manifest& manifest, int world_size,
                                  int local_size);

// Compute threads per rank: the config's, else max(1, cores / ranks on this node).
int threads_per_rank(int configured, int local_size);

// The reader's transform for training (train = true) or eval, with the config's normalisation.
dataplane::TransformConfig data_transform(const JobConfig& config, const ResolvedJob& job, int channels, bool train);

// SyncBN (numerics.sync_bn): BN's reducer, an MPI_SUM allreduce of its few doubles over env.world().
// It runs on the compute thread inside forward and backward, so the gradient allreduce must not
// overlap backward (MPI_THREAD_SERIALIZED: one MPI caller at a time); the trainer turns overlap off.
model::BnReducer sync_bn_reducer(MpiEnv& env);

// The Network's options for this job: per-rank batch, image size, seed, BN constants and, with
// numerics.sync_bn, the SyncBN reducer (env must outlive the network).
model::NetworkOptions network_options(const JobConfig& config, const ResolvedJob& job, MpiEnv& env);

// Named views of the network's buffers, for save (refs) and load (slots). Backend memory must be
// host-addressable (the CPU backend); a device backend would stage through host copies here.
std::vector<storage::TensorRef> checkpoint_refs(model::Network& net, bool with_momentum);
std::vector<storage::TensorSlot> checkpoint_slots(model::Network& net, bool with_momentum);

}  // namespace sx::worker
