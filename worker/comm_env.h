// defines: sx::worker::MpiEnv — MPI_Init_thread / MPI_Finalize as RAII, this process's place in the
// job (rank, world size, local rank and size on its node), and the small collectives the trainer
// needs outside the gradient path: broadcast of a float buffer (parameters at start), allreduce of
// scalars (metrics, eval top-1 counts as int64), barrier.
//
// Works without mpirun (Open MPI singleton init): world size 1, every collective a no-op copy.
// Thread level: the gradient Communicator's overlap thread is the only thread that calls MPI while
// a step's buckets are in flight, and the caller waits (wait_all) before it calls MPI again, so calls
// never run concurrently but may come from two threads: that is MPI_THREAD_SERIALIZED (FUNNELED
// would require every call to come from the main thread). Open MPI implements SERIALIZED without
// locks, so it costs nothing over FUNNELED; MULTIPLE would add locking to every call.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "worker/mpi_util.h"

namespace sx::worker {

struct MpiEnvOptions {
  int thread_level = MPI_THREAD_SERIALIZED;  // what we ask MPI_Init_thread for; init fails if less is provided
};

class MpiEnv {
 public:
  // Initialises MPI (or adopts an MPI that is already initialised, and then leaves finalising to
  // its owner). argc/argv may be null.
  static StatusOr<std::unique_ptr<MpiEnv>> init(int* argc, char*** argv, const MpiEnvOptions& options = {});
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }   // within MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)
  int local_size() const { return local_size_; }
  int node_count() const { return node_count_; }   // number of shared-memory nodes in the job
  int thread_level() const { return thread_level_; }
  bool is_root() const { return rank_ == 0; }
  MPI_Comm world() const { return world_; }        // our duplicate of MPI_COMM_WORLD (errors return)

  // data[] on every rank becomes root's data[].
  Status bcast(std::span<float> data, int root = 0);
  // Element-wise sums across ranks, in place.
  Status allreduce_sum(std::span<int64_t> values);
  Status allreduce_sum(std::span<double> values);
  // Element-wise maximum across ranks, in place (e.g. the slowest rank's time).
  Status allreduce_max(std::span<double> values);
  Status barrier();

  // A failure that every rank detected together and returns (the shared-storage check): sx_worker's
  // main then lets rank 0 print the one message and every rank exit 1 normally, instead of MPI_Abort.
  void set_failed_together() { failed_together_ = true; }
  bool failed_together() const { return failed_together_; }

 private:
  MpiEnv() = default;
  bool owns_mpi_ = false;  // we called MPI_Init_thread, so we finalise
  int thread_level_ = MPI_THREAD_SINGLE;
  bool failed_together_ = false;
  int rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1, node_count_ = 1;
  MPI_Comm world_ = MPI_COMM_NULL;
};

}  // namespace sx::worker
