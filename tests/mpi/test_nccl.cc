// The NCCL communicator (worker/comm_nccl.h) under a real mpirun (singleton, np=2, np=4). Here,
// without a GPU: the ncclUniqueId bootstrap over MPI (needs only the host network) runs, and the
// equivalence of NCCL's flat and hierarchical allreduce with MPI's on the same buckets skips with
// the probe's message. On a GPU machine (one GPU per rank) it runs: every bucket of the NCCL
// Communicator equals the MPI Communicator's result for the same data.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "model/cuda/cuda_backend.h"
#include "tests/mpi/mpi_test_env.h"
#include "worker/communicator.h"
#if SX_HAVE_CUDA
#include <cuda_runtime.h>

#include "worker/comm_nccl.h"
#endif

namespace sx::worker {
namespace {

using test::mpi_env;

#if SX_HAVE_CUDA

TEST(NcclBootstrap, UniqueIdReachesEveryRankOverMpi) {
  MpiEnv& env = mpi_env();
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  ASSERT_TRUE(bcast_nccl_unique_id(env.world(), 0, &id).is_ok());
  // FNV-1a of the id; every rank must hold rank 0's bytes.
  uint64_t h = 1469598103934665603ull;
  bool nonzero = false;
  for (char c : id.internal) {
    h = (h ^ uint8_t(c)) * 1099511628211ull;
    nonzero |= c != 0;
  }
  EXPECT_TRUE(nonzero) << "ncclGetUniqueId gave an empty id";
  uint64_t lo = h, hi = h;
  ASSERT_EQ(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, env.world()), MPI_SUCCESS);
  ASSERT_EQ(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, env.world()), MPI_SUCCESS);
  EXPECT_EQ(lo, hi) << "ranks received different ids";
}

// Same deterministic data on the host (MPI) and on this rank's GPU (NCCL).
float value(int rank, int64_t i) { return float(int((rank * 7919 + i * 104729) % 2001) - 1000) / 64.f; }

void check_nccl_equals_mpi(bool hierarchical) {
  MpiEnv& env = mpi_env();
  auto count = model::cuda_device_count();
  int usable = count.is_ok() ? count.value() : 0;
  ASSERT_EQ(MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, env.world()), MPI_SUCCESS);
  if (usable < env.local_size())
    GTEST_SKIP() << "needs one GPU per rank on each node (" << env.local_size() << "): "
                 << (count.is_ok() ? std::to_string(count.value()) + " visible" : count.status().message());
  ASSERT_EQ(cudaSetDevice(env.local_rank()), cudaSuccess);
  const int64_t n = 1000003;  // uneven: buckets and shards leave tails
  std::vector<float> host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) host[size_t(i)] = value(env.rank(), i);
  float* device = nullptr;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), size_t(n) * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device, host.data(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);

  CommOptions co;
  co.algorithm = hierarchical ? CommAlgorithm::kHierarchical : CommAlgorithm::kFlat;
  co.bucket_bytes = 1 << 20;
  co.average = false;
  co.ranks_per_node = hierarchical && env.world_size() >= 4 ? 2 : 0;  // 2 fake nodes of 2 at np=4
  auto mpi = Communicator::create(env, std::span<float>(host), co);
  ASSERT_TRUE(mpi.is_ok()) << mpi.status().to_string();
  co.make_reducer = [&](CommAlgorithm a) {
    return make_nccl_reducer(env, {.hierarchical = a == CommAlgorithm::kHierarchical,
                                   .ranks_per_node = co.ranks_per_node, .compute_stream = stream,
                                   .grads = device, .grads_count = n});
  };
  auto nccl = Communicator::create(env, std::span<float>(device, size_t(n)), co);
  ASSERT_TRUE(nccl.is_ok()) << nccl.status().to_string();
  for (int64_t end = 0; end <= n; end += n / 7) nccl.value()->on_grads_ready(end);  // buckets as backward would
  nccl.value()->on_grads_ready(n);
  ASSERT_TRUE(nccl.value()->wait_all().is_ok());
  ASSERT_TRUE(mpi.value()->wait_all().is_ok());
  std::vector<float> got(static_cast<size_t>(n));
  ASSERT_EQ(cudaMemcpy(got.data(), device, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  // The values are multiples of 1/64 far from fp32's limits: every summation order is exact.
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], host[size_t(i)]) << "element " << i;
  cudaStreamDestroy(stream);
  cudaFree(device);
}

TEST(NcclReducer, FlatEqualsMpiAllreduce) { check_nccl_equals_mpi(false); }
TEST(NcclReducer, HierarchicalEqualsMpiAllreduce) { check_nccl_equals_mpi(true); }

#else

TEST(NcclReducer, NeedsACudaBuild) { GTEST_SKIP() << "built without CUDA (SX_CUDA off): no NCCL communicator"; }

#endif

}  // namespace
}  // namespace sx::worker
