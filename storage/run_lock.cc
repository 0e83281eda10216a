#include "storage/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <ctime>
#include <fstream>
#include <iterator>
#include <thread>

#include <nlohmann/json.hpp>

#include "storage/fs_util.h"

namespace sx::storage {
namespace {

std::string read_fd(int fd) {
  std::string out;
  char buf[4096];
  off_t at = 0;
  while (out.size() < 65536) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, size_t(n));
    at += n;
  }
  return out;
}

std::optional<LockHolder> parse_holder(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  LockHolder h;
  try {
    h.host = j.value("host", "");
    h.program = j.value("program", "");
    h.token = j.value("token", "");
    h.pid = j.value("pid", int64_t{0});
    h.start_ticks = j.value("start_ticks", int64_t{0});
    h.started_unix = j.value("started_unix", int64_t{0});
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (h.pid <= 0) return std::nullopt;
  return h;
}

bool alive_here(const LockHolder& h) {
  return h.host == this_host_name() && h.start_ticks > 0 && process_start_ticks(h.pid) == h.start_ticks;
}

}  // namespace

std::string this_host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string("localhost");
}

int64_t process_start_ticks(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = s.rfind(')');  // the command name may contain spaces and parentheses
  if (paren == std::string::npos) return -1;
  // Fields after the name start at field 3 (state); starttime is field 22.
  size_t at = paren + 1;
  for (int field = 3; field < 22; ++field) {
    at = s.find(' ', at + 1);
    if (at == std::string::npos) return -1;
  }
  try {
    return std::stoll(s.substr(at + 1));
  } catch (const std::exception&) {
    return -1;
  }
}

std::string LockHolder::describe() const {
  std::string out = (program.empty() ? std::string("process") : program) + " pid " + std::to_string(pid) + " on host " +
                    (host.empty() ? std::string("?") : host);
  if (started_unix > 0) {
    char buf[64];
    const time_t t = static_cast<time_t>(started_unix);
    struct tm tm;
    gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    out += std::string(" (since ") + buf + ")";
  }
  return out;
}

StatusOr<LockHolder> read_lock_holder(const std::string& lock_path) {
  auto text = read_small_file(lock_path, 65536);
  if (!text.is_ok()) return text.status();
  auto h = parse_holder(*text);
  if (!h) return Status::data_loss(lock_path + " does not name a holder");
  return *h;
}

StatusOr<std::unique_ptr<RunLock>> RunLock::acquire(const std::string& dir, const std::string& name,
                                                    const std::string& program, const std::string& token,
                                                    const std::string& inherit_token) {
  const std::string path = join_path(dir, name);
  const std::string hint = ". HINT: one job per directory: use another run dir, or stop that job first";
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::unavailable("cannot create the lock file " + path + ": " + errno_string(errno));
    bool enforced = true;  // flock works here (false on a file system without locks)
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK || err == EINTR) {
        // Held. The holder writes its name right after taking the lock: give it a moment.
        std::optional<LockHolder> h;
        for (int i = 0; i < 50 && !h; ++i) {
          h = parse_holder(read_fd(fd));
          if (!h) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        ::close(fd);
        if (h && !inherit_token.empty() && h->token == inherit_token) return std::unique_ptr<RunLock>();
        return Status::unavailable(path + " is held by " +
                                   (h ? h->describe() : std::string("a process that did not write its name")) +
                                   ": another job uses this directory" + hint);
      }
      if (err != ENOLCK && err != EOPNOTSUPP && err != ENOSYS) {
        ::close(fd);
        return Status::unavailable("flock " + path + ": " + errno_string(err));
      }
      enforced = false;
    }
    // The previous holder may have removed the file between our open and flock: then we locked an
    // orphan inode, and must start again on the file now at `path`.
    struct stat ours, now;
    if (::fstat(fd, &ours) != 0 || ::stat(path.c_str(), &now) != 0 || ours.st_ino != now.st_ino ||
        ours.st_dev != now.st_dev) {
      ::close(fd);
      continue;
    }
    std::optional<LockHolder> prev = parse_holder(read_fd(fd));
    if (prev) {
      Status refuse;
      if (alive_here(*prev) && prev->pid != ::getpid())  // flock not enforced, yet the holder lives
        refuse = Status::unavailable(path + " is held by " + prev->describe() + ": another job uses this directory" + hint);
      else if (!enforced && prev->host != this_host_name())
        refuse = Status::unavailable(path + " names " + prev->describe() +
                                     ", and this file system has no locks to tell whether it still runs. HINT: remove " +
                                     path + " if that job is gone");
      if (!refuse.is_ok()) {
        ::close(fd);  // not ours: leave the file alone
        return refuse;
      }
    }
    std::unique_ptr<RunLock> lock(new RunLock(path, fd));
    lock->taken_over_ = prev;
    nlohmann::json j = {{"host", this_host_name()},
                        {"pid", int64_t(::getpid())},
                        {"start_ticks", process_start_ticks(::getpid())},
                        {"started_unix", int64_t(std::time(nullptr))},
                        {"program", program},
                        {"token", token}};
    const std::string text = j.dump() + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != ssize_t(text.size()) ||
        ::fsync(fd) != 0)
      return Status::unavailable("cannot write the lock file " + path + ": " + errno_string(errno));
    return lock;
  }
  return Status::unavailable("cannot take the lock file " + path + ": it keeps being replaced");
}

RunLock::~RunLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // before the flock goes, so a waiter never locks a file we then remove
  ::close(fd_);
}

}  // namespace sx::storage
