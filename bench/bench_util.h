// defines: sx::bench helpers every sx_bench subcommand shares — timing, medians, peak RSS, and the
// CPU time other processes take during a measurement (see ../shared/BENCHMARKING.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace sx::bench {

// Seconds on a monotonic clock.
inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> values);  // 0 for an empty vector
double min_of(const std::vector<double>& values);

// Peak resident set of this process in MB: VmHWM from /proc/self/status, else getrusage ru_maxrss.
double peak_rss_mb();

// Brackets a measurement: wall time, this process's CPU time (all threads, getrusage), and the CPU
// time everybody else took meanwhile = busy time of all CPUs (/proc/stat) minus ours. A large
// other_cpu_s means the figure is noisy and should be discarded or repeated.
class CpuWindow {
 public:
  CpuWindow();    // starts the window
  void stop();    // ends it; the getters below read the closed window
  double wall_s() const { return wall_s_; }
  double self_cpu_s() const { return self_s_; }
  double other_cpu_s() const { return other_s_; }
  double steal_s() const { return steal_s_; }  // hypervisor steal, reported apart

 private:
  double t0_ = 0, busy0_ = 0, steal0_ = 0, self0_ = 0;
  double wall_s_ = 0, self_s_ = 0, other_s_ = 0, steal_s_ = 0;
};

}  // namespace sx::bench
