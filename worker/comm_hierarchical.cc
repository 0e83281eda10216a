// Hierarchical allreduce: node-local reduce to the leader → allreduce among node leaders →
// node-local broadcast. Across real nodes only the leaders touch the network, once per bucket,
// with the whole bucket; inside a node the traffic is shared memory.
// Summation order: (sum within each node) then (sum of node sums). For two ranks this equals the
// flat result bit for bit (a + b == b + a in IEEE); with more ranks the order differs from the
// flat algorithm's, so results agree to rounding (~1e-7 relative per addition), not bitwise.
#include <algorithm>
#include <climits>
#include <string>

#include "worker/comm_reducer.h"
#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

// The node communicator of this rank under the split: ranks of one node, ordered by world rank.
Status split_nodes(MPI_Comm world, const NodeSplit& split, MPI_Comm* node) {
  int rank = 0;
  SX_MPI(MPI_Comm_rank(world, &rank));
  if (split.ranks_per_node > 0) {
    SX_MPI(MPI_Comm_split(world, rank / split.ranks_per_node, rank, node));
  } else {
    SX_MPI(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node));
  }
  SX_MPI(MPI_Comm_set_errhandler(*node, MPI_ERRORS_RETURN));
  return Status::ok();
}

class HierarchicalReducer final : public Reducer {
 public:
  ~HierarchicalReducer() override {
    free_comm(&node_);
    free_comm(&leaders_);
  }

  Status init(MPI_Comm world, const NodeSplit& split) {
    SX_CHECK_ARG(split.ranks_per_node >= 0, "ranks_per_node must be >= 0");
    int rank = 0;
    SX_MPI(MPI_Comm_rank(world, &rank));
    SX_TRY(split_nodes(world, split, &node_));
    SX_MPI(MPI_Comm_rank(node_, &local_rank_));
    SX_MPI(MPI_Comm_size(node_, &local_size_));
    // Leaders (local rank 0) get a communicator of their own; everyone else MPI_COMM_NULL.
    SX_MPI(MPI_Comm_split(world, local_rank_ == 0 ? 0 : MPI_UNDEFINED, rank, &leaders_));
    if (leaders_ != MPI_COMM_NULL) {
      SX_MPI(MPI_Comm_set_errhandler(leaders_, MPI_ERRORS_RETURN));
      SX_MPI(MPI_Comm_size(leaders_, &leader_count_));
    }
    return Status::ok();
  }

  Status allreduce_sum(float* data, int64_t count) override {
    for (int64_t begin = 0; begin < count;) {
      const int n = static_cast<int>(std::min<int64_t>(count - begin, INT_MAX));
      SX_TRY(allreduce_chunk(data + begin, n));
      begin += n;
    }
    return Status::ok();
  }
  const char* name() const override { return "hierarchical"; }

 private:
  Status allreduce_chunk(float* data, int n) {
    const bool leader = local_rank_ == 0;
    if (local_size_ > 1) {
      SX_MPI(MPI_Reduce(leader ? MPI_IN_PLACE : data, leader ? data : nullptr, n, MPI_FLOAT, MPI_SUM, 0, node_));
    }
    if (leader && leader_count_ > 1) {
      SX_MPI(MPI_Allreduce(MPI_IN_PLACE, data, n, MPI_FLOAT, MPI_SUM, leaders_));
    }
    if (local_size_ > 1) {
      SX_MPI(MPI_Bcast(data, n, MPI_FLOAT, 0, node_));
    }
    return Status::ok();
  }

  MPI_Comm node_ = MPI_COMM_NULL, leaders_ = MPI_COMM_NULL;
  int local_rank_ = 0, local_size_ = 1, leader_count_ = 1;
};

}  // namespace

StatusOr<int> count_nodes(MPI_Comm world, const NodeSplit& split) {
  SX_CHECK_ARG(split.ranks_per_node >= 0, "ranks_per_node must be >= 0");
  MPI_Comm node = MPI_COMM_NULL;
  SX_TRY(split_nodes(world, split, &node));
  int local_rank = 0;
  const int mpi_rc = MPI_Comm_rank(node, &local_rank);
  free_comm(&node);
  SX_MPI(mpi_rc);
  int leaders = local_rank == 0 ? 1 : 0;
  SX_MPI(MPI_Allreduce(MPI_IN_PLACE, &leaders, 1, MPI_INT, MPI_SUM, world));
  return leaders;
}

StatusOr<std::unique_ptr<Reducer>> make_hierarchical_reducer(MPI_Comm world, const NodeSplit& split) {
  auto reducer = std::make_unique<HierarchicalReducer>();
  SX_TRY(reducer->init(world, split));
  return std::unique_ptr<Reducer>(std::move(reducer));
}

}  // namespace sx::worker
