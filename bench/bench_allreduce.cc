// sx_bench allreduce (declared in subcommands.h), run under mpirun:
//   mpirun --allow-run-as-root --bind-to none -np 2 build/bin/sx_bench allreduce --floats 27600000 --json
// (a) bandwidth: our bucketed Communicator (flat and hierarchical, 25 MiB buckets, average included;
//     flat with the average deferred to SGD, `ours_flat_sum`; flat run by the communication thread,
//     `ours_flat_thread`) vs one plain MPI_Allreduce of the same buffer; algorithm bandwidth = bytes / time of the slowest
//     rank, medians over --iters after --warmup, the cases interleaved within each iteration.
// (b) --overlap: a simulated backward (calibrated busy work per "layer", then on_grads_ready) with
//     the allreduce overlapped (communication thread), not overlapped (all buckets after backward),
//     and MPI_Iallreduce polled at each layer end; reports how much of the communication is hidden.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "bench/subcommands.h"
#include "worker/comm_env.h"
#include "worker/communicator.h"
#include "worker/mpi_util.h"

namespace sx::bench {
namespace {

using worker::CommAlgorithm;
using worker::Communicator;
using worker::MpiEnv;

struct AllreduceBenchOptions {
  int64_t floats = 27'600'000;  // SE-ResNeXt-50 32x4d has 27.56 M parameters
  double bucket_mb = 25;        // MiB
  int warmup = 2;
  int iters = 7;
  int ranks_per_node = 0;       // fake nodes for the hierarchical reducer (0 = real topology)
  bool overlap = false;         // mode (b)
  double compute_ms = 300;      // simulated backward per step
  int layers = 160;             // tensors of the simulated backward (equal slices of the buffer)
  bool json = false;
};

// Names of the timed cases, in the order of the first iteration (rotated each iteration).
using Case = std::pair<std::string, std::function<Status()>>;

// Times each case once per iteration, rotating the order; per iteration the slowest rank's time.
Status time_cases(MpiEnv& env, const AllreduceBenchOptions& o, std::vector<Case>& cases,
                  const std::function<void()>& refill, std::map<std::string, std::vector<double>>* ms) {
  for (int it = -o.warmup; it < o.iters; ++it) {
    for (size_t k = 0; k < cases.size(); ++k) {
      Case& c = cases[(k + static_cast<size_t>(it + o.warmup)) % cases.size()];
      refill();  // fresh gradients: keeps values finite, same memory state for every case
      SX_TRY(env.barrier());
      const double t0 = now_s();
      SX_TRY(c.second().with_context(c.first));
      double t = (now_s() - t0) * 1e3;
      SX_TRY(env.allreduce_max(std::span<double>(&t, 1)));
      if (it >= 0) (*ms)[c.first].push_back(t);
    }
  }
  return Status::ok();
}

// Busy work that only needs the core (no memory traffic): a dependent multiply-add chain.
double spin(int64_t iterations) {
  double a = 1.0;
  for (int64_t i = 0; i < iterations; ++i) {
    a = a * 0.999999999 + 1e-9;
    asm volatile("" : "+x"(a));  // opaque to the optimiser: otherwise GCC folds the whole loop
  }
  return a;
}
volatile double g_spin_sink = 0;

int64_t calibrate_spin_per_ms() {
  std::vector<double> per_ms;
  for (int k = 0; k < 5; ++k) {
    const int64_t n = 2'000'000;
    const double t0 = now_s();
    g_spin_sink = g_spin_sink + spin(n);
    per_ms.push_back(n / ((now_s() - t0) * 1e3));
  }
  return static_cast<int64_t>(std::max_element(per_ms.begin(), per_ms.end())[0]);  // the undisturbed rate
}

// Noise: CPU seconds taken during the window by processes other than the job's ranks.
Status other_cpu_s(MpiEnv& env, CpuWindow& window, double* other) {
  window.stop();
  double self = window.self_cpu_s();
  SX_TRY(env.allreduce_sum(std::span<double>(&self, 1)));
  *other = std::max(0.0, window.other_cpu_s() + window.self_cpu_s() - self);
  return Status::ok();
}

Status run_bandwidth(MpiEnv& env, const AllreduceBenchOptions& o, nlohmann::json* out) {
  std::vector<float> grads(static_cast<size_t>(o.floats));
  auto refill = [&] { std::fill(grads.begin(), grads.end(), 1.f + 1e-3f * static_cast<float>(env.rank())); };
  refill();
  worker::CommOptions copt;
  copt.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  copt.ranks_per_node = o.ranks_per_node;
  copt.algorithm = CommAlgorithm::kFlat;
  SX_ASSIGN_OR_RETURN(auto flat, Communicator::create(env, grads, copt));
  copt.algorithm = CommAlgorithm::kHierarchical;
  SX_ASSIGN_OR_RETURN(auto hier, Communicator::create(env, grads, copt));
  copt.algorithm = CommAlgorithm::kFlat;
  copt.average = false;  // the 1/world folded into SGD instead: what MPI_Allreduce itself delivers
  SX_ASSIGN_OR_RETURN(auto flat_sum, Communicator::create(env, grads, copt));

  // All gradients ready at once: wait_all runs the buckets on the caller...
  auto ours = [&](Communicator& c) { return [&c] { return c.wait_all(); }; };
  // ...or, as when backward reports the last tensor, on the communication thread.
  auto ours_thread = [&](Communicator& c) {
    return [&c] {
      c.on_grads_ready(c.plan().total);
      return c.wait_all();
    };
  };

  std::vector<Case> cases = {
      {"mpi_allreduce", [&]() -> Status {
         SX_MPI(MPI_Allreduce(MPI_IN_PLACE, grads.data(), static_cast<int>(grads.size()), MPI_FLOAT, MPI_SUM, env.world()));
         return Status::ok();
       }},
      {"ours_flat", ours(*flat)},
      {"ours_hierarchical", ours(*hier)},
      {"ours_flat_sum", ours(*flat_sum)},
      {"ours_flat_thread", ours_thread(*flat)},
  };
  std::map<std::string, std::vector<double>> ms;
  CpuWindow window;
  SX_TRY(time_cases(env, o, cases, refill, &ms));
  double other = 0;
  SX_TRY(other_cpu_s(env, window, &other));

  const double bytes = static_cast<double>(o.floats) * sizeof(float);
  const double plain_ms = median(ms["mpi_allreduce"]);
  nlohmann::json& j = *out;
  j["buckets"] = flat->plan().buckets.size();
  j["nodes"] = hier->node_count();
  for (const auto& [name, series] : ms) {
    const double m = median(series);
    j[name + "_ms"] = m;
    j[name + "_ms_all"] = series;
    j[name + "_gb_per_s"] = bytes / (m * 1e-3) / 1e9;
    if (name != "mpi_allreduce") j[name + "_ratio"] = plain_ms / m;  // bandwidth ratio ours / plain
  }
  j["other_cpu_s"] = other;
  j["wall_s"] = window.wall_s();
  return Status::ok();
}

// Mode (b): backward = `layers` slices, each `compute_ms / layers` of busy work, then its gradients
// are written and reported ready. The same work in every case, so differences are communication.
Status run_overlap(MpiEnv& env, const AllreduceBenchOptions& o, nlohmann::json* out) {
  SX_CHECK_ARG(o.layers > 0 && o.layers <= o.floats, "--layers must be in [1, --floats]");
  std::vector<float> grads(static_cast<size_t>(o.floats));
  std::vector<int64_t> ends;  // tensor boundaries, equal slices
  for (int l = 1; l <= o.layers; ++l) ends.push_back(o.floats * l / o.layers);
  const int64_t spin_per_layer = static_cast<int64_t>(calibrate_spin_per_ms() * (o.compute_ms / o.layers));
  const float value = 1.f + 1e-3f * static_cast<float>(env.rank());

  worker::CommOptions copt;
  copt.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  copt.ranks_per_node = o.ranks_per_node;
  copt.algorithm = CommAlgorithm::kFlat;
  copt.overlap = true;
  SX_ASSIGN_OR_RETURN(auto on, Communicator::create(env, grads, copt, ends));
  copt.overlap = false;
  SX_ASSIGN_OR_RETURN(auto off, Communicator::create(env, grads, copt, ends));
  const worker::BucketPlan& plan = on->plan();

  // backward(on_layer): busy work, gradients of layer l written, then on_layer(end of l).
  auto backward = [&](const std::function<void(int64_t)>& on_layer) {
    int64_t begin = 0;
    for (int64_t end : ends) {
      g_spin_sink = g_spin_sink + spin(spin_per_layer);
      std::fill(grads.begin() + begin, grads.begin() + end, value);
      on_layer(end);
      begin = end;
    }
  };
  // Non-blocking MPI on the compute thread: launch ready buckets, poke progress at every layer end.
  std::vector<MPI_Request> requests(plan.buckets.size(), MPI_REQUEST_NULL);
  auto iallreduce_step = [&]() -> Status {
    size_t launched = 0;
    int rc = MPI_SUCCESS;
    backward([&](int64_t ready_end) {
      for (; launched < plan.buckets.size() && plan.buckets[launched].end <= ready_end; ++launched) {
        const worker::Bucket& b = plan.buckets[launched];
        rc |= MPI_Iallreduce(MPI_IN_PLACE, grads.data() + b.begin, static_cast<int>(b.count()), MPI_FLOAT, MPI_SUM,
                             env.world(), &requests[launched]);
      }
      int done = 0;
      if (launched > 0) rc |= MPI_Testall(static_cast<int>(launched), requests.data(), &done, MPI_STATUSES_IGNORE);
    });
    SX_MPI(rc);
    SX_MPI(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE));
    const float scale = 1.f / static_cast<float>(env.world_size());
    for (float& g : grads) g *= scale;
    return Status::ok();
  };

