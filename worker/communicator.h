// defines: sx::worker::Communicator — averages the flat gradient buffer across ranks, bucket by
// bucket, overlapped with backward; CommAlgorithm / CommOptions.
//
// One step:
//   net.backward(false, [&](int64_t ready_end) { comm.on_grads_ready(ready_end); });
//   SX_TRY(comm.wait_all());          // grads now hold sum over ranks / world size
//   net.sgd_step(...);
// on_grads_ready launches every bucket whose end <= ready_end. ready_end is a prefix, so buckets
// launch in plan order on every rank whatever the callback timing — that is what keeps the
// collectives matched across ranks without any per-step negotiation.
//
// Overlap: a dedicated communication thread runs the buckets' blocking collectives one after the
// other, woken by a condition variable when a bucket becomes ready (events, not polling). We do not
// use MPI_Iallreduce: Open MPI (4.1, no async progress thread) advances a non-blocking collective
// only inside MPI calls, so a 25 MB bucket would mostly wait for the next callback
// (`sx_bench allreduce --overlap` measures both). While buckets are in flight the communication
// thread is the only MPI caller; wait_all() hands MPI back to the caller (MPI_THREAD_SERIALIZED,
// see comm_env.h). The average (1 / world size) is applied once per element, by the communication
// thread right after its bucket is summed, so it too is hidden behind backward.
// If a collective fails the first error is returned by wait_all() and the step's remaining buckets
// are skipped on this rank (an MPI failure leaves the job unusable anyway).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>

#include "common/status.h"
#include "worker/comm_buckets.h"
#include "worker/comm_env.h"
#include "worker/comm_reducer.h"

namespace sx::worker {

enum class CommAlgorithm { kAuto, kFlat, kHierarchical };
const char* comm_algorithm_name(CommAlgorithm algorithm);  // "auto", "flat", "hierarchical"
StatusOr<CommAlgorithm> parse_comm_algorithm(std::string_view name);

struct CommOptions {
  // kAuto: hierarchical when there is more than one node and more than one rank on some node.
  CommAlgorithm algorithm = CommAlgorithm::kAuto;
  int64_t bucket_bytes = 25ll << 20;  // 25 MiB, PyTorch DDP's default
  bool overlap = true;                // false: every bucket is reduced inside wait_all, on the caller
  int ranks_per_node = 0;             // 0 = real nodes; k > 0 = fake nodes of k consecutive ranks (testing)
  // false: wait_all() leaves the sum, and the caller folds grad_scale() into the step that reads the
  // gradients next (a multiply inside the fused SGD kernel is free; a separate pass over 110 MB is
  // not when nothing overlaps it — see bench/README.md, `sx_bench allreduce`).
  bool average = true;
  // Set: the reducer to use instead of the MPI flat / hierarchical ones (comm.backend: nccl, whose
  // reducer works on device memory: then keep average false, since averaging runs on the host).
  // Called with the resolved algorithm (kFlat or kHierarchical).
  std::function<StatusOr<std::unique_ptr<Reducer>>(CommAlgorithm)> make_reducer;
};

// Timings of the last step (seconds), for benchmarks and the timeline.
struct CommStepStats {
  double reduce_s = 0;  // sum over buckets of collective + averaging time
  double wait_s = 0;    // time the caller spent blocked in wait_all()
};

class Communicator {
 public:
  // Collective over env.world(): builds the bucket plan for grads (tensor boundaries optional, see
  // make_bucket_plan), checks that every rank has the same plan, sets up the reducer and the
  // communication thread. grads must outlive the Communicator.
  static StatusOr<std::unique_ptr<Communicator>> create(const MpiEnv& env, std::span<float> grads,
                                                        const CommOptions& options,
                                                        std::span<const int64_t> boundaries = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const BucketPlan& plan() const { return plan_; }
  CommAlgorithm algorithm() const { return algorithm_; }  // resolved: kFlat or kHierarchical
  int world_size() const { return world_size_; }
  int node_count() const { return node_count_; }
  // What the gradients still need to be multiplied by after wait_all(): 1 when averaging here.
  float grad_scale() const { return average_ ? 1.f : 1.f / static_cast<float>(world_size_); }

  // Gradients [0, ready_end) are final. Cheap and non-blocking; may be called any number of times
  // with any values (smaller ones than before are ignored). Errors surface in wait_all().
  void on_grads_ready(int64_t ready_end);
  // Waits for the launched buckets, runs the rest on the calling thread, and returns the first
  // error of the step.
  Status wait_all();
  int buckets_launched() const;  // in the current step (tests)
  const CommStepStats& last_step() const { return last_step_; }

  // Blocking allreduce of any other buffer with the same algorithm (e.g. SyncBN statistics).
  // Only between steps: not while buckets are in flight.
  Status allreduce_sum(std::span<float> data);
  Status allreduce_mean(std::span<float> data);

 private:
  Communicator() = default;
  Status reduce_bucket(int index);  // sum (+ average) of one bucket, on whichever thread runs it
  void run_comm_thread();
  void average(float* data, int64_t count) const;

  BucketPlan plan_;
  float* grads_ = nullptr;
  CommAlgorithm algorithm_ = CommAlgorithm::kFlat;
  bool overlap_ = true;
  bool average_ = true;
  int world_size_ = 1, node_count_ = 1;
  std::unique_ptr<Reducer> reducer_;
  CommStepStats last_step_;

  // Step state shared with the communication thread, under mu_.
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  int launched_ = 0;   // buckets [0, launched_) handed over this step
  int finished_ = 0;   // buckets [0, finished_) summed and averaged
  double reduce_s_ = 0;
  Status error_;       // first failure of the step
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sx::worker
