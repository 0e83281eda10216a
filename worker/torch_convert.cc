// Checkpoint <-> PyTorch state_dict: names and shapes from model/torch_names.h, files from
// storage/torch_file.h and storage/checkpoint.h.
#include "worker/torch_convert.h"

#include <cstdio>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "model/backend.h"
#include "model/network.h"
#include "model/torch_names.h"
#include "worker/config.h"

namespace sx::worker {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const storage::OwnedTensor* find(const storage::CheckpointContents& c, const std::string& name) {
  for (const storage::OwnedTensor& t : c.tensors)
    if (t.name == name) return &t;
  return nullptr;
}

// The smallest square input the spec's stem and strides leave at least one pixel of (the network
// is built only to list its parameters).
int listing_image_size(const model::ModelSpec& spec) { return spec.stem == model::Stem::kSmall ? 32 : 64; }

}  // namespace

StatusOr<model::ModelSpec> checkpoint_model_spec(const storage::CheckpointContents& ckpt) {
  SX_ASSIGN_OR_RETURN(model::ModelSpec spec, model::preset(ckpt.meta.model_preset));
  const storage::OwnedTensor* fc = find(ckpt, "params/fc.weight");
  const storage::OwnedTensor* stem = find(ckpt, "params/stem.conv1.weight");
  if (!fc || fc->shape.size() != 2 || !stem || stem->shape.size() != 4)
    return Status::data_loss("checkpoint lacks params/fc.weight (K, C) or params/stem.conv1.weight (OC, C, k, k)");
  spec.num_classes = int(fc->shape[0]);
  spec.in_channels = int(stem->shape[1]);
  return spec;
}

StatusOr<std::vector<storage::TorchTensor>> to_torch_tensors(const model::ModelSpec& spec,
                                                             const std::vector<storage::TensorRef>& tensors,
                                                             int64_t batches_tracked) {
  std::vector<storage::TorchTensor> out;
  for (const storage::TensorRef& t : tensors) {
    std::string_view name = t.name;
    const bool param = name.starts_with("params/"), stat = name.starts_with("bn_stats/");
    if (!param && !stat) continue;  // momentum/: optimizer state, not part of a state_dict
    name.remove_prefix(param ? 7 : 9);
    storage::TorchTensor tt;
    SX_ASSIGN_OR_RETURN(tt.name, model::torch_name(spec, name));
    tt.shape = model::torch_shape(name, t.shape);
    tt.data.assign(t.data, t.data + numel(t.shape));
    const std::string torch_name = tt.name;
    out.push_back(std::move(tt));
    if (stat && name.ends_with(".running_var")) {  // PyTorch's BN also keeps a batch counter
      storage::TorchTensor count;
      count.name = torch_name.substr(0, torch_name.size() - std::string(".running_var").size()) + ".num_batches_tracked";
      count.dtype = storage::TorchDType::kInt64;
      count.ints = {batches_tracked};
      out.push_back(std::move(count));
    }
  }
  return out;
}

Status export_torch(const std::string& checkpoint_path, const std::string& out_path) {
  SX_ASSIGN_OR_RETURN(storage::CheckpointContents ckpt, storage::read_checkpoint(checkpoint_path));
  auto spec = checkpoint_model_spec(ckpt);
  if (!spec.is_ok()) return spec.status().with_context(checkpoint_path);
  std::vector<storage::TensorRef> refs;
  for (const storage::OwnedTensor& t : ckpt.tensors) refs.push_back({t.name, t.shape, t.data.data()});
  auto tensors = to_torch_tensors(*spec, refs, ckpt.meta.step);
  if (!tensors.is_ok()) return tensors.status().with_context(checkpoint_path);
  return storage::write_torch_state_dict(out_path, *tensors);
}

