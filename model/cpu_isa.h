// defines: sx::model::CpuIsa — the instruction-set levels our own CPU kernels are compiled for,
// chosen at run time (model/cpu/isa.h detects and caps), and their names.
//   kGeneric  any x86-64 (the compiler's baseline, SSE2): the portable fallback
//   kAvx2     AVX2 + FMA (Haswell, AMD Zen 1-3 and later): 8-lane kernels, nChw8c activations
//   kAvx512   AVX-512 F/BW/DQ/VL (Skylake-SP, AMD Zen 4/5 and later): 16-lane kernels, nChw16c
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace sx::model {

enum class CpuIsa : uint8_t { kGeneric, kAvx2, kAvx512 };

const char* cpu_isa_name(CpuIsa isa);                  // "generic", "avx2", "avx512"
StatusOr<CpuIsa> parse_cpu_isa(std::string_view name);  // the names above
// Channels per block of the activation layout our kernels and oneDNN's jit kernels share at this
// level: one vector register of floats (16 with AVX-512, 8 otherwise).
int cpu_isa_block(CpuIsa isa);

}  // namespace sx::model
