// The NCCL Reducer (comm_nccl.h). Compiled only with SX_CUDA.
#include "worker/comm_nccl.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "model/cuda/cuda_check.h"
#include "worker/mpi_util.h"
#include "worker/nccl_plan.h"

// Returns early with Status::internal naming the call when an NCCL call fails.
#define SX_NCCL(expr)                                                                                  \
  do {                                                                                                 \
    const ncclResult_t sx_nccl_result_ = (expr);                                                       \
    if (sx_nccl_result_ != ncclSuccess)                                                                \
      return ::sx::Status::internal(std::string(#expr) + " failed: " + ncclGetErrorString(sx_nccl_result_) + \
                                    " (ncclResult " + std::to_string(int(sx_nccl_result_)) + ")" +     \
                                    ::sx::model::cuda::source_location(__FILE__, __LINE__));           \
  } while (0)

namespace sx::worker {

Status bcast_nccl_unique_id(MPI_Comm comm, int root, ncclUniqueId* id) {
  int rank = 0;
  SX_MPI(MPI_Comm_rank(comm, &rank));
  int ok = 1;
  if (rank == root) ok = ncclGetUniqueId(id) == ncclSuccess;
  SX_MPI(MPI_Bcast(&ok, 1, MPI_INT, root, comm));  // so that every rank fails together
  if (!ok) return Status::unavailable("ncclGetUniqueId failed on rank " + std::to_string(root));
  SX_MPI(MPI_Bcast(id->internal, int(sizeof id->internal), MPI_BYTE, root, comm));
  return Status::ok();
}

namespace {

class NcclReducer final : public Reducer {
 public:
  ~NcclReducer() override {
    for (ncclComm_t* c : {&cross_, &node_, &world_})
      if (*c) ncclCommDestroy(*c);
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
    if (any_) cudaEventDestroy(any_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status init(const MpiEnv& env, const NcclOptions& o) {
    hierarchical_ = o.hierarchical;
    compute_ = static_cast<cudaStream_t>(o.compute_stream);
    grads_ = o.grads;
    grads_count_ = o.grads_count;
    SX_CUDA(cudaGetDevice(&device_));
    SX_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SX_CUDA(cudaEventCreateWithFlags(&any_, cudaEventDisableTiming));
    ncclUniqueId id;
    SX_TRY(bcast_nccl_unique_id(env.world(), 0, &id));
    SX_NCCL(ncclCommInitRank(&world_, env.world_size(), id, env.rank()));
    if (!hierarchical_) return Status::ok();

    // Node index: the world rank of the node's first rank (MPI's view of the node, or fake nodes).
    int node_index = 0, local_rank = 0, local_size = 1;
    if (o.ranks_per_node > 0) {
      node_index = env.rank() / o.ranks_per_node;
      local_rank = env.rank() % o.ranks_per_node;
    } else {
      MPI_Comm node = MPI_COMM_NULL;
      SX_MPI(MPI_Comm_split_type(env.world(), MPI_COMM_TYPE_SHARED, env.rank(), MPI_INFO_NULL, &node));
      int leader = env.rank();
      Status st = mpi_status(MPI_Comm_rank(node, &local_rank), "MPI_Comm_rank", __FILE__, __LINE__);
      if (st.is_ok()) st = mpi_status(MPI_Bcast(&leader, 1, MPI_INT, 0, node), "MPI_Bcast", __FILE__, __LINE__);
      free_comm(&node);
      SX_TRY(st);
      node_index = leader;
    }
    const NcclSplitColors colors = nccl_split_colors(node_index, local_rank);
    SX_NCCL(ncclCommSplit(world_, colors.node_color, colors.node_key, &node_, nullptr));
    SX_NCCL(ncclCommSplit(world_, colors.cross_color, colors.cross_key, &cross_, nullptr));
    SX_NCCL(ncclCommUserRank(node_, &local_rank_));
    SX_NCCL(ncclCommCount(node_, &local_size));
    local_size_ = local_size;
    // Every node must have L ranks: the cross communicators pair shards of equal size.
    int sizes[2] = {local_size, -local_size};
    SX_MPI(MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MAX, env.world()));
    if (sizes[0] != -sizes[1])
      return Status::invalid_argument("hierarchical NCCL allreduce needs the same number of ranks on every node (" +
                                      std::to_string(-sizes[1]) + " to " + std::to_string(sizes[0]) +
                                      " here); HINT: comm.algorithm=flat, or an even -npernode");
    return Status::ok();
  }

  const char* name() const override { return hierarchical_ ? "nccl-hierarchical" : "nccl-flat"; }

  // Compute thread: gradients [0, ready_end) are final in the compute stream's order.
  void grads_ready(int64_t ready_end) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!marks_.empty() && ready_end <= marks_.back().first) marks_.clear();  // a new step
    if (marks_.size() == pool_.size()) {
      cudaEvent_t e = nullptr;
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) return;  // falls back to any_
      pool_.push_back(e);
    }
    cudaEvent_t e = pool_[marks_.size()];
    if (cudaEventRecord(e, compute_) != cudaSuccess) return;
    marks_.emplace_back(ready_end, e);
  }

  Status allreduce_sum(float* data, int64_t count) override {
    SX_CUDA(cudaSetDevice(device_));  // this may be the Communicator's thread
    SX_CUDA(cudaStreamWaitEvent(stream_, ready_event(data, count), 0));
    const int64_t chunk = INT_MAX / 2;  // NCCL counts are size_t, but keep shards well inside int
    for (int64_t begin = 0; begin < count; begin += chunk)
      SX_TRY(enqueue(data + begin, std::min(chunk, count - begin)));
    SX_CUDA(cudaStreamSynchronize(stream_));
    return Status::ok();
  }

 private:
  // The first recorded event that covers data[0, count); for memory outside the gradient buffer (or
  // when none covers it) an event recorded now, after everything queued on the compute stream.
  cudaEvent_t ready_event(const float* data, int64_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    if (grads_ && data >= grads_ && data + count <= grads_ + grads_count_) {
      const int64_t end = (data - grads_) + count;
      for (const auto& [mark, event] : marks_)
        if (mark >= end) return event;
    }
    cudaEventRecord(any_, compute_);
    return any_;
  }

  Status enqueue(float* data, int64_t count) {
    if (!hierarchical_) {
      SX_NCCL(ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, world_, stream_));
      return Status::ok();
    }
    const NcclShardPlan p = plan_nccl_shards(count, local_size_);
    if (p.shard > 0) {
      float* mine = data + p.shard_begin(local_rank_);
      // In place: NCCL's reduce-scatter writes rank r's shard at sendbuff + r·recvcount, and its
      // all-gather reads rank r's part from recvbuff + r·sendcount.
      SX_NCCL(ncclReduceScatter(data, mine, size_t(p.shard), ncclFloat32, ncclSum, node_, stream_));
      SX_NCCL(ncclAllReduce(mine, mine, size_t(p.shard), ncclFloat32, ncclSum, cross_, stream_));
      SX_NCCL(ncclAllGather(mine, data, size_t(p.shard), ncclFloat32, node_, stream_));
    }
    if (p.tail > 0)
      SX_NCCL(ncclAllReduce(data + p.tail_begin, data + p.tail_begin, size_t(p.tail), ncclFloat32, ncclSum, world_,
                            stream_));
    return Status::ok();
  }

  bool hierarchical_ = false;
  int device_ = 0;
  int local_rank_ = 0, local_size_ = 1;
  ncclComm_t world_ = nullptr, node_ = nullptr, cross_ = nullptr;
  cudaStream_t stream_ = nullptr, compute_ = nullptr;
  const float* grads_ = nullptr;
  int64_t grads_count_ = 0;
  std::mutex mu_;
  std::vector<std::pair<int64_t, cudaEvent_t>> marks_;  // this step's (ready_end, event), increasing
  std::vector<cudaEvent_t> pool_;
  cudaEvent_t any_ = nullptr;
};

}  // namespace

StatusOr<std::unique_ptr<Reducer>> make_nccl_reducer(const MpiEnv& env, const NcclOptions& options) {
  auto r = std::make_unique<NcclReducer>();
  SX_TRY(r->init(env, options).with_context("NCCL communicator (rank " + std::to_string(env.rank()) + ")"));
  return std::unique_ptr<Reducer>(std::move(r));
}

}  // namespace sx::worker