StatusOr<ImportReport> import_torch(const std::string& torch_path, const std::string& arch, const std::string& out_path) {
  SX_ASSIGN_OR_RETURN(std::vector<storage::TorchTensor> file, storage::read_torch_state_dict(torch_path));
  ImportReport report;
  std::map<std::string, const storage::TorchTensor*> by_name;
  for (const storage::TorchTensor& t : file) {
    const std::string name = model::normalize_torch_name(t.name);
    report.cadene_names |= name != t.name && t.name.find("module.") == std::string::npos;
    by_name[name] = &t;
  }
  auto shape_of = [&](const char* name, size_t rank) -> const std::vector<int64_t>* {
    auto it = by_name.find(name);
    return it != by_name.end() && it->second->shape.size() == rank ? &it->second->shape : nullptr;
  };
  SX_ASSIGN_OR_RETURN(report.spec, model::preset(arch));
  const std::vector<int64_t>* fc = shape_of("fc.weight", 2);
  const std::vector<int64_t>* stem = shape_of(report.spec.stem == model::Stem::kVd ? "conv1.0.weight" : "conv1.weight", 4);
  if (!fc || !stem)
    return Status::invalid_argument(torch_path + ": no fc.weight (K, C) or first stem conv weight (OC, C, k, k) for " +
                                    arch + "; HINT: is it a state_dict of this architecture?");
  report.spec.num_classes = int((*fc)[0]);
  report.spec.in_channels = int((*stem)[1]);

  // Our parameters and running statistics, in checkpoint order, from the network itself.
  auto backend = model::make_cpu_backend({.threads = 1});
  model::NetworkOptions no;
  no.image_h = no.image_w = listing_image_size(report.spec);
  SX_ASSIGN_OR_RETURN(auto net, model::Network::build(*backend, report.spec, no));
  std::vector<std::pair<std::string, const model::ParamInfo*>> ours;
  for (const model::ParamInfo& p : net->params()) ours.emplace_back("params/", &p);
  for (const model::ParamInfo& p : net->bn_stats()) ours.emplace_back("bn_stats/", &p);

  std::vector<std::vector<float>> data;
  data.reserve(ours.size());
  storage::CheckpointState state;
  std::set<std::string> used;
  for (const auto& [group, p] : ours) {
    SX_ASSIGN_OR_RETURN(std::string tname, model::torch_name(report.spec, p->name));
    auto it = by_name.find(tname);
    if (it == by_name.end())
      return Status::invalid_argument(torch_path + ": no tensor '" + tname + "' (our " + p->name + ") for " + arch);
    const storage::TorchTensor& t = *it->second;
    const std::vector<int64_t> want = model::torch_shape(p->name, p->shape);
    if (t.dtype != storage::TorchDType::kFloat32 || t.shape != want)
      return Status::invalid_argument(torch_path + ": tensor '" + t.name + "' has shape " + shape_text(t.shape) + ", " +
                                      arch + " needs " + shape_text(want) + " (float)");
    used.insert(tname);
    data.push_back(t.data);
    state.tensors.push_back({group + p->name, p->shape, data.back().data()});
  }
  for (const auto& [name, t] : by_name)
    if (!used.count(name) && !name.ends_with(".num_batches_tracked"))
      return Status::invalid_argument(torch_path + ": tensor '" + t->name + "' has no place in " + arch +
                                      "; HINT: check --arch (the file may be another depth or variant)");
  report.tensors = int64_t(state.tensors.size());

  JobConfig config;
  config.model.preset = arch;
  config.model.num_classes = report.spec.num_classes;
  config.model.in_channels = report.spec.in_channels;
  state.meta.model_preset = arch;
  state.meta.config_text = job_config_to_yaml(config);
  state.meta.extra_json = nlohmann::json{{"num_classes", report.spec.num_classes},
                                         {"in_channels", report.spec.in_channels},
                                         {"imported_from", torch_path}}
                              .dump();
  const std::string tmp = out_path + ".tmp";
  Status st = storage::write_checkpoint_file(tmp, state);
  if (st.is_ok() && std::rename(tmp.c_str(), out_path.c_str()) != 0)
    st = Status::unavailable(out_path + ": cannot rename from " + tmp);
  if (!st.is_ok()) {
    std::remove(tmp.c_str());
    return st;
  }
  return report;
}

}  // namespace sx::worker
