#include "coordinator/job_dir.h"

#include <ctime>
#include <fstream>

#include <nlohmann/json.hpp>

#include "storage/fs_util.h"

namespace sx::coord {

StatusOr<ServerInfo> read_server_info(const std::string& job_dir) {
  JobFiles files{job_dir};
  std::ifstream in(files.info());
  if (!in)
    return Status::not_found("no " + files.info() + ": is `sx_coord serve --job " + job_dir +
                             "` running? (or pass --endpoint tcp://HOST:PORT)");
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    return ServerInfo{j.at("endpoint").get<std::string>(), j.at("pub").get<std::string>(), j.value("job", ""),
                      j.value("pid", int64_t{0})};
  } catch (const std::exception& e) {
    return Status::data_loss(files.info() + " is not valid: " + e.what() + ". HINT: restart `sx_coord serve`");
  }
}

Status write_server_info(const std::string& job_dir, const ServerInfo& info) {
  nlohmann::json j = {{"endpoint", info.endpoint}, {"pub", info.pub}, {"job", info.job}, {"pid", info.pid},
                      {"started_unix", std::time(nullptr)}};
  return storage::write_file_atomic(JobFiles{job_dir}.info(), j.dump(2) + "\n");
}

std::string connectable_endpoint(const std::string& bound) {
  for (const char* wild : {"tcp://0.0.0.0:", "tcp://*:"}) {
    std::string w(wild);
    if (bound.rfind(w, 0) == 0) return "tcp://127.0.0.1:" + bound.substr(w.size());
  }
  return bound;
}

std::string pub_endpoint_for(const std::string& pub, const std::string& router_endpoint) {
  auto host_of = [](const std::string& e) -> std::string {
    if (e.rfind("tcp://", 0) != 0) return "";
    auto colon = e.rfind(':');
    return colon == std::string::npos || colon < 6 ? "" : e.substr(6, colon - 6);
  };
  std::string h = host_of(pub);
  if (h != "0.0.0.0" && h != "*" && h != "127.0.0.1") return pub;
  std::string rh = host_of(router_endpoint);
  if (rh.empty()) return connectable_endpoint(pub);
  return "tcp://" + rh + pub.substr(pub.rfind(':'));
}

}  // namespace sx::coord
