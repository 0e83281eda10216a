#include "dataplane/prep_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace sx::dataplane {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Closes the fd on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status fsync_path(const std::string& path, bool directory) {
  Fd f;
  f.fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (f.fd < 0) return Status::unavailable("cannot open " + path + " to fsync: " + errno_text());
  if (::fsync(f.fd) != 0) return Status::unavailable("fsync " + path + ": " + errno_text());
  return Status::ok();
}

}  // namespace

StatusOr<std::vector<uint8_t>> read_file_bytes(const std::string& path, int64_t max_bytes) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // O_NONBLOCK: a FIFO does not hang the open
  if (f.fd < 0) {
    if (errno == ENOENT) return Status::not_found("file not found: " + path);
    return Status::not_found("cannot open " + path + ": " + errno_text());
  }
  struct stat st;
  if (::fstat(f.fd, &st) != 0) return Status::data_loss("stat " + path + ": " + errno_text());
  if (!S_ISREG(st.st_mode)) return Status::invalid_argument(path + ": not a regular file (a device, FIFO or directory)");
  if (st.st_size > max_bytes)
    return Status::invalid_argument(path + ": " + std::to_string(st.st_size) + " bytes, more than --max-file-bytes " +
                                    std::to_string(max_bytes));
  std::vector<uint8_t> bytes;
  bytes.reserve(size_t(st.st_size));
  uint8_t buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(f.fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::data_loss("read error in " + path + ": " + errno_text());
    }
    if (n == 0) break;
    if (int64_t(bytes.size()) + n > max_bytes)  // it grew while we read
      return Status::invalid_argument(path + ": more than --max-file-bytes " + std::to_string(max_bytes) + " bytes");
    bytes.insert(bytes.end(), buf, buf + n);
  }
  return bytes;
}

StatusOr<uint32_t> crc32_of_file(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY);
  if (f.fd < 0) return Status::not_found("cannot open " + path + ": " + errno_text());
  uLong crc = ::crc32(0L, Z_NULL, 0);
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::data_loss("read error in " + path + ": " + errno_text());
    }
    if (n == 0) break;
    crc = ::crc32(crc, buf.data(), static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

Status fsync_directory(const std::string& dir) { return fsync_path(dir.empty() ? "." : dir, true); }

Status rename_durable(const std::string& tmp, const std::string& final_path, bool sync_dir) {
  SX_TRY(fsync_path(tmp, false));
  if (std::rename(tmp.c_str(), final_path.c_str()) != 0)
    return Status::unavailable("rename " + tmp + " -> " + final_path + ": " + errno_text());
  if (!sync_dir) return Status::ok();
  return fsync_directory(std::filesystem::path(final_path).parent_path().string());
}

Status write_file_atomic(const std::string& final_path, const std::string& bytes) {
  std::filesystem::path p(final_path);
  std::string tmp_name = p.filename().string();  // built by append: GCC 12 warns (-Wrestrict) on "." + s
  tmp_name.insert(0, 1, '.');
  tmp_name += '.';  // + the pid: two writers never share a temporary
  tmp_name += std::to_string(::getpid());
  tmp_name += ".tmp";
  std::string tmp = (p.parent_path() / tmp_name).string();
  {
    Fd f;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f.fd < 0) return Status::unavailable("cannot create " + tmp + ": " + errno_text());
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(f.fd, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::unavailable("write " + tmp + ": " + errno_text());
      }
      done += static_cast<size_t>(n);
    }
  }
  return rename_durable(tmp, final_path);
}

}  // namespace sx::dataplane
