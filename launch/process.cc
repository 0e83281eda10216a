#include "launch/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace sx::launch {
namespace {

int decode_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

// fork + exec in a new process group; out_fd (or /dev/null when < 0) becomes stdout and stderr.
pid_t spawn(const std::vector<std::string>& argv, int out_fd) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);  // its own group: one signal reaches mpirun and everything it started locally
  const int fd = out_fd >= 0 ? out_fd : open("/dev/null", O_WRONLY);
  dup2(fd, 1);
  dup2(fd, 2);
  const int devnull = open("/dev/null", O_RDONLY);
  dup2(devnull, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::fprintf(stderr, "sx_launch: cannot run %s: %s\n", args[0], std::strerror(errno));
  _exit(127);
}

}  // namespace

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

StatusOr<std::unique_ptr<Child>> Child::start(const std::vector<std::string>& argv, const std::string& log_path,
                                              bool echo, LineFn on_line) {
  if (argv.empty()) return Status::invalid_argument("Child::start: empty command");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::internal(std::string("pipe: ") + std::strerror(errno));
  std::unique_ptr<Child> c(new Child());
  c->pid_ = spawn(argv, fds[1]);
  close(fds[1]);
  if (c->pid_ < 0) {
    close(fds[0]);
    return Status::internal(std::string("fork: ") + std::strerror(errno));
  }
  setpgid(c->pid_, c->pid_);  // also here: no race with a signal sent right after start
  c->reader_ = std::thread(&Child::read_loop, c.get(), fds[0], log_path, echo, std::move(on_line));
  return c;
}

void Child::read_loop(int fd, std::string log_path, bool echo, LineFn on_line) {
  FILE* log = log_path.empty() ? nullptr : std::fopen(log_path.c_str(), "a");
  std::string pending;
  char buf[4096];
  auto emit = [&](const std::string& line) {
    if (log) {
      std::fprintf(log, "%s\n", line.c_str());
      std::fflush(log);
    }
    if (echo) std::fprintf(stderr, "%s\n", line.c_str());
    if (on_line) on_line(line);
  };
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 200);
    if (ready == 0) {
      if (quit_.load()) break;
      continue;
    }
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, size_t(n));
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      std::string line = pending.substr(0, nl);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      // The worker's progress line redraws with '\r': keep the last state only.
      const size_t cr = line.rfind('\r');
      emit(cr == std::string::npos ? line : line.substr(cr + 1));
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty()) emit(pending);
  close(fd);
  if (log) std::fclose(log);
}

bool Child::poll(int* code) {
  if (!exited_) {
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      code_ = decode_status(st);
    }
  }
  if (exited_ && code) *code = code_;
  return exited_;
}

int Child::stop(double grace_s) {
  if (poll(nullptr)) {
    ::kill(-pid_, SIGKILL);  // anything the leader left behind in its group
    return code_;
  }
  ::kill(-pid_, SIGTERM);
  const double end = now_s() + grace_s;
  while (now_s() < end) {
    if (poll(nullptr)) break;
    usleep(20000);
  }
  ::kill(-pid_, SIGKILL);
  if (!exited_) {
    int st = 0;
    waitpid(pid_, &st, 0);
    exited_ = true;
    code_ = decode_status(st);
  }
  return code_;
}

Child::~Child() {
  if (pid_ > 0) stop(0);
  quit_ = true;  // after the next 200 ms of silence
  if (reader_.joinable()) reader_.join();
}

int run_command(const std::vector<std::string>& argv, double timeout_s) {
  if (argv.empty()) return -1;
  const pid_t pid = spawn(argv, -1);
  if (pid < 0) return -1;
  setpgid(pid, pid);
  const double end = now_s() + timeout_s;
  int st = 0;
  while (now_s() < end) {
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return decode_status(st);
    usleep(20000);
  }
  ::kill(-pid, SIGKILL);
  waitpid(pid, &st, 0);
  return -1;
}

}  // namespace sx::launch
