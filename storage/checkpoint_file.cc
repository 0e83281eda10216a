// One checkpoint file: write, open + check metadata, load into slots, read, verify.
#include "storage/checkpoint_file.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "storage/fs_util.h"
#include "storage/hdf5_util.h"

namespace sx::storage {
namespace detail {

uint32_t crc32_floats(const float* data, int64_t count) {
  if (count <= 0) return static_cast<uint32_t>(crc32_z(0L, Z_NULL, 0));
  return static_cast<uint32_t>(
      crc32_z(0L, reinterpret_cast<const Bytef*>(data), static_cast<size_t>(count) * sizeof(float)));
}

namespace {

// The metadata checksum covers a canonical JSON of every field, so a damaged attribute
// (e.g. a flipped byte in config_text) cannot go unnoticed.
uint32_t meta_crc(const CheckpointMeta& m, int64_t num_tensors) {
  nlohmann::json j = {{"format_version", m.format_version},
                      {"step", m.step},
                      {"epoch", m.epoch},
                      {"samples_seen", m.samples_seen},
                      {"world_size", m.world_size},
                      {"global_batch", m.global_batch},
                      {"config_text", m.config_text},
                      {"model_preset", m.model_preset},
                      {"rng_seed", m.rng_seed},
                      {"data_epoch", m.data_epoch},
                      {"data_offset", m.data_offset},
                      {"extra_json", m.extra_json},
                      {"num_tensors", num_tensors}};
  const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(s.data()), s.size()));
}

Status write_meta(hid_t root, const CheckpointMeta& m, int64_t num_tensors) {
  SX_TRY(h5_write_attr_str(root, "writer", "sxtrain"));
  SX_TRY(h5_write_attr_i64(root, "format_version", kFormatVersion));
  SX_TRY(h5_write_attr_i64(root, "step", m.step));
  SX_TRY(h5_write_attr_i64(root, "epoch", m.epoch));
  SX_TRY(h5_write_attr_i64(root, "samples_seen", m.samples_seen));
  SX_TRY(h5_write_attr_i64(root, "world_size", m.world_size));
  SX_TRY(h5_write_attr_i64(root, "global_batch", m.global_batch));
  SX_TRY(h5_write_attr_str(root, "config_text", m.config_text));
  SX_TRY(h5_write_attr_str(root, "model_preset", m.model_preset));
  SX_TRY(h5_write_attr_i64(root, "rng_seed", m.rng_seed));
  SX_TRY(h5_write_attr_i64(root, "data_epoch", m.data_epoch));
  SX_TRY(h5_write_attr_i64(root, "data_offset", m.data_offset));
  SX_TRY(h5_write_attr_str(root, "extra_json", m.extra_json));
  SX_TRY(h5_write_attr_i64(root, "num_tensors", num_tensors));
  CheckpointMeta written = m;
  written.format_version = kFormatVersion;
  return h5_write_attr_u32(root, "meta_crc32", meta_crc(written, num_tensors));
}

// An open, metadata-checked checkpoint file.
struct OpenFile {
  H5Handle file;
  int64_t bytes = 0;               // the file's size: no tensor can hold more data than that
  CheckpointMeta meta;
  std::vector<std::string> names;  // datasets in file order
};

StatusOr<OpenFile> open_file(const std::string& path) {
  OpenFile f;
  SX_ASSIGN_OR_RETURN(f.file, h5_open_file_readonly(path));
  struct stat fst;
  if (::stat(path.c_str(), &fst) != 0) return Status::unavailable("stat " + path + ": " + errno_string(errno));
  f.bytes = int64_t(fst.st_size);
  const hid_t root = f.file.get();
  CheckpointMeta& m = f.meta;
  auto version = h5_read_attr_i64(root, "format_version");
  if (!version.is_ok())
    return Status::data_loss(path + " is not an sxtrain checkpoint (" + version.status().message() + ")");
  m.format_version = *version;
  if (m.format_version < 1 || m.format_version > kFormatVersion)
    return Status::invalid_argument(path + " has checkpoint format version " + std::to_string(m.format_version) +
                                    "; this build reads versions 1.." + std::to_string(kFormatVersion) +
                                    ". HINT: load it with the sxtrain release that wrote it");
  auto read_meta = [&]() -> Status {
    SX_ASSIGN_OR_RETURN(m.step, h5_read_attr_i64(root, "step"));
    SX_ASSIGN_OR_RETURN(m.epoch, h5_read_attr_i64(root, "epoch"));
    SX_ASSIGN_OR_RETURN(m.samples_seen, h5_read_attr_i64(root, "samples_seen"));
    SX_ASSIGN_OR_RETURN(m.world_size, h5_read_attr_i64(root, "world_size"));
    SX_ASSIGN_OR_RETURN(m.global_batch, h5_read_attr_i64(root, "global_batch"));
    SX_ASSIGN_OR_RETURN(m.config_text, h5_read_attr_str(root, "config_text"));
    SX_ASSIGN_OR_RETURN(m.model_preset, h5_read_attr_str(root, "model_preset"));
    SX_ASSIGN_OR_RETURN(m.rng_seed, h5_read_attr_i64(root, "rng_seed"));
    SX_ASSIGN_OR_RETURN(m.data_epoch, h5_read_attr_i64(root, "data_epoch"));
    SX_ASSIGN_OR_RETURN(m.data_offset, h5_read_attr_i64(root, "data_offset"));
    SX_ASSIGN_OR_RETURN(m.extra_json, h5_read_attr_str(root, "extra_json"));
    SX_ASSIGN_OR_RETURN(int64_t num_tensors, h5_read_attr_i64(root, "num_tensors"));
    SX_ASSIGN_OR_RETURN(uint32_t stored_crc, h5_read_attr_u32(root, "meta_crc32"));
    if (meta_crc(m, num_tensors) != stored_crc) return Status::data_loss("metadata checksum mismatch");
    SX_ASSIGN_OR_RETURN(f.names, h5_list_datasets(root));
    if (static_cast<int64_t>(f.names.size()) != num_tensors)
      return Status::data_loss("file holds " + std::to_string(f.names.size()) + " datasets, metadata says " +
                               std::to_string(num_tensors));
    return Status::ok();
  };
  Status st = read_meta();
  if (!st.is_ok()) return Status::data_loss(path + ": " + st.message());
  return f;
}

// Reads dataset `name` into `out` (sized by the caller) and checks its crc32.
Status read_verified(hid_t file, const std::string& name, float* out, int64_t numel) {
  H5Handle dset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) return h5_error(StatusCode::kDataLoss, "opening dataset " + name);
  auto stored_or = h5_read_attr_u32(dset.get(), "crc32");
  if (!stored_or.is_ok()) return Status::data_loss("dataset " + name + ": " + stored_or.status().message());
  const uint32_t stored = *stored_or;
  Status st = h5_read_f32(dset.get(), out);
  if (!st.is_ok()) return st.with_context("dataset " + name);
  const uint32_t actual = crc32_floats(out, numel);
  if (actual != stored) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "crc32 mismatch (stored %08x, computed %08x)", stored, actual);
    return Status::data_loss("dataset " + name + ": " + buf);
  }
  return Status::ok();
}

