// defines: sx::storage::H5Handle (RAII hid_t), h5_error (HDF5 error stack -> Status),
//          file create/open with our access properties, scalar/string attribute helpers,
//          float32 dataset write/read. Thin wrappers over the HDF5 C API; the data plane reuses them.
//
// HDF5 here is the thread-safe build (1.10): calls are serialised inside the library, and its
// error stack and auto-print setting are per thread, so every entry point calls h5_quiet().
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace sx::storage {

// Owns one HDF5 identifier and closes it with the matching H5?close on destruction.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports failure (H5Fclose is where buffered writes reach the file).
  [[nodiscard]] Status close(const std::string& what);
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Turns off HDF5's automatic printing of error stacks for this thread; we report them as Status.
void h5_quiet();

// A Status of `code` with `what` followed by the innermost HDF5 error descriptions; clears the stack.
Status h5_error(StatusCode code, const std::string& what);

// Files use the 1.10 format (checksummed object headers, superblock and chunk indexes) and no
// file locking (flock is unreliable on the NFS/Lustre mounts checkpoints go to).
StatusOr<H5Handle> h5_create_file(const std::string& path);
StatusOr<H5Handle> h5_open_file_readonly(const std::string& path);

StatusOr<H5Handle> h5_open_group(hid_t loc, const std::string& name);
bool h5_exists(hid_t loc, const std::string& path);  // every component of an a/b/c path

// Attributes on an object: int64, uint32 and strings. Strings are fixed-length UTF-8 so they
// live in the (checksummed) object header, not the unchecksummed global heap.
Status h5_write_attr_i64(hid_t obj, const std::string& name, int64_t value);
Status h5_write_attr_u32(hid_t obj, const std::string& name, uint32_t value);
Status h5_write_attr_str(hid_t obj, const std::string& name, const std::string& value);
StatusOr<int64_t> h5_read_attr_i64(hid_t obj, const std::string& name);
StatusOr<uint32_t> h5_read_attr_u32(hid_t obj, const std::string& name);
StatusOr<std::string> h5_read_attr_str(hid_t obj, const std::string& name);

// Creates dataset `path` (intermediate groups as needed) of little-endian float32 with `shape`
// and writes `data` (product(shape) values). Rank >= 1 non-empty datasets are chunked with the
// fletcher32 filter, so even h5py readers detect a corrupted chunk.
StatusOr<H5Handle> h5_write_f32(hid_t loc, const std::string& path, const std::vector<int64_t>& shape,
                                const float* data);
StatusOr<std::vector<int64_t>> h5_dataset_shape(hid_t dset);
Status h5_read_f32(hid_t dset, float* out);  // out holds product(shape) floats

// Names of all datasets below `loc`, as '/'-joined relative paths, in creation order.
StatusOr<std::vector<std::string>> h5_list_datasets(hid_t loc);

int64_t shape_numel(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);  // "[64, 3, 7, 7]"

}  // namespace sx::storage
