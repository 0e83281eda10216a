// defines: sx::worker::RankView, gather_views, differing_views, bcast_string, host_name,
//          crc32_of_slots — the pieces of the shared-storage check (train_loop.cc, `agree_on_storage`).
//
// A data-parallel job assumes every rank reads the same data shards and resumes from the same
// checkpoint. Nothing guarantees that on a cluster (a directory that is local on one host, a stale
// copy of the shards, an NFS mount missing on one node), and a difference is not harmless: if rank 0
// resumes while another rank starts fresh, the two take different collective paths and the job hangs
// or silently diverges. So each rank states what it sees as a RankView (ok + a digest + a line of
// detail), the views are gathered on every rank (one MPI_Allgather of fixed-size records), and every
// rank compares them with rank 0's — all ranks reach the same verdict and fail together, with one
// message naming each rank that differs, its host and what it saw.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/checkpoint.h"
#include "worker/comm_env.h"

namespace sx::worker {

struct RankView {
  bool ok = true;        // false: this rank could not see the thing at all (detail says why)
  uint32_t digest = 0;   // what it saw, e.g. a crc32 of the file or of the loaded tensors
  std::string detail;    // one line: "DIR/ckpt-00000008.h5 (crc32 1a2b3c4d)" or the error; <= 480 bytes kept
};

struct GatheredView {
  int rank = 0;
  std::string host;
  RankView view;
};

// Every rank's view, in rank order, on every rank (collective over env.world()).
StatusOr<std::vector<GatheredView>> gather_views(MpiEnv& env, const RankView& mine);

// "rank R on HOST: detail" for each rank whose view is not ok or whose digest differs from rank 0's
// (empty when all agree). Rank 0 itself is listed when it is not ok.
std::vector<std::string> differing_views(const std::vector<GatheredView>& views);

// root's *s on every rank (collective).
Status bcast_string(MpiEnv& env, std::string* s, int root = 0);

// gethostname(), or "?" when it fails.
std::string host_name();

// zlib crc32 over the slots' floats, in slot order (what a load put into memory).
uint32_t crc32_of_slots(const std::vector<storage::TensorSlot>& slots);

}  // namespace sx::worker
