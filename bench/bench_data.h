// defines: sx::bench::DataBenchOptions, run_data_bench, add_data_command — `sx_bench data`:
// throughput and CPU cost per image of the dataplane reader (decode + augment + batch) on a dataset
// made by sx_prep. Peer: bench/compare_data.py (torchvision ImageFolder + RandomResizedCrop + flip +
// ToTensor + Normalize on the same JPEG bytes).
// To register: add `sx::bench::add_data_command(app),` to the list in sx_bench.cc.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "bench/subcommands.h"
#include "common/status.h"

namespace sx::bench {

struct DataBenchOptions {
  std::string dataset;         // directory with manifest.json (--dataset), or the manifest.json itself (--manifest)
  std::string mode = "train";  // train | eval | small_train | small_eval
  int threads = 1;             // reader threads
  int batch = 32;              // per-rank batch
  int image = 224;             // output H = W
  int prefetch = 2;
  int repeats = 3;             // timed epochs (median reported)
  int max_batches = 0;         // per epoch; 0 = whole epoch
  std::string layout = "nchw";
  bool no_reduced_decode = false;
  uint64_t seed = 1;
  bool json = false;
};

Status run_data_bench(const DataBenchOptions& options);
Subcommand add_data_command(CLI::App& parent);

}  // namespace sx::bench
