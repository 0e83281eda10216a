// defines: sx::storage::detail::load_checkpoint_file, crc32_floats — one-file reading shared by
// checkpoint_dir.cc (fallback across files) and checkpoint_file.cc. Internal to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/checkpoint.h"

namespace sx::storage::detail {

uint32_t crc32_floats(const float* data, int64_t count);

// Loads one file into `slots`. `touched[i]` is set once slot i has been (partly) overwritten.
// `*mismatch` is set when the failure is an architecture mismatch (no point falling back).
Status load_checkpoint_file(const std::string& path, const std::vector<TensorSlot>& slots,
                            const LoadOptions& options, LoadResult* result, std::vector<bool>* touched,
                            bool* mismatch);

}  // namespace sx::storage::detail
