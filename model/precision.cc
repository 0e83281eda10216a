// Precision names.
#include "model/precision.h"

#include <string>

namespace sx::model {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp16: return "fp16";
  }
  return "?";
}

StatusOr<Precision> parse_precision(std::string_view name) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16})
    if (name == precision_name(p)) return p;
  return Status::invalid_argument("precision '" + std::string(name) + "' is not one of fp32, bf16, fp16");
}

}  // namespace sx::model
