// Flat allreduce: a single MPI_Allreduce per bucket; Open MPI's tuned component picks the
// algorithm (ring / recursive doubling / ...) by size, as it would for a plain MPI_Allreduce.
#include <algorithm>
#include <climits>

#include "worker/comm_reducer.h"
#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

class FlatReducer final : public Reducer {
 public:
  explicit FlatReducer(MPI_Comm comm) : comm_(comm) {}
  ~FlatReducer() override { free_comm(&comm_); }

  Status allreduce_sum(float* data, int64_t count) override {
    for (int64_t begin = 0; begin < count;) {
      const int n = static_cast<int>(std::min<int64_t>(count - begin, INT_MAX));
      SX_MPI(MPI_Allreduce(MPI_IN_PLACE, data + begin, n, MPI_FLOAT, MPI_SUM, comm_));
      begin += n;
    }
    return Status::ok();
  }
  const char* name() const override { return "flat"; }

 private:
  MPI_Comm comm_;
};

}  // namespace

void free_comm(MPI_Comm* comm) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (*comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(comm);
  *comm = MPI_COMM_NULL;
}

StatusOr<std::unique_ptr<Reducer>> make_flat_reducer(MPI_Comm world) {
  MPI_Comm comm = MPI_COMM_NULL;
  SX_MPI(MPI_Comm_dup(world, &comm));
  auto reducer = std::make_unique<FlatReducer>(comm);  // owns comm from here on
  SX_MPI(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return std::unique_ptr<Reducer>(std::move(reducer));
}

}  // namespace sx::worker
