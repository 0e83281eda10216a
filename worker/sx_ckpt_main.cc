// sx_ckpt: checkpoints from the shell.
//   sx_ckpt inspect <dir|dir/latest|file.h5>                 metadata and tensor list
//   sx_ckpt verify  <dir|dir/latest|file.h5>                 check every checksum; exit 1 if any fails
//   sx_ckpt export  <dir|dir/latest|file.h5> --format torch -o model.pt   (or --format onnx -o model.onnx)
//   sx_ckpt import  model.pt --arch se_resnext50_32x4d -o pretrained.h5   (for -o pretrained=pretrained.h5)
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common/guard.h"
#include "storage/checkpoint.h"
#include "worker/onnx_export.h"
#include "worker/torch_convert.h"

namespace {

using sx::Status;
using sx::StatusOr;

// A directory or its `latest` file resolves to the file `latest` names.
StatusOr<std::string> resolve(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string base = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (base == "latest") return sx::storage::find_latest(slash == std::string::npos ? "." : path.substr(0, slash));
  auto latest = sx::storage::find_latest(path);
  if (latest.is_ok()) return latest;
  return path;
}

Status inspect(const std::string& path, bool verify_only) {
  SX_ASSIGN_OR_RETURN(std::string file, resolve(path));
  auto report = sx::storage::verify_checkpoint(file);
  if (!report.is_ok()) return report.status().with_context(file + " FAILED");
  const sx::storage::CheckpointMeta& m = report->meta;
  if (verify_only) {
    std::printf("%s OK: %zu tensors, %lld values, step %lld\n", file.c_str(), report->tensors.size(),
                static_cast<long long>(report->total_values), static_cast<long long>(m.step));
    return Status::ok();
  }
  std::printf("file           %s\nformat_version %lld\nmodel_preset   %s\nstep           %lld\nepoch          %lld\n"
              "samples_seen   %lld\nworld_size     %lld\nglobal_batch   %lld\nrng_seed       %lld\n"
              "data cursor    epoch %lld offset %lld\nextra_json     %s\nconfig_text    %zu bytes\n"
              "tensors        %zu (%lld values, all checksums OK)\n",
              file.c_str(), static_cast<long long>(m.format_version), m.model_preset.c_str(),
              static_cast<long long>(m.step), static_cast<long long>(m.epoch), static_cast<long long>(m.samples_seen),
              static_cast<long long>(m.world_size), static_cast<long long>(m.global_batch),
              static_cast<long long>(m.rng_seed), static_cast<long long>(m.data_epoch),
              static_cast<long long>(m.data_offset), m.extra_json.c_str(), m.config_text.size(),
              report->tensors.size(), static_cast<long long>(report->total_values));
  for (const std::string& t : report->tensors) std::printf("  %s\n", t.c_str());
  return Status::ok();
}

Status export_checkpoint(const std::string& path, const std::string& format, const std::string& out) {
  SX_ASSIGN_OR_RETURN(std::string file, resolve(path));
  if (format == "torch") SX_TRY(sx::worker::export_torch(file, out));
  if (format == "onnx") SX_TRY(sx::worker::export_onnx(file, out));
  std::printf("%s -> %s (%s)\n", file.c_str(), out.c_str(), format.c_str());
  return Status::ok();
}

Status import_checkpoint(const std::string& in, const std::string& arch, const std::string& out) {
  SX_ASSIGN_OR_RETURN(sx::worker::ImportReport r, sx::worker::import_torch(in, arch, out));
  std::printf("%s -> %s: %s, %d classes, %d input channels, %lld tensors\n", in.c_str(), out.c_str(), arch.c_str(),
              r.spec.num_classes, r.spec.in_channels, static_cast<long long>(r.tensors));
  if (r.cadene_names)
    std::printf("note: Cadene pretrainedmodels names; its stem max pool is 3x3/2 ceil_mode without padding, ours "
                "pads by 1 (same output size at 224 px, shifted windows)\n");
  return Status::ok();
}

}  // namespace

static int ckpt_main(int argc, char** argv) {
  CLI::App app{"sx_ckpt: inspect, verify and convert sx_worker checkpoints"};
  app.require_subcommand(1);
  std::string path, format = "torch", out, arch;

  CLI::App* inspect_cmd = app.add_subcommand("inspect", "print metadata and tensors (the latest checkpoint of a directory)");
  inspect_cmd->add_option("checkpoint", path, "run or checkpoint directory, its `latest`, or a ckpt-*.h5 file")->required();
  CLI::App* verify_cmd = app.add_subcommand("verify", "check every checksum; exit 1 if one fails");
  verify_cmd->add_option("checkpoint", path, "run or checkpoint directory, its `latest`, or a ckpt-*.h5 file")->required();

  CLI::App* export_cmd = app.add_subcommand(
      "export", "write the weights as a PyTorch state_dict (torchvision/timm names) or an ONNX inference graph");
  export_cmd->add_option("checkpoint", path, "run or checkpoint directory, its `latest`, or a ckpt-*.h5 file")->required();
  export_cmd->add_option("--format", format,
                         "torch: a torch.save file for load_state_dict; onnx: the inference graph (opset 11, BN folded, "
                         "input 'input' (N, C, S, S) normalised, output 'logits')")
      ->check(CLI::IsMember({"torch", "onnx"}));
  export_cmd->add_option("-o,--out", out, "output file")->required();

  CLI::App* import_cmd = app.add_subcommand(
      "import", "turn a PyTorch state_dict into a checkpoint file for -o pretrained=FILE or sx_infer");
  import_cmd->add_option("state_dict", path, "torch.save file (zip format) of a state_dict")->required()->check(CLI::ExistingFile);
  import_cmd->add_option("--arch", arch, "our preset of the same architecture, e.g. se_resnext50_32x4d")->required();
  import_cmd->add_option("-o,--out", out, "output checkpoint file (.h5)")->required();

  CLI11_PARSE(app, argc, argv);
  Status st;
  if (*inspect_cmd) st = inspect(path, false);
  if (*verify_cmd) st = inspect(path, true);
  if (*export_cmd) st = export_checkpoint(path, format, out);
  if (*import_cmd) st = import_checkpoint(path, arch, out);
  if (!st.is_ok()) {
    std::fprintf(stderr, "sx_ckpt: %s\n", st.to_string().c_str());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return sx::guarded_main("sx_ckpt", [&] { return ckpt_main(argc, argv); });
}