  std::vector<double> on_wait_ms;
  std::vector<Case> cases = {
      {"compute_only", [&]() -> Status { backward([](int64_t) {}); return Status::ok(); }},
      {"overlap_off", [&]() -> Status {
         backward([&](int64_t e) { off->on_grads_ready(e); });
         return off->wait_all();
       }},
      {"overlap_thread", [&]() -> Status {
         backward([&](int64_t e) { on->on_grads_ready(e); });
         SX_TRY(on->wait_all());
         on_wait_ms.push_back(on->last_step().wait_s * 1e3);
         return Status::ok();
       }},
      {"overlap_iallreduce", iallreduce_step},
  };
  std::map<std::string, std::vector<double>> ms;
  CpuWindow window;
  SX_TRY(time_cases(env, o, cases, [] {}, &ms));
  double other = 0;
  SX_TRY(other_cpu_s(env, window, &other));

  nlohmann::json& j = *out;
  j["compute_ms_target"] = o.compute_ms;
  j["layers"] = o.layers;
  j["buckets"] = plan.buckets.size();
  for (const auto& [name, series] : ms) {
    j[name + "_ms"] = median(series);
    j[name + "_ms_all"] = series;
  }
  const double compute = median(ms["compute_only"]), off_ms = median(ms["overlap_off"]);
  const double exposed_off = off_ms - compute;  // communication the step pays without overlap
  for (const char* name : {"overlap_thread", "overlap_iallreduce"}) {
    const double t = median(ms[name]);
    j[std::string(name) + "_hidden_fraction"] = exposed_off > 0 ? (off_ms - t) / exposed_off : 0.0;
    j[std::string(name) + "_speedup"] = off_ms / t;
  }
  j["comm_ms_without_overlap"] = exposed_off;
  j["overlap_thread_wait_ms"] = median(on_wait_ms);  // caller blocked in wait_all after backward
  j["other_cpu_s"] = other;
  j["wall_s"] = window.wall_s();
  return Status::ok();
}

Status run_allreduce(const AllreduceBenchOptions& o) {
  SX_CHECK_ARG(o.floats > 0 && o.floats <= INT32_MAX, "--floats must be in [1, 2^31)");
  SX_CHECK_ARG(o.bucket_mb > 0 && o.iters > 0 && o.warmup >= 0, "--bucket-mb, --iters must be > 0");
  SX_ASSIGN_OR_RETURN(std::unique_ptr<MpiEnv> env, MpiEnv::init(nullptr, nullptr));
  nlohmann::json j = {{"mode", o.overlap ? "overlap" : "bandwidth"},
                      {"world_size", env->world_size()},
                      {"floats", o.floats},
                      {"bytes", o.floats * 4},
                      {"bucket_mb", o.bucket_mb},
                      {"ranks_per_node", o.ranks_per_node},
                      {"warmup", o.warmup},
                      {"iterations", o.iters}};
  SX_TRY(o.overlap ? run_overlap(*env, o, &j) : run_bandwidth(*env, o, &j));
  if (!env->is_root()) return Status::ok();
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return Status::ok();
  }
  std::printf("sx_bench allreduce (%s), np=%d, %lld floats (%.1f MB), buckets of %.0f MiB: %d buckets\n",
              j["mode"].get<std::string>().c_str(), env->world_size(), static_cast<long long>(o.floats),
              o.floats * 4 / 1e6, o.bucket_mb, j["buckets"].get<int>());
  for (const auto& [key, value] : j.items()) {
    if (key.ends_with("_all") || !value.is_number_float()) continue;
    std::printf("  %-36s %10.3f\n", key.c_str(), value.get<double>());
  }
  return Status::ok();
}

}  // namespace

