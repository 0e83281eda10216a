// defines: sx::model::ParamStore — the flat parameter / gradient / momentum buffers and the separate
// BN running-statistics buffer, with a stable name for every tensor.
//
// Two phases: layers declare their tensors while the network is built (in forward order); the
// network then places them in the order backward finishes with them (classifier first, stem last),
// and finalize() assigns offsets, allocates the buffers and initialises the values.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/backend.h"
#include "model/network.h"
#include "model/param_init.h"

namespace sx::model {

class ParamStore {
 public:
  // Returns an id. Running mean/var kinds go to the bn_stats buffer, all others are trainable.
  int declare(std::string name, std::vector<int64_t> shape, ParamKind kind, InitRule init);
  // Appends a declared tensor to its buffer's order. Every id must be placed exactly once.
  Status place(int id);
  // Assigns offsets, allocates (backend memory) and uploads the initial values.
  Status finalize(Backend& backend, uint64_t seed);

  // Backend pointers after finalize(): param/grad for trainable ids, stat for running statistics.
  float* param(int id) { return params_ + info(id).offset; }
  float* grad(int id) { return grads_ + info(id).offset; }
  float* stat(int id) { return stats_ + info(id).offset; }
  int64_t end(int id) const { return info(id).offset + info(id).count; }  // offset after the tensor

  std::span<const ParamInfo> params() const { return ordered_params_; }
  std::span<const ParamInfo> stats() const { return ordered_stats_; }
  int64_t param_count() const { return param_count_; }
  int64_t stat_count() const { return stat_count_; }
  float* params_data() { return params_; }
  float* grads_data() { return grads_; }
  float* momentum_data() { return momentum_; }
  float* stats_data() { return stats_; }

 private:
  struct Entry {
    ParamInfo info;
    InitRule init;
    bool is_stat = false;
    bool placed = false;
  };
  const ParamInfo& info(int id) const { return entries_[size_t(id)].info; }

  std::vector<Entry> entries_;
  std::vector<int> order_;  // placement order, both buffers interleaved
  std::vector<ParamInfo> ordered_params_, ordered_stats_;
  int64_t param_count_ = 0, stat_count_ = 0;
  Buffer param_buf_, grad_buf_, momentum_buf_, stat_buf_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  float* momentum_ = nullptr;
  float* stats_ = nullptr;
};

}  // namespace sx::model
