#include "dataplane/manifest.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dataplane/prep_files.h"
#include "dataplane/shard_format.h"

namespace sx::dataplane {
namespace {

using nlohmann::json;

// Every accessor names the file and the key, so a hand-edited manifest fails with one clear line.
Status key_error(const std::string& source, const std::string& key, const std::string& what) {
  return Status::invalid_argument(source + ": key '" + key + "': " + what);
}

StatusOr<const json*> get(const json& j, const std::string& source, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end()) return key_error(source, key, "missing");
  return &*it;
}

StatusOr<int64_t> get_int(const json& j, const std::string& source, const std::string& key, int64_t lo,
                          int64_t hi) {
  SX_ASSIGN_OR_RETURN(const json* v, get(j, source, key));
  if (!v->is_number_integer()) return key_error(source, key, "expected an integer, got " + v->dump());
  int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    return key_error(source, key,
                     "value " + std::to_string(x) + " out of range [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
  return x;
}

StatusOr<std::string> get_string(const json& j, const std::string& source, const std::string& key) {
  SX_ASSIGN_OR_RETURN(const json* v, get(j, source, key));
  if (!v->is_string()) return key_error(source, key, "expected a string, got " + v->dump());
  return v->get<std::string>();
}

constexpr int64_t kMax = int64_t{1} << 53;

}  // namespace

int Manifest::shard_of(int64_t g) const {
  if (g < 0 || g >= num_samples || shards.empty()) return -1;
  auto it = std::upper_bound(shards.begin(), shards.end(), g,
                             [](int64_t x, const ShardInfo& s) { return x < s.first_index; });
  return static_cast<int>(it - shards.begin()) - 1;
}

std::string crc32_hex(uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", crc);
  return buf;
}

json manifest_to_json(const Manifest& m) {
  json j;  // nlohmann::json keeps keys sorted, so the text is deterministic
  j["format_version"] = m.format_version;
  j["num_samples"] = m.num_samples;
  j["num_classes"] = m.num_classes;
  j["class_names"] = m.class_names;
  j["encoding"] = m.encoding;
  j["channels"] = m.channels;
  j["short_side"] = m.short_side;
  j["center_crop"] = m.center_crop;
  j["skipped"] = m.skipped;
  j["command"] = m.command;
  json shards = json::array();
  for (const ShardInfo& s : m.shards)
    shards.push_back({{"file", s.file},
                      {"num_samples", s.num_samples},
                      {"first_index", s.first_index},
                      {"crc32", crc32_hex(s.crc32)}});
  j["shards"] = shards;
  return j;
}

StatusOr<Manifest> manifest_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) return Status::invalid_argument(source + ": expected a JSON object at the top level");
  Manifest m;
  SX_ASSIGN_OR_RETURN(int64_t version, get_int(j, source, "format_version", 0, 1000));
  if (version != kShardFormatVersion)
    return key_error(source, "format_version",
                     "is " + std::to_string(version) + ", this build reads version " +
                         std::to_string(kShardFormatVersion) + ". HINT: re-run sx_prep with this build");
  m.format_version = static_cast<int>(version);
  SX_ASSIGN_OR_RETURN(m.num_samples, get_int(j, source, "num_samples", 1, kMax));
  SX_ASSIGN_OR_RETURN(int64_t k, get_int(j, source, "num_classes", 1, 1 << 24));
  m.num_classes = static_cast<int>(k);
  // Optional keys (a minimal manifest has num_samples, num_classes, shards) get defaults.
  if (j.contains("class_names")) {
    const json& names = j["class_names"];
    if (!names.is_array()) return key_error(source, "class_names", "expected an array of strings");
    for (const json& n : names) {
      if (!n.is_string()) return key_error(source, "class_names", "expected strings, got " + n.dump());
      m.class_names.push_back(n.get<std::string>());
    }
    if (!m.class_names.empty() && static_cast<int>(m.class_names.size()) != m.num_classes)
      return key_error(source, "class_names",
                       "has " + std::to_string(m.class_names.size()) + " names but num_classes is " +
                           std::to_string(m.num_classes));
  }
  m.encoding = "raw";
  if (j.contains("encoding")) {
    SX_ASSIGN_OR_RETURN(m.encoding, get_string(j, source, "encoding"));
    if (m.encoding != "raw" && m.encoding != "jpeg")
      return key_error(source, "encoding", "expected \"raw\" or \"jpeg\", got \"" + m.encoding + "\"");
  }
  m.channels = 3;
  if (j.contains("channels")) {
    SX_ASSIGN_OR_RETURN(int64_t c, get_int(j, source, "channels", 1, 3));
    if (c == 2) return key_error(source, "channels", "expected 1 or 3, got 2");
    m.channels = static_cast<int>(c);
  }
  if (j.contains("short_side")) {
    SX_ASSIGN_OR_RETURN(int64_t s, get_int(j, source, "short_side", 0, 1 << 20));
    m.short_side = static_cast<int>(s);
  }
  if (j.contains("center_crop")) {
    SX_ASSIGN_OR_RETURN(int64_t s, get_int(j, source, "center_crop", 0, 1 << 20));
    m.center_crop = static_cast<int>(s);
  }
  if (j.contains("skipped")) {
    SX_ASSIGN_OR_RETURN(m.skipped, get_int(j, source, "skipped", 0, kMax));
  }
  if (j.contains("command")) {
    SX_ASSIGN_OR_RETURN(m.command, get_string(j, source, "command"));
  }

  SX_ASSIGN_OR_RETURN(const json* shards, get(j, source, "shards"));
  if (!shards->is_array() || shards->empty())
    return key_error(source, "shards", "expected a non-empty array of {file, num_samples, first_index, crc32}");
  int64_t next = 0;
  for (size_t i = 0; i < shards->size(); ++i) {
    const json& s = (*shards)[i];
    std::string where = source + " shards[" + std::to_string(i) + "]";
    if (!s.is_object()) return Status::invalid_argument(where + ": expected an object");
    ShardInfo info;
    SX_ASSIGN_OR_RETURN(info.file, get_string(s, where, "file"));
    if (info.file.empty() || info.file.find('/') != std::string::npos || info.file[0] == '.')
      return key_error(where, "file", "expected a plain file name in the manifest's directory, got \"" +
                                          info.file + "\"");
    SX_ASSIGN_OR_RETURN(info.num_samples, get_int(s, where, "num_samples", 1, kMaxShardSamples));
    SX_ASSIGN_OR_RETURN(info.first_index, get_int(s, where, "first_index", 0, kMax));
    if (info.first_index != next)
      return key_error(where, "first_index",
                       "is " + std::to_string(info.first_index) + ", expected " + std::to_string(next) +
                           " (shards must be contiguous and in order)");
    next += info.num_samples;
    SX_ASSIGN_OR_RETURN(std::string crc, get_string(s, where, "crc32"));
    if (crc.size() != 8 || crc.find_first_not_of("0123456789abcdef") != std::string::npos)
      return key_error(where, "crc32", "expected 8 lowercase hex digits, got \"" + crc + "\"");
    info.crc32 = static_cast<uint32_t>(std::stoul(crc, nullptr, 16));
    m.shards.push_back(std::move(info));
  }
  if (next != m.num_samples)
    return key_error(source, "num_samples",
                     "is " + std::to_string(m.num_samples) + " but the shards hold " + std::to_string(next));
  return m;
}

