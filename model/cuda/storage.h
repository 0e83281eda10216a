// defines: sx::model::cuda::dispatch_storage — runs a kernel template for the activation storage type
// of a Precision (float, ew::Bf16, ew::Fp16) — and the cuDNN data type of each.
#pragma once

#include <cudnn.h>

#include "model/elementwise.h"
#include "model/precision.h"

namespace sx::model::cuda {

// f(T{}) with T the storage type of p.
template <class F>
decltype(auto) dispatch_storage(Precision p, F&& f) {
  switch (p) {
    case Precision::kBf16: return f(ew::Bf16{});
    case Precision::kFp16: return f(ew::Fp16{});
    case Precision::kFp32: break;
  }
  return f(float{});
}

inline cudnnDataType_t cudnn_type(Precision p) {
  switch (p) {
    case Precision::kBf16: return CUDNN_DATA_BFLOAT16;
    case Precision::kFp16: return CUDNN_DATA_HALF;
    case Precision::kFp32: break;
  }
  return CUDNN_DATA_FLOAT;
}

}  // namespace sx::model::cuda
