// defines: the sx_bench subcommands. Each lives in its own bench/bench_<name>.cc and registers its
// options on the parent app; main (sx_bench.cc) runs the one the user chose.
// Adding a subcommand: write bench/bench_<name>.cc with add_<name>_command, declare it here, and
// add one line to the list in sx_bench.cc.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace sx::bench {

struct Subcommand {
  CLI::App* app = nullptr;        // owned by the parent app; app->parsed() says it was chosen
  std::function<Status()> run;    // prints its own results to stdout
};

Subcommand add_model_command(CLI::App& parent);  // bench_model.cc: one model's step/forward time
Subcommand add_allreduce_command(CLI::App& parent);  // bench_allreduce.cc: our allreduce vs MPI_Allreduce (mpirun)
Subcommand add_data_command(CLI::App& parent);  // bench_data.cc: reader images/s vs torchvision (compare_data.py)
Subcommand add_scaling_command(CLI::App& parent);
Subcommand add_roofline_command(CLI::App& parent);  // bench_roofline.cc: per-layer FLOPs/bytes, A100/H100 projection  // bench_scaling.cc: train img/s under mpirun (scaling.py: np=1 vs np=2)

}  // namespace sx::bench
