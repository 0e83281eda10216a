#include "dataplane/hdf5_write.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "dataplane/prep_files.h"
#include "dataplane/shard_format.h"

namespace sx::dataplane {
namespace {

// Fixed chunk sizes (elements) so the file layout depends only on the data.
constexpr hsize_t kDataChunk = 1 << 20;   // bytes of /data
constexpr hsize_t kIndexChunk = 1 << 14;  // rows of /offsets, /shapes, /labels

Status h5_error(const std::string& what, const std::string& path) {
  return Status::unavailable("HDF5: " + what + " failed for " + path);
}

H5Handle make(hid_t id, H5Handle::Closer c) { return H5Handle(id, c); }

Status write_dataset(hid_t file, const char* name, hid_t mem_type, hid_t file_type, const void* buf,
                     std::vector<hsize_t> dims, std::vector<hsize_t> chunk, const std::string& path) {
  H5Handle space = make(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  if (!space.valid()) return h5_error(std::string("create dataspace for ") + name, path);
  H5Handle dcpl = make(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  for (size_t i = 0; i < dims.size(); ++i) chunk[i] = std::max<hsize_t>(1, std::min(chunk[i], dims[i]));
  if (!dcpl.valid() || H5Pset_obj_track_times(dcpl.get(), false) < 0 ||
      H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0 ||
      H5Pset_fletcher32(dcpl.get()) < 0)
    return h5_error(std::string("dataset properties for ") + name, path);
  H5Handle ds = make(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) return h5_error(std::string("create dataset ") + name, path);
  if (H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    return h5_error(std::string("write dataset ") + name, path);
  return ds.close(path);
}

Status write_attr(hid_t obj, const char* name, hid_t type, const void* value, const std::string& path) {
  H5Handle space = make(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr = make(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type, value) < 0) return h5_error(std::string("attribute ") + name, path);
  return attr.close(path);
}

}  // namespace

std::string partial_shard_name(const std::string& name) {
  std::string partial = name;  // appended, not "." + name: GCC 12 -Wrestrict false positive
  partial.insert(0, 1, '.');
  return partial + ".partial";
}

void ShardWriter::add(std::span<const uint8_t> bytes, int h, int w, int c, int32_t label) {
  data_.insert(data_.end(), bytes.begin(), bytes.end());
  offsets_.push_back(static_cast<int64_t>(data_.size()));
  shapes_.insert(shapes_.end(), {h, w, c});
  labels_.push_back(label);
}

Status ShardWriter::write_file(const std::string& path, const std::string& encoding, int64_t first_index) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as Status, not printed stacks
  H5Handle fcpl = make(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  if (!fcpl.valid() || H5Pset_obj_track_times(fcpl.get(), false) < 0) return h5_error("file properties", path);
  H5Handle file = make(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT), H5Fclose);
  if (!file.valid()) return h5_error("create file", path);
  const hsize_t n = labels_.size();
  SX_TRY(write_dataset(file.get(), "data", H5T_NATIVE_UINT8, H5T_STD_U8LE, data_.data(), {data_.size()},
                       {kDataChunk}, path));
  SX_TRY(write_dataset(file.get(), "offsets", H5T_NATIVE_INT64, H5T_STD_I64LE, offsets_.data(), {n + 1},
                       {kIndexChunk}, path));
  SX_TRY(write_dataset(file.get(), "shapes", H5T_NATIVE_INT32, H5T_STD_I32LE, shapes_.data(), {n, 3},
                       {kIndexChunk, 3}, path));
  SX_TRY(write_dataset(file.get(), "labels", H5T_NATIVE_INT32, H5T_STD_I32LE, labels_.data(), {n},
                       {kIndexChunk}, path));
  const int version = kShardFormatVersion;
  const int64_t num = static_cast<int64_t>(n);
  SX_TRY(write_attr(file.get(), "format_version", H5T_NATIVE_INT, &version, path));
  SX_TRY(write_attr(file.get(), "num_samples", H5T_NATIVE_INT64, &num, path));
  SX_TRY(write_attr(file.get(), "first_index", H5T_NATIVE_INT64, &first_index, path));
  {
    H5Handle str = make(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!str.valid() || H5Tset_size(str.get(), encoding.size()) < 0) return h5_error("string type", path);
    SX_TRY(write_attr(file.get(), "encoding", str.get(), encoding.data(), path));
  }
  if (file.close(path).is_ok()) return Status::ok();
  return h5_error("close file", path);
}

StatusOr<uint32_t> ShardWriter::finish(const std::string& dir, const std::string& name, const std::string& encoding,
                                       int64_t first_index) {
  const std::string tmp = (std::filesystem::path(dir) / partial_shard_name(name)).string();
  const std::string final_path = (std::filesystem::path(dir) / name).string();
  Status st = write_file(tmp, encoding, first_index);
  StatusOr<uint32_t> crc = st.is_ok() ? crc32_of_file(tmp) : StatusOr<uint32_t>(st);
  if (crc.is_ok()) st = rename_durable(tmp, final_path, /*sync_dir=*/false);  // run_prep syncs the directory once
  else st = crc.status();
  if (!st.is_ok()) {
    std::remove(tmp.c_str());
    return st;
  }
  data_.clear();
  offsets_.assign(1, 0);
  shapes_.clear();
  labels_.clear();
  return crc;
}

}  // namespace sx::dataplane
