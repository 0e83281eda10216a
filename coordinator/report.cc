#include "coordinator/report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace sx::coord {
namespace {

nlohmann::json num(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

std::string cell(double x, const char* f) {
  if (!std::isfinite(x)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), f, x);
  return buf;
}

}  // namespace

nlohmann::json override_json(const LrOverride& o) {
  return {{"id", o.id}, {"kind", o.kind == OverrideKind::kFactor ? "factor" : "lr"}, {"value", o.value},
          {"from_step", o.from_step}, {"from_epoch", o.from_epoch < 0 ? nlohmann::json(nullptr) : nlohmann::json(o.from_epoch)}};
}

nlohmann::json rank_table_json(const RankTable& t) {
  nlohmann::json ranks = nlohmann::json::array(), hosts = nlohmann::json::array();
  for (const auto& r : t.ranks)
    ranks.push_back({{"rank", r.rank}, {"host", r.host}, {"pid", r.pid}, {"local_rank", r.local_rank}, {"device", r.device}});
  for (const auto& h : t.hosts) hosts.push_back({{"host", h.host}, {"ranks", h.ranks}, {"leader", h.leader}});
  return {{"generation", t.generation}, {"world_size", t.world_size}, {"complete", t.complete},
          {"steps_per_epoch", t.steps_per_epoch}, {"ranks", ranks}, {"hosts", hosts}};
}

nlohmann::json status_json(const StatusReport& s) {
  nlohmann::json ranks = nlohmann::json::array(), ovs = nlohmann::json::array(), nts = nlohmann::json::array();
  for (const auto& r : s.ranks) {
    const Metrics& m = r.metrics;
    ranks.push_back({{"rank", r.rank},
                     {"host", r.host},
                     {"pid", r.pid},
                     {"state", rank_state_name(r.state)},
                     {"alive", r.state != RankState::kDead},
                     {"heartbeat_age", r.heartbeat_age},
                     {"step", m.step},
                     {"epoch", num(m.epoch)},
                     {"loss", num(m.loss)},
                     {"accuracy", num(m.accuracy)},
                     {"lr", num(m.lr)},
                     {"img_per_sec", num(m.img_per_sec)},
                     {"mem_bytes", m.mem_bytes}});
  }
  for (const auto& o : s.overrides) ovs.push_back(override_json(o));
  for (const auto& n : s.notices)
    nts.push_back({{"id", n.id}, {"kind", n.kind == NoticeKind::kDrain ? "drain" : "stop"}, {"from_step", n.from_step},
                   {"reason", n.reason}});
  return {{"job", s.job},         {"generation", s.table.generation}, {"world_size", s.table.world_size},
          {"complete", s.table.complete}, {"dead_after", s.dead_after}, {"stall_after", s.stall_after},
          {"ranks", ranks},       {"overrides", ovs},                 {"notices", nts}};
}

std::string status_table(const StatusReport& s) {
  std::ostringstream os;
  os << "job " << s.job << "  generation " << s.table.generation << "  ranks " << s.table.ranks.size() << "/"
     << s.table.world_size << (s.table.complete ? "" : " (incomplete)") << "\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%5s  %-16s %10s %10s %10s %10s %8s  %s\n", "rank", "host", "step", "loss", "lr",
                "img/s", "hb age", "state");
  os << line;
  for (const auto& r : s.ranks) {
    const Metrics& m = r.metrics;
    std::snprintf(line, sizeof(line), "%5d  %-16s %10s %10s %10s %10s %7.1fs  %s\n", r.rank, r.host.c_str(),
                  m.step >= 0 ? std::to_string(m.step).c_str() : "-", cell(m.loss, "%.4f").c_str(),
                  cell(m.lr, "%.3g").c_str(), cell(m.step >= 0 ? m.img_per_sec : NAN, "%.1f").c_str(), r.heartbeat_age,
                  rank_state_name(r.state));
    os << line;
  }
  for (const auto& o : s.overrides)
    os << "override #" << o.id << ": " << (o.kind == OverrideKind::kLr ? "lr = " : "lr *= ") << o.value
       << " from step " << o.from_step << "\n";
  for (const auto& n : s.notices)
    os << "notice #" << n.id << ": " << (n.kind == NoticeKind::kDrain ? "drain" : "stop") << " " << n.reason << "\n";
  return os.str();
}

std::string hostfile(const RankTable& t) {
  std::ostringstream os;
  for (const auto& h : t.hosts) os << h.host << " slots=" << h.ranks.size() << "\n";
  return os.str();
}

}  // namespace sx::coord
