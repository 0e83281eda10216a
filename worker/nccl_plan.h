// defines: sx::worker::NcclShardPlan, plan_nccl_shards, run_nccl_plan_on_host — the arithmetic of
// the hierarchical NCCL allreduce (comm_nccl.cc), kept in host-callable functions so that every
// machine tests it (tests/test_nccl_plan.cc), GPU or not.
//
// One bucket of n floats on every rank of a job of `nodes` nodes × L ranks per node:
//   1. NCCL reduce-scatter within the node: local rank r ends with the node's sum of shard r,
//      the floats [r·m, (r+1)·m) with m = floor(n / L);
//   2. NCCL allreduce of shard r across the nodes, among the ranks with local rank r (one
//      communicator per local rank: each NIC/GPU pair carries 1/L of the bytes);
//   3. NCCL all-gather within the node: every rank gets every shard.
// ncclReduceScatter / ncclAllGather need equal shards, so the n - L·m < L trailing floats (the
// `tail`) take one flat ncclAllReduce over the whole job instead (a few bytes, no padding copy).
#pragma once

#include <cstdint>
#include <vector>

namespace sx::worker {

struct NcclShardPlan {
  int64_t count = 0;        // n: floats of the bucket
  int local_size = 1;       // L: ranks per node
  int64_t shard = 0;        // m = floor(n / L): floats per rank in the reduce-scatter / all-gather
  int64_t tail_begin = 0;   // L·m
  int64_t tail = 0;         // n - L·m (< L): reduced by one flat allreduce
  // Shard of local rank r: [r·m, (r+1)·m).
  int64_t shard_begin(int local_rank) const { return int64_t(local_rank) * shard; }
};

// local_size >= 1, count >= 0.
NcclShardPlan plan_nccl_shards(int64_t count, int local_size);

// Runs the plan's three stages (+ the flat tail) on plain vectors, exactly as the NCCL calls move
// the data: data[world_rank] is that rank's bucket; world rank = node · L + local rank (the order
// MPI_Comm_split_type and ncclCommSplit give). Sums are accumulated in rank order of each
// communicator. Afterwards every data[i] holds the sum over all ranks. For tests, and the reference
// a GPU test compares NCCL's result with.
void run_nccl_plan_on_host(const NcclShardPlan& plan, int nodes, std::vector<std::vector<float>>& data);

// Every rank's split colors for ncclCommSplit: the node communicator groups the ranks of one node
// (color = the node's index), the cross communicator the ranks of equal local rank (color = it).
struct NcclSplitColors {
  int node_color = 0;   // node index
  int cross_color = 0;  // local rank
  int node_key = 0;     // order within the node communicator: the local rank
  int cross_key = 0;    // order within the cross communicator: the node index
};
NcclSplitColors nccl_split_colors(int node_index, int local_rank);

}  // namespace sx::worker
