#include "worker/train_model.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include <sched.h>

namespace sx::worker {

int threads_per_rank(int configured, int local_size) {
  if (configured > 0) return configured;
  // Cores this process may run on (mpirun's binding narrows it); cores / local ranks otherwise.
  cpu_set_t set;
  int cores = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  const int all = int(std::max(1u, std::thread::hardware_concurrency()));
  if (cores <= 0 || cores >= all) return std::max(1, all / std::max(1, local_size));
  return std::max(1, cores);  // bound by mpirun: use what we were given
}

StatusOr<ResolvedJob> resolve_job(const JobConfig& c, const dataplane::Manifest& manifest, int world_size,
                                  int local_size) {
  ResolvedJob job;
  const std::string source = c.source.empty() ? std::string("config") : c.source;
  SX_ASSIGN_OR_RETURN(job.spec, model::preset(c.model.preset));
  job.spec.num_classes = c.model.num_classes > 0 ? c.model.num_classes : manifest.num_classes;
  job.spec.in_channels = c.model.in_channels > 0 ? c.model.in_channels : manifest.channels;
  job.spec.zero_init_last_bn = c.model.zero_init_last_bn;
  if (manifest.num_classes > job.spec.num_classes)
    return Status::invalid_argument(source + ": key 'model.num_classes': " + std::to_string(job.spec.num_classes) +
                                    " is less than the dataset's " + std::to_string(manifest.num_classes) + " classes");
  if (manifest.channels != job.spec.in_channels)
    return Status::invalid_argument(source + ": key 'model.in_channels': " + std::to_string(job.spec.in_channels) +
                                    " but the dataset has " + std::to_string(manifest.channels) + " channels");
  job.image_size = c.model.image_size > 0 ? c.model.image_size : job.spec.stem == model::Stem::kSmall ? 28 : 224;

  job.accumulate = c.batch.accumulate;
  const int64_t per_step_ranks = int64_t(world_size) * job.accumulate;
  if (c.batch.per_rank > 0) {
    job.per_rank = c.batch.per_rank;
    if (c.batch.global > 0 && c.batch.global != job.per_rank * per_step_ranks)
      return Status::invalid_argument(source + ": key 'batch.global': " + std::to_string(c.batch.global) +
                                      " != batch.per_rank · world size · batch.accumulate = " +
                                      std::to_string(job.per_rank * per_step_ranks) +
                                      "; HINT: set batch.per_rank=0 to derive it from batch.global");
  } else {
    if (c.batch.global % per_step_ranks != 0)
      return Status::invalid_argument(source + ": key 'batch.global': " + std::to_string(c.batch.global) +
                                      " is not divisible by world size · batch.accumulate = " +
                                      std::to_string(per_step_ranks));
    job.per_rank = int(c.batch.global / per_step_ranks);
  }
  job.global_batch = job.per_rank * per_step_ranks;
  job.threads = threads_per_rank(c.numerics.threads, local_size);
  job.train_samples = manifest.num_samples;
  job.steps_per_epoch = job.train_samples / job.global_batch;
  if (c.mode == "train") {
    if (job.steps_per_epoch == 0)
      return Status::invalid_argument(source + ": the global batch " + std::to_string(job.global_batch) +
                                      " is larger than the training set (" + std::to_string(job.train_samples) +
                                      " samples)");
    job.total_steps = int64_t(std::llround(c.epochs * double(job.steps_per_epoch)));
    if (c.max_steps > 0) job.total_steps = c.epochs > 0 ? std::min(job.total_steps, c.max_steps) : c.max_steps;
  }
  return job;
}

dataplane::TransformConfig data_transform(const JobConfig& c, const ResolvedJob& job, int channels, bool train) {
  dataplane::TransformConfig t;
  const bool small = c.data.transform == "small" || (c.data.transform == "auto" && job.spec.stem == model::Stem::kSmall);
  if (small) {
    t.mode = train ? dataplane::TransformMode::kSmallTrain : dataplane::TransformMode::kSmallEval;
  } else {
    t.mode = train ? dataplane::TransformMode::kTrain : dataplane::TransformMode::kEval;
  }
  t.out_h = t.out_w = job.image_size;
  t.pad = c.data.pad;
  t.flip = c.data.flip;
  t.resize_short = c.data.resize_short;
  t.scale_min = c.data.scale_min;
  t.erase_prob = train ? c.data.erase_prob : 0.0;
  if (!c.data.mean.empty()) {
    for (size_t i = 0; i < 3; ++i) {
      size_t j = std::min(i, c.data.mean.size() - 1);
      t.mean[i] = float(c.data.mean[j]);
      t.stddev[i] = float(c.data.std[j]);
    }
  } else if (channels == 1) {
    t.mean = {0.2860f, 0.2860f, 0.2860f};  // Fashion-MNIST training set
    t.stddev = {0.3530f, 0.3530f, 0.3530f};
  }
  return t;
}

model::BnReducer sync_bn_reducer(MpiEnv& env) {
  return [&env](double* data, int count) { return env.allreduce_sum(std::span<double>(data, size_t(count))); };
}

model::NetworkOptions network_options(const JobConfig& c, const ResolvedJob& job, MpiEnv& env) {
  model::NetworkOptions no;
  no.batch = job.per_rank;
  no.image_h = no.image_w = job.image_size;
  no.seed = c.seed;
  no.bn_momentum = float(c.model.bn_momentum);
  no.bn_eps = float(c.model.bn_eps);
  if (c.numerics.sync_bn) no.bn_reducer = sync_bn_reducer(env);
  return no;
}

namespace {

template <typename Out>
std::vector<Out> views(model::Network& net, bool with_momentum) {
  std::vector<Out> out;
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape, float* data) {
    Out t;
    t.name = name;
    t.shape = shape;
    t.data = data;
    out.push_back(std::move(t));
  };
  for (const model::ParamInfo& p : net.params()) add("params/" + p.name, p.shape, net.params_data() + p.offset);
  if (with_momentum)
    for (const model::ParamInfo& p : net.params())
      add("momentum/" + p.name, p.shape, net.momentum_data() + p.offset);
  for (const model::ParamInfo& p : net.bn_stats())
    add("bn_stats/" + p.name, p.shape, net.bn_stats_data() + p.offset);
  return out;
}

}  // namespace

std::vector<storage::TensorRef> checkpoint_refs(model::Network& net, bool with_momentum) {
  return views<storage::TensorRef>(net, with_momentum);
}

std::vector<storage::TensorSlot> checkpoint_slots(model::Network& net, bool with_momentum) {
  return views<storage::TensorSlot>(net, with_momentum);
}

}  // namespace sx::worker
