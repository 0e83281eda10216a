#include "worker/shared_storage.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

// The fixed-size record one rank contributes to the gather.
struct WireView {
  int32_t ok = 0;
  uint32_t digest = 0;
  char host[64] = {};
  char detail[480] = {};
};

void copy_truncated(char* dst, size_t cap, const std::string& src) {
  const size_t n = std::min(src.size(), cap - 1);
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

StatusOr<std::vector<GatheredView>> gather_views(MpiEnv& env, const RankView& mine) {
  WireView w;
  w.ok = mine.ok ? 1 : 0;
  w.digest = mine.digest;
  copy_truncated(w.host, sizeof w.host, host_name());
  copy_truncated(w.detail, sizeof w.detail, mine.detail);
  std::vector<WireView> all(size_t(env.world_size()));
  SX_MPI(MPI_Allgather(&w, int(sizeof w), MPI_BYTE, all.data(), int(sizeof w), MPI_BYTE, env.world()));
  std::vector<GatheredView> out;
  for (int r = 0; r < env.world_size(); ++r) {
    const WireView& x = all[size_t(r)];
    out.push_back({r, std::string(x.host, strnlen(x.host, sizeof x.host)),
                   RankView{x.ok != 0, x.digest, std::string(x.detail, strnlen(x.detail, sizeof x.detail))}});
  }
  return out;
}

std::vector<std::string> differing_views(const std::vector<GatheredView>& views) {
  std::vector<std::string> out;
  if (views.empty()) return out;
  const GatheredView& root = views.front();
  for (const GatheredView& v : views) {
    const bool differs = !v.view.ok || (v.rank != root.rank && root.view.ok && v.view.digest != root.view.digest);
    if (differs) out.push_back("rank " + std::to_string(v.rank) + " on " + v.host + ": " + v.view.detail);
  }
  return out;
}

Status bcast_string(MpiEnv& env, std::string* s, int root) {
  int64_t n = env.rank() == root ? int64_t(s->size()) : 0;
  SX_MPI(MPI_Bcast(&n, 1, MPI_INT64_T, root, env.world()));
  if (n < 0 || n > INT_MAX) return Status::internal("bcast_string: bad length " + std::to_string(n));
  s->resize(size_t(n));
  if (n > 0) SX_MPI(MPI_Bcast(s->data(), int(n), MPI_CHAR, root, env.world()));
  return Status::ok();
}

uint32_t crc32_of_slots(const std::vector<storage::TensorSlot>& slots) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const storage::TensorSlot& s : slots) {
    int64_t count = 1;
    for (int64_t d : s.shape) count *= d;
    const auto* p = reinterpret_cast<const Bytef*>(s.data);
    for (int64_t left = count * int64_t(sizeof(float)); left > 0;) {
      const uInt n = uInt(std::min<int64_t>(left, int64_t(1) << 30));
      crc = crc32(crc, p, n);
      p += n;
      left -= n;
    }
  }
  return uint32_t(crc);
}

}  // namespace sx::worker
