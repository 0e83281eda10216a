// sx_bench: one binary, one subcommand per benchmark (bench/bench_<name>.cc). Turns the chosen
// subcommand's Status into a message on stderr and an exit code.
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/subcommands.h"

int main(int argc, char** argv) {
  CLI::App app{"sx_bench: benchmarks of sxtrain, each comparable with a peer (see bench/README.md)"};
  app.require_subcommand(1);
  std::vector<sx::bench::Subcommand> commands = {
      sx::bench::add_model_command(app),
      sx::bench::add_allreduce_command(app),
      sx::bench::add_data_command(app),
      sx::bench::add_scaling_command(app),
      sx::bench::add_roofline_command(app),
  };
  CLI11_PARSE(app, argc, argv);

  for (const auto& command : commands) {
    if (!command.app->parsed()) continue;
    sx::Status status = command.run();
    if (!status.is_ok()) {
      std::fprintf(stderr, "sx_bench %s: %s\n", command.app->get_name().c_str(), status.to_string().c_str());
      return 1;
    }
    return 0;
  }
  return 2;  // unreachable: require_subcommand(1)
}
