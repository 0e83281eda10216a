// defines: sx::dataplane::PrepOptions, run_prep — the sx_prep conversion: inputs -> ordered samples
// -> HDF5 shards -> manifest.json (written last). Worker threads decode/resize/encode a batch of
// samples; one writer appends them in input order, so the output does not depend on --threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/manifest.h"
#include "dataplane/prep_inputs.h"

namespace sx::dataplane {

struct PrepOptions {
  std::string format;       // "list" | "folder" | "idx"
  std::string list;         // --list (list mode)
  std::string root;         // --root (list: prefix of the paths; folder: the tree)
  std::string images, labels;  // idx mode
  std::string out;          // output directory
  int num_classes = 0;      // 0 = from the data (max label + 1, folder count, class names)
  std::string class_names;  // file with one name per line, or "fashion-mnist" / "mnist"; "" = automatic
  int short_side = 0;       // 0 = keep size
  int center_crop = 0;      // 0 = no crop
  std::string encode = "raw";  // "raw" | "jpeg"
  int quality = 95;
  int64_t samples_per_shard = 1024;
  int64_t first = 0, end = -1;  // --range FIRST:END: convert inputs [first, end) in input order (-1 = all)
  int threads = 1;
  int channels = 0;         // 0 = 3 for list/folder, 1 for idx
  int64_t max_pixels = 89478485;
  int64_t max_file_bytes = int64_t{1} << 30;  // --max-file-bytes: larger input files are bad inputs
  bool allow_outside_root = false;            // --allow-outside-root: list paths may be absolute or use '..' 
  bool skip_bad = false;
  std::string bad_report;   // "" = <out>/skipped.txt
  std::string command;      // recorded in the manifest
  bool progress = true;
  bool progress_interactive = false;
};

struct PrepResult {
  Manifest manifest;
  std::vector<BadInput> skipped;  // with --skip-bad, in input order
  std::string report_path;        // where they were written ("" if none)
  std::string notes;              // human-readable notes (class-name choice, ignored files)
};

Status validate_options(const PrepOptions& o);
StatusOr<PrepResult> run_prep(const PrepOptions& o);

// "shard-00042.h5"
std::string shard_file_name(int64_t index);

}  // namespace sx::dataplane
