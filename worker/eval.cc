#include "worker/eval.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sx::worker {

void score_row(const float* z, int k, int label, EvalResult* out) {
  const float zl = z[label];
  int rank = 0;
  float zmax = z[0];
  for (int c = 0; c < k; ++c) {
    rank += (z[c] > zl) || (z[c] == zl && c < label);
    zmax = std::max(zmax, z[c]);
  }
  double sum = 0;
  for (int c = 0; c < k; ++c) sum += std::exp(double(z[c]) - double(zmax));
  out->samples += 1;
  out->top1 += rank == 0;
  out->top5 += rank < 5;
  out->loss_sum += std::log(sum) - (double(zl) - double(zmax));
}

Status check_finite_parameters(model::Network& net) {
  auto check = [](std::span<const model::ParamInfo> infos, const float* base, const char* what) -> Status {
    for (const model::ParamInfo& p : infos) {
      const float* v = base + p.offset;
      const auto bad = std::find_if(v, v + p.count, [](float x) { return !std::isfinite(x); });
      if (bad != v + p.count)
        return Status::data_loss(std::string(what) + " " + p.name + "[" + std::to_string(bad - v) + "] = " +
                                 std::to_string(*bad) + ": the parameters are broken (diverged?), no prediction can be made");
    }
    return Status::ok();
  };
  if (!net.backend().is_device()) {
    SX_TRY(check(net.params(), net.params_data(), "parameter"));
    return check(net.bn_stats(), net.bn_stats_data(), "BN statistic");
  }
  std::vector<float> host(size_t(std::max(net.param_count(), net.bn_stats_count())));  // device: a host copy
  SX_TRY(net.backend().copy_to_host(host.data(), net.params_data(), size_t(net.param_count()) * sizeof(float)));
  SX_TRY(check(net.params(), host.data(), "parameter"));
  SX_TRY(net.backend().copy_to_host(host.data(), net.bn_stats_data(), size_t(net.bn_stats_count()) * sizeof(float)));
  return check(net.bn_stats(), host.data(), "BN statistic");
}

StatusOr<EvalResult> evaluate(model::Network& net, dataplane::Reader& reader, MpiEnv& env) {
  const int k = net.spec().num_classes;
  // No parameter changes during an eval: the convolutions keep their converted weights.
  struct Frozen {
    model::Backend& be;
    explicit Frozen(model::Backend& b) : be(b) { be.freeze_weights(true); }
    ~Frozen() { be.freeze_weights(false); }
  } frozen(net.backend());
  SX_TRY(reader.start_epoch(0, 0));
  EvalResult local;
  std::vector<float> logits;
  std::vector<int32_t> labels;
  while (true) {
    SX_ASSIGN_OR_RETURN(const dataplane::Batch* batch, reader.next_batch());
    if (batch == nullptr) break;
    SX_TRY(net.set_input(batch->images.data()));
    SX_TRY(net.forward(false));
    logits.resize(size_t(batch->n) * k);
    SX_TRY(net.backend().copy_to_host(logits.data(), net.logits(), logits.size() * sizeof(float)));
    for (int i = 0; i < batch->valid; ++i) {
      const float* row = logits.data() + size_t(i) * k;
      if (!std::all_of(row, row + k, [](float z) { return std::isfinite(z); })) {
        if (local.nonfinite++ == 0) local.first_nonfinite = batch->indices[size_t(i)];
        continue;
      }
      const int label = batch->labels[size_t(i)];
      if (label < 0 || label >= k)
        return Status::data_loss("val sample " + std::to_string(batch->indices[size_t(i)]) + " has label " +
                                 std::to_string(label) + " outside [0, " + std::to_string(k) + ")");
      score_row(logits.data() + size_t(i) * k, k, label, &local);
    }
  }
  // One allreduce of the counts (int64, exact) and one of the loss.
  int64_t counts[4] = {local.samples, local.top1, local.top5, local.nonfinite};
  double loss = local.loss_sum;
  SX_TRY(env.allreduce_sum(std::span<int64_t>(counts, 4)));
  if (counts[3] > 0)  // after the allreduce, so that every rank returns the error
    return Status::data_loss(std::to_string(counts[3]) + " val samples got non-finite logits (NaN or inf; " +
                             (local.nonfinite ? "e.g. sample " + std::to_string(local.first_nonfinite) : "on other ranks") +
                             "): the parameters are broken (diverged?), no accuracy can be given");
  SX_TRY(env.allreduce_sum(std::span<double>(&loss, 1)));
  EvalResult total;
  total.samples = counts[0];
  total.top1 = counts[1];
  total.top5 = counts[2];
  total.loss_sum = loss;
  if (total.samples != reader.manifest().num_samples)
    return Status::internal("eval counted " + std::to_string(total.samples) + " samples of " +
                            std::to_string(reader.manifest().num_samples));
  return total;
}

}  // namespace sx::worker