// The dataset's shape, validated before anyone allocates for it: dimensions >= 0 whose product
// (checked, no overflow) times 4 bytes fits in the file (float32 data are stored uncompressed).
StatusOr<std::vector<int64_t>> shape_of(const OpenFile& f, const std::string& name) {
  H5Handle dset(H5Dopen2(f.file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) return h5_error(StatusCode::kDataLoss, "opening dataset " + name);
  SX_ASSIGN_OR_RETURN(std::vector<int64_t> shape, h5_dataset_shape(dset.get()));
  int64_t numel = 1;
  bool ok = shape.size() <= 32;
  for (int64_t d : shape) ok = ok && d >= 0 && !__builtin_mul_overflow(numel, d, &numel);
  if (!ok || numel > f.bytes / 4)
    return Status::data_loss("dataset " + name + " declares shape " + shape_string(shape) + ", more float32 data than the " +
                             std::to_string(f.bytes) + "-byte file can hold");
  return shape;
}

}  // namespace

Status load_checkpoint_file(const std::string& path, const std::vector<TensorSlot>& slots,
                            const LoadOptions& options, LoadResult* result, std::vector<bool>* touched,
                            bool* mismatch) {
  *mismatch = false;
  SX_ASSIGN_OR_RETURN(OpenFile f, open_file(path));
  const hid_t file = f.file.get();
  const std::set<std::string> in_file(f.names.begin(), f.names.end());
  std::set<std::string> wanted;
  for (const TensorSlot& s : slots) {
    if (!wanted.insert(s.name).second) return Status::invalid_argument("duplicate slot name '" + s.name + "'");
    if (!s.data && shape_numel(s.shape) > 0) return Status::invalid_argument("slot '" + s.name + "' has no buffer");
  }

  // Pass 1 (metadata only, slots untouched): match slots to datasets.
  std::vector<bool> load(slots.size(), false);
  std::vector<std::string> skipped, unused;
  const std::string hint = ". HINT: to fine-tune from a different architecture, load with --skip-mismatched";
  for (size_t i = 0; i < slots.size(); ++i) {
    const TensorSlot& s = slots[i];
    std::string why;
    if (!in_file.count(s.name)) {
      why = "tensor " + s.name + " " + shape_string(s.shape) + " is missing from the checkpoint";
    } else {
      auto shape = shape_of(f, s.name);
      if (!shape.is_ok()) return shape.status().with_context(path);
      if (*shape != s.shape)
        why = "tensor " + s.name + ": model expects shape " + shape_string(s.shape) + ", checkpoint has " +
              shape_string(*shape);
    }
    if (why.empty()) {
      load[i] = true;
    } else if (options.skip_mismatched) {
      skipped.push_back(why);
    } else {
      *mismatch = true;
      return Status::invalid_argument(path + ": architecture mismatch: " + why + hint);
    }
  }
  for (const std::string& name : f.names) {
    if (wanted.count(name)) continue;
    if (!options.skip_mismatched) {
      *mismatch = true;
      return Status::invalid_argument(path + ": architecture mismatch: checkpoint has tensor " + name +
                                      " that the model does not" + hint);
    }
    unused.push_back(name);
  }

  // Pass 2: read each tensor straight into its slot and verify its checksum.
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!load[i]) continue;
    (*touched)[i] = true;
    Status st = read_verified(file, slots[i].name, slots[i].data, shape_numel(slots[i].shape));
    if (!st.is_ok()) return st.with_context(path);
  }
  result->path = path;
  result->meta = f.meta;
  result->skipped = std::move(skipped);
  result->unused = std::move(unused);
  return Status::ok();
}

}  // namespace detail

