// Job config: YAML file + `-o` overrides -> JobConfig, validation, printing. The keys themselves
// are in config_fields.cc.
#include "worker/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "model/lr_schedule.h"
#include "model/se_resnext.h"
#include "worker/config_fields.h"

namespace sx::worker {
namespace {

std::string where_of(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

std::string keys_of_section(const std::string& section) {
  std::string list;
  for (const ConfigField& f : config_fields()) {
    if (section.empty() ? f.key.find('.') == std::string::npos : f.key.rfind(section + ".", 0) == 0) {
      list += (list.empty() ? "" : ", ") + (section.empty() ? f.key : f.key.substr(section.size() + 1));
    }
  }
  if (section.empty())
    for (const std::string& s : config_sections()) list += ", " + s;
  return list;
}

bool is_section(const std::string& key) {
  for (const std::string& s : config_sections())
    if (s == key) return true;
  return false;
}

Status apply_map(JobConfig& config, const YAML::Node& map, const std::string& prefix, const std::string& source) {
  for (const auto& kv : map) {
    if (!kv.first.IsScalar())
      return Status::invalid_argument(where_of(source, kv.first) + ": keys must be plain names");
    const std::string name = kv.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    if (prefix.empty() && is_section(name)) {
      if (kv.second.IsNull()) continue;  // `optimizer:` with nothing under it
      if (!kv.second.IsMap())
        return Status::invalid_argument(where_of(source, kv.second) + ": key '" + key +
                                        "': expected a section (map of keys: " + keys_of_section(key) + "), got " +
                                        (kv.second.IsSequence() ? "a list" : "'" + kv.second.Scalar() + "'"));
      SX_TRY(apply_map(config, kv.second, key, source));
      continue;
    }
    const ConfigField* field = find_config_field(key);
    if (field == nullptr)
      return Status::invalid_argument(where_of(source, kv.first) + ": unknown key '" + key + "' (known " +
                                      (prefix.empty() ? std::string("top-level keys") : "keys of " + prefix) + ": " +
                                      keys_of_section(prefix) + ")");
    SX_TRY(field->set(config, kv.second, where_of(source, kv.second)));
  }
  return Status::ok();
}

StatusOr<YAML::Node> parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string where = source;
    if (!e.mark.is_null()) where += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    return Status::invalid_argument(where + ": not valid YAML: " + e.msg);
  }
}

Status apply_override(JobConfig& config, const std::string& arg) {
  const std::string source = "-o " + arg;
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0)
    return Status::invalid_argument(source + ": expected key=value, e.g. -o optimizer.lr=0.05");
  std::string key = arg.substr(0, eq);
  const std::string value = arg.substr(eq + 1);
  if (key == "checkpoint") key = "checkpoint.load";  // shortcut: -o checkpoint=runs/r50/latest
  const ConfigField* field = find_config_field(key);
  if (field == nullptr) {
    const size_t dot = key.rfind('.');
    const std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
    return Status::invalid_argument(source + ": unknown key '" + key + "' (known " +
                                    (is_section(section) ? "keys of " + section + ": " + keys_of_section(section)
                                                         : "top-level keys: " + keys_of_section("")) +
                                    ")");
  }
  YAML::Node node;
  if (field->type == "string") {
    node = YAML::Node(value);  // verbatim: paths may contain ':' or '#'
  } else {
    SX_ASSIGN_OR_RETURN(node, parse_yaml(value, source));
  }
  return field->set(config, node, source);
}

Status bad(const JobConfig& c, const std::string& key, const std::string& what) {
  return Status::invalid_argument((c.source.empty() ? std::string("config") : c.source) + ": key '" + key + "': " +
                                  what);
}

template <typename T> std::string got(T v) {
  std::ostringstream ss;
  ss << " (got " << v << ")";
  return ss.str();
}

}  // namespace

StatusOr<JobConfig> parse_job_config(const std::string& yaml_text, const std::string& source,
                                     const std::vector<std::string>& overrides) {
  JobConfig config;
  config.source = source;
  SX_ASSIGN_OR_RETURN(YAML::Node root, parse_yaml(yaml_text, source));
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) return Status::invalid_argument(source + ": expected a map of keys at the top level");
    SX_TRY(apply_map(config, root, "", source));
  }
  for (const std::string& o : overrides) SX_TRY(apply_override(config, o));
  SX_TRY(validate_job_config(config));
  return config;
}

StatusOr<JobConfig> load_job_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::not_found(path + ": cannot open the job config");
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return parse_job_config(text, path, overrides);
}

