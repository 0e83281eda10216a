#include "dataplane/shard_file.h"

#include <sys/stat.h>

#include "dataplane/shard_format.h"

namespace sx::dataplane {
namespace {

// HDF5's auto-print setting is per thread in the thread-safe build; we report errors as Status.
void quiet_hdf5() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

herr_t collect_error(unsigned n, const H5E_error2_t* err, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n < 3 && err->desc && *err->desc) {  // the innermost few say what actually failed
    if (!text->empty()) text->append("; ");
    text->append(err->desc);
  }
  return 0;
}

Status fail(const std::string& path, const std::string& what) {
  std::string detail = hdf5_error_text();
  return Status::data_loss(path + ": " + what + (detail.empty() ? "" : " (HDF5: " + detail + ")"));
}

StatusOr<int64_t> read_attr_i64(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) return Status::data_loss(path + ": missing root attribute '" + name + "'");
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  int64_t v = 0;
  if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0)
    return fail(path, std::string("cannot read attribute '") + name + "'");
  return v;
}

StatusOr<std::string> read_attr_str(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) return Status::data_loss(path + ": missing root attribute '" + name + "'");
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return fail(path, std::string("cannot open attribute '") + name + "'");
  H5Id type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING)
    return Status::data_loss(path + ": attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* s = nullptr;
    if (H5Aread(attr.get(), mem.get(), &s) < 0 || !s) return fail(path, std::string("cannot read attribute '") + name + "'");
    std::string out(s);
    H5free_memory(s);
    return out;
  }
  std::string out(H5Tget_size(type.get()), '\0');
  if (H5Aread(attr.get(), type.get(), out.data()) < 0) return fail(path, std::string("cannot read attribute '") + name + "'");
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

// Reads a whole dataset of `expect_rank` dims, (expect_dim0[, expect_dim1]), into out (converted to
// mem_type). The shape is checked before anything is allocated.
template <typename T>
Status read_all(hid_t file, const char* name, hid_t mem_type, int expect_rank, hsize_t expect_dim0, hsize_t expect_dim1,
                const std::string& path, std::vector<T>& out) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return Status::data_loss(path + ": missing dataset " + name);
  H5Id dset(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) return fail(path, std::string("cannot open dataset ") + name);
  H5Id space(H5Dget_space(dset.get()), H5Sclose);
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space.get()) != expect_rank ||
      H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0 || (expect_rank == 2 && dims[1] != expect_dim1))
    return Status::data_loss(path + ": dataset " + name + " has the wrong shape");
  if (dims[0] != expect_dim0)
    return Status::data_loss(path + ": dataset " + name + " has " + std::to_string(dims[0]) + " rows, expected " +
                             std::to_string(expect_dim0) + " (num_samples" + (std::string(name) == "/offsets" ? " + 1" : "") +
                             ")");
  out.resize(size_t(dims[0]) * (expect_rank == 2 ? expect_dim1 : 1));
  if (dims[0] > 0 && H5Dread(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    return fail(path, std::string("cannot read dataset ") + name);
  return Status::ok();
}

}  // namespace

std::string hdf5_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  return text;
}