Subcommand add_allreduce_command(CLI::App& parent) {
  auto o = std::make_shared<AllreduceBenchOptions>();
  CLI::App* app = parent.add_subcommand(
      "allreduce",
      "Run under mpirun. Default: our bucketed allreduce (flat, hierarchical; average included) vs one plain "
      "MPI_Allreduce of the same buffer, algorithm bandwidth (bytes / slowest rank's time, medians). --overlap: "
      "a simulated backward with the buckets overlapped (thread), not overlapped, or MPI_Iallreduce-polled.");
  app->add_option("--floats", o->floats, "gradient floats (SE-ResNeXt-50: 27.6 M)")->capture_default_str();
  app->add_option("--bucket-mb", o->bucket_mb, "bucket size in MiB")->capture_default_str();
  app->add_option("--warmup", o->warmup, "untimed iterations")->capture_default_str();
  app->add_option("--iters", o->iters, "timed iterations (each runs every case once)")->capture_default_str();
  app->add_option("--ranks-per-node", o->ranks_per_node, "fake nodes of k ranks for hierarchical (0 = real)")
      ->capture_default_str();
  app->add_flag("--overlap", o->overlap, "mode (b): simulated backward, overlap on vs off");
  app->add_option("--compute-ms", o->compute_ms, "--overlap: busy work of one simulated backward")->capture_default_str();
  app->add_option("--layers", o->layers, "--overlap: tensors of the simulated backward")->capture_default_str();
  app->add_flag("--json", o->json, "print one JSON object (medians, per-iteration times, ratios, noise)");
  return Subcommand{app, [o] { return run_allreduce(*o); }};
}

}  // namespace sx::bench
