#include "coordinator/state.h"

#include <algorithm>
#include <cmath>

namespace sx::coord {
namespace {

constexpr int32_t kMaxWorldSize = 1 << 20;

nlohmann::json table_json(const RankTable& t) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& r : t.ranks)
    ranks.push_back({{"rank", r.rank}, {"host", r.host}, {"pid", r.pid}, {"local_rank", r.local_rank}, {"device", r.device}});
  return {{"generation", t.generation}, {"world_size", t.world_size}, {"steps_per_epoch", t.steps_per_epoch}, {"ranks", ranks}};
}

}  // namespace

CoordState::CoordState(std::string job, double dead_after, double stall_after)
    : job_(std::move(job)), dead_after_(dead_after), stall_after_(stall_after) {}

void CoordState::start_generation(int32_t world_size) {
  if (table_.generation > 0) past_.push_back(table_);
  RankTable t;
  t.generation = table_.generation + 1;
  t.world_size = world_size;
  table_ = std::move(t);
  live_.clear();
}

// Hosts in order of their lowest rank; local ranks are positions within the host.
void CoordState::rebuild_hosts() {
  std::sort(table_.ranks.begin(), table_.ranks.end(), [](const RankEntry& a, const RankEntry& b) { return a.rank < b.rank; });
  table_.hosts.clear();
  for (const auto& r : table_.ranks) {
    auto it = std::find_if(table_.hosts.begin(), table_.hosts.end(), [&](const HostRanks& h) { return h.host == r.host; });
    if (it == table_.hosts.end()) table_.hosts.push_back(HostRanks{r.host, {r.rank}, r.rank});
    else it->ranks.push_back(r.rank);
  }
  table_.complete = static_cast<int32_t>(table_.ranks.size()) == table_.world_size;
}

StatusOr<RankTable> CoordState::register_rank(const RegisterRank& req, double now, bool* changed) {
  *changed = false;
  if (req.world_size < 1 || req.world_size > kMaxWorldSize)
    return Status::invalid_argument("world size " + std::to_string(req.world_size) + " is out of range");
  if (req.rank < 0 || req.rank >= req.world_size)
    return Status::invalid_argument("rank " + std::to_string(req.rank) + " is outside [0, " +
                                    std::to_string(req.world_size) + ")");
  if (req.host.empty()) return Status::invalid_argument("empty host name");
  if (req.steps_per_epoch < 0) return Status::invalid_argument("negative steps per epoch");
  const RankEntry* held = table_.find(req.rank);
  if (table_.generation == 0 || req.world_size != table_.world_size ||
      (held && (held->host != req.host || held->pid != req.pid))) {
    start_generation(req.world_size);
    *changed = true;
    held = nullptr;
  }
  RankEntry entry{req.rank, req.host, req.pid, req.local_rank, req.device};
  if (!held) {
    table_.ranks.push_back(entry);
    *changed = true;
  } else if (held->local_rank != req.local_rank || held->device != req.device) {
    *const_cast<RankEntry*>(held) = entry;
    *changed = true;
  }
  if (req.steps_per_epoch > 0 && req.steps_per_epoch != table_.steps_per_epoch) {
    table_.steps_per_epoch = req.steps_per_epoch;
    *changed = true;
  }
  rebuild_hosts();
  Liveness& l = live_[req.rank];
  l.last_seen = now;
  if (l.metrics.step < 0) l.step_changed = now;
  return table_;
}

Status CoordState::heartbeat(const Heartbeat& hb, double now, bool* step_advanced) {
  *step_advanced = false;
  const RankEntry* e = table_.find(hb.rank);
  if (hb.generation != table_.generation || !e || e->pid != hb.pid)
    return Status::not_found("rank " + std::to_string(hb.rank) + " (pid " + std::to_string(hb.pid) + ", generation " +
                             std::to_string(hb.generation) + ") is not in the current rank table (generation " +
                             std::to_string(table_.generation) + "); register again");
  Liveness& l = live_[hb.rank];
  l.last_seen = now;
  if (hb.metrics.step >= 0 && hb.metrics.step != l.metrics.step) {
    l.step_changed = now;
    *step_advanced = true;
  }
  if (hb.metrics.step >= 0) l.metrics = hb.metrics;
  return Status::ok();
}

StatusOr<LrOverride> CoordState::add_override(LrOverride req) {
  if (!std::isfinite(req.value) || req.value < 0)
    return Status::invalid_argument("override value must be a finite number >= 0");
  if (req.from_step < 0 && req.from_epoch < 0)
    return Status::invalid_argument("an override needs --from-step or --from-epoch");
  if (req.from_step < 0) {
    if (!std::isfinite(req.from_epoch)) return Status::invalid_argument("from-epoch must be finite");
    if (table_.steps_per_epoch <= 0)
      return Status::invalid_argument("cannot convert --from-epoch to a step: no rank has reported its steps per epoch "
                                      "yet. HINT: use --from-step, or wait until the workers have registered");
    req.from_step = static_cast<int64_t>(std::llround(req.from_epoch * static_cast<double>(table_.steps_per_epoch)));
  }
  req.id = next_id_++;
  overrides_.push_back(req);
  return req;
}