StatusOr<std::unique_ptr<ShardFile>> ShardFile::open(const std::string& path, size_t chunk_cache_bytes) {
  quiet_hdf5();
  std::unique_ptr<ShardFile> s(new ShardFile());
  s->path_ = path;
  s->file_ = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!s->file_.valid()) return fail(path, "cannot open shard (not an HDF5 file, or missing)");
  const hid_t f = s->file_.get();

  SX_ASSIGN_OR_RETURN(int64_t version, read_attr_i64(f, "format_version", path));
  if (version != kShardFormatVersion)
    return Status::data_loss(path + ": shard format_version " + std::to_string(version) + ", this reader reads " +
                             std::to_string(kShardFormatVersion));
  SX_ASSIGN_OR_RETURN(std::string encoding, read_attr_str(f, "encoding", path));
  if (encoding == "raw") {
    s->encoding_ = SampleEncoding::kRaw;
  } else if (encoding == "jpeg") {
    s->encoding_ = SampleEncoding::kJpeg;
  } else {
    return Status::data_loss(path + ": unknown encoding '" + encoding + "' (expected raw or jpeg)");
  }
  SX_ASSIGN_OR_RETURN(int64_t n, read_attr_i64(f, "num_samples", path));
  SX_ASSIGN_OR_RETURN(s->first_index_, read_attr_i64(f, "first_index", path));

  // Validate, then allocate: the count must be sane and backed by the file's bytes (the index
  // datasets are stored uncompressed, 24 bytes per sample).
  struct stat fst;
  const int64_t file_bytes = ::stat(path.c_str(), &fst) == 0 ? int64_t(fst.st_size) : 0;
  if (n < 0 || n > kMaxShardSamples || n * kShardBytesPerSample > file_bytes)
    return Status::data_loss(path + ": num_samples = " + std::to_string(n) + " is not plausible for a file of " +
                             std::to_string(file_bytes) + " bytes (expected 0.." + std::to_string(kMaxShardSamples) +
                             ", at least " + std::to_string(kShardBytesPerSample) + " bytes each)");
  std::vector<int32_t> shapes_flat;
  SX_TRY(read_all(f, "/offsets", H5T_NATIVE_INT64, 1, hsize_t(n + 1), 0, path, s->offsets_));
  SX_TRY(read_all(f, "/shapes", H5T_NATIVE_INT32, 2, hsize_t(n), 3, path, shapes_flat));
  SX_TRY(read_all(f, "/labels", H5T_NATIVE_INT32, 1, hsize_t(n), 0, path, s->labels_));
  s->shapes_.resize(size_t(n));
  for (size_t i = 0; i < size_t(n); ++i) {
    const int32_t h = shapes_flat[3 * i], w = shapes_flat[3 * i + 1], c = shapes_flat[3 * i + 2];
    if (h < 1 || w < 1 || (c != 1 && c != 3) || int64_t(h) * int64_t(w) > kMaxSamplePixels)
      return Status::data_loss(path + ": /shapes row " + std::to_string(i) + " is (" + std::to_string(h) + ", " +
                               std::to_string(w) + ", " + std::to_string(c) + "); expected H, W >= 1, H·W <= " +
                               std::to_string(kMaxSamplePixels) + " and C = 1 or 3");
    s->shapes_[i] = {h, w, c};
  }

  H5Id dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  H5Pset_chunk_cache(dapl.get(), chunk_cache_bytes ? 521 : 0, chunk_cache_bytes, 1.0);
  s->data_ = H5Id(H5Dopen2(f, "/data", dapl.get()), H5Dclose);
  if (!s->data_.valid()) return fail(path, "cannot open dataset /data");
  H5Id space(H5Dget_space(s->data_.get()), H5Sclose);
  hsize_t total = 0;
  if (H5Sget_simple_extent_ndims(space.get()) != 1 || H5Sget_simple_extent_dims(space.get(), &total, nullptr) < 0)
    return Status::data_loss(path + ": /data must be 1-D uint8");
  if (s->offsets_[0] != 0 || s->offsets_.back() != int64_t(total))
    return Status::data_loss(path + ": /offsets must run from 0 to the size of /data (" + std::to_string(total) + ")");
  for (size_t i = 0; i < size_t(n); ++i)
    if (s->offsets_[i + 1] < s->offsets_[i])
      return Status::data_loss(path + ": /offsets decrease at sample " + std::to_string(s->first_index_ + int64_t(i)));
  return s;
}

Status ShardFile::read_sample(int64_t i, std::vector<uint8_t>& out) const {
  quiet_hdf5();
  const hsize_t start = hsize_t(offsets_[size_t(i)]), count = hsize_t(sample_bytes(i));
  out.resize(count);
  if (count == 0) return Status::ok();
  H5Id fspace(H5Dget_space(data_.get()), H5Sclose);
  H5Id mspace(H5Screate_simple(1, &count, nullptr), H5Sclose);
  if (!fspace.valid() || !mspace.valid() ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr) < 0 ||
      H5Dread(data_.get(), H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT, out.data()) < 0)
    return fail(path_, "cannot read sample " + std::to_string(first_index_ + i) + " (local " + std::to_string(i) +
                           ", bytes [" + std::to_string(start) + ", " + std::to_string(start + count) + ") of /data)");
  return Status::ok();
}

}  // namespace sx::dataplane
