// defines: sx::worker::checkpoint_model_spec, to_torch_tensors, export_torch, import_torch —
// checkpoints to and from PyTorch state_dicts (names: model/torch_names.h, file: storage/torch_file.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/se_resnext.h"
#include "storage/checkpoint.h"
#include "storage/torch_file.h"

namespace sx::worker {

// The architecture of a checkpoint: its model_preset, with the class and input-channel counts read
// from the shapes of fc.weight and the first stem conv.
StatusOr<model::ModelSpec> checkpoint_model_spec(const storage::CheckpointContents& ckpt);

// params/<name> and bn_stats/<name> tensors -> the PyTorch state_dict (momentum/ is left out); every
// BN gets num_batches_tracked = batches_tracked.
StatusOr<std::vector<storage::TorchTensor>> to_torch_tensors(const model::ModelSpec& spec,
                                                             const std::vector<storage::TensorRef>& tensors,
                                                             int64_t batches_tracked);

// A checkpoint (dir, dir/latest or .h5) -> a torch.save file for torch.load + load_state_dict.
Status export_torch(const std::string& checkpoint_path, const std::string& out_path);

struct ImportReport {
  model::ModelSpec spec;
  int64_t tensors = 0;           // params + running statistics written
  bool cadene_names = false;     // Cadene's pretrainedmodels spelling (its stem max pool differs: see README)
};

// A PyTorch state_dict of preset `arch` (class and channel counts from its shapes) -> one checkpoint
// file with params/ and bn_stats/ (step 0, config_text naming the model), usable as
// `pretrained=` and by sx_infer. Every parameter must be present with its shape, and every key of
// the file must be used (num_batches_tracked aside); the first offender is named.
StatusOr<ImportReport> import_torch(const std::string& torch_path, const std::string& arch, const std::string& out_path);

}  // namespace sx::worker
