// The training / eval job behind sx_worker (see train.h for one step's anatomy).
// defines (file-local): Trainer. Uses: model (Network, LrSchedule), dataplane (Reader), storage
// (checkpoints, async writer), worker (Communicator, MpiEnv, metrics, eval, mixup, plot).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "dataplane/reader.h"
#include "model/lr_schedule.h"
#include "model/network.h"
#include "storage/async_writer.h"
#include "storage/checkpoint.h"
#include "storage/run_lock.h"
#include "worker/communicator.h"
#if SX_HAVE_CUDA
#include "worker/comm_nccl.h"
#include "worker/device_input.h"
#endif
#include "worker/coord_link.h"
#include "worker/eval.h"
#include "worker/metrics.h"
#include "worker/plot.h"
#include "worker/shared_storage.h"
#include "worker/train.h"
#include "worker/train_device.h"
#include "worker/train_mixup.h"
#include "worker/train_model.h"

namespace sx::worker {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class Trainer {
 public:
  Trainer(const JobConfig& config, MpiEnv& env) : c_(config), env_(env) {}
  Status setup();
  Status train();
  Status eval_only();

 private:
  Status open_reader(const std::string& dir, bool train, std::unique_ptr<dataplane::Reader>* out);
  Status lock_run_dirs();
  Status agree_on_storage();
  Status load_start_state();
  Status fail_together(const std::string& message);
  Status average_bn_stats();
  Status save_checkpoint();
  Status run_eval(int64_t epoch, std::optional<EvalResult>* out);
  Status run_test();
  Status micro_step(int micro, bool last, float loss_scale, double* loss);
  StatusOr<bool> apply_scaled_step();
  Status reduce_staged_grads();
  Status finish_staged_grads();
  void say(const std::string& text) {
    if (env_.is_root()) progress_->message(text);
  }

  const JobConfig c_;
  MpiEnv& env_;
  ResolvedJob job_;
  dataplane::Manifest train_manifest_;
  std::unique_ptr<model::Backend> backend_;
  std::unique_ptr<model::Network> net_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<dataplane::Reader> train_reader_, val_reader_, test_reader_;
  std::optional<model::LrSchedule> schedule_;
  std::vector<model::SgdSegment> segments_;
  std::unique_ptr<storage::AsyncCheckpointWriter> writer_;
  MetricsLog metrics_;
  std::unique_ptr<ProgressLine> progress_;
  std::unique_ptr<CoordLink> coord_;  // sx_coord registration, heartbeat metrics, LR overrides
  std::vector<std::unique_ptr<storage::RunLock>> locks_;  // rank 0: run dir (and checkpoint dir) held
  std::optional<model::LossScaler> scaler_;  // numerics.loss_scale (fp16): scale, skip, grow/shrink
  std::unique_ptr<HostStage> stage_;  // host view of the flat buffers (mirrors on a device backend)
  // Device backend with the MPI communicator: the gradients are reduced in this host copy (no
  // overlap); empty when the communicator reduces the backend's buffer itself.
  std::vector<float> host_grads_;
#if SX_HAVE_CUDA
  std::unique_ptr<DeviceInput> device_input_;  // device: pinned, double-buffered batch upload
#endif
  std::vector<float> images_, soft_targets_;
  std::vector<float> accum_;  // (params) gradient sum of the step's earlier micro-batches
  std::vector<int32_t> labels_;
  std::optional<storage::LoadResult> resumed_;  // the checkpoint agree_on_storage loaded (every rank the same)

