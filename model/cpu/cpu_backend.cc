// CpuBackend: memory, layouts and reorders, and the op factories (each op kind has its own file).
#include "model/cpu/cpu_backend.h"

#include "model/cpu/isa.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace sx::model::cpu {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

CpuBackend::CpuBackend(const BackendOptions& options)
    : isa_(std::min(options.max_cpu_isa, cpu_isa_available())), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  if (options.threads > 0) omp_set_num_threads(options.threads);
}

Buffer CpuBackend::allocate(size_t bytes) {
  // 64-byte alignment for AVX-512 loads; zero-filled so blocked-layout padding starts at 0.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p != nullptr) std::memset(p, 0, rounded);
  return Buffer(p, [](void* q) { std::free(q); });
}

Status CpuBackend::copy_to_device(void* dst, const void* host_src, size_t bytes) {
  std::memcpy(dst, host_src, bytes);
  return Status::ok();
}

Status CpuBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  std::memcpy(host_dst, src, bytes);
  return Status::ok();
}

Status CpuBackend::fill(float* dst, float value, int64_t count) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) dst[i] = value;
  return Status::ok();
}

dnnl::memory::desc tensor_md(const Dims& d, Layout layout) {
  dnnl::memory::dims dims = {d.n, d.c, d.h, d.w};
  switch (layout) {
    case Layout::kNCHW: return {dims, dt::f32, tag::nchw};
    case Layout::kNHWC: return {dims, dt::f32, tag::nhwc};
    case Layout::kNChw8c: return {dims, dt::f32, tag::nChw8c};
    case Layout::kNChw16c: return {dims, dt::f32, tag::nChw16c};
  }
  return {};
}

std::optional<Layout> layout_of(const dnnl::memory::desc& md, const Dims& dims) {
  for (Layout l : {Layout::kNChw16c, Layout::kNChw8c, Layout::kNHWC, Layout::kNCHW}) {
    if (md == tensor_md(dims, l)) return l;
  }
  return std::nullopt;
}

void CpuBackend::reorder(const dnnl::memory& src, const dnnl::memory& dst) {
  dnnl::reorder(src, dst).execute(stream_, const_cast<dnnl::memory&>(src), const_cast<dnnl::memory&>(dst));
  reorders_.fetch_add(1, std::memory_order_relaxed);
}

float* CpuBackend::scratch(int slot, size_t bytes) {
  if (bytes > scratch_bytes_[slot]) {
    scratch_[slot] = allocate(bytes);
    scratch_bytes_[slot] = bytes;
  }
  return static_cast<float*>(scratch_[slot].get());
}

Status CpuBackend::upload_nchw(const float* host_nchw, const Tensor& dst) {
  if (dst.layout == Layout::kNCHW) return copy_to_device(dst.data, host_nchw, size_t(dst.dims.count()) * sizeof(float));
  dnnl::memory src(tensor_md(dst.dims, Layout::kNCHW), engine_, const_cast<float*>(host_nchw));
  dnnl::memory out(tensor_md(dst.dims, dst.layout), engine_, dst.data);
  reorder(src, out);
  return Status::ok();
}

Status CpuBackend::download_nchw(const Tensor& src, float* host_nchw) {
  if (src.layout == Layout::kNCHW) return copy_to_host(host_nchw, src.data, size_t(src.dims.count()) * sizeof(float));
  dnnl::memory in(tensor_md(src.dims, src.layout), engine_, src.data);
  dnnl::memory out(tensor_md(src.dims, Layout::kNCHW), engine_, host_nchw);
  reorder(in, out);
  return Status::ok();
}

Layout CpuBackend::activation_layout(int channels) const {
  // Blocked by one vector register of channels (16 with AVX-512, 8 otherwise: oneDNN's jit kernels
  // for the level use that block) wherever it does not waste padding.
  const int block = cpu_isa_block(isa_);
  if (channels % block != 0) return Layout::kNCHW;
  return block == 16 ? Layout::kNChw16c : Layout::kNChw8c;
}

StatusOr<std::unique_ptr<ConvOp>> CpuBackend::make_conv(const ConvDesc& desc) { return make_cpu_conv(*this, desc); }
StatusOr<std::unique_ptr<BatchNormOp>> CpuBackend::make_batch_norm(const BatchNormDesc& desc) {
  return make_cpu_batch_norm(*this, desc);
}
StatusOr<std::unique_ptr<PoolOp>> CpuBackend::make_pool(const PoolDesc& desc) { return make_cpu_pool(*this, desc); }
StatusOr<std::unique_ptr<LinearOp>> CpuBackend::make_linear(const LinearDesc& desc) {
  return make_cpu_linear(*this, desc);
}

}  // namespace sx::model::cpu

namespace sx::model {
std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) {
  return std::make_unique<cpu::CpuBackend>(options);
}
}  // namespace sx::model
