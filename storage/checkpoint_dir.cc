// A checkpoint directory: crash-safe save, the `latest` pointer, retention, resume with fallback.
//
// Crash protocol (see README): ckpt-S.h5.tmp -> fsync -> rename -> fsync dir -> latest.tmp ->
// fsync -> rename -> fsync dir -> retention. At every instant `latest` names a complete file.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "storage/checkpoint.h"
#include "storage/checkpoint_file.h"
#include "storage/fs_util.h"

namespace sx::storage {
namespace {

constexpr const char* kLatest = "latest";

// Parses "ckpt-<digits>.h5" (nothing else: never a .tmp) into its step.
bool parse_checkpoint_name(const std::string& name, int64_t* step) {
  const std::string prefix = "ckpt-", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  *step = std::stoll(digits);
  return true;
}

struct Entry {
  int64_t step;
  std::string name;
};

// Checkpoint files in `dir`, newest step first.
StatusOr<std::vector<Entry>> list_checkpoints(const std::string& dir) {
  SX_ASSIGN_OR_RETURN(std::vector<std::string> names, list_dir(dir));
  std::vector<Entry> out;
  for (const std::string& n : names) {
    int64_t step = 0;
    if (parse_checkpoint_name(n, &step)) out.push_back({step, n});
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.step > b.step; });
  return out;
}

// Reads `dir/latest` -> the file name it holds (validated, not checked for existence).
StatusOr<Entry> read_latest(const std::string& dir) {
  const std::string path = join_path(dir, kLatest);
  auto text = read_small_file(path, 256);
  if (!text.is_ok()) {
    if (text.status().code() == StatusCode::kNotFound)
      return Status::not_found("no checkpoint in " + dir + ": " + path + " does not exist");
    return text.status();
  }
  std::string name = *text;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ' || name.back() == '\r')) name.pop_back();
  Entry e{0, name};
  if (!parse_checkpoint_name(name, &e.step))
    return Status::data_loss(path + " does not name a checkpoint file (holds '" + name.substr(0, 64) + "')");
  return e;
}

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Removes leftovers of an interrupted save (ckpt-S.h5.PID-N.tmp, latest.PID-N.tmp and the older
// fixed names). Only one job writes a checkpoint directory: the worker's rank 0 holds its run lock.
void remove_stale_tmp(const std::string& dir, const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    const bool tmp = n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0;
    if (tmp && (n.rfind("ckpt-", 0) == 0 || n.rfind(std::string(kLatest) + ".", 0) == 0))
      ::unlink(join_path(dir, n).c_str());
  }
}

Status apply_retention(const std::string& dir, int64_t newest_step, int keep_last) {
  SX_ASSIGN_OR_RETURN(std::vector<Entry> all, list_checkpoints(dir));
  // Files newer than the one just written belong to an abandoned timeline (a resume from an older
  // checkpoint); they are neither kept in the count nor deleted, and loading ignores them.
  int kept = 1;  // newest_step itself, which `latest` names
  bool removed = false;
  for (const Entry& e : all) {
    if (e.step >= newest_step) continue;
    if (kept < keep_last) {
      ++kept;
      continue;
    }
    if (::unlink(join_path(dir, e.name).c_str()) != 0 && errno != ENOENT)
      return Status::unavailable("cannot remove old checkpoint " + join_path(dir, e.name) + ": " + errno_string(errno));
    removed = true;
  }
  return removed ? fsync_dir(dir) : Status::ok();
}

}  // namespace

std::string checkpoint_file_name(int64_t step) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "ckpt-%08lld.h5", static_cast<long long>(step));
  return buf;
}

