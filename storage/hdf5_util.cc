#include "storage/hdf5_util.h"

#include <algorithm>
#include <cstring>

namespace sx::storage {
namespace {

H5Handle make(hid_t id, H5Handle::Closer closer) { return H5Handle(id, closer); }

// Group creation property list that tracks link creation order (so listings keep save order).
H5Handle ordered_gcpl() {
  H5Handle gcpl = make(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  return gcpl;
}

StatusOr<H5Handle> file_access_plist() {
  H5Handle fapl = make(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid()) return h5_error(StatusCode::kInternal, "H5Pcreate(FILE_ACCESS)");
  if (H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0)
    return h5_error(StatusCode::kInternal, "H5Pset_libver_bounds");
  if (H5Pset_file_locking(fapl.get(), false, true) < 0) return h5_error(StatusCode::kInternal, "H5Pset_file_locking");
  return fapl;
}

// Opens (creating with tracked order if absent) the group chain "a/b" below loc.
StatusOr<H5Handle> ensure_group(hid_t loc, const std::string& path) {
  H5Handle cur;
  hid_t at = loc;
  size_t begin = 0;
  while (begin < path.size()) {
    size_t end = path.find('/', begin);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(begin, end - begin);
    H5Handle next;
    if (H5Lexists(at, part.c_str(), H5P_DEFAULT) > 0) {
      next = make(H5Gopen2(at, part.c_str(), H5P_DEFAULT), H5Gclose);
    } else {
      H5Handle gcpl = ordered_gcpl();
      next = make(H5Gcreate2(at, part.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    }
    if (!next.valid()) return h5_error(StatusCode::kInternal, "creating group '" + path + "'");
    cur = std::move(next);
    at = cur.get();
    begin = end + 1;
  }
  if (!cur.valid()) return h5_open_group(loc, ".");
  return cur;
}

herr_t collect_error(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  // The two innermost entries carry the useful detail ("truncated file: eof = ...").
  if (n < 2 && err->desc && *err->desc) {
    if (!out->empty()) *out += "; ";
    *out += err->desc;
  }
  return 0;
}

// Creation order where the group tracks it (ours do), name order otherwise.
H5_index_t group_index(hid_t group) {
  H5Handle gcpl = make(H5Gget_create_plist(group), H5Pclose);
  unsigned flags = 0;
  if (!gcpl.valid() || H5Pget_link_creation_order(gcpl.get(), &flags) < 0 || !(flags & H5P_CRT_ORDER_INDEXED))
    return H5_INDEX_NAME;
  return H5_INDEX_CRT_ORDER;
}

struct ListCtx {
  std::string prefix;
  std::vector<std::string>* out;
  bool failed = false;
};

herr_t list_cb(hid_t group, const char* name, const H5L_info_t*, void* data) {
  auto* ctx = static_cast<ListCtx*>(data);
  H5O_info_t info;
  if (H5Oget_info_by_name(group, name, &info, H5P_DEFAULT) < 0) {
    ctx->failed = true;
    return -1;
  }
  const std::string full = ctx->prefix.empty() ? std::string(name) : ctx->prefix + "/" + name;
  if (info.type == H5O_TYPE_DATASET) {
    ctx->out->push_back(full);
  } else if (info.type == H5O_TYPE_GROUP) {
    H5Handle sub = make(H5Gopen2(group, name, H5P_DEFAULT), H5Gclose);
    if (!sub.valid()) {
      ctx->failed = true;
      return -1;
    }
    ListCtx child{full, ctx->out};
    if (H5Literate(sub.get(), group_index(sub.get()), H5_ITER_INC, nullptr, list_cb, &child) < 0 || child.failed) {
      ctx->failed = true;
      return -1;
    }
  }
  return 0;
}

}  // namespace

void H5Handle::reset() {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = H5I_INVALID_HID;
}

Status H5Handle::close(const std::string& what) {
  if (id_ < 0) return Status::ok();
  const herr_t rc = closer_ ? closer_(id_) : 0;
  id_ = H5I_INVALID_HID;
  if (rc < 0) return h5_error(StatusCode::kUnavailable, "closing " + what);
  return Status::ok();
}

void h5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Status h5_error(StatusCode code, const std::string& what) {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &detail);
  H5Eclear2(H5E_DEFAULT);
  std::string msg = detail.empty() ? what : what + " (HDF5: " + detail + ")";
  switch (code) {
    case StatusCode::kNotFound: return Status::not_found(msg);
    case StatusCode::kDataLoss: return Status::data_loss(msg);
    case StatusCode::kUnavailable: return Status::unavailable(msg);
    case StatusCode::kInvalidArgument: return Status::invalid_argument(msg);
    default: return Status::internal(msg);
  }
}

StatusOr<H5Handle> h5_create_file(const std::string& path) {
  h5_quiet();
  SX_ASSIGN_OR_RETURN(H5Handle fapl, file_access_plist());
  H5Handle fcpl = make(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  H5Handle file = make(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose);
  if (!file.valid()) return h5_error(StatusCode::kUnavailable, "cannot create " + path);
  return file;
}

StatusOr<H5Handle> h5_open_file_readonly(const std::string& path) {
  h5_quiet();
  SX_ASSIGN_OR_RETURN(H5Handle fapl, file_access_plist());
  H5Handle file = make(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  // A file that exists but does not open is damaged (truncated, bad superblock) or not HDF5.
  if (!file.valid()) return h5_error(StatusCode::kDataLoss, "cannot open " + path + " as HDF5");
  return file;
}

StatusOr<H5Handle> h5_open_group(hid_t loc, const std::string& name) {
  H5Handle g = make(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) return h5_error(StatusCode::kNotFound, "no group '" + name + "'");
  return g;
}

bool h5_exists(hid_t loc, const std::string& path) {
  size_t end = 0;
  while (true) {
    end = path.find('/', end);
    const std::string prefix = path.substr(0, end);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (end == std::string::npos) return true;
    ++end;
  }
}

Status h5_write_attr_i64(hid_t obj, const std::string& name, int64_t value) {
  H5Handle space = make(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr = make(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    return h5_error(StatusCode::kUnavailable, "writing attribute " + name);
  return Status::ok();
}

Status h5_write_attr_u32(hid_t obj, const std::string& name, uint32_t value) {
  H5Handle space = make(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr = make(H5Acreate2(obj, name.c_str(), H5T_STD_U32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), H5T_NATIVE_UINT32, &value) < 0)
    return h5_error(StatusCode::kUnavailable, "writing attribute " + name);
  return Status::ok();
}

Status h5_write_attr_str(hid_t obj, const std::string& name, const std::string& value) {
  // HDF5 has no zero-length fixed strings: store at least one NUL (NULLPAD strips it on read).
  const size_t size = std::max<size_t>(1, value.size());
  std::string padded = value;
  padded.resize(size, '\0');
  H5Handle type = make(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), size);
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  H5Handle space = make(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr = make(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), padded.data()) < 0)
    return h5_error(StatusCode::kUnavailable, "writing attribute " + name);
  return Status::ok();
}

namespace {
template <typename T>
StatusOr<T> read_attr_scalar(hid_t obj, const std::string& name, hid_t mem_type) {
  if (H5Aexists(obj, name.c_str()) <= 0) return Status::not_found("missing attribute '" + name + "'");
  H5Handle attr = make(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return h5_error(StatusCode::kDataLoss, "opening attribute " + name);
  H5Handle ftype = make(H5Aget_type(attr.get()), H5Tclose);
  H5Handle space = make(H5Aget_space(attr.get()), H5Sclose);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1)
    return Status::data_loss("attribute '" + name + "' is not a scalar integer");
  T value{};
  if (H5Aread(attr.get(), mem_type, &value) < 0) return h5_error(StatusCode::kDataLoss, "reading attribute " + name);
  return value;
}
}  // namespace

StatusOr<int64_t> h5_read_attr_i64(hid_t obj, const std::string& name) {
  return read_attr_scalar<int64_t>(obj, name, H5T_NATIVE_INT64);
}

StatusOr<uint32_t> h5_read_attr_u32(hid_t obj, const std::string& name) {
  return read_attr_scalar<uint32_t>(obj, name, H5T_NATIVE_UINT32);
}

StatusOr<std::string> h5_read_attr_str(hid_t obj, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) <= 0) return Status::not_found("missing attribute '" + name + "'");
  H5Handle attr = make(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return h5_error(StatusCode::kDataLoss, "opening attribute " + name);
  H5Handle ftype = make(H5Aget_type(attr.get()), H5Tclose);
  H5Handle space = make(H5Aget_space(attr.get()), H5Sclose);
  if (H5Tget_class(ftype.get()) != H5T_STRING || H5Tis_variable_str(ftype.get()) > 0 ||
      H5Sget_simple_extent_npoints(space.get()) != 1)
    return Status::data_loss("attribute '" + name + "' is not a fixed-length string");
  const size_t size = H5Tget_size(ftype.get());
  constexpr size_t kMaxAttrString = size_t{64} << 20;  // validate, then allocate
  if (size > kMaxAttrString)
    return Status::data_loss("attribute '" + name + "' declares a " + std::to_string(size) + "-byte string (at most " +
                             std::to_string(kMaxAttrString) + ")");
  std::string value(size, '\0');
  H5Handle mtype = make(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mtype.get(), size);
  H5Tset_strpad(mtype.get(), H5T_STR_NULLPAD);
  H5Tset_cset(mtype.get(), H5T_CSET_UTF8);
  if (H5Aread(attr.get(), mtype.get(), value.data()) < 0)
    return h5_error(StatusCode::kDataLoss, "reading attribute " + name);
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

StatusOr<H5Handle> h5_write_f32(hid_t loc, const std::string& path, const std::vector<int64_t>& shape,
                                const float* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  H5Handle space = dims.empty() ? make(H5Screate(H5S_SCALAR), H5Sclose)
                                : make(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Handle dcpl = make(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  const int64_t numel = shape_numel(shape);
  if (!dims.empty() && numel > 0) {
    // Chunks of whole rows along dim 0, up to ~4 MiB each.
    const hsize_t row = static_cast<hsize_t>(numel / shape[0]);
    const hsize_t max_rows = std::max<hsize_t>(1, (hsize_t{1} << 20) / row);
    std::vector<hsize_t> chunk = dims;
    chunk[0] = std::min(dims[0], max_rows);
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    H5Pset_fletcher32(dcpl.get());
  }
  SX_ASSIGN_OR_RETURN(H5Handle parent, [&]() -> StatusOr<H5Handle> {
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ensure_group(loc, "");
    return ensure_group(loc, path.substr(0, slash));
  }());
  const std::string leaf = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  H5Handle dset = make(H5Dcreate2(parent.get(), leaf.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(),
                                  H5P_DEFAULT),
                       H5Dclose);
  if (!dset.valid()) return h5_error(StatusCode::kUnavailable, "creating dataset " + path);
  if (numel > 0 && H5Dwrite(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    return h5_error(StatusCode::kUnavailable, "writing dataset " + path);
  return dset;
}

StatusOr<std::vector<int64_t>> h5_dataset_shape(hid_t dset) {
  H5Handle space = make(H5Dget_space(dset), H5Sclose);
  if (!space.valid()) return h5_error(StatusCode::kDataLoss, "reading dataspace");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return h5_error(StatusCode::kDataLoss, "reading dataspace rank");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    return h5_error(StatusCode::kDataLoss, "reading dataspace dims");
  return std::vector<int64_t>(dims.begin(), dims.end());
}

Status h5_read_f32(hid_t dset, float* out) {
  H5Handle ftype = make(H5Dget_type(dset), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_FLOAT || H5Tget_size(ftype.get()) != 4)
    return Status::data_loss("dataset is not float32");
  SX_ASSIGN_OR_RETURN(std::vector<int64_t> shape, h5_dataset_shape(dset));
  if (shape_numel(shape) == 0) return Status::ok();
  if (H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    return h5_error(StatusCode::kDataLoss, "reading data");
  return Status::ok();
}

StatusOr<std::vector<std::string>> h5_list_datasets(hid_t loc) {
  std::vector<std::string> out;
  H5Handle root = make(H5Gopen2(loc, ".", H5P_DEFAULT), H5Gclose);
  if (!root.valid()) return h5_error(StatusCode::kDataLoss, "opening root group");
  ListCtx ctx{"", &out};
  if (H5Literate(root.get(), group_index(root.get()), H5_ITER_INC, nullptr, list_cb, &ctx) < 0 || ctx.failed)
    return h5_error(StatusCode::kDataLoss, "listing datasets");
  return out;
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace sx::storage
