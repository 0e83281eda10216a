#include "worker/comm_buckets.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

uint64_t fnv1a(uint64_t hash, int64_t value) {
  for (int byte = 0; byte < 8; ++byte) {
    hash ^= (static_cast<uint64_t>(value) >> (8 * byte)) & 0xffu;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%016" PRIx64, value);
  return text;
}

}  // namespace

uint64_t BucketPlan::hash() const {
  uint64_t h = fnv1a(0xcbf29ce484222325ull, total);
  for (const Bucket& bucket : buckets) h = fnv1a(h, bucket.end);
  return h;
}

std::string BucketPlan::describe() const {
  return std::to_string(buckets.size()) + " buckets over " + std::to_string(total) + " floats, hash " + hex(hash());
}

StatusOr<BucketPlan> make_bucket_plan(int64_t total, int64_t bucket_floats, std::span<const int64_t> boundaries) {
  SX_CHECK_ARG(total >= 0, "gradient count must be >= 0");
  SX_CHECK_ARG(bucket_floats > 0, "bucket size must be > 0");
  for (size_t i = 0; i < boundaries.size(); ++i) {
    SX_CHECK_ARG(boundaries[i] > 0 && boundaries[i] <= total, "tensor boundaries must lie in (0, total]");
    SX_CHECK_ARG(i == 0 || boundaries[i] > boundaries[i - 1], "tensor boundaries must be strictly increasing");
  }
  BucketPlan plan;
  plan.total = total;
  size_t next = 0;  // first boundary > begin
  for (int64_t begin = 0; begin < total;) {
    const int64_t limit = std::min(total, begin + bucket_floats);
    int64_t end = limit;
    while (next < boundaries.size() && boundaries[next] <= begin) ++next;
    if (next < boundaries.size()) {
      // The last boundary <= limit; the first one past begin when a tensor is bigger than a bucket.
      size_t k = next;
      while (k + 1 < boundaries.size() && boundaries[k + 1] <= limit) ++k;
      end = boundaries[k];
    }
    plan.buckets.push_back({begin, end});
    begin = end;
  }
  return plan;
}

Status check_plan_agrees(const BucketPlan& plan, MPI_Comm comm) {
  int size = 1;
  SX_MPI(MPI_Comm_size(comm, &size));
  // (hash, total, bucket count) from every rank, so the message can say who disagrees and how.
  const uint64_t mine[3] = {plan.hash(), static_cast<uint64_t>(plan.total), plan.buckets.size()};
  std::vector<uint64_t> all(3 * static_cast<size_t>(size));
  SX_MPI(MPI_Allgather(mine, 3, MPI_UINT64_T, all.data(), 3, MPI_UINT64_T, comm));
  std::string differing;
  for (int r = 0; r < size; ++r) {
    if (all[3 * r] == all[0]) continue;
    differing += " rank " + std::to_string(r) + " has " + std::to_string(all[3 * r + 2]) + " buckets over " +
                 std::to_string(all[3 * r + 1]) + " floats (hash " + hex(all[3 * r]) + ");";
  }
  if (differing.empty()) return Status::ok();
  return Status::invalid_argument(
      "gradient bucket plan differs across ranks: rank 0 has " + std::to_string(all[2]) + " buckets over " +
      std::to_string(all[1]) + " floats (hash " + hex(all[0]) + ");" + differing +
      " HINT: every rank must build the same model and use the same bucket size (comm.bucket_mb)");
}

}  // namespace sx::worker