StatusOr<Manifest> load_manifest(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / kManifestName).string();
  std::ifstream in(path);
  if (!in) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec))
      return Status::not_found(path + ": not found. HINT: the directory is incomplete (sx_prep writes " +
                               std::string(kManifestName) + " last) or was not made by sx_prep");
    return Status::not_found(path + ": not found (no such directory " + dir + ")");
  }
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec || !std::filesystem::is_regular_file(path, ec))
    return Status::invalid_argument(path + ": not a regular file");
  if (int64_t(bytes) > kMaxManifestBytes)
    return Status::invalid_argument(path + ": " + std::to_string(bytes) + " bytes, more than a manifest can be (" +
                                    std::to_string(kMaxManifestBytes) + ")");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::invalid_argument(path + ": not valid JSON");
  SX_ASSIGN_OR_RETURN(Manifest m, manifest_from_json(j, path));
  // Validate, then allocate: readers size per-epoch permutations (8 bytes a sample) from num_samples,
  // so every shard's count must be backed by its file (24 bytes a sample at least). A missing shard
  // fails when it is read; the samples it claims are capped meanwhile.
  int64_t unbacked = 0;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const ShardInfo& s = m.shards[i];
    const std::string file = (std::filesystem::path(dir) / s.file).string();
    const auto size = std::filesystem::file_size(file, ec);
    if (ec) {
      unbacked += s.num_samples;
      continue;
    }
    if (s.num_samples > int64_t(size) / kShardBytesPerSample)
      return key_error(path + " shards[" + std::to_string(i) + "]", "num_samples",
                       "is " + std::to_string(s.num_samples) + " but " + file + " has only " + std::to_string(size) +
                           " bytes (at least " + std::to_string(kShardBytesPerSample) + " per sample)");
  }
  constexpr int64_t kMaxUnbacked = int64_t{1} << 26;
  if (unbacked > kMaxUnbacked)
    return Status::not_found(path + ": shard files holding " + std::to_string(unbacked) +
                             " samples are missing. HINT: the dataset is incomplete; re-run sx_prep");
  return m;
}

Status save_manifest(const std::string& dir, const Manifest& m) {
  std::string text = manifest_to_json(m).dump(2) + "\n";
  return write_file_atomic((std::filesystem::path(dir) / kManifestName).string(), text);
}

}  // namespace sx::dataplane