  // Position: `step` optimizer steps done; the reader is in `epoch` at `step_in_epoch`.
  int64_t step_ = 0, epoch_ = 0, step_in_epoch_ = 0;
  int64_t last_saved_step_ = -1;
};

Status Trainer::open_reader(const std::string& dir, bool train, std::unique_ptr<dataplane::Reader>* out) {
  dataplane::ReaderConfig rc;
  rc.seed = c_.seed;
  rc.rank = env_.rank();
  rc.world_size = env_.world_size();
  rc.batch_size = job_.per_rank;
  rc.shuffle = train;
  rc.drop_last = train;
  rc.num_threads = c_.data.threads;
  rc.prefetch_depth = c_.data.prefetch;
  rc.layout = dataplane::ImageLayout::kNCHW;
  rc.transform = data_transform(c_, job_, job_.spec.in_channels, train);
  SX_ASSIGN_OR_RETURN(*out, dataplane::Reader::open(dir, rc));
  const dataplane::Manifest& m = (*out)->manifest();
  if (m.channels != job_.spec.in_channels || m.num_classes > job_.spec.num_classes)
    return Status::invalid_argument(dir + ": " + std::to_string(m.channels) + " channels and " +
                                    std::to_string(m.num_classes) + " classes, but the model takes " +
                                    std::to_string(job_.spec.in_channels) + " channels and has " +
                                    std::to_string(job_.spec.num_classes) + " classes");
  return Status::ok();
}

// One job per run dir: rank 0 holds DIR/run.lock (and the checkpoint dir's, when it is elsewhere) for
// the whole run. Under sx_launch the launcher holds it and passes its token (SX_RUN_LOCK_TOKEN, sent to
// every rank with mpirun -x): then the lock is inherited, not taken.
Status Trainer::lock_run_dirs() {
  const char* token = std::getenv("SX_RUN_LOCK_TOKEN");
  std::vector<std::string> dirs = {c_.run_dir};
  if (c_.checkpoint_dir() != c_.run_dir) dirs.push_back(c_.checkpoint_dir());
  for (const std::string& dir : dirs) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Status::unavailable(dir + ": cannot create the directory: " + ec.message());
    SX_ASSIGN_OR_RETURN(auto lock, storage::RunLock::acquire(dir, "run.lock", "sx_worker rank 0", "",
                                                             token ? token : ""));
    if (lock && lock->taken_over())
      say("sx_worker: " + lock->path() + ": took over the lock left by " + lock->taken_over()->describe() +
          " (no longer running)");
    if (lock) locks_.push_back(std::move(lock));
  }
  return Status::ok();
}

Status Trainer::setup() {
  progress_ = std::make_unique<ProgressLine>(c_.log.progress, env_.is_root());
  const bool training = c_.mode == "train";
  if (env_.is_root() && training) SX_TRY(lock_run_dirs());
  SX_ASSIGN_OR_RETURN(train_manifest_, dataplane::load_manifest(training ? c_.data.train : c_.data.val));
  SX_ASSIGN_OR_RETURN(job_, resolve_job(c_, train_manifest_, env_.world_size(), env_.local_size()));

  SX_ASSIGN_OR_RETURN(backend_, make_job_backend(c_, env_, job_.threads));
  SX_ASSIGN_OR_RETURN(scaler_, make_loss_scaler(c_));
  SX_ASSIGN_OR_RETURN(net_, model::Network::build(*backend_, job_.spec, network_options(c_, job_, env_)));
  stage_ = std::make_unique<HostStage>(*net_);
  const bool device = backend_->is_device();
#if SX_HAVE_CUDA
  if (device && training) {
    SX_ASSIGN_OR_RETURN(device_input_, DeviceInput::create(*net_, net_->input().dims.count()));
  }
#endif

  if (training) SX_TRY(open_reader(c_.data.train, true, &train_reader_));
  if (!c_.data.val.empty()) SX_TRY(open_reader(c_.data.val, false, &val_reader_));
  if (training && !c_.data.test.empty()) SX_TRY(open_reader(c_.data.test, false, &test_reader_));
  // Before any collective that depends on storage: the same data and the same start state everywhere.
  if (training) SX_TRY(agree_on_storage());
  if (training) {
    std::vector<int64_t> boundaries;
    for (const model::ParamInfo& p : net_->params()) boundaries.push_back(p.offset + p.count);
    CommOptions co;
    SX_ASSIGN_OR_RETURN(co.algorithm, parse_comm_algorithm(c_.comm.algorithm));
    co.bucket_bytes = std::max<int64_t>(4, int64_t(c_.comm.bucket_mb * 1048576.0));
    // SyncBN calls MPI inside backward: the gradient allreduce then runs after it (see train_model.h).
    co.overlap = c_.comm.overlap && !c_.numerics.sync_bn && !device;
    co.ranks_per_node = c_.comm.ranks_per_node;
    co.average = false;  // the 1/world scale is folded into the SGD pass (SgdHyper::grad_scale)
    if (c_.comm.backend == "nccl") {
#if SX_HAVE_CUDA
      co.overlap = c_.comm.overlap && !c_.numerics.sync_bn;  // NCCL reduces the device buffer itself
      co.make_reducer = [this](CommAlgorithm algorithm) {
        return make_nccl_reducer(env_, {.hierarchical = algorithm == CommAlgorithm::kHierarchical,
                                        .ranks_per_node = c_.comm.ranks_per_node,
                                        .compute_stream = backend_->native_stream(),
                                        .grads = net_->grads_data(),
                                        .grads_count = net_->param_count()});
      };
#else
      return Status::unavailable("comm.backend: nccl needs a CUDA build (this one has none; see model/cuda/README.md)");
#endif
    } else if (device) {
      // MPI reduces host memory: a device backend's gradients go through host_grads_ after backward.
      host_grads_.resize(size_t(net_->param_count()));
    }
    float* reduced = host_grads_.empty() ? net_->grads_data() : host_grads_.data();
    SX_ASSIGN_OR_RETURN(comm_, Communicator::create(env_, std::span<float>(reduced, net_->param_count()), co,
                                                    boundaries));
    const double epochs = c_.epochs > 0 ? c_.epochs : double(job_.total_steps) / double(job_.steps_per_epoch);
    const model::LrScheduleConfig s = lr_schedule_config(c_, job_.steps_per_epoch, epochs, job_.global_batch);
    SX_ASSIGN_OR_RETURN(auto schedule, model::LrSchedule::make(s));
    schedule_.emplace(std::move(schedule));
    segments_ = net_->sgd_segments(float(c_.optimizer.weight_decay), float(c_.optimizer.bn_bias_decay));
  }

  // mode=eval writes nothing into a run directory: the run it evaluates keeps its records.
  if (env_.is_root() && training) {
    std::error_code ec;
    std::filesystem::create_directories(c_.run_dir, ec);
    if (ec) return Status::unavailable(c_.run_dir + ": cannot create the run directory: " + ec.message());
    SX_ASSIGN_OR_RETURN(metrics_, MetricsLog::open(c_.run_dir + "/metrics.jsonl"));
    std::ofstream(c_.run_dir + "/config.yaml") << job_config_to_yaml(c_);
    if (training && c_.checkpoint.async)
      writer_ = std::make_unique<storage::AsyncCheckpointWriter>(c_.checkpoint_dir(),
                                                                 storage::SaveOptions{.keep_last = c_.checkpoint.keep});
  }
  std::string numerics = std::string("; ") + backend_->name() + " " + c_.numerics.precision;
  if (scaler_) numerics += ", loss scale " + c_.numerics.loss_scale + " from " + std::to_string(scaler_->scale());
  say("sx_worker: " + std::to_string(env_.world_size()) + " rank(s) on " + std::to_string(env_.node_count()) +
      " node(s), " + std::to_string(job_.threads) + " thread(s)/rank" + numerics + "; model " + job_.spec.name + " (" +
      std::to_string(net_->param_count()) + " params, " + std::to_string(job_.spec.num_classes) + " classes, " +
      std::to_string(job_.image_size) + " px); batch " + std::to_string(job_.per_rank) + "/rank x " +
      std::to_string(env_.world_size()) + " x " + std::to_string(job_.accumulate) + " accum = " +
      std::to_string(job_.global_batch) +
      (training ? "; " + std::to_string(job_.steps_per_epoch) + " steps/epoch, " + std::to_string(job_.total_steps) +
                      " steps; allreduce " + comm_algorithm_name(comm_->algorithm()) + " (" + c_.comm.backend +
                      "), " + comm_->plan().describe()
                : std::string()));
  if (training) {
    SX_ASSIGN_OR_RETURN(coord_, CoordLink::open(c_, env_, job_.steps_per_epoch));
    if (coord_->enabled()) say("coordinator " + c_.coord.endpoint + ": registered " + std::to_string(env_.world_size()) +
                               " rank(s), rank table matches MPI");
  }
  return Status::ok();
}

