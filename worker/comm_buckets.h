// defines: sx::worker::BucketPlan — how the flat gradient buffer is cut into allreduce buckets —
// make_bucket_plan, and check_plan_agrees (the one start-up check that every rank cut the same way).
//
// The flat buffer is laid out in the order backward finishes (offset 0 first), so a bucket is a
// contiguous slice [begin, end) and buckets are ready in plan order. The plan is fixed at start
// and identical on all ranks; there is no per-step negotiation, so a rank that disagrees would
// silently reduce the wrong bytes — hence the hash check once at start-up.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/mpi_util.h"

namespace sx::worker {

struct Bucket {
  int64_t begin = 0, end = 0;  // floats, [begin, end) of the gradient buffer
  int64_t count() const { return end - begin; }
};

struct BucketPlan {
  int64_t total = 0;             // floats in the gradient buffer
  std::vector<Bucket> buckets;   // contiguous, covering [0, total), in the order backward fills them

  uint64_t hash() const;         // FNV-1a over total and every bucket end
  std::string describe() const;  // "5 buckets over 27600000 floats, hash 0x..."
};

// Cuts [0, total) into buckets of at most bucket_floats. With tensor boundaries (sorted tensor end
// offsets, e.g. every parameter's offset + count), bucket ends fall on them so a bucket holds whole
// tensors and starts as soon as its last tensor is done; a tensor larger than a bucket gets its own.
StatusOr<BucketPlan> make_bucket_plan(int64_t total, int64_t bucket_floats,
                                      std::span<const int64_t> boundaries = {});

// Collective over comm: OK on every rank when all ranks hold the same plan; otherwise the same
// error on every rank, naming each rank's plan.
Status check_plan_agrees(const BucketPlan& plan, MPI_Comm comm);

}  // namespace sx::worker
