#include "dataplane/prep_idx.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <tuple>

namespace sx::dataplane {
namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly n bytes or says how many were there.
Status read_exact(gzFile f, uint8_t* dst, size_t n, const std::string& path, const char* what) {
  size_t done = 0;
  while (done < n) {
    unsigned want = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    int got = gzread(f, dst + done, want);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      return Status::data_loss(path + ": corrupt gzip stream while reading " + what + " (" + msg + ")");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  if (done != n)
    return Status::data_loss(path + ": truncated: " + what + " needs " + std::to_string(n) + " bytes, file has " +
                             std::to_string(done));
  return Status::ok();
}

// Reads n bytes into out, growing it as data arrive (at most 64 MiB ahead of what the file gave), so a
// header that claims more than the file holds fails as truncated instead of allocating the claim.
Status read_growing(gzFile f, std::vector<uint8_t>& out, size_t n, const std::string& path, const char* what) {
  constexpr size_t kStep = size_t{64} << 20;
  out.clear();
  size_t done = 0;
  while (done < n) {
    const size_t want = std::min(n - done, kStep);
    out.resize(done + want);
    Status st = read_exact(f, out.data() + done, want, path, what);
    if (!st.is_ok()) {
      if (st.code() == StatusCode::kDataLoss && st.message().find("truncated") != std::string::npos)
        return Status::data_loss(path + ": truncated: " + what + " needs " + std::to_string(n) +
                                 " bytes (from the header), the file has fewer");
      return st;
    }
    done += want;
  }
  return Status::ok();
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Opens and reads the header: magic 0x00000800 | (ndims) with unsigned-byte data (type 0x08).
StatusOr<GzPtr> open_idx(const std::string& path, int ndims, std::vector<uint32_t>* dims) {
  GzPtr f(gzopen(path.c_str(), "rb"));
  if (!f) return Status::not_found(path + ": cannot open (" + std::strerror(errno) + ")");
  gzbuffer(f.get(), 1 << 17);
  uint8_t head[4];
  SX_TRY(read_exact(f.get(), head, 4, path, "the idx magic number"));
  const uint32_t magic = be32(head);
  const uint32_t want = 0x00000800u | static_cast<uint32_t>(ndims);
  if (magic != want) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "bad idx magic 0x%08x, expected 0x%08x", magic, want);
    return Status::invalid_argument(path + ": " + buf + (ndims == 3 ? " (idx3-ubyte images)" : " (idx1-ubyte labels)") +
                                    ". HINT: --images takes the images file, --labels the labels file");
  }
  dims->resize(ndims);
  for (int d = 0; d < ndims; ++d) {
    SX_TRY(read_exact(f.get(), head, 4, path, "the idx dimensions"));
    (*dims)[d] = be32(head);
  }
  return f;
}

}  // namespace

StatusOr<IdxDataset> read_idx(const std::string& images_path, const std::string& labels_path) {
  IdxDataset ds;
  std::vector<uint32_t> idims, ldims;
  SX_ASSIGN_OR_RETURN(GzPtr images, open_idx(images_path, 3, &idims));
  SX_ASSIGN_OR_RETURN(GzPtr labels, open_idx(labels_path, 1, &ldims));
  if (idims[0] != ldims[0])
    return Status::invalid_argument(images_path + " has " + std::to_string(idims[0]) + " images but " + labels_path +
                                    " has " + std::to_string(ldims[0]) + " labels");
  if (idims[1] == 0 || idims[2] == 0 || idims[1] > 65536 || idims[2] > 65536)
    return Status::invalid_argument(images_path + ": implausible image size " + std::to_string(idims[1]) + "x" +
                                    std::to_string(idims[2]));
  ds.count = idims[0];
  ds.rows = static_cast<int>(idims[1]);
  ds.cols = static_cast<int>(idims[2]);
  // count < 2^32 and rows, cols <= 2^16: the product fits in 64 bits. Validate, then allocate: a
  // plain (not gzipped) file must hold at least header + data; a gzipped one is read in steps, so
  // a header that lies fails at the end of the stream, not in the allocator.
  const uint64_t pixel_bytes = uint64_t(ds.count) * uint64_t(ds.rows) * uint64_t(ds.cols);
  constexpr uint64_t kMaxBytes = uint64_t{1} << 40;
  if (pixel_bytes > kMaxBytes)
    return Status::invalid_argument(images_path + ": the header declares " + std::to_string(ds.count) + " images of " +
                                    std::to_string(ds.rows) + "x" + std::to_string(ds.cols) + " = " +
                                    std::to_string(pixel_bytes) + " bytes, more than the 1 TiB this reader accepts");
  for (const auto& [f, path, bytes, header] :
       {std::tuple{images.get(), images_path, pixel_bytes, uint64_t{16}},
        std::tuple{labels.get(), labels_path, uint64_t(ds.count), uint64_t{8}}}) {
    struct stat st;
    if (gzdirect(f) && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) < header + bytes)
      return Status::data_loss(path + ": truncated: the header declares " + std::to_string(bytes) +
                               " data bytes (a file of " + std::to_string(header + bytes) + " bytes), the file has " +
                               std::to_string(st.st_size));
  }
  SX_TRY(read_growing(images.get(), ds.pixels, size_t(pixel_bytes), images_path, "the pixel data"));
  SX_TRY(read_growing(labels.get(), ds.labels, size_t(ds.count), labels_path, "the label data"));
  return ds;
}

std::vector<std::string> fashion_mnist_class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

std::vector<std::string> mnist_class_names() { return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; }

}  // namespace sx::dataplane
