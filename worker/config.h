// defines: sx::worker::JobConfig (every setting of a job, one typed struct), load_job_config (YAML
// file + `-o key=value` overrides, read ONCE), validate_job_config, job_config_to_yaml (the merged
// config, for --print-config and checkpoints), job_config_help (the documented key list).
//
// Keys are dotted paths into the YAML sections ("optimizer.lr"). The field table (config_fields.cc)
// is the single list of keys: parsing, overrides, --help and --print-config all read it, so a key
// cannot be documented but unparsed or parsed but unprinted. Unknown or ill-typed keys are errors
// that name the file (or the `-o` argument), the key and what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/lr_schedule.h"

namespace sx::worker {

struct ModelConfig {
  std::string preset = "small";     // model::preset() name
  int num_classes = 0;              // 0 = the training set's class count (else the preset's)
  int in_channels = 0;              // 0 = the training set's channel count
  int image_size = 0;               // 0 = 28 for `small`, 224 otherwise
  bool zero_init_last_bn = false;
  double bn_momentum = 0.1;
  double bn_eps = 1e-5;
};

struct DataConfig {
  std::string train;                // prepared dataset dirs (sx_prep output, with manifest.json)
  std::string val;                  // evaluated during training (eval.every_epochs, eval.at_end)
  std::string test;                 // evaluated once, after the last step ("" = none)
  int threads = 1;                  // decode + augment threads per rank
  int prefetch = 2;                 // ready batches kept ahead
  std::string transform = "auto";   // auto | small | imagenet
  int pad = 4;                      // small: zero padding before the random crop
  bool flip = true;
  int resize_short = 256;           // imagenet eval
  double scale_min = 0.08;          // imagenet random-resized-crop
  double erase_prob = 0.0;
  std::vector<double> mean;         // empty = ImageNet's (3 channels) or Fashion-MNIST's (1 channel)
  std::vector<double> std;
};

struct OptimizerConfig {
  double lr = 0.1;                  // base LR of the schedule (before scale_by_batch)
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;       // conv and linear weights
  double bn_bias_decay = 0.0;       // BN gamma/beta and biases
  double label_smoothing = 0.1;
  double mixup_alpha = 0.0;         // 0 = off
};

struct ScheduleConfig {
  std::string name = "CosineWarmup";  // Piecewise|Cosine|Linear[Warmup]
  double warmup_epochs = -1;          // -1 = the schedule's default (5 for ...Warmup names)
  double warmup_start_lr = 0.0;
  double min_lr = 0.0;
  std::vector<double> boundaries;     // Piecewise, in epochs
  std::vector<double> values;
  double step_epochs = 30;
  double gamma = 0.1;
  double power = 1.0;
  bool scale_by_batch = false;        // lr *= global_batch / 256
};

struct BatchConfig {
  int per_rank = 64;                // images per rank per micro-batch
  int global = 0;                   // 0 = per_rank · world · accumulate; else must equal it, or
                                    // (per_rank = 0) defines per_rank = global / (world · accumulate)
  int accumulate = 1;               // micro-batches per optimizer step
};

struct CheckpointConfig {
  std::string dir;                  // "" = run_dir
  int every_epochs = 1;             // 0 = never at epoch ends
  int64_t every_steps = 0;          // 0 = off
  int keep = 3;
  bool async = true;
  std::string load;                 // mode=eval: checkpoint to evaluate (dir, dir/latest or .h5); "" = dir
};

struct EvalConfig {
  int every_epochs = 1;             // 0 = only at the end
  bool at_end = true;
  std::string out;                  // mode=eval: also append the result as a JSON line here ("" = stdout only)
};

struct CommConfig {
  std::string algorithm = "auto";   // auto | flat | hierarchical
  std::string backend = "mpi";      // mpi | nccl (device: cuda; reduces the gradients in device memory)
  double bucket_mb = 25;
  bool overlap = true;
  int ranks_per_node = 0;           // >0: fake nodes of k ranks (tests of the hierarchical path)
};

struct NumericsConfig {
  int threads = 0;                  // compute threads per rank; 0 = cores / local ranks
  bool sync_bn = false;             // BN statistics over the global batch (allreduced); turns comm.overlap off
  bool check_finite = true;         // stop when the loss becomes NaN/inf
  std::string precision = "fp32";   // fp32 | bf16 | fp16: activations' compute type (model/precision.h);
                                    // parameters, gradients and momentum stay fp32 (master weights)
  std::string loss_scale = "auto";  // auto (dynamic for fp16, none otherwise) | dynamic | static | none
  double loss_scale_init = 65536;   // first (dynamic) or only (static) scale; powers of two keep it exact
  int64_t loss_scale_growth_interval = 2000;  // dynamic: double the scale after this many finite steps
};

struct LogConfig {
  int every_steps = 20;             // metrics.jsonl train record interval
  std::string progress = "auto";    // auto (a redrawn line on a terminal, plain lines otherwise) | on | off
  bool plot = true;                 // write run_dir/curves.png after every epoch (rank 0)
};

struct CoordConfig {
  std::string endpoint = "none";    // sx_coord request endpoint (tcp://host:port); none = no coordinator
  std::string job;                  // job name the coordinator serves; "" = run_dir's last component
  std::string keys;                 // the job's client key: a file or the coordinator's job dir ("" = run_dir/coord)
  double connect_timeout_s = 30;    // give up (error naming the endpoint) when nobody answers by then
  int64_t check_every_steps = 1;    // leader polls LR overrides and broadcasts them every N steps
};

// Read by sx_launch (the elastic supervisor) when it relaunches the job on another number of ranks.
struct ElasticConfig {
  bool keep_global_batch = false;   // true: global batch and LR schedule unchanged by a resize (per-rank
                                    // batch / accumulation adapt); false: per-rank batch kept, LR scaled linearly
};

struct JobConfig {
  std::string mode = "train";       // train | eval
  std::string device = "cpu";       // cpu | cuda (the GPU of this rank's local rank on its node)
  std::string run_dir = "runs/job";
  uint64_t seed = 1;
  double epochs = 10;               // may be fractional (e.g. 0.1 for a smoke run)
  int64_t max_steps = 0;            // >0: stop after this many optimizer steps (tests)
  std::string resume = "none";      // none | auto | <checkpoint path>
  std::string pretrained;           // finetune from this checkpoint (classifier skipped if K differs)
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  BatchConfig batch;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  CommConfig comm;
  NumericsConfig numerics;
  LogConfig log;
  CoordConfig coord;
  ElasticConfig elastic;

