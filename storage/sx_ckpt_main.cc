// sx_ckpt: look at checkpoints without Python.
//   sx_ckpt inspect <dir|latest|file.h5>   metadata and tensor list
//   sx_ckpt verify  <dir|latest|file.h5>   check every checksum; exit 1 if any fails
#include <cstdio>
#include <string>

#include "storage/checkpoint.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: sx_ckpt inspect|verify <checkpoint dir | dir/latest | file.h5>\n"
               "  inspect  print metadata and tensors of the checkpoint (latest one for a directory)\n"
               "  verify   check every checksum; a directory is resolved via its latest pointer\n");
  return 2;
}

// A directory or its `latest` file resolves to the file `latest` names.
sx::StatusOr<std::string> resolve(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string base = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (base == "latest") return sx::storage::find_latest(slash == std::string::npos ? "." : path.substr(0, slash));
  auto latest = sx::storage::find_latest(path);
  if (latest.is_ok()) return latest;
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return usage();
  const std::string cmd = argv[1];
  if (cmd != "inspect" && cmd != "verify") return usage();
  auto file = resolve(argv[2]);
  if (!file.is_ok()) {
    std::fprintf(stderr, "sx_ckpt: %s\n", file.status().to_string().c_str());
    return 1;
  }
  auto report = sx::storage::verify_checkpoint(*file);
  if (!report.is_ok()) {
    std::fprintf(stderr, "sx_ckpt: %s FAILED: %s\n", file->c_str(), report.status().to_string().c_str());
    return 1;
  }
  const sx::storage::CheckpointMeta& m = report->meta;
  if (cmd == "verify") {
    std::printf("%s OK: %zu tensors, %lld values, step %lld\n", file->c_str(), report->tensors.size(),
                static_cast<long long>(report->total_values), static_cast<long long>(m.step));
    return 0;
  }
  std::printf("file           %s\nformat_version %lld\nmodel_preset   %s\nstep           %lld\nepoch          %lld\n"
              "samples_seen   %lld\nworld_size     %lld\nglobal_batch   %lld\nrng_seed       %lld\n"
              "data cursor    epoch %lld offset %lld\nextra_json     %s\nconfig_text    %zu bytes\n"
              "tensors        %zu (%lld values, all checksums OK)\n",
              file->c_str(), static_cast<long long>(m.format_version), m.model_preset.c_str(),
              static_cast<long long>(m.step), static_cast<long long>(m.epoch), static_cast<long long>(m.samples_seen),
              static_cast<long long>(m.world_size), static_cast<long long>(m.global_batch),
              static_cast<long long>(m.rng_seed), static_cast<long long>(m.data_epoch),
              static_cast<long long>(m.data_offset), m.extra_json.c_str(), m.config_text.size(),
              report->tensors.size(), static_cast<long long>(report->total_values));
  for (const std::string& t : report->tensors) std::printf("  %s\n", t.c_str());
  return 0;
}
