// defines: sx::worker::NcclOptions, make_nccl_reducer, bcast_nccl_unique_id — the NCCL
// implementation of the Reducer (comm_reducer.h) behind `comm.backend: nccl`, for device gradients.
// Compiled only with SX_CUDA (comm_nccl.cc); code that uses it tests SX_HAVE_CUDA.
//
// Bootstrap: rank 0 makes a ncclUniqueId and broadcasts it over MPI; every rank joins the world
// communicator (ncclCommInitRank on its current device, the one the CUDA backend made current).
// The hierarchical form splits it (ncclCommSplit) into a node communicator (the ranks of one node,
// MPI_Comm_split_type SHARED, or fake nodes of comm.ranks_per_node) and a cross communicator (the
// ranks of equal local rank); one bucket is then reduce-scatter in the node → allreduce of the shard
// across nodes → all-gather in the node, plus a flat allreduce of the < L trailing floats
// (nccl_plan.h has the arithmetic, tested on every machine). The flat form is one ncclAllReduce.
//
// Streams and events: collectives run on a communication stream of their own. grads_ready() (the
// Communicator's on_grads_ready, on the compute thread) records an event on the backend's compute
// stream; a bucket's collective waits for the first event that covers it, so it overlaps the rest of
// backward; allreduce_sum returns when the collective has completed (cudaStreamSynchronize), which
// keeps the Reducer's blocking contract: wait_all() then orders the SGD pass after it.
#pragma once

#if SX_HAVE_CUDA

#include <nccl.h>

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "worker/comm_env.h"
#include "worker/comm_reducer.h"

namespace sx::worker {

struct NcclOptions {
  bool hierarchical = false;  // false: one ncclAllReduce per bucket
  int ranks_per_node = 0;     // 0 = real nodes; k > 0 = fake nodes of k consecutive ranks (tests)
  void* compute_stream = nullptr;  // cudaStream_t the gradients are written on (Backend::native_stream)
  const float* grads = nullptr;    // the Communicator's buffer (device memory), for grads_ready events
  int64_t grads_count = 0;
};

// rank `root` of comm makes the id (ncclGetUniqueId), every rank receives it. Needs no GPU.
Status bcast_nccl_unique_id(MPI_Comm comm, int root, ncclUniqueId* id);

// Collective over env.world() (every rank must call it, on its device).
StatusOr<std::unique_ptr<Reducer>> make_nccl_reducer(const MpiEnv& env, const NcclOptions& options);

}  // namespace sx::worker

#endif  // SX_HAVE_CUDA