StatusOr<Notice> CoordState::add_notice(Notice req) {
  req.id = next_id_++;
  notices_.push_back(req);
  return req;
}

RankState CoordState::state_of(const Liveness& l, double now) const {
  if (now - l.last_seen > dead_after_) return RankState::kDead;
  if (l.metrics.step >= 0 && now - l.step_changed > stall_after_) return RankState::kStalled;
  return RankState::kAlive;
}

StatusReport CoordState::status(double now) const {
  StatusReport s;
  s.job = job_;
  s.table = table_;
  s.overrides = overrides_;
  s.notices = notices_;
  s.dead_after = dead_after_;
  s.stall_after = stall_after_;
  for (const auto& r : table_.ranks) {
    RankStatus x{r.rank, r.host, r.pid, RankState::kAlive, 0, Metrics{}};
    auto it = live_.find(r.rank);
    if (it != live_.end()) {
      x.state = state_of(it->second, now);
      x.heartbeat_age = now - it->second.last_seen;
      x.metrics = it->second.metrics;
    }
    s.ranks.push_back(std::move(x));
  }
  return s;
}

std::vector<MembershipChange> CoordState::scan(double now) {
  std::vector<MembershipChange> out;
  for (auto& [rank, l] : live_) {
    RankState s = state_of(l, now);
    if (s != l.reported) out.push_back(MembershipChange{rank, l.reported, s});
    l.reported = s;
  }
  return out;
}

nlohmann::json CoordState::to_json() const {
  nlohmann::json past = nlohmann::json::array();
  for (const auto& t : past_) past.push_back(table_json(t));
  nlohmann::json ovs = nlohmann::json::array();
  for (const auto& o : overrides_)
    ovs.push_back({{"id", o.id}, {"kind", o.kind == OverrideKind::kFactor ? "factor" : "lr"}, {"value", o.value},
                   {"from_step", o.from_step}, {"from_epoch", o.from_epoch}});
  nlohmann::json nts = nlohmann::json::array();
  for (const auto& n : notices_)
    nts.push_back({{"id", n.id}, {"kind", n.kind == NoticeKind::kDrain ? "drain" : "stop"}, {"from_step", n.from_step},
                   {"reason", n.reason}});
  return {{"format", "sx_coord_state"}, {"version", 1},   {"job", job_},         {"next_id", next_id_},
          {"table", table_json(table_)}, {"past", past}, {"overrides", ovs}, {"notices", nts}};
}

StatusOr<CoordState> CoordState::from_json(const nlohmann::json& j, double dead_after, double stall_after, double now) {
  try {
    if (j.value("format", "") != "sx_coord_state" || j.value("version", 0) != 1)
      return Status::data_loss("not an sx_coord state file of version 1");
    CoordState s(j.at("job").get<std::string>(), dead_after, stall_after);
    s.next_id_ = j.at("next_id").get<uint64_t>();
    auto load_table = [](const nlohmann::json& t) {
      RankTable out;
      out.generation = t.at("generation").get<uint32_t>();
      out.world_size = t.at("world_size").get<int32_t>();
      out.steps_per_epoch = t.at("steps_per_epoch").get<int64_t>();
      for (const auto& r : t.at("ranks"))
        out.ranks.push_back(RankEntry{r.at("rank").get<int32_t>(), r.at("host").get<std::string>(), r.at("pid").get<int64_t>(),
                                      r.at("local_rank").get<int32_t>(), r.at("device").get<std::string>()});
      return out;
    };
    s.table_ = load_table(j.at("table"));
    s.rebuild_hosts();
    for (const auto& t : j.at("past")) {
      std::swap(s.table_, s.past_.emplace_back(load_table(t)));
      s.rebuild_hosts();
      std::swap(s.table_, s.past_.back());
    }
    for (const auto& o : j.at("overrides"))
      s.overrides_.push_back(LrOverride{o.at("id").get<uint64_t>(),
                                        o.at("kind").get<std::string>() == "factor" ? OverrideKind::kFactor : OverrideKind::kLr,
                                        o.at("value").get<double>(), o.at("from_step").get<int64_t>(),
                                        o.at("from_epoch").get<double>()});
    for (const auto& n : j.at("notices"))
      s.notices_.push_back(Notice{n.at("id").get<uint64_t>(),
                                  n.at("kind").get<std::string>() == "drain" ? NoticeKind::kDrain : NoticeKind::kStop,
                                  n.at("from_step").get<int64_t>(), n.at("reason").get<std::string>()});
    for (const auto& r : s.table_.ranks) s.live_[r.rank] = Liveness{now, now, Metrics{}, RankState::kAlive};
    return s;
  } catch (const std::exception& e) {
    return Status::data_loss(std::string("bad sx_coord state: ") + e.what());
  }
}

}  // namespace sx::coord
