// defines: small helpers the oneDNN ops share — error wrapping, implementation checks, prebuilt
// reorders and op-owned scratch tensors. Header-only; used by conv.cc, batch_norm.cc, pool.cc.
#pragma once

#include <cstring>
#include <dnnl.hpp>
#include <string>
#include <utility>

#include "common/status.h"
#include "model/cpu/cpu_backend.h"

namespace sx::model::cpu {

// Runs f (which may throw dnnl::error) and turns an exception into a Status naming `what`.
template <typename F>
Status dnnl_call(const char* what, F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const dnnl::error& e) {
    return Status::internal(std::string(what) + ": oneDNN: " + e.what());
  }
  return Status::ok();
}

// oneDNN's reference implementations are orders of magnitude slower than the jit ones.
template <typename PD>
bool is_ref_impl(const PD& pd) {
  return std::strncmp(pd.impl_info_str(), "ref", 3) == 0;
}

// A memory object whose handle is set per call (cheap; the descriptor never changes).
inline dnnl::memory handle_memory(const dnnl::memory::desc& md, const dnnl::engine& eng) {
  return dnnl::memory(md, eng, DNNL_MEMORY_NONE);
}

// A reorder planned once between two fixed descriptors; `to` can be an op-owned buffer or a
// per-call handle. `accumulate_into_dst` builds it with a sum post-op (dst += reorder(src)).
struct PlannedReorder {
  dnnl::reorder prim;
  dnnl::memory from, to;

  static PlannedReorder make(const dnnl::memory::desc& from_md, const dnnl::memory::desc& to_md,
                             const dnnl::engine& eng, bool accumulate_into_dst = false) {
    dnnl::primitive_attr attr;
    if (accumulate_into_dst) {
      dnnl::post_ops po;
      po.append_sum(1.f);
      attr.set_post_ops(po);
    }
    PlannedReorder r;
    r.prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from_md, eng, to_md, attr));
    r.from = handle_memory(from_md, eng);
    r.to = handle_memory(to_md, eng);
    return r;
  }
  // Weight reorders are not activation layout changes and are not counted.
  void run(dnnl::stream& s, void* src, void* dst) {
    from.set_data_handle(src);
    to.set_data_handle(dst);
    prim.execute(s, from, to);
  }
  // Activation reorders are counted by the backend (reorder_count()).
  void run_counted(CpuBackend& be, void* src, void* dst) {
    run(be.stream(), src, dst);
    be.count_reorder();
  }
};

// Op-owned scratch memory for one descriptor (an activation in the primitive's preferred format).
struct OwnedMemory {
  Buffer buffer;
  dnnl::memory mem;
  static OwnedMemory make(CpuBackend& be, const dnnl::memory::desc& md) {
    OwnedMemory m;
    m.buffer = be.allocate(md.get_size());
    m.mem = dnnl::memory(md, be.engine(), m.buffer.get());
    return m;
  }
  void* data() const { return buffer.get(); }
};

}  // namespace sx::model::cpu
