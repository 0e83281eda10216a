// Timing, peak RSS and other-process CPU accounting for sx_bench.
#include "bench/bench_util.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

namespace sx::bench {
namespace {

// Busy and steal seconds of all CPUs since boot, from the first line of /proc/stat:
// "cpu user nice system idle iowait irq softirq steal ...", in clock ticks. 0 when unreadable.
void read_proc_stat(double* busy_s, double* steal_s) {
  *busy_s = *steal_s = 0;
  std::ifstream in("/proc/stat");
  std::string line;
  if (!std::getline(in, line)) return;
  std::istringstream fields(line);
  std::string cpu;
  int64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  fields >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  const double hz = double(sysconf(_SC_CLK_TCK));
  *busy_s = double(user + nice + system + irq + softirq) / hz;
  *steal_s = double(steal) / hz;
}

double self_cpu() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

}  // namespace

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double min_of(const std::vector<double>& values) {
  return values.empty() ? 0 : *std::min_element(values.begin(), values.end());
}

double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return double(std::stoll(line.substr(6))) / 1024.0;  // kB
  }
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_maxrss) / 1024.0;  // kB on Linux
}

CpuWindow::CpuWindow() {
  read_proc_stat(&busy0_, &steal0_);
  self0_ = self_cpu();
  t0_ = now_s();
}

void CpuWindow::stop() {
  wall_s_ = now_s() - t0_;
  double busy = 0, steal = 0;
  read_proc_stat(&busy, &steal);
  self_s_ = self_cpu() - self0_;
  // /proc/stat ticks are coarse (10 ms): clamp the small negative values rounding can give.
  other_s_ = std::max(0.0, (busy - busy0_) - self_s_);
  steal_s_ = steal - steal0_;
}

}  // namespace sx::bench
