// defines: sx::storage::fsync_file, fsync_dir, write_file_atomic, read_small_file, list_dir.
// The POSIX durability steps behind "write to a temporary name, fsync, rename, fsync the directory".
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace sx::storage {

Status fsync_file(const std::string& path);  // reopens read-only and fsyncs (data + size)
Status fsync_dir(const std::string& dir);    // makes a rename/unlink in `dir` durable

// Atomically replaces `path` with `contents`: write `path.PID-N.tmp` (a name no other writer uses),
// fsync, rename, fsync the directory; the temporary is removed on failure. A reader sees either the
// old file or the complete new one, also across a crash.
Status write_file_atomic(const std::string& path, const std::string& contents);

// Renames `from` to `to` (same directory) and fsyncs that directory.
Status rename_durable(const std::string& from, const std::string& to);

StatusOr<std::string> read_small_file(const std::string& path, size_t max_bytes = 4096);

// Regular-file names in `dir` (not paths), unsorted.
StatusOr<std::vector<std::string>> list_dir(const std::string& dir);

// "PATH.PID-N.tmp": unique per process and call, so two writers never share a temporary.
std::string unique_tmp_path(const std::string& path);

std::string errno_string(int err);
std::string parent_dir(const std::string& path);  // "." when there is no slash
std::string join_path(const std::string& dir, const std::string& name);

}  // namespace sx::storage
