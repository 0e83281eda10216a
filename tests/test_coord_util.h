// Helpers for the coordinator tests: a real `sx_coord serve` child process on 127.0.0.1 (started,
// SIGKILLed, restarted on the same job dir and port), fresh job dirs, free ports, CLI capture.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/job_dir.h"

namespace sx::coord::testing {

inline std::string bin_dir() { return std::filesystem::read_symlink("/proc/self/exe").parent_path().string(); }
inline std::string sx_coord_bin() { return bin_dir() + "/sx_coord"; }

// A fresh /tmp job dir, removed at exit unless SX_KEEP_TEST_DIRS is set (to read serve.log).
inline std::string fresh_job_dir(const std::string& name) {
  static std::vector<std::string> dirs;
  static bool hooked = false;
  if (!hooked) {
    hooked = true;
    std::atexit([] {
      if (std::getenv("SX_KEEP_TEST_DIRS")) return;
      for (const auto& d : dirs) std::filesystem::remove_all(d);
    });
  }
  std::string dir = "/tmp/sx_test_coord_" + std::to_string(getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  dirs.push_back(dir);
  return dir;
}

// A port the kernel just handed out (and we released); good enough on loopback.
inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ServerProc {
 public:
  ServerProc(std::string job_dir, double dead_after, double stall_after = -1)
      : dir_(std::move(job_dir)), port_(free_port()), pub_port_(free_port()), dead_(dead_after), stall_(stall_after) {}
  ~ServerProc() { kill_now(SIGKILL); }

  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

  // Starts the server and waits until DIR/coord.json names the new pid.
  bool start() {
    std::vector<std::string> args = {sx_coord_bin(), "serve", "--job", dir_, "--listen", endpoint(), "--pub",
                                     "tcp://127.0.0.1:" + std::to_string(pub_port_), "--dead-after", std::to_string(dead_)};
    if (stall_ > 0) args.insert(args.end(), {"--stall-after", std::to_string(stall_)});
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open((dir_ + "/serve.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      auto info = read_server_info(dir_);
      if (info.is_ok() && info->pid == pid_) return true;
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }

  void kill_now(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int port_, pub_port_;
  double dead_, stall_;
  pid_t pid_ = -1;
};

// Runs sx_coord with `args`; returns stdout, sets *rc.
inline std::string run_cli(const std::string& args, int* rc) {
  std::string cmd = sx_coord_bin() + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = pclose(p);
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

}  // namespace sx::coord::testing