model::LrScheduleConfig lr_schedule_config(const JobConfig& c, int64_t steps_per_epoch, double epochs,
                                           int64_t global_batch) {
  model::LrScheduleConfig s;
  s.name = c.schedule.name;
  s.base_lr = c.optimizer.lr;
  s.steps_per_epoch = steps_per_epoch;
  s.epochs = epochs;
  s.boundary_epochs = c.schedule.boundaries;
  s.values = c.schedule.values;
  s.step_epochs = c.schedule.step_epochs;
  s.gamma = c.schedule.gamma;
  s.min_lr = c.schedule.min_lr;
  s.power = c.schedule.power;
  if (c.schedule.warmup_epochs >= 0) s.warmup_epochs = c.schedule.warmup_epochs;
  s.warmup_start_lr = c.schedule.warmup_start_lr;
  s.scale_by_batch = c.schedule.scale_by_batch;
  s.global_batch = global_batch;
  return s;
}

Status validate_job_config(const JobConfig& c) {
  if (c.epochs <= 0 && c.max_steps <= 0 && c.mode == "train") return bad(c, "epochs", "must be > 0" + got(c.epochs));
  if (c.max_steps < 0) return bad(c, "max_steps", "must be >= 0" + got(c.max_steps));
  if (c.run_dir.empty()) return bad(c, "run_dir", "must not be empty");
  if (c.resume != "none" && c.resume != "auto" && c.resume.empty())
    return bad(c, "resume", "expected none, auto or a checkpoint path");
  if (!c.pretrained.empty() && c.resume != "none")
    return bad(c, "pretrained", "cannot be combined with resume (a resumed run already has its parameters)");

  if (!model::preset(c.model.preset).is_ok()) {
    std::string names;
    for (const std::string& n : model::preset_names()) names += (names.empty() ? "" : ", ") + n;
    return bad(c, "model.preset", "unknown preset '" + c.model.preset + "' (known: " + names + ")");
  }
  if (c.model.num_classes < 0) return bad(c, "model.num_classes", "must be >= 0" + got(c.model.num_classes));
  if (c.model.in_channels != 0 && c.model.in_channels != 1 && c.model.in_channels != 3)
    return bad(c, "model.in_channels", "must be 0, 1 or 3" + got(c.model.in_channels));
  if (c.model.image_size < 0 || c.model.image_size > 4096)
    return bad(c, "model.image_size", "must be in [0, 4096]" + got(c.model.image_size));
  if (!(c.model.bn_momentum > 0 && c.model.bn_momentum <= 1))
    return bad(c, "model.bn_momentum", "must be in (0, 1]" + got(c.model.bn_momentum));
  if (!(c.model.bn_eps > 0)) return bad(c, "model.bn_eps", "must be > 0" + got(c.model.bn_eps));

  if (c.mode == "train" && c.data.train.empty()) return bad(c, "data.train", "must name a dataset directory");
  if (c.mode == "eval" && c.data.val.empty()) return bad(c, "data.val", "mode=eval needs a validation set");
  if (c.data.threads < 1 || c.data.threads > 64) return bad(c, "data.threads", "must be in [1, 64]" + got(c.data.threads));
  if (c.data.prefetch < 1 || c.data.prefetch > 64)
    return bad(c, "data.prefetch", "must be in [1, 64]" + got(c.data.prefetch));
  if (c.data.pad < 0 || c.data.pad > 64) return bad(c, "data.pad", "must be in [0, 64]" + got(c.data.pad));
  if (c.data.resize_short < 0) return bad(c, "data.resize_short", "must be >= 0" + got(c.data.resize_short));
  if (!(c.data.scale_min > 0 && c.data.scale_min <= 1))
    return bad(c, "data.scale_min", "must be in (0, 1]" + got(c.data.scale_min));
  if (!(c.data.erase_prob >= 0 && c.data.erase_prob <= 1))
    return bad(c, "data.erase_prob", "must be in [0, 1]" + got(c.data.erase_prob));
  if (c.data.mean.size() != c.data.std.size())
    return bad(c, "data.std", "must have as many values as data.mean (" + std::to_string(c.data.mean.size()) + ")");
  if (c.data.mean.size() > 3) return bad(c, "data.mean", "at most 3 values (one per channel)");
  for (double s : c.data.std)
    if (!(s > 0)) return bad(c, "data.std", "values must be > 0" + got(s));

  if (!(c.optimizer.lr > 0)) return bad(c, "optimizer.lr", "must be > 0" + got(c.optimizer.lr));
  if (!(c.optimizer.momentum >= 0 && c.optimizer.momentum < 1))
    return bad(c, "optimizer.momentum", "must be in [0, 1)" + got(c.optimizer.momentum));
  if (c.optimizer.nesterov && c.optimizer.momentum == 0)
    return bad(c, "optimizer.nesterov", "needs optimizer.momentum > 0");
  if (c.optimizer.weight_decay < 0) return bad(c, "optimizer.weight_decay", "must be >= 0" + got(c.optimizer.weight_decay));
  if (c.optimizer.bn_bias_decay < 0)
    return bad(c, "optimizer.bn_bias_decay", "must be >= 0" + got(c.optimizer.bn_bias_decay));
  if (!(c.optimizer.label_smoothing >= 0 && c.optimizer.label_smoothing < 1))
    return bad(c, "optimizer.label_smoothing", "must be in [0, 1)" + got(c.optimizer.label_smoothing));
  if (c.optimizer.mixup_alpha < 0) return bad(c, "optimizer.mixup_alpha", "must be >= 0" + got(c.optimizer.mixup_alpha));

  {  // The schedule validates itself; re-key its message.
    const model::LrScheduleConfig s = lr_schedule_config(c, 100, c.epochs > 0 ? c.epochs : 1, 256);
    auto made = model::LrSchedule::make(s);
    if (!made.is_ok()) return bad(c, "schedule", made.status().message());
  }

  if (c.batch.per_rank < 0) return bad(c, "batch.per_rank", "must be >= 0" + got(c.batch.per_rank));
  if (c.batch.global < 0) return bad(c, "batch.global", "must be >= 0" + got(c.batch.global));
  if (c.batch.per_rank == 0 && c.batch.global == 0)
    return bad(c, "batch.per_rank", "set batch.per_rank or batch.global (both are 0)");
  if (c.batch.accumulate < 1 || c.batch.accumulate > 1024)
    return bad(c, "batch.accumulate", "must be in [1, 1024]" + got(c.batch.accumulate));

  if (c.checkpoint.every_epochs < 0)
    return bad(c, "checkpoint.every_epochs", "must be >= 0" + got(c.checkpoint.every_epochs));
  if (c.checkpoint.every_steps < 0) return bad(c, "checkpoint.every_steps", "must be >= 0" + got(c.checkpoint.every_steps));
  if (c.checkpoint.keep < 1) return bad(c, "checkpoint.keep", "must be >= 1" + got(c.checkpoint.keep));
  if (c.eval.every_epochs < 0) return bad(c, "eval.every_epochs", "must be >= 0" + got(c.eval.every_epochs));
  if (!(c.comm.bucket_mb > 0 && c.comm.bucket_mb <= 4096))
    return bad(c, "comm.bucket_mb", "must be in (0, 4096]" + got(c.comm.bucket_mb));
  if (c.comm.ranks_per_node < 0) return bad(c, "comm.ranks_per_node", "must be >= 0" + got(c.comm.ranks_per_node));
  if (c.numerics.threads < 0 || c.numerics.threads > 1024)
    return bad(c, "numerics.threads", "must be in [0, 1024]" + got(c.numerics.threads));
  if (c.comm.backend == "nccl" && c.device != "cuda")
    return bad(c, "comm.backend", "nccl needs device: cuda (device '" + c.device + "' has host memory); expected mpi here");
  if (c.numerics.precision != "fp32" && c.device != "cuda")
    return bad(c, "numerics.precision", "'" + c.numerics.precision + "' needs device: cuda (device '" + c.device +
                                            "' computes in fp32); expected fp32 here");
  if (!(c.numerics.loss_scale_init > 0 && c.numerics.loss_scale_init <= 3e38))
    return bad(c, "numerics.loss_scale_init", "must be in (0, 3e38]" + got(c.numerics.loss_scale_init));
  if (c.numerics.loss_scale_growth_interval < 1)
    return bad(c, "numerics.loss_scale_growth_interval", "must be >= 1" + got(c.numerics.loss_scale_growth_interval));
  if (c.log.every_steps < 1) return bad(c, "log.every_steps", "must be >= 1" + got(c.log.every_steps));
  return Status::ok();
}

std::string job_config_to_yaml(const JobConfig& c) {
  std::string out;
  std::string section;
  for (const ConfigField& f : config_fields()) {
    const size_t dot = f.key.find('.');
    if (dot == std::string::npos) {
      out += f.key + ": " + f.get(c) + "\n";
      continue;
    }
    const std::string s = f.key.substr(0, dot);
    if (s != section) {
      section = s;
      out += s + ":\n";
    }
    out += "  " + f.key.substr(dot + 1) + ": " + f.get(c) + "\n";
  }
  return out;
}

std::string job_config_help() {
  const JobConfig defaults;
  std::string out;
  for (const ConfigField& f : config_fields()) {
    std::string type = f.choices.empty() ? f.type : f.choices;
    std::string line = "  " + f.key;
    line.resize(std::max<size_t>(line.size() + 1, 30), ' ');
    out += line + f.help + "  [" + type + ", default " + f.get(defaults) + "]\n";
  }
  return out;
}

}  // namespace sx::worker