Status Trainer::fail_together(const std::string& message) {
  env_.set_failed_together();
  return Status::unavailable(env_.is_root() ? message : "(the job-wide error is reported by rank 0)");
}

// Shared storage is checked, not assumed (shared_storage.h). (1) The data: every rank's manifests
// (which carry each shard's crc32) must be identical. (2) The start state: rank 0 alone decides
// what the job resumes from (resume=auto: the latest checkpoint that verifies, with fallback) and
// broadcasts the path; every other rank loads exactly that file, and the crc32 of the loaded
// tensors must equal rank 0's. When rank 0 starts fresh under resume=auto, no other rank may see a
// checkpoint there. Any difference ends every rank with the same error before a collective could
// take different paths on different ranks.
Status Trainer::agree_on_storage() {
  struct DataSet { const char* key; const std::string* dir; const dataplane::Reader* reader; };
  for (const DataSet& d : {DataSet{"data.train", &c_.data.train, train_reader_.get()},
                           DataSet{"data.val", &c_.data.val, val_reader_.get()},
                           DataSet{"data.test", &c_.data.test, test_reader_.get()}}) {
    if (d.reader == nullptr) continue;
    const dataplane::Manifest& m = d.reader->manifest();
    const std::string text = dataplane::manifest_to_json(m).dump();
    RankView mine{true, uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(text.data()), uInt(text.size()))), ""};
    mine.detail = *d.dir + "/manifest.json: " + std::to_string(m.num_samples) + " samples in " +
                  std::to_string(m.shards.size()) + " shard(s), manifest crc32 " + dataplane::crc32_hex(mine.digest);
    SX_ASSIGN_OR_RETURN(auto views, gather_views(env_, mine));
    const std::vector<std::string> diff = differing_views(views);
    if (!diff.empty()) {
      std::string msg = std::string("the ranks do not read the same ") + d.key + ": rank 0 on " + views[0].host +
                        " reads " + views[0].view.detail;
      for (const std::string& line : diff) msg += "\n  but " + line;
      return fail_together(msg + "\nHINT: " + d.key + " must name the same sx_prep output on every host (a shared " +
                           "file system, or identical copies at the same path)");
    }
  }

  auto slots = stage_->slots(/*with_momentum=*/true);
  const std::string dir = c_.checkpoint_dir();
  // Rank 0's decision: "F" fresh, "L<path>" load that file, "E<message>" rank 0 failed.
  std::string decision = "F";
  if (env_.is_root() && c_.resume != "none") {
    auto r = c_.resume == "auto" ? storage::load_latest(dir, slots) : storage::load_checkpoint(c_.resume, slots);
    if (r.is_ok()) {
      decision = "L" + r->path;
      resumed_ = std::move(r).value();
    } else if (!(c_.resume == "auto" && r.status().code() == StatusCode::kNotFound)) {
      decision = "E" + r.status().with_context("resume=" + c_.resume).to_string();
    }
  }
  SX_TRY(bcast_string(env_, &decision));
  if (decision[0] == 'E') return fail_together(decision.substr(1));

  RankView mine;
  if (decision[0] == 'L') {
    const std::string path = decision.substr(1);
    if (!env_.is_root()) {
      auto r = storage::load_checkpoint(path, slots, {.fallback = false});
      if (r.is_ok()) resumed_ = std::move(r).value();
      else mine = RankView{false, 0, "cannot load it: " + r.status().to_string()};
    }
    if (mine.ok) {
      mine.digest = crc32_of_slots(slots);
      mine.detail = "loads " + path + " (step " + std::to_string(resumed_->meta.step) + ", crc32 " +
                    dataplane::crc32_hex(mine.digest) + " of the loaded tensors)";
    }
  } else if (c_.resume == "auto") {
    auto latest = storage::find_latest(dir);
    mine = latest.is_ok() ? RankView{true, 1, "sees " + *latest + " in checkpoint.dir"}
                          : RankView{true, 0, "sees no checkpoint in " + dir + ", starts fresh"};
  }
  SX_ASSIGN_OR_RETURN(auto views, gather_views(env_, mine));
  const std::vector<std::string> diff = differing_views(views);
  if (!diff.empty()) {
    std::string msg = "the ranks do not see the same checkpoint: rank 0 on " + views[0].host + " " + views[0].view.detail;
    for (const std::string& line : diff) msg += "\n  but " + line;
    return fail_together(msg + "\nHINT: checkpoint.dir (" + dir + ") must be one directory that every host sees at " +
                         "the same path (a shared file system), and resume=PATH a file every host can read");
  }
  return Status::ok();
}

