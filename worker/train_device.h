// defines: sx::worker::make_job_backend (the config's `device` and `numerics.precision` -> the
// Backend of this rank), make_loss_scaler (`numerics.loss_scale*` -> the fp16 loss scaler, or
// none) and HostStage (host copies of a device network's flat buffers, for the parts of the job that
// read or write them on the host: start-state broadcast, checkpoints, BN-statistics averaging).
//
// device: cuda takes the GPU of the rank's local rank (MPI_Comm_split_type SHARED, MpiEnv). Without a
// usable GPU the error is one line naming the failed call and what was expected (model/cuda/README.md).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "common/status.h"
#include "model/backend.h"
#include "model/loss_scaler.h"
#include "model/network.h"
#include "storage/checkpoint.h"
#include "worker/comm_env.h"
#include "worker/config.h"

namespace sx::worker {

// threads: the CPU backend's compute threads (ResolvedJob::threads).
StatusOr<std::unique_ptr<model::Backend>> make_job_backend(const JobConfig& config, const MpiEnv& env, int threads);

// numerics.loss_scale: auto = dynamic for fp16, none otherwise; none gives an empty optional.
StatusOr<std::optional<model::LossScaler>> make_loss_scaler(const JobConfig& config);

// The flat buffers of a Network as host memory. On a host backend (CPU) these are the network's
// own buffers and pull/push do nothing; on a device backend they are mirrors, and pull (device ->
// host) / push (host -> device) copy the parts asked for. Checkpoints therefore have the same format
// whatever the device: a CPU checkpoint resumes on a GPU and back.
class HostStage {
 public:
  enum Part : unsigned { kParams = 1, kMomentum = 2, kBnStats = 4, kAll = 7 };
  explicit HostStage(model::Network& net);
  bool mirrored() const { return mirrored_; }
  Status pull(unsigned parts);  // host copies = the network's (waits for queued work)
  Status push(unsigned parts);  // the network's = host copies
  float* params() { return mirrored_ ? params_.data() : net_.params_data(); }
  float* momentum() { return mirrored_ ? momentum_.data() : net_.momentum_data(); }
  float* bn_stats() { return mirrored_ ? bn_stats_.data() : net_.bn_stats_data(); }
  // checkpoint_refs / checkpoint_slots (train_model.h) rebased onto the host copies.
  std::vector<storage::TensorRef> refs(bool with_momentum);
  std::vector<storage::TensorSlot> slots(bool with_momentum);

 private:
  template <typename T> void rebase(std::vector<T>& views);
  model::Network& net_;
  bool mirrored_ = false;
  std::vector<float> params_, momentum_, bn_stats_;
};

}  // namespace sx::worker
