// defines: sx::coord::status_json, status_table, rank_table_json, hostfile — what the CLI verbs
// print (`status`, `status --json`, `ranktable --json`, `ranktable --hostfile`).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "coordinator/types.h"

namespace sx::coord {

nlohmann::json status_json(const StatusReport& s);
std::string status_table(const StatusReport& s);
nlohmann::json rank_table_json(const RankTable& t);
nlohmann::json override_json(const LrOverride& o);
// OpenMPI hostfile: "host slots=N" per host, in leader order.
std::string hostfile(const RankTable& t);

}  // namespace sx::coord
