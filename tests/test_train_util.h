// defines: helpers for the sx_worker end-to-end tests: a tiny learnable idx dataset converted with
// the real sx_prep, running sx_worker (alone or under mpirun) as a child process, and reading a
// checkpoint's tensors back.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/checkpoint.h"

namespace sx::worker::testing {

namespace fs = std::filesystem;

inline fs::path bin_dir() { return fs::read_symlink("/proc/self/exe").parent_path(); }

inline fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("sx_train_test_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

inline void put_be32(std::ofstream& out, uint32_t v) {
  const unsigned char b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
  out.write(reinterpret_cast<const char*>(b), 4);
}

// n images (28, 28) of `classes` classes: class c is a bright bar at row band c plus noise, so a
// few steps of training separate them.
inline void write_idx(const fs::path& dir, const std::string& stem, int n, int classes, uint32_t seed) {
  std::ofstream img(dir / (stem + "-images-idx3-ubyte"), std::ios::binary);
  std::ofstream lab(dir / (stem + "-labels-idx1-ubyte"), std::ios::binary);
  put_be32(img, 0x803);
  put_be32(img, uint32_t(n));
  put_be32(img, 28);
  put_be32(img, 28);
  put_be32(lab, 0x801);
  put_be32(lab, uint32_t(n));
  uint32_t s = seed;
  auto rnd = [&s] { return (s = s * 1664525u + 1013904223u) >> 24; };
  for (int i = 0; i < n; ++i) {
    const int c = int(rnd() % uint32_t(classes));
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        const bool bar = y / (28 / classes) == c && x > 4 && x < 24;
        const char v = char(std::min<uint32_t>(255, (bar ? 180 : 0) + rnd() % 60));
        img.write(&v, 1);
      }
    const char l = char(c);
    lab.write(&l, 1);
  }
}

// Runs argv as a child; returns its pid (not waited for).
inline pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::fopen(log.c_str(), "w");
    if (f) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 1);
    setpgid(0, 0);  // its own group: a SIGKILL reaches mpirun's children too
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

inline int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs to completion; on failure the log is printed.
inline int run(const std::vector<std::string>& args, const fs::path& log) {
  const int rc = wait_exit(spawn(args, log));
  if (rc != 0) ADD_FAILURE() << "exit " << rc << " of " << args[0] << ":\n" << read_text(log);
  return rc;
}

// A small train set (256) and val set (64) with 4 classes, converted by sx_prep.
inline void make_datasets(const fs::path& root) {
  write_idx(root, "train", 256, 4, 1);
  write_idx(root, "val", 64, 4, 2);
  for (const char* stem : {"train", "val"}) {
    ASSERT_EQ(run({(bin_dir() / "sx_prep").string(), "--format", "idx", "--images",
                   (root / (std::string(stem) + "-images-idx3-ubyte")).string(), "--labels",
                   (root / (std::string(stem) + "-labels-idx1-ubyte")).string(), "--out", (root / stem).string(),
                   "--class-names", "mnist", "--no-progress", "--threads", "1"},
                  root / (std::string(stem) + "-prep.log")),
              0);
  }
}

// sx_worker arguments of a small job on make_datasets' data; extra -o overrides appended.
inline std::vector<std::string> worker_args(const fs::path& data, const fs::path& run_dir,
                                            const std::vector<std::string>& overrides) {
  std::vector<std::string> a = {(bin_dir() / "sx_worker").string()};
  for (std::string o : {"data.train=" + (data / "train").string(), "data.val=" + (data / "val").string(),
                        "run_dir=" + run_dir.string(), std::string("epochs=3"), std::string("schedule.warmup_epochs=1"),
                        std::string("numerics.threads=1"), std::string("data.threads=1"), std::string("log.progress=on"),
                        std::string("log.every_steps=4"), std::string("log.plot=false"),
                        std::string("optimizer.lr=0.05")}) {
    a.push_back("-o");
    a.push_back(o);
  }
  for (const std::string& o : overrides) {
    a.push_back("-o");
    a.push_back(o);
  }
  return a;
}

inline std::vector<std::string> mpirun(int np, std::vector<std::string> args) {
  std::vector<std::string> a = {"mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                "--mca", "mpi_yield_when_idle", "1", "-np", std::to_string(np)};
  a.insert(a.end(), args.begin(), args.end());
  return a;
}

// name -> values of every tensor of a checkpoint file.
inline std::map<std::string, std::vector<float>> tensors(const fs::path& file) {
  std::map<std::string, std::vector<float>> out;
  auto r = storage::read_checkpoint(file.string());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  if (!r.is_ok()) return out;
  for (auto& t : r->tensors) out[t.name] = std::move(t.data);
  return out;
}

}  // namespace sx::worker::testing
