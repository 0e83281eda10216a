// make_job_backend, make_loss_scaler: the device and numerics sections of the job config.
#include "worker/train_device.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "model/cuda/cuda_backend.h"
#include "model/precision.h"
#include "worker/train_model.h"

namespace sx::worker {

StatusOr<std::unique_ptr<model::Backend>> make_job_backend(const JobConfig& c, const MpiEnv& env, int threads) {
  SX_ASSIGN_OR_RETURN(const model::Precision precision, model::parse_precision(c.numerics.precision));
  std::unique_ptr<model::Backend> backend;
  if (c.device == "cuda") {
    const std::string where = "device=cuda (rank " + std::to_string(env.rank()) + ", GPU " +
                              std::to_string(env.local_rank()) + " = its local rank)";
    auto made = model::make_cuda_backend({.device = env.local_rank(), .precision = precision});
    if (!made.is_ok()) return made.status().with_context(where);
    backend = std::move(made).value();
  } else if (c.device == "cpu") {
    backend = model::make_cpu_backend({.threads = threads});
  } else {
    return Status::invalid_argument("device: expected cpu or cuda, got '" + c.device + "'");
  }
  if (backend->precision() != precision)
    return Status::invalid_argument(std::string("numerics.precision: ") + model::precision_name(precision) +
                                    " is not supported by the " + backend->name() + " backend (it computes in " +
                                    model::precision_name(backend->precision()) + ")");
  return backend;
}

StatusOr<std::optional<model::LossScaler>> make_loss_scaler(const JobConfig& c) {
  std::string mode = c.numerics.loss_scale;
  if (mode == "auto") mode = c.numerics.precision == "fp16" ? "dynamic" : "none";
  if (mode == "none") return std::optional<model::LossScaler>();
  if (mode != "dynamic" && mode != "static")
    return Status::invalid_argument("numerics.loss_scale: expected auto, dynamic, static or none, got '" + mode + "'");
  model::LossScalerConfig sc;
  sc.dynamic = mode == "dynamic";
  sc.init_scale = c.numerics.loss_scale_init;
  sc.growth_interval = c.numerics.loss_scale_growth_interval;
  sc.max_scale = std::max(sc.max_scale, sc.init_scale);
  sc.min_scale = std::min(sc.min_scale, sc.init_scale);
  auto s = model::LossScaler::make(sc);
  if (!s.is_ok()) return s.status().with_context("numerics.loss_scale_init / loss_scale_growth_interval");
  return std::optional<model::LossScaler>(std::move(s).value());
}

HostStage::HostStage(model::Network& net) : net_(net), mirrored_(net.backend().is_device()) {
  if (!mirrored_) return;
  params_.resize(size_t(net.param_count()));
  momentum_.resize(size_t(net.param_count()));
  bn_stats_.resize(size_t(net.bn_stats_count()));
}

Status HostStage::pull(unsigned parts) {
  if (!mirrored_) return Status::ok();
  model::Backend& b = net_.backend();
  const size_t pb = params_.size() * sizeof(float);
  if (parts & kParams) SX_TRY(b.copy_to_host(params_.data(), net_.params_data(), pb));
  if (parts & kMomentum) SX_TRY(b.copy_to_host(momentum_.data(), net_.momentum_data(), pb));
  if (parts & kBnStats) SX_TRY(b.copy_to_host(bn_stats_.data(), net_.bn_stats_data(), bn_stats_.size() * sizeof(float)));
  return Status::ok();
}

Status HostStage::push(unsigned parts) {
  if (!mirrored_) return Status::ok();
  model::Backend& b = net_.backend();
  const size_t pb = params_.size() * sizeof(float);
  if (parts & kParams) SX_TRY(b.copy_to_device(net_.params_data(), params_.data(), pb));
  if (parts & kMomentum) SX_TRY(b.copy_to_device(net_.momentum_data(), momentum_.data(), pb));
  if (parts & kBnStats)
    SX_TRY(b.copy_to_device(net_.bn_stats_data(), bn_stats_.data(), bn_stats_.size() * sizeof(float)));
  return b.synchronize();  // pageable sources: complete before the mirrors change again
}

// Each view points into one of the network's three buffers; move it to the same offset of the copy.
template <typename T> void HostStage::rebase(std::vector<T>& views) {
  if (!mirrored_) return;
  struct Range {
    const float* base;
    int64_t count;
    float* host;
  };
  const Range ranges[3] = {{net_.params_data(), net_.param_count(), params_.data()},
                           {net_.momentum_data(), net_.param_count(), momentum_.data()},
                           {net_.bn_stats_data(), net_.bn_stats_count(), bn_stats_.data()}};
  for (T& v : views) {
    const auto at = reinterpret_cast<uintptr_t>(v.data);
    for (const Range& r : ranges) {
      const auto lo = reinterpret_cast<uintptr_t>(r.base);
      if (at >= lo && at < lo + uintptr_t(r.count) * sizeof(float)) {
        v.data = r.host + (at - lo) / sizeof(float);
        break;
      }
    }
  }
}

std::vector<storage::TensorRef> HostStage::refs(bool with_momentum) {
  std::vector<storage::TensorRef> v = checkpoint_refs(net_, with_momentum);
  rebase(v);
  return v;
}

std::vector<storage::TensorSlot> HostStage::slots(bool with_momentum) {
  std::vector<storage::TensorSlot> v = checkpoint_slots(net_, with_momentum);
  rebase(v);
  return v;
}

}  // namespace sx::worker