Status save_checkpoint(const std::string& dir, const CheckpointState& state, const SaveOptions& options) {
  SX_CHECK_ARG(options.keep_last >= 1, "keep_last must be at least 1");
  SX_CHECK_ARG(state.meta.step >= 0, "checkpoint step must be non-negative");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::unavailable("cannot create checkpoint directory " + dir + ": " + ec.message());
  SX_ASSIGN_OR_RETURN(std::vector<std::string> names, list_dir(dir));
  remove_stale_tmp(dir, names);
  // Finish a retention pass a crash may have cut short, so the file count stays bounded.
  if (auto latest = read_latest(dir); latest.is_ok() && file_exists(join_path(dir, latest->name)))
    SX_TRY(apply_retention(dir, latest->step, options.keep_last));

  const std::string name = checkpoint_file_name(state.meta.step);
  const std::string final_path = join_path(dir, name);
  const std::string tmp_path = unique_tmp_path(final_path);
  Status st = write_checkpoint_file(tmp_path, state);
  if (st.is_ok()) st = fsync_file(tmp_path);
  if (!st.is_ok()) {
    ::unlink(tmp_path.c_str());
    return st.with_context("saving checkpoint " + final_path);
  }
  SX_TRY(rename_durable(tmp_path, final_path));
  SX_TRY(write_file_atomic(join_path(dir, kLatest), name + "\n"));
  return apply_retention(dir, state.meta.step, options.keep_last);
}

StatusOr<std::string> find_latest(const std::string& dir) {
  SX_ASSIGN_OR_RETURN(Entry e, read_latest(dir));
  const std::string path = join_path(dir, e.name);
  if (!file_exists(path))
    return Status::not_found(join_path(dir, kLatest) + " names " + e.name + ", which does not exist");
  return path;
}

StatusOr<LoadResult> load_latest(const std::string& dir, const std::vector<TensorSlot>& slots,
                                 const LoadOptions& options) {
  std::vector<std::string> warnings;
  std::vector<std::string> candidates;
  auto latest = find_latest(dir);
  auto files = list_checkpoints(dir);
  if (!files.is_ok() && files.status().code() != StatusCode::kNotFound) return files.status();
  if (latest.is_ok()) {
    candidates.push_back(*latest);
    int64_t latest_step = 0;
    parse_checkpoint_name(latest->substr(latest->rfind('/') + 1), &latest_step);
    if (files.is_ok())
      for (const Entry& e : *files)
        if (e.step < latest_step) candidates.push_back(join_path(dir, e.name));
  } else {
    if (!options.fallback || !files.is_ok() || files->empty()) return latest.status();
    warnings.push_back(latest.status().message() + "; trying the checkpoint files in " + dir + ", newest first");
    for (const Entry& e : *files) candidates.push_back(join_path(dir, e.name));
  }
  if (!options.fallback) candidates.resize(1);

  std::vector<bool> ever_touched(slots.size(), false);
  for (size_t c = 0; c < candidates.size(); ++c) {
    LoadResult result;
    std::vector<bool> touched(slots.size(), false);
    bool mismatch = false;
    Status st = detail::load_checkpoint_file(candidates[c], slots, options, &result, &touched, &mismatch);
    if (st.is_ok()) {
      for (size_t i = 0; i < slots.size(); ++i)
        if (ever_touched[i] && !touched[i])
          return Status::data_loss("slot " + slots[i].name + " was partly overwritten from a corrupt checkpoint and " +
                                   candidates[c] + " does not provide it");
      if (c > 0) warnings.push_back("fell back to " + candidates[c]);
      result.warnings = std::move(warnings);
      return result;
    }
    if (mismatch) return st;
    for (size_t i = 0; i < slots.size(); ++i) ever_touched[i] = ever_touched[i] || touched[i];
    warnings.push_back("checkpoint failed verification: " + st.to_string());
  }
  std::string msg = "no loadable checkpoint in " + dir;
  for (const std::string& w : warnings) msg += "\n  " + w;
  return Status::data_loss(msg);
}

StatusOr<LoadResult> load_checkpoint(const std::string& path, const std::vector<TensorSlot>& slots,
                                     const LoadOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return load_latest(path, slots, options);
  const size_t slash = path.rfind('/');
  if (path.substr(slash == std::string::npos ? 0 : slash + 1) == kLatest) return load_latest(parent_dir(path), slots, options);
  if (!file_exists(path)) return Status::not_found("checkpoint " + path + " does not exist");
  LoadResult result;
  std::vector<bool> touched(slots.size(), false);
  bool mismatch = false;
  SX_TRY(detail::load_checkpoint_file(path, slots, options, &result, &touched, &mismatch));
  return result;
}

}  // namespace sx::storage
