// The job config key table. Each FIELD(path, help) binds the dotted YAML key `path` to the
// JobConfig member of the same path, so keys and members cannot drift apart.
#include "worker/config_fields.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <type_traits>

namespace sx::worker {
namespace {

std::string node_kind(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  return "'" + node.Scalar() + "'";
}

std::string format_double(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a float in YAML's eyes
  return s;
}

std::string quote_string(const std::string& s) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << s;
  return e.c_str();
}

template <typename T> const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, std::vector<double>>) return "list of numbers";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else return "integer";
}

template <typename T> bool decode_scalar(const YAML::Node& node, T* out) {
  if (!node.IsScalar()) return false;
  if constexpr (std::is_same_v<T, std::string>) {
    *out = node.Scalar();
    return true;
  } else if constexpr (std::is_same_v<T, bool>) {
    return YAML::convert<bool>::decode(node, *out);
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::string& s = node.Scalar();
    double v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return false;
    *out = T(v);
    return true;
  } else {
    const std::string& s = node.Scalar();
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);  // rejects "1.5", "-1" for unsigned, overflow
    if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return false;
    *out = v;
    return true;
  }
}

template <typename T> Status decode(const YAML::Node& node, T* out) {
  if constexpr (std::is_same_v<T, std::vector<double>>) {
    if (node.IsScalar() || node.IsNull()) {
      // A single number is a list of one; an empty value clears the list.
      if (node.IsNull()) {
        out->clear();
        return Status::ok();
      }
      double v = 0;
      if (!decode_scalar(node, &v)) return Status::invalid_argument("");
      *out = {v};
      return Status::ok();
    }
    if (!node.IsSequence()) return Status::invalid_argument("");
    std::vector<double> values;
    for (const YAML::Node& item : node) {
      double v = 0;
      if (!decode_scalar(item, &v)) return Status::invalid_argument("");
      values.push_back(v);
    }
    *out = std::move(values);
    return Status::ok();
  } else {
    if (std::is_same_v<T, std::string> && node.IsNull()) {  // `key:` with nothing = empty string
      *out = T{};
      return Status::ok();
    }
    return decode_scalar(node, out) ? Status::ok() : Status::invalid_argument("");
  }
}

template <typename T> std::string encode(const T& v) {
  if constexpr (std::is_same_v<T, std::string>) return quote_string(v);
  else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, std::vector<double>>) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + format_double(v[i]);
    return s + "]";
  } else if constexpr (std::is_floating_point_v<T>) return format_double(v);
  else return std::to_string(v);
}

template <typename T>
ConfigField make_field(const char* key, T& (*ref)(JobConfig&), const char* choices, const char* help) {
  ConfigField f;
  f.key = key;
  f.type = type_name<T>();
  f.choices = choices;
  f.help = help;
  f.set = [ref, key = f.key, type = f.type, choices = f.choices](JobConfig& c, const YAML::Node& node,
                                                                   const std::string& where) -> Status {
    T value{};
    if (!decode(node, &value).is_ok())
      return Status::invalid_argument(where + ": key '" + key + "': expected " +
                                      (choices.empty() ? type : "one of " + choices) + ", got " + node_kind(node));
    if constexpr (std::is_same_v<T, std::string>) {
      if (!choices.empty()) {
        bool ok = false;
        std::stringstream ss(choices);
        for (std::string item; std::getline(ss, item, '|');) ok |= item == value;
        if (!ok)
          return Status::invalid_argument(where + ": key '" + key + "': expected one of " + choices + ", got '" +
                                          value + "'");
      }
    }
    ref(c) = std::move(value);
    return Status::ok();
  };
  f.get = [ref](const JobConfig& c) { return encode(ref(const_cast<JobConfig&>(c))); };
  return f;
}

