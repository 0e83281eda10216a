// Opens the instruction-set level a kernel file is compiled for: include it once, after all the
// file's other includes (the level applies to everything after it, to the end of the file).
// CMake compiles every file of SX_MODEL_ISA_SOURCES three times, defining SX_ISA_AVX512,
// SX_ISA_AVX2 or neither. The level comes from `#pragma GCC target`, not from -m flags: inline
// functions of the headers included above stay baseline code, so the linker can never pick an
// AVX-512 copy of, say, a std::vector member for a generic caller.
// Defines SX_ISA_NS (the namespace of the file's kernels, declared in kernels_isa.h) and
// SX_HAS_AVX512 / SX_HAS_AVX2 (0 or 1) for the code to test: GCC 12 does not reliably update
// __AVX2__ and friends after a target pragma, so the code must not test those.
#if defined(SX_ISA_AVX512)
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,popcnt")
#define SX_ISA_NS avx512
#define SX_HAS_AVX512 1
#define SX_HAS_AVX2 1
#elif defined(SX_ISA_AVX2)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")
#define SX_ISA_NS avx2
#define SX_HAS_AVX512 0
#define SX_HAS_AVX2 1
#else
#define SX_ISA_NS generic
#define SX_HAS_AVX512 0
#define SX_HAS_AVX2 0
#endif