Status Trainer::load_start_state() {
  std::optional<storage::LoadResult>& loaded = resumed_;
  if (!loaded && c_.resume == "auto") say("resume=auto: no checkpoint in " + c_.checkpoint_dir() + ", starting fresh");
  if (loaded) {
    for (const std::string& w : loaded->warnings) say("warning: " + w);
    const storage::CheckpointMeta& m = loaded->meta;
    if (m.global_batch != job_.global_batch)
      say("warning: the checkpoint was written with global batch " + std::to_string(m.global_batch) + ", now " +
          std::to_string(job_.global_batch) + " (the sample position is kept, the step grid changes)");
    step_ = m.step;
    epoch_ = m.data_epoch;
    step_in_epoch_ = m.data_offset / job_.global_batch;
    if (step_in_epoch_ >= job_.steps_per_epoch) {
      ++epoch_;
      step_in_epoch_ = 0;
    }
    if (m.global_batch != job_.global_batch) {
      // A resize (sx_launch): the step grid follows the new global batch, so the epoch-based schedule
      // and the end of the run stay where they were in samples.
      step_ = epoch_ * job_.steps_per_epoch + step_in_epoch_;
      say("the step grid changed with the global batch: resuming at step " + std::to_string(step_) + " (was " +
          std::to_string(m.step) + ")");
    }
    last_saved_step_ = step_;
    if (scaler_) {
      const nlohmann::json extra = nlohmann::json::parse(m.extra_json, nullptr, /*allow_exceptions=*/false);
      if (extra.is_object() && extra.contains("loss_scale") && extra["loss_scale"].is_number())
        SX_TRY(scaler_->restore(extra["loss_scale"].get<double>(), extra.value("loss_scale_good_steps", int64_t(0)))
                   .with_context(loaded->path));
    }
    say("resumed from " + loaded->path + " at step " + std::to_string(step_) + " (epoch " + std::to_string(epoch_) +
        ", sample " + std::to_string(step_in_epoch_ * job_.global_batch) + ")");
    return stage_->push(HostStage::kAll);  // every rank loaded the same file (agree_on_storage checked)
  }
  if (!c_.pretrained.empty()) {
    SX_TRY(stage_->pull(HostStage::kParams | HostStage::kBnStats));  // the fresh init of skipped tensors
    auto r = storage::load_checkpoint(c_.pretrained, stage_->slots(false), {.skip_mismatched = true});
    if (!r.is_ok()) return r.status().with_context("pretrained=" + c_.pretrained);
    for (const std::string& s : r->skipped) say("pretrained: kept the fresh initialisation of " + s);
    say("pretrained: loaded " + r->path);
  }
  // Same start on every rank: rank 0's parameters and BN statistics.
  if (c_.pretrained.empty()) SX_TRY(stage_->pull(HostStage::kParams | HostStage::kBnStats));
  SX_TRY(env_.bcast(std::span<float>(stage_->params(), net_->param_count())));
  SX_TRY(env_.bcast(std::span<float>(stage_->bn_stats(), net_->bn_stats_count())));
  return stage_->push(HostStage::kParams | HostStage::kBnStats);
}

