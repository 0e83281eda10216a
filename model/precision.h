// defines: sx::model::Precision — the compute precision of a backend's ops — and its config names
// (`numerics.precision: fp32|bf16|fp16`). Whatever the precision, parameters, their gradients, the
// optimizer state, BN statistics and the loss stay fp32 (master weights in the flat buffers).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace sx::model {

enum class Precision : uint8_t {
  kFp32,  // every op in fp32 (on GPUs, convolutions may use TF32 tensor cores)
  kBf16,  // activations and convolution/GEMM inputs in bfloat16, fp32 accumulation
  kFp16,  // the same in IEEE half; needs loss scaling (gradients underflow otherwise)
};

const char* precision_name(Precision precision);  // "fp32", "bf16", "fp16"
// "fp32" | "bf16" | "fp16"; anything else is an error that names the allowed values.
StatusOr<Precision> parse_precision(std::string_view name);

}  // namespace sx::model
