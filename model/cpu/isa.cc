#include "model/cpu/isa.h"

#include <cpuid.h>

#include <algorithm>
#include <cstring>
#include <dnnl.hpp>

namespace sx::model::cpu {

CpuIsa cpu_isa_detected() {
  // libgcc's checks include the OS's support (XCR0) for the wider registers.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
  return CpuIsa::kGeneric;
}

CpuIsa cpu_isa_onednn() {
  // oneDNN's ISA values are bit sets: each level contains the bits of the ones below it.
  const auto bits = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto has = [bits](dnnl::cpu_isa isa) {
    const auto b = static_cast<unsigned>(isa);
    return (bits & b) == b;
  };
  if (has(dnnl::cpu_isa::avx512_core)) return CpuIsa::kAvx512;
  if (has(dnnl::cpu_isa::avx2)) return CpuIsa::kAvx2;
  return CpuIsa::kGeneric;
}

CpuIsa cpu_isa_available() { return std::min(cpu_isa_detected(), cpu_isa_onednn()); }

Status cap_cpu_isa(CpuIsa isa) {
  const dnnl::cpu_isa to = isa == CpuIsa::kAvx512 ? dnnl::cpu_isa::all
                           : isa == CpuIsa::kAvx2 ? dnnl::cpu_isa::avx2
                                                  : dnnl::cpu_isa::sse41;
  try {
    dnnl::set_max_cpu_isa(to);
  } catch (const dnnl::error& e) {
    return Status::invalid_argument(std::string("cannot cap the CPU ISA to ") + cpu_isa_name(isa) +
                                    ": oneDNN refused (" + e.what() +
                                    "); the cap must be set before the first backend is made. HINT: set "
                                    "ONEDNN_MAX_CPU_ISA in the environment instead");
  }
  return Status::ok();
}

std::string cpu_model_name() {
  unsigned regs[12] = {};
  unsigned max_ext = __get_cpuid_max(0x80000000u, nullptr);
  if (max_ext < 0x80000004u) return "unknown x86-64";
  for (unsigned i = 0; i < 3; ++i)
    __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
  char name[49] = {};
  std::memcpy(name, regs, 48);
  std::string s(name);
  const auto b = s.find_first_not_of(' ');
  const auto e = s.find_last_not_of(' ');
  return b == std::string::npos ? "unknown x86-64" : s.substr(b, e - b + 1);
}

std::string cpu_description() {
  return cpu_model_name() + ", " + cpu_isa_name(cpu_isa_available()) + " (cpu " + cpu_isa_name(cpu_isa_detected()) +
         ", oneDNN " + cpu_isa_name(cpu_isa_onednn()) + ")";
}

}  // namespace sx::model::cpu