Status Trainer::average_bn_stats() {
  if (env_.world_size() == 1 || !comm_) return Status::ok();
  SX_TRY(stage_->pull(HostStage::kBnStats));
  std::span<float> stats(stage_->bn_stats(), size_t(net_->bn_stats_count()));
  if (c_.comm.backend == "nccl") {  // the NCCL reducer takes device memory: these few KB go over MPI
    std::vector<double> sums(stats.begin(), stats.end());
    SX_TRY(env_.allreduce_sum(std::span<double>(sums)));
    for (size_t i = 0; i < sums.size(); ++i) stats[i] = float(sums[i] / env_.world_size());
  } else {
    SX_TRY(comm_->allreduce_mean(stats));
  }
  return stage_->push(HostStage::kBnStats);
}

Status Trainer::save_checkpoint() {
  if (step_ == last_saved_step_) return Status::ok();
  last_saved_step_ = step_;
  SX_TRY(average_bn_stats());
  if (!env_.is_root()) return Status::ok();
  storage::CheckpointState state;
  state.meta.step = step_;
  state.meta.epoch = epoch_;
  state.meta.samples_seen = step_ * job_.global_batch;
  state.meta.world_size = env_.world_size();
  state.meta.global_batch = job_.global_batch;
  state.meta.config_text = job_config_to_yaml(c_);
  state.meta.model_preset = c_.model.preset;
  state.meta.rng_seed = int64_t(c_.seed);
  state.meta.data_epoch = epoch_;
  state.meta.data_offset = step_in_epoch_ * job_.global_batch;
  nlohmann::json extra = {{"num_classes", job_.spec.num_classes},
                          {"in_channels", job_.spec.in_channels},
                          {"image_size", job_.image_size},
                          {"class_names", train_manifest_.class_names}};
  if (scaler_) {  // so that a resumed fp16 run continues with the same scale
    extra["loss_scale"] = double(scaler_->scale());
    extra["loss_scale_good_steps"] = scaler_->good_steps();
  }
  state.meta.extra_json = extra.dump();
  SX_TRY(stage_->pull(HostStage::kAll));  // the async writer snapshots the host copies in submit()
  state.tensors = stage_->refs(true);
  if (writer_) return writer_->submit(state).with_context("previous checkpoint write");
  return storage::save_checkpoint(c_.checkpoint_dir(), state, {.keep_last = c_.checkpoint.keep});
}

Status Trainer::run_eval(int64_t epoch, std::optional<EvalResult>* out) {
  if (!val_reader_) return Status::ok();
  SX_TRY(average_bn_stats());
  const double t0 = now_s();
  SX_ASSIGN_OR_RETURN(EvalResult r, evaluate(*net_, *val_reader_, env_));
  *out = r;
  char line[160];
  std::snprintf(line, sizeof line, "eval  epoch %lld  top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld samples, %.1fs)",
                static_cast<long long>(epoch), r.top1_pct(), r.top5_pct(), r.loss(),
                static_cast<long long>(r.samples), now_s() - t0);
  say(line);
  return metrics_.write({{"kind", "eval"}, {"step", step_}, {"epoch", epoch}, {"top1", r.top1_pct()},
                         {"top5", r.top5_pct()}, {"loss", r.loss()}, {"samples", r.samples}, {"time_s", now_s() - t0}});
}

