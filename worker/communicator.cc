#include "worker/communicator.h"

#include <chrono>
#include <string>

#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

const char* comm_algorithm_name(CommAlgorithm algorithm) {
  switch (algorithm) {
    case CommAlgorithm::kAuto: return "auto";
    case CommAlgorithm::kFlat: return "flat";
    case CommAlgorithm::kHierarchical: return "hierarchical";
  }
  return "unknown";
}

StatusOr<CommAlgorithm> parse_comm_algorithm(std::string_view name) {
  for (CommAlgorithm a : {CommAlgorithm::kAuto, CommAlgorithm::kFlat, CommAlgorithm::kHierarchical}) {
    if (name == comm_algorithm_name(a)) return a;
  }
  return Status::invalid_argument("unknown allreduce algorithm '" + std::string(name) +
                                  "'; expected one of: auto, flat, hierarchical");
}

StatusOr<std::unique_ptr<Communicator>> Communicator::create(const MpiEnv& env, std::span<float> grads,
                                                             const CommOptions& options,
                                                             std::span<const int64_t> boundaries) {
  SX_CHECK_ARG(options.bucket_bytes >= static_cast<int64_t>(sizeof(float)), "bucket size must be at least one float");
  SX_CHECK_ARG(options.ranks_per_node >= 0, "ranks_per_node must be >= 0");
  if (options.overlap && env.thread_level() < MPI_THREAD_SERIALIZED)
    return Status::invalid_argument(
        "overlapped allreduce needs MPI_THREAD_SERIALIZED (a communication thread calls MPI). "
        "HINT: initialise MpiEnv with thread_level = MPI_THREAD_SERIALIZED, or set overlap off");

  std::unique_ptr<Communicator> comm(new Communicator());
  comm->grads_ = grads.data();
  comm->overlap_ = options.overlap;
  comm->average_ = options.average;
  comm->world_size_ = env.world_size();
  SX_ASSIGN_OR_RETURN(comm->plan_, make_bucket_plan(static_cast<int64_t>(grads.size()),
                                                    options.bucket_bytes / static_cast<int64_t>(sizeof(float)),
                                                    boundaries));
  SX_TRY(check_plan_agrees(comm->plan_, env.world()));

  const NodeSplit split{options.ranks_per_node};
  SX_ASSIGN_OR_RETURN(comm->node_count_, count_nodes(env.world(), split));
  comm->algorithm_ = options.algorithm;
  if (comm->algorithm_ == CommAlgorithm::kAuto) {
    const bool several_per_node = comm->world_size_ > comm->node_count_;
    comm->algorithm_ = comm->node_count_ > 1 && several_per_node ? CommAlgorithm::kHierarchical : CommAlgorithm::kFlat;
  }
  if (options.make_reducer) {
    SX_ASSIGN_OR_RETURN(comm->reducer_, options.make_reducer(comm->algorithm_));
  } else if (comm->algorithm_ == CommAlgorithm::kHierarchical) {
    SX_ASSIGN_OR_RETURN(comm->reducer_, make_hierarchical_reducer(env.world(), split));
  } else {
    SX_ASSIGN_OR_RETURN(comm->reducer_, make_flat_reducer(env.world()));
  }
  if (comm->overlap_) comm->thread_ = std::thread([c = comm.get()] { c->run_comm_thread(); });
  return comm;
}

Communicator::~Communicator() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

void Communicator::average(float* data, int64_t count) const {
  if (world_size_ == 1) return;
  if ((world_size_ & (world_size_ - 1)) == 0) {  // 1 / 2^k is exact: multiplying == dividing
    const float scale = 1.f / static_cast<float>(world_size_);
    for (int64_t i = 0; i < count; ++i) data[i] *= scale;
  } else {
    const float world = static_cast<float>(world_size_);
    for (int64_t i = 0; i < count; ++i) data[i] /= world;
  }
}

Status Communicator::reduce_bucket(int index) {
  const Bucket& bucket = plan_.buckets[static_cast<size_t>(index)];
  const double t0 = now_s();
  SX_TRY(reducer_->allreduce_sum(grads_ + bucket.begin, bucket.count())
             .with_context(std::string(reducer_->name()) + " allreduce of bucket " + std::to_string(index)));
  if (average_) average(grads_ + bucket.begin, bucket.count());
  reduce_s_ += now_s() - t0;
  return Status::ok();
}

void Communicator::run_comm_thread() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || finished_ < launched_; });
    if (finished_ >= launched_) return;  // stop_ and nothing left
    const int index = finished_;
    const bool skip = !error_.is_ok();
    lock.unlock();
    Status status = skip ? Status::ok() : reduce_bucket(index);
    lock.lock();
    if (!status.is_ok() && error_.is_ok()) error_ = std::move(status);
    finished_ = index + 1;
    done_cv_.notify_all();
  }
}

void Communicator::on_grads_ready(int64_t ready_end) {
  const int count = static_cast<int>(plan_.buckets.size());
  std::unique_lock<std::mutex> lock(mu_);
  int ready = launched_;
  while (ready < count && plan_.buckets[static_cast<size_t>(ready)].end <= ready_end) ++ready;
  if (ready == launched_) return;
  reducer_->grads_ready(ready_end);  // before the comm thread can see the new buckets
  launched_ = ready;
  lock.unlock();
  if (overlap_) work_cv_.notify_one();
}

int Communicator::buckets_launched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return launched_;
}

Status Communicator::wait_all() {
  const double t0 = now_s();
  const int count = static_cast<int>(plan_.buckets.size());
  std::unique_lock<std::mutex> lock(mu_);
  // Buckets already handed over finish on the communication thread; the ones never launched are
  // run right here: handing them over would only add two thread wake-ups (measurable on a busy
  // machine, see `sx_bench allreduce`: ours_flat vs ours_flat_thread). Plan order is kept and MPI
  // is never called from both threads at once: the caller starts only after the thread is idle.
  if (overlap_) done_cv_.wait(lock, [&] { return finished_ >= launched_; });
  launched_ = count;
  for (; finished_ < count; ++finished_) {
    if (!error_.is_ok()) continue;
    Status status = reduce_bucket(finished_);
    if (!status.is_ok()) error_ = std::move(status);
  }
  Status result = std::move(error_);
  error_ = Status::ok();
  launched_ = finished_ = 0;
  last_step_ = {reduce_s_, now_s() - t0};
  reduce_s_ = 0;
  return result;
}

Status Communicator::allreduce_sum(std::span<float> data) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (launched_ != 0)
      return Status::internal("Communicator::allreduce_sum called while gradient buckets are in flight. "
                              "HINT: call wait_all() first");
  }
  return reducer_->allreduce_sum(data.data(), static_cast<int64_t>(data.size()));
}

Status Communicator::allreduce_mean(std::span<float> data) {
  SX_TRY(allreduce_sum(data));
  average(data.data(), static_cast<int64_t>(data.size()));
  return Status::ok();
}

}  // namespace sx::worker
