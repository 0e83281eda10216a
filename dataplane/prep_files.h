// defines: small file helpers for sx_prep and the manifest: read a whole file, crc32 of a file,
// durable rename (fsync file, rename, fsync directory) so a crash leaves either the old name or
// a complete file under the new one, never a half-written file under a final name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::dataplane {

// Whole file; NotFound when missing, DataLoss when it cannot be read completely.
// Reads a regular file whole (a device, FIFO or directory is refused without reading; a file larger
// than max_bytes is refused before allocating).
StatusOr<std::vector<uint8_t>> read_file_bytes(const std::string& path, int64_t max_bytes = int64_t{1} << 30);
// zlib crc32 of the whole file.
StatusOr<uint32_t> crc32_of_file(const std::string& path);
// fsync(tmp), rename(tmp, final), and fsync(directory of final) when sync_dir. Many renames into
// one directory can pass sync_dir = false and call fsync_directory once at the end.
Status rename_durable(const std::string& tmp, const std::string& final_path, bool sync_dir = true);
Status fsync_directory(const std::string& dir);
// Writes bytes to `final_path` via "<dir>/.<name>.tmp" + rename_durable.
Status write_file_atomic(const std::string& final_path, const std::string& bytes);

}  // namespace sx::dataplane
