// defines: sx::coord::JobFiles, ServerInfo, read_server_info, connectable_endpoint, pub_endpoint_for —
// where the coordinator keeps its files in the job dir and how clients find its sockets.
//   DIR/coord.json        endpoints and pid of the running `sx_coord serve` (rewritten at start)
//   DIR/coord_state.json  rank tables, overrides, notices (atomic replace on every change)
//   DIR/metrics.jsonl     one line per (rank, new step) heartbeat, appended
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace sx::coord {

struct JobFiles {
  std::string dir;
  std::string info() const { return dir + "/coord.json"; }
  std::string state() const { return dir + "/coord_state.json"; }
  std::string metrics() const { return dir + "/metrics.jsonl"; }
};

struct ServerInfo {
  std::string endpoint;  // ROUTER, connectable from this host
  std::string pub;       // PUB, connectable from this host
  std::string job;
  int64_t pid = 0;
};

StatusOr<ServerInfo> read_server_info(const std::string& job_dir);
Status write_server_info(const std::string& job_dir, const ServerInfo& info);

// "tcp://0.0.0.0:5555" or "tcp://*:5555" -> "tcp://127.0.0.1:5555"; other endpoints unchanged.
std::string connectable_endpoint(const std::string& bound);
// The PUB endpoint a client should connect to: a wildcard host is replaced by the host the client
// already reaches the ROUTER on.
std::string pub_endpoint_for(const std::string& pub, const std::string& router_endpoint);

}  // namespace sx::coord
