// sx_worker -c job.yaml [-o key=value ...] [--print-config]
// One process of a data-parallel job: started by `mpirun -np N`, or alone (MPI singleton, world 1).
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/guard.h"
#include "worker/comm_env.h"
#include "worker/config.h"
#include "worker/shared_storage.h"
#include "worker/train.h"

static int worker_main(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  CLI::App app{"sx_worker: one rank of a data-parallel SE-ResNeXt training job (run it under mpirun, or alone)"};
  app.add_option("-c,--config", config_path, "job YAML (cluster-configs/*.yaml)");
  app.add_option("-o,--override", overrides, "key=value, e.g. -o optimizer.lr=0.05 -o resume=auto (repeatable)");
  app.add_flag("--print-config", print_config, "print the merged config (YAML) and exit");
  app.footer(
      "\nShortcuts: -o resume=auto|none|PATH, -o mode=train|eval, -o pretrained=PATH, -o checkpoint=PATH "
      "(= checkpoint.load)\n\nConfig keys (YAML sections; dotted for -o):\n" +
      sx::worker::job_config_help());
  CLI11_PARSE(app, argc, argv);

  auto config = sx::worker::load_job_config(config_path, overrides);
  if (!config.is_ok()) {
    std::fprintf(stderr, "sx_worker: %s\n", config.status().message().c_str());
    return 2;
  }
  if (print_config) {
    std::fputs(sx::worker::job_config_to_yaml(config.value()).c_str(), stdout);
    return 0;
  }
  auto env = sx::worker::MpiEnv::init(&argc, &argv);
  if (!env.is_ok()) {
    std::fprintf(stderr, "sx_worker: MPI: %s\n", env.status().message().c_str());
    return 1;
  }
  // An exception (std::bad_alloc above all) ends this rank like an error does, with MPI_Abort below.
  sx::Status st = sx::guarded("sx_worker", [&] { return sx::worker::run_job(config.value(), *env.value()); });
  if (!st.is_ok()) {
    if (env.value()->failed_together()) {  // every rank knows: one message, no abort
      if (env.value()->is_root()) std::fprintf(stderr, "sx_worker: %s\n", st.to_string().c_str());
      return 1;
    }
    std::fprintf(stderr, "sx_worker [rank %d on %s]: %s\n", env.value()->rank(), sx::worker::host_name().c_str(),
                 st.to_string().c_str());
    // A failure on one rank would leave the others blocked in a collective: end the whole job.
    if (env.value()->world_size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return sx::guarded_main("sx_worker", [&] { return worker_main(argc, argv); });
}
