#include "worker/mpi_util.h"

namespace sx::worker {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

Status mpi_status(int code, const char* expr, const char* file, int line) {
  return Status::internal(std::string(expr) + " failed at " + file + ":" + std::to_string(line) + ": " +
                          mpi_error_string(code));
}

}  // namespace sx::worker
