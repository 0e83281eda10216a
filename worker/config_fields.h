// defines: sx::worker::ConfigField and config_fields() — the single table of every job config key:
// its dotted name, type, allowed values, meaning, and how to read / write it in a JobConfig.
// config.cc (parse, overrides, print, help) walks this table; nothing else lists keys.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "common/status.h"
#include "worker/config.h"

namespace sx::worker {

struct ConfigField {
  std::string key;        // "optimizer.lr"
  std::string type;       // "number", "integer", "bool", "string", "list of numbers"
  std::string choices;    // "train|eval" for enumerated strings, else ""
  std::string help;
  // Sets the field from a YAML node; `where` prefixes errors ("job.yaml:12:7" or "-o a.b=c").
  std::function<Status(JobConfig&, const YAML::Node&, const std::string& where)> set;
  // The value as YAML text ("0.1", "true", "[0.5, 0.25]", "\"\"").
  std::function<std::string(const JobConfig&)> get;
};

const std::vector<ConfigField>& config_fields();
const ConfigField* find_config_field(const std::string& key);
// Section names ("model", "data", ...), in table order.
std::vector<std::string> config_sections();

}  // namespace sx::worker