Status write_checkpoint_file(const std::string& path, const CheckpointState& state) {
  std::set<std::string> seen;
  for (const TensorRef& t : state.tensors) {
    SX_CHECK_ARG(!t.name.empty() && t.name.front() != '/' && t.name.back() != '/', "bad tensor name '" + t.name + "'");
    SX_CHECK_ARG(seen.insert(t.name).second, "duplicate tensor name '" + t.name + "'");
    for (int64_t d : t.shape) SX_CHECK_ARG(d >= 0, "negative dimension in " + t.name);
    SX_CHECK_ARG(t.data || shape_numel(t.shape) == 0, "tensor " + t.name + " has no data");
  }
  SX_ASSIGN_OR_RETURN(H5Handle file, h5_create_file(path));
  for (const TensorRef& t : state.tensors) {
    SX_ASSIGN_OR_RETURN(H5Handle dset, h5_write_f32(file.get(), t.name, t.shape, t.data));
    Status st = h5_write_attr_u32(dset.get(), "crc32", detail::crc32_floats(t.data, shape_numel(t.shape)));
    if (!st.is_ok()) return st.with_context(path);
  }
  Status st = detail::write_meta(file.get(), state.meta, static_cast<int64_t>(state.tensors.size()));
  if (!st.is_ok()) return st.with_context(path);
  return file.close(path);
}

StatusOr<CheckpointContents> read_checkpoint(const std::string& path) {
  SX_ASSIGN_OR_RETURN(detail::OpenFile f, detail::open_file(path));
  CheckpointContents out;
  out.meta = f.meta;
  for (const std::string& name : f.names) {
    OwnedTensor t;
    t.name = name;
    auto shape = detail::shape_of(f, name);
    if (!shape.is_ok()) return shape.status().with_context(path);
    t.shape = *shape;
    t.data.resize(static_cast<size_t>(shape_numel(t.shape)));
    Status st = detail::read_verified(f.file.get(), name, t.data.data(), shape_numel(t.shape));
    if (!st.is_ok()) return st.with_context(path);
    out.tensors.push_back(std::move(t));
  }
  return out;
}

StatusOr<VerifyReport> verify_checkpoint(const std::string& path) {
  SX_ASSIGN_OR_RETURN(detail::OpenFile f, detail::open_file(path));
  VerifyReport report;
  report.meta = f.meta;
  std::vector<float> scratch;
  for (const std::string& name : f.names) {
    auto shape = detail::shape_of(f, name);
    if (!shape.is_ok()) return shape.status().with_context(path);
    const int64_t n = shape_numel(*shape);
    scratch.resize(static_cast<size_t>(n));
    Status st = detail::read_verified(f.file.get(), name, scratch.data(), n);
    if (!st.is_ok()) return st.with_context(path);
    report.tensors.push_back(name + " " + shape_string(*shape));
    report.total_values += n;
  }
  return report;
}

}  // namespace sx::storage
