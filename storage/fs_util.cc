#include "storage/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sx::storage {
namespace {

// Closes an fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status sys_error(const std::string& what, int err) { return Status::unavailable(what + ": " + errno_string(err)); }

}  // namespace

std::string errno_string(int err) { return std::string(std::strerror(err)); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

Status fsync_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return sys_error("open " + path + " for fsync", errno);
  if (::fsync(f.fd) != 0) return sys_error("fsync " + path, errno);
  return Status::ok();
}

Status fsync_dir(const std::string& dir) {
  Fd f{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (f.fd < 0) return sys_error("open directory " + dir + " for fsync", errno);
  if (::fsync(f.fd) != 0) return sys_error("fsync directory " + dir, errno);
  return Status::ok();
}

Status rename_durable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return sys_error("rename " + from + " -> " + to, errno);
  return fsync_dir(parent_dir(to));
}

std::string unique_tmp_path(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + "." + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)) + ".tmp";
}

Status write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string tmp = unique_tmp_path(path);
  auto fail = [&tmp](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    return sys_error(what, err);
  };
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (f.fd < 0) return sys_error("create " + tmp, errno);
    size_t done = 0;
    while (done < contents.size()) {
      const ssize_t n = ::write(f.fd, contents.data() + done, contents.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail("write " + tmp, errno);
      done += static_cast<size_t>(n);
    }
    if (::fsync(f.fd) != 0) return fail("fsync " + tmp, errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename " + tmp + " -> " + path, errno);
  return fsync_dir(parent_dir(path));
}

StatusOr<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::not_found(path + " does not exist");
    return sys_error("open " + path, err);
  }
  std::string out(max_bytes + 1, '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(f.fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read " + path, errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes) return Status::data_loss(path + " is larger than " + std::to_string(max_bytes) + " bytes");
  out.resize(done);
  return out;
}

StatusOr<std::vector<std::string>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    const int err = errno;
    if (err == ENOENT) return Status::not_found("directory " + dir + " does not exist");
    return sys_error("opendir " + dir, err);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::stat(join_path(dir, name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) names.push_back(name);
  }
  ::closedir(d);
  return names;
}

}  // namespace sx::storage