// The test set, once, after the last step: the figure a recipe is reported by, never chosen by.
Status Trainer::run_test() {
  if (!test_reader_) return Status::ok();
  SX_TRY(average_bn_stats());
  const double t0 = now_s();
  SX_ASSIGN_OR_RETURN(EvalResult r, evaluate(*net_, *test_reader_, env_));
  char line[160];
  std::snprintf(line, sizeof line, "test  top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld samples of %s)", r.top1_pct(),
                r.top5_pct(), r.loss(), static_cast<long long>(r.samples), c_.data.test.c_str());
  say(line);
  return metrics_.write({{"kind", "test"}, {"step", step_}, {"epoch", epoch_}, {"data", c_.data.test},
                         {"top1", r.top1_pct()}, {"top5", r.top5_pct()}, {"loss", r.loss()}, {"samples", r.samples},
                         {"time_s", now_s() - t0}});
}

// Loss scaling: the reduced gradients are the same on every rank, so every rank takes the same
// decision without a collective. A skipped step still consumes its samples and counts as a step
// (the LR schedule and the data position do not depend on overflows), as in PyTorch's GradScaler.
StatusOr<bool> Trainer::apply_scaled_step() {
  if (!scaler_) return true;
  bool finite = true;
  SX_TRY(backend_->all_finite(net_->grads_data(), net_->param_count(), &finite));
  SX_ASSIGN_OR_RETURN(const model::ScaledStep d, scaler_->update(finite));
  if (d == model::ScaledStep::kSkip && env_.is_root())
    progress_->message("step " + std::to_string(step_ + 1) + ": inf/NaN gradients, step skipped; loss scale now " +
                       std::to_string(scaler_->scale()));
  return d == model::ScaledStep::kApply;
}

// Device backend, MPI communicator: the step's gradients to host_grads_ before wait_all reduces
// them there, and back afterwards. No-ops when the communicator reduces the backend's buffer.
Status Trainer::reduce_staged_grads() {
  if (host_grads_.empty()) return Status::ok();
  return backend_->copy_to_host(host_grads_.data(), net_->grads_data(), host_grads_.size() * sizeof(float));
}

Status Trainer::finish_staged_grads() {
  if (host_grads_.empty()) return Status::ok();
  SX_TRY(backend_->copy_to_device(net_->grads_data(), host_grads_.data(), host_grads_.size() * sizeof(float)));
  return Status::ok();  // pageable source: copied before copy_to_device returns (model/cuda/README.md)
}

// One micro-batch: read, (mixup), forward, loss, backward; the last one feeds the Communicator.
Status Trainer::micro_step(int micro, bool last, float loss_scale, double* loss) {
  SX_ASSIGN_OR_RETURN(const dataplane::Batch* b, train_reader_->next_batch());
  if (b == nullptr) return Status::internal("the training reader ran out of batches mid-epoch");
  const int k = job_.spec.num_classes;
  const float* soft = nullptr;
  const float* images = b->images.data();
  if (c_.optimizer.mixup_alpha > 0) {
    images_.assign(b->images.begin(), b->images.end());
    const float lam = mixup_lambda(c_.seed, step_, micro, env_.rank(), c_.optimizer.mixup_alpha);
    mixup_batch(images_.data(), b->image_floats(), b->labels.data(), b->n, k, lam,
                float(c_.optimizer.label_smoothing), &soft_targets_);
    images = images_.data();
    soft = soft_targets_.data();
  }
#if SX_HAVE_CUDA
  if (device_input_) {
    SX_TRY(device_input_->set_input(images));
  } else {
    SX_TRY(net_->set_input(images));
  }
#else
  SX_TRY(net_->set_input(images));
#endif
  SX_TRY(net_->set_labels(b->labels.data()));
  SX_TRY(net_->forward(true));
  SX_ASSIGN_OR_RETURN(model::StepResult r, net_->loss(float(c_.optimizer.label_smoothing), soft, loss_scale));
  if (c_.numerics.check_finite && !std::isfinite(r.loss))
    return Status::data_loss("loss is " + std::to_string(r.loss) + " at step " + std::to_string(step_) +
                             "; HINT: lower optimizer.lr or lengthen schedule.warmup_epochs");
  *loss += r.loss;
  if (stage_->mirrored()) {
    // Device: micro-batch gradients accumulate in the backend's buffer (backward's accumulate flag);
    // with MPI the host copy is taken after the last one (reduce_staged_grads); NCCL launches buckets
    // as backward makes them.
    if (!last || !host_grads_.empty()) return net_->backward(micro > 0);
    Communicator* comm = comm_.get();
    return net_->backward(micro > 0, [comm](int64_t end) { comm->on_grads_ready(end); });
  }
  // Host: accumulation sums micro-batch gradients in the order an allreduce of that many ranks
  // would (acc = g0, acc += g1, ...), so np=1 with A=2 is bitwise np=2 with A=1.
  float* grads = net_->grads_data();
  const int64_t count = net_->param_count();
  if (!last) {
    SX_TRY(net_->backward(false));
    if (micro == 0) accum_.assign(grads, grads + count);
    else
      for (int64_t i = 0; i < count; ++i) accum_[size_t(i)] += grads[i];
    return Status::ok();
  }
  Communicator* comm = comm_.get();
  int64_t merged = 0;
  const float* acc = micro > 0 ? accum_.data() : nullptr;
  return net_->backward(false, [&](int64_t end) {
    if (acc)
      for (int64_t i = merged; i < end; ++i) grads[i] += acc[i];
    merged = std::max(merged, end);
    comm->on_grads_ready(end);
  });
}