#define FIELD(path, choices, help) \
  make_field(#path, +[](JobConfig& c) -> auto& { return c.path; }, choices, help)

std::vector<ConfigField> build_fields() {
  return {
      FIELD(mode, "train|eval", "train, or evaluate checkpoint.load (default: the run's latest) on data.val"),
      FIELD(device, "cpu|cuda", "compute device: cpu (oneDNN) or cuda (cuDNN/cuBLAS, GPU = the rank's local rank)"),
      FIELD(run_dir, "", "run directory: metrics.jsonl, curves.png, config.yaml, checkpoints"),
      FIELD(seed, "", "seed of parameter init, sample order, augmentation and mixup"),
      FIELD(epochs, "", "training length in epochs (fractional allowed)"),
      FIELD(max_steps, "", "stop after this many optimizer steps (0 = run all epochs)"),
      FIELD(resume, "", "none | auto (latest good checkpoint in checkpoint.dir, fresh start if none) | PATH"),
      FIELD(pretrained, "", "finetune from this checkpoint; the classifier is skipped when its shape differs"),

      FIELD(model.preset, "", "SE-ResNeXt preset: small, se_resnext50_32x4d, ..."),
      FIELD(model.num_classes, "", "classes (0 = the training set's)"),
      FIELD(model.in_channels, "", "input channels (0 = the training set's)"),
      FIELD(model.image_size, "", "input height = width (0 = 28 for small, 224 otherwise)"),
      FIELD(model.zero_init_last_bn, "", "gamma = 0 in each block's last BN"),
      FIELD(model.bn_momentum, "", "BN running statistics momentum (PyTorch convention)"),
      FIELD(model.bn_eps, "", "BN epsilon"),

      FIELD(data.train, "", "training set: an sx_prep output directory"),
      FIELD(data.val, "", "validation set: an sx_prep output directory (\"\" = no eval)"),
      FIELD(data.test, "", "test set, evaluated once after the last step (\"\" = none); keep it out of recipe choices"),
      FIELD(data.threads, "", "decode + augment threads per rank"),
      FIELD(data.prefetch, "", "batches prepared ahead"),
      FIELD(data.transform, "auto|small|imagenet",
            "augmentation: small = pad + random crop + flip; imagenet = random-resized-crop + flip"),
      FIELD(data.pad, "", "small: zero padding before the random crop"),
      FIELD(data.flip, "", "random horizontal flip"),
      FIELD(data.resize_short, "", "imagenet eval: short side before the center crop"),
      FIELD(data.scale_min, "", "imagenet: smallest random-resized-crop area fraction"),
      FIELD(data.erase_prob, "", "random erasing probability"),
      FIELD(data.mean, "", "per-channel mean of pixels in [0,1] (empty = ImageNet's / Fashion-MNIST's)"),
      FIELD(data.std, "", "per-channel standard deviation (empty = ImageNet's / Fashion-MNIST's)"),

      FIELD(optimizer.lr, "", "base learning rate"),
      FIELD(optimizer.momentum, "", "SGD momentum"),
      FIELD(optimizer.nesterov, "", "Nesterov momentum"),
      FIELD(optimizer.weight_decay, "", "L2 on conv and linear weights"),
      FIELD(optimizer.bn_bias_decay, "", "L2 on BN gamma/beta and biases"),
      FIELD(optimizer.label_smoothing, "", "label smoothing epsilon"),
      FIELD(optimizer.mixup_alpha, "", "mixup Beta(alpha, alpha); 0 = off"),

      FIELD(schedule.name, "", "Piecewise | Cosine | Linear, optionally + Warmup (PaddleClas names)"),
      FIELD(schedule.warmup_epochs, "", "linear warm-up length (-1 = 5 for ...Warmup names, else 0)"),
      FIELD(schedule.warmup_start_lr, "", "LR at the start of the warm-up"),
      FIELD(schedule.min_lr, "", "Cosine floor / Linear end value"),
      FIELD(schedule.boundaries, "", "Piecewise boundaries in epochs"),
      FIELD(schedule.values, "", "Piecewise values (one more than boundaries)"),
      FIELD(schedule.step_epochs, "", "Piecewise without boundaries: decay every step_epochs"),
      FIELD(schedule.gamma, "", "Piecewise without boundaries: decay factor"),
      FIELD(schedule.power, "", "Linear: polynomial power"),
      FIELD(schedule.scale_by_batch, "", "multiply LRs by global_batch / 256"),

      FIELD(batch.per_rank, "", "images per rank per micro-batch (0 = global / (world · accumulate))"),
      FIELD(batch.global, "", "images per optimizer step over all ranks (0 = per_rank · world · accumulate)"),
      FIELD(batch.accumulate, "", "micro-batches accumulated per optimizer step"),

      FIELD(checkpoint.dir, "", "checkpoint directory (\"\" = run_dir)"),
      FIELD(checkpoint.every_epochs, "", "checkpoint every N epochs (0 = off)"),
      FIELD(checkpoint.every_steps, "", "checkpoint every N optimizer steps (0 = off)"),
      FIELD(checkpoint.keep, "", "checkpoints kept"),
      FIELD(checkpoint.async, "", "write checkpoints in a background thread"),
      FIELD(checkpoint.load, "", "mode=eval: checkpoint to evaluate (dir, dir/latest or file; \"\" = checkpoint dir)"),

      FIELD(eval.every_epochs, "", "evaluate on data.val every N epochs (0 = only at the end)"),
      FIELD(eval.at_end, "", "evaluate after the last step"),
      FIELD(eval.out, "", "mode=eval: also append the result as one JSON line to this file (nothing is written into a run directory)"),

      FIELD(comm.algorithm, "auto|flat|hierarchical", "gradient allreduce algorithm"),
      FIELD(comm.backend, "mpi|nccl",
            "gradient transport: mpi (host memory; a GPU's gradients are staged through it) or nccl (device: cuda)"),
      FIELD(comm.bucket_mb, "", "allreduce bucket size in MiB"),
      FIELD(comm.overlap, "", "overlap the allreduce with backward"),
      FIELD(comm.ranks_per_node, "", "treat k consecutive ranks as one node (0 = real nodes; testing)"),

      FIELD(numerics.threads, "", "compute threads per rank (0 = cores / ranks on this node)"),
      FIELD(numerics.sync_bn, "", "SyncBN: BN statistics over the global batch (allreduced in forward and backward; "
                                  "the gradient allreduce then does not overlap backward)"),
      FIELD(numerics.check_finite, "", "stop with an error when the loss is NaN or infinite"),
      FIELD(numerics.precision, "fp32|bf16|fp16",
            "compute precision of activations (bf16/fp16 need device: cuda); weights, gradients, momentum stay fp32"),
      FIELD(numerics.loss_scale, "auto|dynamic|static|none",
            "loss scaling: auto = dynamic for fp16, none otherwise; a step with inf/NaN gradients is skipped"),
      FIELD(numerics.loss_scale_init, "", "first (dynamic) or fixed (static) loss scale"),
      FIELD(numerics.loss_scale_growth_interval, "", "dynamic: double the scale after this many finite steps in a row"),

      FIELD(log.every_steps, "", "train record interval in metrics.jsonl and the progress line"),
      FIELD(log.progress, "auto|on|off", "progress line on rank 0 (auto: redrawn on a terminal)"),
      FIELD(log.plot, "", "write run_dir/curves.png (loss and accuracy per epoch) after each epoch"),

      FIELD(coord.endpoint, "", "sx_coord endpoint tcp://HOST:PORT (none = train without a coordinator)"),
      FIELD(coord.job, "", "job name the coordinator serves (\"\" = the last component of run_dir)"),
      FIELD(coord.keys, "", "the coordinator's client key (coord_client.key) or its job dir (\"\" = run_dir/coord)"),
      FIELD(coord.connect_timeout_s, "", "fail when no coordinator answers within this many seconds"),
      FIELD(coord.check_every_steps, "", "rank 0 polls LR overrides and broadcasts them every N steps (>= 1)"),

      FIELD(elastic.keep_global_batch, "",
            "sx_launch resize: keep the global batch and LR schedule (per-rank batch / accumulation adapt); "
            "false = keep the per-rank batch and scale the LR linearly"),
  };
}

#undef FIELD

}  // namespace

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> fields = build_fields();
  return fields;
}

const ConfigField* find_config_field(const std::string& key) {
  for (const ConfigField& f : config_fields())
    if (f.key == key) return &f;
  return nullptr;
}

std::vector<std::string> config_sections() {
  std::vector<std::string> sections;
  for (const ConfigField& f : config_fields()) {
    size_t dot = f.key.find('.');
    if (dot == std::string::npos) continue;
    std::string s = f.key.substr(0, dot);
    if (sections.empty() || sections.back() != s) sections.push_back(s);
  }
  return sections;
}

}  // namespace sx::worker
