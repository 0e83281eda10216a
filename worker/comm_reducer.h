// defines: sx::worker::Reducer — one allreduce algorithm (sum, in place, blocking) over a fixed
// group of ranks — and its two MPI implementations: flat (comm_flat.cc) and hierarchical
// (comm_hierarchical.cc). The Communicator (communicator.h) owns one and drives it bucket by
// bucket; reducers know nothing of buckets, threads or averaging.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "worker/mpi_util.h"

namespace sx::worker {

class Reducer {
 public:
  virtual ~Reducer() = default;
  // data[0, count) = sum over ranks of their data[0, count), on every rank.
  virtual Status allreduce_sum(float* data, int64_t count) = 0;
  // The Communicator's gradients [0, ready_end) are final in the compute order (called on the compute
  // thread by on_grads_ready before their buckets launch). A device reducer records an event here;
  // host reducers need nothing (the gradients are written when the callback runs).
  virtual void grads_ready(int64_t /*ready_end*/) {}
  virtual const char* name() const = 0;
};

// One MPI_Allreduce (in place) on a duplicate of world.
StatusOr<std::unique_ptr<Reducer>> make_flat_reducer(MPI_Comm world);

// Which node each rank belongs to, for the hierarchical reducer.
struct NodeSplit {
  int ranks_per_node = 0;  // 0 = real nodes (MPI_Comm_split_type SHARED); k > 0 = ranks [k*i, k*i + k) form
                           // fake node i, so the three stages run on one machine (tests, benchmarks)
};

// Collective over world: the node count of the split (every rank gets the same answer).
StatusOr<int> count_nodes(MPI_Comm world, const NodeSplit& split);

// Node-local MPI_Reduce to the node leader (local rank 0) → MPI_Allreduce among the leaders →
// node-local MPI_Bcast. Collective over world at creation.
StatusOr<std::unique_ptr<Reducer>> make_hierarchical_reducer(MPI_Comm world, const NodeSplit& split);

// Frees a communicator we created (no-op for MPI_COMM_NULL), for reducers' destructors.
void free_comm(MPI_Comm* comm);

}  // namespace sx::worker
