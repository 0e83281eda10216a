#include "model/cpu_isa.h"

#include <string>

namespace sx::model {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric: return "generic";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

StatusOr<CpuIsa> parse_cpu_isa(std::string_view name) {
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512})
    if (name == cpu_isa_name(isa)) return isa;
  return Status::invalid_argument("unknown CPU ISA '" + std::string(name) + "'; expected generic, avx2 or avx512");
}

int cpu_isa_block(CpuIsa isa) { return isa == CpuIsa::kAvx512 ? 16 : 8; }

}  // namespace sx::model
