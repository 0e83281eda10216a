// plan_nccl_shards, run_nccl_plan_on_host, nccl_split_colors: see nccl_plan.h.
#include "worker/nccl_plan.h"

#include <algorithm>

namespace sx::worker {

NcclShardPlan plan_nccl_shards(int64_t count, int local_size) {
  NcclShardPlan p;
  p.count = std::max<int64_t>(count, 0);
  p.local_size = std::max(local_size, 1);
  p.shard = p.count / p.local_size;
  p.tail_begin = p.shard * p.local_size;
  p.tail = p.count - p.tail_begin;
  return p;
}

void run_nccl_plan_on_host(const NcclShardPlan& p, int nodes, std::vector<std::vector<float>>& data) {
  const int L = p.local_size;
  auto rank = [L](int node, int local) { return size_t(node) * size_t(L) + size_t(local); };
  // The tail first, from the inputs: one flat allreduce over every rank (in world-rank order).
  std::vector<float> tail(size_t(p.tail), 0.f);
  for (int64_t i = 0; i < p.tail; ++i)
    for (size_t r = 0; r < data.size(); ++r) tail[size_t(i)] += data[r][size_t(p.tail_begin + i)];
  for (int node = 0; node < nodes; ++node) {
    // 1. reduce-scatter within the node: local rank s receives the node's sum of shard s.
    std::vector<std::vector<float>> shard(size_t(L), std::vector<float>(size_t(p.shard), 0.f));
    for (int s = 0; s < L; ++s)
      for (int64_t i = 0; i < p.shard; ++i) {
        float sum = 0.f;
        for (int l = 0; l < L; ++l) sum += data[rank(node, l)][size_t(p.shard_begin(s) + i)];
        shard[size_t(s)][size_t(i)] = sum;
      }
    for (int s = 0; s < L; ++s)
      std::copy(shard[size_t(s)].begin(), shard[size_t(s)].end(), data[rank(node, s)].begin() + p.shard_begin(s));
  }
  // 2. allreduce of shard s across the nodes, among the ranks of local rank s.
  for (int s = 0; s < L; ++s)
    for (int64_t i = 0; i < p.shard; ++i) {
      const size_t at = size_t(p.shard_begin(s) + i);
      float sum = 0.f;
      for (int node = 0; node < nodes; ++node) sum += data[rank(node, s)][at];
      for (int node = 0; node < nodes; ++node) data[rank(node, s)][at] = sum;
    }
  // 3. all-gather within the node: rank l gets shard s from local rank s.
  for (int node = 0; node < nodes; ++node)
    for (int l = 0; l < L; ++l)
      for (int s = 0; s < L; ++s) {
        if (s == l) continue;
        const auto& src = data[rank(node, s)];
        std::copy(src.begin() + p.shard_begin(s), src.begin() + p.shard_begin(s) + p.shard,
                  data[rank(node, l)].begin() + p.shard_begin(s));
      }
  for (auto& d : data) std::copy(tail.begin(), tail.end(), d.begin() + p.tail_begin);
}

NcclSplitColors nccl_split_colors(int node_index, int local_rank) {
  return {.node_color = node_index, .cross_color = local_rank, .node_key = local_rank, .cross_key = node_index};
}

}  // namespace sx::worker