  std::string source;               // the YAML file it came from ("" = defaults only)
  std::string checkpoint_dir() const { return checkpoint.dir.empty() ? run_dir : checkpoint.dir; }
};

// Reads `path` (may be empty: defaults), then applies each "key=value" of `overrides` in order
// (value parsed as YAML, so lists work: -o data.mean=[0.5]), then validates.
// Top-level shortcuts: resume, mode, pretrained, checkpoint (= checkpoint.load).
StatusOr<JobConfig> load_job_config(const std::string& path, const std::vector<std::string>& overrides);
// Same from YAML text (tests; `source` names it in errors).
StatusOr<JobConfig> parse_job_config(const std::string& yaml_text, const std::string& source,
                                     const std::vector<std::string>& overrides);
// Ranges and cross-field rules; names the key and the file.
Status validate_job_config(const JobConfig& config);

// The LR schedule the config describes, for a job of `steps_per_epoch` steps and `epochs` epochs
// at `global_batch` images per step (the one mapping from config keys to model::LrScheduleConfig).
model::LrScheduleConfig lr_schedule_config(const JobConfig& config, int64_t steps_per_epoch, double epochs,
                                           int64_t global_batch);
// Every key with its value, grouped by section (valid YAML that load_job_config reads back).
std::string job_config_to_yaml(const JobConfig& config);
// One line per key: name, type, default, meaning.
std::string job_config_help();

}  // namespace sx::worker
