// defines: sx::test::mpi_env() — the one MpiEnv of an MPI test process (MPI cannot be initialised
// twice), set up by mpi_test_main.cc before the tests run.
#pragma once

#include "worker/comm_env.h"

namespace sx::test {

worker::MpiEnv& mpi_env();

}  // namespace sx::test