Status Trainer::train() {
  SX_TRY(load_start_state());
  const int64_t spe = job_.steps_per_epoch;
  const int a = job_.accumulate;
  const int64_t first_step = step_;
  double t_start = now_s(), t_log = t_start, sec_per_step = 0;
  double log_loss = 0, epoch_loss = 0;
  int64_t log_steps = 0, epoch_steps = 0;
  bool reader_positioned = false;

  while (step_ < job_.total_steps) {
    if (!reader_positioned) {
      SX_TRY(train_reader_->start_epoch(epoch_, step_in_epoch_ * job_.global_batch));
      reader_positioned = true;
    }
    // A collective point: every rank receives the same overrides before the same step.
    SX_TRY(coord_->sync_overrides(step_));
    SX_TRY(coord_->sync_notices(step_));
    if (const StopPlan* stop = coord_->stop_before(step_)) {  // every rank, same step
      const bool drain = stop->kind == coord::NoticeKind::kDrain;
      if (drain) SX_TRY(save_checkpoint());
      say(std::string(drain ? "drain" : "stop") + " notice #" + std::to_string(stop->id) + ": leaving at step " +
          std::to_string(step_) + (drain ? " after a checkpoint" : " without a checkpoint") +
          (stop->reason.empty() ? std::string() : " (" + stop->reason + ")"));
      break;
    }
    LrSwitch sw;
    const double lr = coord_->lr_at(schedule_->lr_at(step_), step_, &sw);
    if (sw.id != 0)
      SX_TRY(metrics_.write({{"kind", "lr_override"}, {"step", sw.step}, {"lr", sw.lr}, {"rank", env_.rank()},
                             {"id", sw.id}}));
    double loss = 0;
    const float loss_scale = scaler_ ? scaler_->scale() : 1.f;
    for (int m = 0; m < a; ++m) SX_TRY(micro_step(m, m == a - 1, loss_scale, &loss));
    SX_TRY(reduce_staged_grads());
    SX_TRY(comm_->wait_all());
    SX_TRY(finish_staged_grads());
    // The buffer holds the sum over ranks and micro-batches (each a batch mean) times the loss
    // scale: the fused SGD pass scales it by 1 / (world · A · scale) instead of passes of their own.
    const float grad_scale = comm_->grad_scale() / float(a) / loss_scale;
    SX_ASSIGN_OR_RETURN(const bool apply, apply_scaled_step());
    if (apply)
      SX_TRY(net_->sgd_step({.lr = float(lr), .momentum = float(c_.optimizer.momentum),
                             .nesterov = c_.optimizer.nesterov, .grad_scale = grad_scale},
                            segments_));
    ++step_;
    ++step_in_epoch_;
    log_loss += loss / a;
    epoch_loss += loss / a;
    ++log_steps;
    ++epoch_steps;
    const bool epoch_end = step_in_epoch_ == spe;
    const bool run_end = step_ == job_.total_steps;

    if (step_ % c_.log.every_steps == 0 || epoch_end || run_end) {
      double sums[2] = {log_loss, double(log_steps)};
      SX_TRY(env_.allreduce_sum(std::span<double>(sums, 2)));
      const double t = now_s(), dt = t - t_log;
      const double img_s = double(log_steps * job_.global_batch) / std::max(dt, 1e-9);
      const double sps = dt / double(std::max<int64_t>(log_steps, 1));
      sec_per_step = sec_per_step == 0 ? sps : 0.7 * sec_per_step + 0.3 * sps;
      const double mean_loss = sums[0] / std::max(sums[1], 1.0);
      const double epoch_f = double(epoch_) + double(step_in_epoch_) / double(spe);
      char line[200];
      std::snprintf(line, sizeof line,
                    "epoch %.2f/%g  step %lld/%lld  loss %.4f  lr %.4g  %.0f img/s  ETA %s", epoch_f, c_.epochs,
                    static_cast<long long>(step_), static_cast<long long>(job_.total_steps), mean_loss, lr, img_s,
                    format_duration(sec_per_step * double(job_.total_steps - step_)).c_str());
      if (env_.is_root()) progress_->update(line);
      coord_->post_metrics(step_, epoch_f, mean_loss, lr, img_s);  // stores only; the heartbeat thread sends
      nlohmann::ordered_json rec = {{"kind", "train"}, {"step", step_}, {"epoch", epoch_f}, {"loss", mean_loss}, {"lr", lr},
                            {"img_s", img_s}, {"time_s", t - t_start}};
      if (scaler_) {
        rec["loss_scale"] = scaler_->scale();
        rec["skipped_steps"] = scaler_->skipped_steps();
      }
      SX_TRY(metrics_.write(rec));
      log_loss = 0;
      log_steps = 0;
      t_log = now_s();
    }

    const int64_t epochs_done = epoch_ + (epoch_end ? 1 : 0);
    if (epoch_end || run_end) {
      double sums[2] = {epoch_loss, double(epoch_steps)};
      SX_TRY(env_.allreduce_sum(std::span<double>(sums, 2)));
      std::optional<EvalResult> ev;
      const bool eval_now = (c_.eval.every_epochs > 0 && epoch_end && epochs_done % c_.eval.every_epochs == 0) ||
                            (run_end && c_.eval.at_end);
      if (eval_now) SX_TRY(run_eval(epochs_done, &ev));
      if (epoch_end) {
        nlohmann::ordered_json rec = {{"kind", "epoch"}, {"epoch", epochs_done}, {"step", step_},
                              {"train_loss", sums[0] / std::max(sums[1], 1.0)}, {"time_s", now_s() - t_start}};
        rec["top1"] = ev ? nlohmann::ordered_json(ev->top1_pct()) : nlohmann::ordered_json(nullptr);
        rec["top5"] = ev ? nlohmann::ordered_json(ev->top5_pct()) : nlohmann::ordered_json(nullptr);
        SX_TRY(metrics_.write(rec));
        if (env_.is_root() && c_.log.plot) {
          Status st = plot_curves(metrics_.path(), c_.run_dir + "/curves.png");
          if (!st.is_ok()) say("warning: plot: " + st.message());
        }
      }
      epoch_loss = 0;
      epoch_steps = 0;
    }
    if (epoch_end) {
      ++epoch_;
      step_in_epoch_ = 0;
      reader_positioned = false;
    }
    const bool ckpt = (c_.checkpoint.every_steps > 0 && step_ % c_.checkpoint.every_steps == 0) ||
                      (epoch_end && c_.checkpoint.every_epochs > 0 && epochs_done % c_.checkpoint.every_epochs == 0) ||
                      run_end;
    if (ckpt) SX_TRY(save_checkpoint());
  }
  if (step_ >= job_.total_steps) SX_TRY(run_test());
  if (writer_) SX_TRY(writer_->wait().with_context("checkpoint write"));
  const double total = now_s() - t_start;
  say("done: " + std::to_string(step_ - first_step) + " steps in " + format_duration(total) + "; run directory " +
      c_.run_dir);
  return Status::ok();
}

