// defines: sx::storage::CheckpointMeta, TensorRef, TensorSlot, CheckpointState, SaveOptions,
//          LoadOptions, LoadResult, save_checkpoint, load_checkpoint, load_latest, read_checkpoint,
//          verify_checkpoint, find_latest, checkpoint_file_name.
//
// One HDF5 file per checkpoint: every tensor is a float32 dataset at its path
// ("params/stage2.block0.conv2.weight", "momentum/...", "bn_stats/...") with a zlib crc32 attribute;
// the metadata are root attributes (see storage/README.md for the layout and the crash protocol).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::storage {

inline constexpr int64_t kFormatVersion = 1;

// Everything besides tensors that a resume needs. Written as root attributes so h5py reads them
// (`f.attrs['step']`; strings come back as bytes: `f.attrs['config_text'].decode()`).
struct CheckpointMeta {
  int64_t step = 0;          // global optimizer steps done
  int64_t epoch = 0;         // epochs completed
  int64_t samples_seen = 0;  // global samples consumed
  int64_t world_size = 1;
  int64_t global_batch = 0;
  std::string config_text;   // the full resolved config (YAML) of the run
  std::string model_preset;  // e.g. "se_resnext50_32x4d"
  // RNG / data cursor: the sample order is a function of (seed, epoch, index), so these suffice.
  int64_t rng_seed = 0;
  int64_t data_epoch = 0;
  int64_t data_offset = 0;   // global sample index within data_epoch
  std::string extra_json = "{}";  // anything else the worker wants back (JSON object text)
  int64_t format_version = kFormatVersion;  // set on save, checked on load

  bool operator==(const CheckpointMeta&) const = default;
};

// A tensor to save; `data` is borrowed and holds product(shape) floats. Rank 0 = one value.
struct TensorRef {
  std::string name;  // dataset path, '/'-separated groups, '.' allowed: "params/fc.weight"
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Where a load puts a tensor; `data` holds product(shape) floats.
struct TensorSlot {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
};

struct CheckpointState {
  CheckpointMeta meta;
  std::vector<TensorRef> tensors;  // saved in this order
};

struct SaveOptions {
  int keep_last = 3;  // checkpoints kept (at least 1; the one `latest` names is never deleted)
};

struct LoadOptions {
  // Fine-tuning: slots missing from the file or with another shape keep their contents, tensors
  // in the file with no slot are ignored; both are listed in LoadResult.
  bool skip_mismatched = false;
  // load_latest only: when a checkpoint fails verification, try the previous one.
  bool fallback = true;
};

struct LoadResult {
  std::string path;                   // the file actually loaded
  CheckpointMeta meta;
  std::vector<std::string> skipped;   // slots not loaded (skip_mismatched), with the reason
  std::vector<std::string> unused;    // tensors in the file with no slot (skip_mismatched)
  std::vector<std::string> warnings;  // files that failed and why (the caller logs these)
};

// A tensor read into memory (read_checkpoint, the async writer's snapshot).
struct OwnedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct CheckpointContents {
  CheckpointMeta meta;
  std::vector<OwnedTensor> tensors;  // in file order
};

// "ckpt-00001200.h5".
std::string checkpoint_file_name(int64_t step);

// Writes dir/ckpt-<step>.h5 (step = state.meta.step) crash-safely, points dir/latest at it, then
// applies retention and removes stale .tmp files. Creates `dir` if needed.
Status save_checkpoint(const std::string& dir, const CheckpointState& state, const SaveOptions& options = {});

// Writes one checkpoint file directly (no tmp/rename; save_checkpoint uses it on the tmp name).
Status write_checkpoint_file(const std::string& path, const CheckpointState& state);

// The checkpoint `dir/latest` names (a path), NotFound when the directory holds none.
StatusOr<std::string> find_latest(const std::string& dir);

// Loads the checkpoint `dir/latest` names into `slots`. With options.fallback, a file that fails
// verification is reported in warnings and the previous checkpoints are tried newest first.
// An architecture mismatch is an error at once (no fallback): it names the first mismatched tensor.
// On error the slots' contents are unspecified.
StatusOr<LoadResult> load_latest(const std::string& dir, const std::vector<TensorSlot>& slots,
                                 const LoadOptions& options = {});

// `path` may be a checkpoint directory, its `latest` file (both -> load_latest) or one .h5 file.
StatusOr<LoadResult> load_checkpoint(const std::string& path, const std::vector<TensorSlot>& slots,
                                     const LoadOptions& options = {});

// Reads and verifies a whole file into memory (inspection, conversion, inference).
StatusOr<CheckpointContents> read_checkpoint(const std::string& path);

// Checks every checksum of one file without keeping the data; returns the metadata and the
// tensor names with shapes ("params/fc.weight [10, 256]").
struct VerifyReport {
  CheckpointMeta meta;
  std::vector<std::string> tensors;
  int64_t total_values = 0;
};
StatusOr<VerifyReport> verify_checkpoint(const std::string& path);

}  // namespace sx::storage
