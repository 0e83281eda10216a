// defines: sx::storage::TorchTensor, write_torch_state_dict, read_torch_state_dict — PyTorch's
// torch.save file (the zip format of torch >= 1.6) holding a state_dict of named tensors.
//
// Layout written (what torch.save writes, so torch.load reads it as an OrderedDict):
//   archive/data.pkl   pickle protocol 2: OrderedDict{name: _rebuild_tensor_v2(storage, 0, shape,
//                      contiguous strides, False, OrderedDict())}, storage = persistent id
//                      ('storage', torch.FloatStorage|LongStorage, key, 'cpu', numel)
//   archive/data/<key> the storage's little-endian bytes, one record per tensor, stored (no compression)
//   archive/version    "3"
// Reading accepts what torch.save writes for a state_dict or a dict holding one under "state_dict"
// or "model"; float64/float16/bfloat16 tensors are converted to float32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::storage {

enum class TorchDType : uint8_t { kFloat32, kInt64 };

struct TorchTensor {
  std::string name;             // state_dict key, e.g. "layer1.0.conv2.weight"
  std::vector<int64_t> shape;   // {} = a 0-dim tensor (one value)
  TorchDType dtype = TorchDType::kFloat32;
  std::vector<float> data;      // kFloat32: product(shape) values
  std::vector<int64_t> ints;    // kInt64: product(shape) values (BN num_batches_tracked)
};

// Writes `path` crash-safely (path.tmp, then rename); nothing is left at `path` on failure.
Status write_torch_state_dict(const std::string& path, const std::vector<TorchTensor>& tensors);

// Reads a state_dict in the order its keys were saved. The legacy (pre-1.6, non-zip) format is
// refused with a HINT on how to re-save it.
StatusOr<std::vector<TorchTensor>> read_torch_state_dict(const std::string& path);

}  // namespace sx::storage