Status Trainer::eval_only() {
  const std::string path = c_.checkpoint.load.empty() ? c_.checkpoint_dir() : c_.checkpoint.load;
  auto slots = stage_->slots(true);
  SX_ASSIGN_OR_RETURN(storage::LoadResult r, storage::load_checkpoint(path, slots));
  SX_TRY(stage_->push(HostStage::kAll));
  for (const std::string& w : r.warnings) say("warning: " + w);
  say("evaluating " + r.path + " (step " + std::to_string(r.meta.step) + ") on " + c_.data.val);
  step_ = r.meta.step;
  SX_TRY(check_finite_parameters(*net_).with_context("evaluating " + r.path));
  std::optional<EvalResult> ev;
  SX_TRY(run_eval(r.meta.epoch, &ev).with_context("evaluating " + r.path));
  if (!env_.is_root() || !ev) return Status::ok();
  std::printf("top1 %.4f\ntop5 %.4f\nloss %.6f\nsamples %lld\n", ev->top1_pct(), ev->top5_pct(), ev->loss(),
              static_cast<long long>(ev->samples));
  if (c_.eval.out.empty()) return Status::ok();
  SX_ASSIGN_OR_RETURN(MetricsLog out, MetricsLog::open(c_.eval.out));
  return out.write({{"kind", "eval"}, {"checkpoint", r.path}, {"step", r.meta.step}, {"epoch", r.meta.epoch},
                    {"data", c_.data.val}, {"top1", ev->top1_pct()}, {"top5", ev->top5_pct()}, {"loss", ev->loss()},
                    {"samples", ev->samples}});
}

}  // namespace

Status run_job(const JobConfig& config, MpiEnv& env) {
  Trainer trainer(config, env);
  SX_TRY(trainer.setup());
  return config.mode == "eval" ? trainer.eval_only() : trainer.train();
}

}  // namespace sx::worker
