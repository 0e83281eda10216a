#include "dataplane/prep_idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

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
  ds.pixels.resize(static_cast<size_t>(ds.count) * ds.rows * ds.cols);
  ds.labels.resize(static_cast<size_t>(ds.count));
  SX_TRY(read_exact(images.get(), ds.pixels.data(), ds.pixels.size(), images_path, "the pixel data"));
  SX_TRY(read_exact(labels.get(), ds.labels.data(), ds.labels.size(), labels_path, "the label data"));
  return ds;
}

std::vector<std::string> fashion_mnist_class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

std::vector<std::string> mnist_class_names() { return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; }

}  // namespace sx::dataplane
