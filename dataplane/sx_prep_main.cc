// sx_prep: converts a dataset (list file / image folder / MNIST-style idx) into HDF5 shards plus
// manifest.json. See dataplane/README.md and dataplane/shard_format.h.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "common/guard.h"

#include "dataplane/prep_pipeline.h"

namespace {

// Shell-quotes an argument when needed, so the recorded command can be pasted back.
std::string quote(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                        std::string::npos)
    return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

namespace {
int prep_main(int argc, char** argv) {
  sx::dataplane::PrepOptions o;
  o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool no_progress = false;
  CLI::App app{
      "sx_prep: convert a dataset into HDF5 shards + manifest.json.\n"
      "  sx_prep --format list --list train_list.txt --root ILSVRC2012/ --out shards/train --short-side 256 --encode jpeg\n"
      "  sx_prep --format folder --root photos/ --out shards/photos\n"
      "  sx_prep --format idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz --out data/fmnist/train"};
  app.add_option("--format", o.format, "input kind: list | folder | idx (default: list with --list, idx with --images)")->check(CLI::IsMember({"list", "folder", "idx"}));
  app.add_option("--list", o.list, "list file: one 'relative/path.jpeg label' per line (path = everything before the last space)");
  app.add_option("--root", o.root, "list mode: directory the list's paths are relative to; folder mode: root/<class>/<image>");
  app.add_option("--images", o.images, "idx mode: idx3-ubyte images file (plain or .gz)");
  app.add_option("--labels", o.labels, "idx mode: idx1-ubyte labels file (plain or .gz)");
  app.add_option("--out", o.out, "output directory (shard-NNNNN.h5 + manifest.json)")->required();
  app.add_option("--num-classes", o.num_classes, "number of classes for the label range check (default: max label + 1)");
  app.add_option("--class-names", o.class_names,
                 "file with one class name per line, or 'fashion-mnist' / 'mnist' (default: folder names; "
                 "for idx, Fashion-MNIST names when the images path contains 'fashion'; else the label numbers)");
  app.add_option("--short-side", o.short_side, "resize so the short side is S pixels (area when shrinking, cubic when enlarging); 0 = keep")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--center-crop", o.center_crop, "then crop the centre CxC; 0 = no crop")->check(CLI::NonNegativeNumber);
  app.add_option("--encode", o.encode, "stored encoding: raw (H*W*C uint8) | jpeg")->check(CLI::IsMember({"raw", "jpeg"}))
      ->capture_default_str();
  app.add_option("--quality", o.quality, "JPEG quality for --encode jpeg")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--samples-per-shard", o.samples_per_shard, "samples per shard file")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", o.threads, "decode/resize/encode threads (output is identical for any value)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--channels", o.channels, "stored channels: 3 = RGB, 1 = gray (default: 3, idx: 1)")->check(CLI::IsMember({1, 3}));
  app.add_option("--max-pixels", o.max_pixels, "refuse images whose header declares more pixels (decompression bombs)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-file-bytes", o.max_file_bytes, "refuse input files larger than this (not read)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--allow-outside-root", o.allow_outside_root,
               "list mode: accept absolute paths and '..' that leave --root (default: such a line is a bad input)");
  app.add_flag("--skip-bad", o.skip_bad, "leave bad inputs out, list them in a report, and go on (default: stop at the first)");
  app.add_option("--bad-report", o.bad_report, "where --skip-bad writes its report (default: OUT/skipped.txt)");
  std::string range;
  app.add_option("--range", range,
                 "convert only inputs FIRST..END-1, in input order (e.g. 0:55000 and 55000:60000 hold out a "
                 "validation split); default: all");
  app.add_flag("--no-progress", no_progress, "no progress output");
  CLI11_PARSE(app, argc, argv);

  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + quote(i == 0 ? std::string("sx_prep") : argv[i]);
  if (o.format.empty()) o.format = !o.list.empty() ? "list" : !o.images.empty() ? "idx" : "";
  if (o.format.empty()) {
    std::fprintf(stderr, "sx_prep: error: --format list|folder|idx is required (see --help)\n");
    return 1;
  }
  if (!range.empty()) {
    long long first = 0, end = 0;
    char tail = 0;
    if (std::sscanf(range.c_str(), "%lld:%lld%c", &first, &end, &tail) != 2 || first < 0 || end < 0) {
      std::fprintf(stderr, "sx_prep: error: --range %s: expected FIRST:END (two sample numbers, e.g. 0:55000)\n",
                   range.c_str());
      return 1;
    }
    o.first = first;
    o.end = end;
  }
  o.progress = !no_progress;
  o.progress_interactive = ::isatty(STDERR_FILENO) == 1;

  sx::StatusOr<sx::dataplane::PrepResult> r = sx::dataplane::run_prep(o);
  if (!r.is_ok()) {
    std::fprintf(stderr, "sx_prep: error: %s\nsx_prep: no manifest written; %s is incomplete\n",
                 r.status().message().c_str(), o.out.c_str());
    return 1;
  }
  const auto& m = r->manifest;
  if (!r->notes.empty()) std::fprintf(stderr, "%s", r->notes.c_str());
  std::fprintf(stderr, "sx_prep: wrote %lld samples, %d classes, %zu shards to %s\n",
               static_cast<long long>(m.num_samples), m.num_classes, m.shards.size(), o.out.c_str());
  if (!r->skipped.empty())
    std::fprintf(stderr, "sx_prep: skipped %zu bad inputs, listed in %s\n", r->skipped.size(), r->report_path.c_str());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  return sx::guarded_main("sx_prep", [&] { return prep_main(argc, argv); });
}
