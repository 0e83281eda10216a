// ParamStore: offsets in placement order, one allocation per buffer, deterministic initial values.
#include "model/param_store.h"

#include <unordered_set>

namespace sx::model {

int ParamStore::declare(std::string name, std::vector<int64_t> shape, ParamKind kind, InitRule init) {
  Entry e;
  e.info.name = std::move(name);
  e.info.count = 1;
  for (int64_t d : shape) e.info.count *= d;
  e.info.shape = std::move(shape);
  e.info.kind = kind;
  e.init = init;
  e.is_stat = kind == ParamKind::kBnRunningMean || kind == ParamKind::kBnRunningVar;
  entries_.push_back(std::move(e));
  return int(entries_.size()) - 1;
}

Status ParamStore::place(int id) {
  if (id < 0 || size_t(id) >= entries_.size()) return Status::internal("ParamStore::place: bad id");
  Entry& e = entries_[size_t(id)];
  if (e.placed) return Status::internal("ParamStore::place: " + e.info.name + " placed twice");
  e.placed = true;
  order_.push_back(id);
  return Status::ok();
}

Status ParamStore::finalize(Backend& backend, uint64_t seed) {
  std::unordered_set<std::string> names;
  for (const Entry& e : entries_) {
    if (!e.placed) return Status::internal("ParamStore: " + e.info.name + " declared but never placed");
    if (!names.insert(e.info.name).second) return Status::internal("ParamStore: duplicate name " + e.info.name);
  }
  param_count_ = stat_count_ = 0;
  for (int id : order_) {
    Entry& e = entries_[size_t(id)];
    int64_t& cursor = e.is_stat ? stat_count_ : param_count_;
    e.info.offset = cursor;
    cursor += e.info.count;
    (e.is_stat ? ordered_stats_ : ordered_params_).push_back(e.info);
  }
  size_t pbytes = size_t(param_count_) * sizeof(float), sbytes = size_t(stat_count_) * sizeof(float);
  param_buf_ = backend.allocate(pbytes);
  grad_buf_ = backend.allocate(pbytes);
  momentum_buf_ = backend.allocate(pbytes);
  stat_buf_ = backend.allocate(sbytes);
  if (!param_buf_ || !grad_buf_ || !momentum_buf_ || !stat_buf_)
    return Status::unavailable("out of memory allocating " + std::to_string(4 * pbytes + sbytes) +
                               " bytes of parameter buffers");
  params_ = static_cast<float*>(param_buf_.get());
  grads_ = static_cast<float*>(grad_buf_.get());
  momentum_ = static_cast<float*>(momentum_buf_.get());
  stats_ = static_cast<float*>(stat_buf_.get());

  std::vector<float> host_params(static_cast<size_t>(param_count_)), host_stats(static_cast<size_t>(stat_count_));
  for (const Entry& e : entries_) {
    float* base = e.is_stat ? host_stats.data() : host_params.data();
    init_values(e.init, seed, e.info.name, std::span<float>(base + e.info.offset, size_t(e.info.count)));
  }
  SX_TRY(backend.copy_to_device(params_, host_params.data(), pbytes));
  SX_TRY(backend.copy_to_device(stats_, host_stats.data(), sbytes));
  return Status::ok();
}

}  // namespace sx::model
