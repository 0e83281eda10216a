// defines: SX_MPI(expr) — turns an MPI return code into a sx::Status naming the call, file and
// line; mpi_error_string; MPI datatype for a C++ type (mpi_type<T>()).
// Include MPI through this header. Every communicator we create is set to MPI_ERRORS_RETURN, so failures come back here instead of
// aborting the job inside Open MPI.
#pragma once

#include <cstdint>
#include <string>

// Open MPI's (deprecated) C++ bindings would need libmpi_cxx at link time; we use the C API only.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "common/status.h"

namespace sx::worker {

// "MPI_ERR_TRUNCATE: message truncated" for an MPI error code.
std::string mpi_error_string(int code);

// Status for a failed MPI call: "MPI_Allreduce(...) failed at worker/comm_flat.cc:31: MPI_ERR_..."
Status mpi_status(int code, const char* expr, const char* file, int line);

template <typename T> MPI_Datatype mpi_type();
template <> inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <> inline MPI_Datatype mpi_type<int32_t>() { return MPI_INT32_T; }
template <> inline MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }
template <> inline MPI_Datatype mpi_type<uint64_t>() { return MPI_UINT64_T; }

}  // namespace sx::worker

// SX_MPI(MPI_Barrier(comm)); — returns the Status from the enclosing function on failure.
#define SX_MPI(expr)                                                                 \
  do {                                                                               \
    int sx_mpi_rc_ = (expr);                                                         \
    if (sx_mpi_rc_ != MPI_SUCCESS)                                                   \
      return ::sx::worker::mpi_status(sx_mpi_rc_, #expr, __FILE__, __LINE__);        \
  } while (0)
