#include "worker/comm_env.h"

#include <algorithm>
#include <climits>
#include <string>

#include "worker/mpi_util.h"

namespace sx::worker {
namespace {

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "unknown thread level";
  }
}

// MPI counts are int: large buffers go in INT_MAX-sized pieces.
template <typename T, typename Call>
Status for_each_chunk(std::span<T> data, Call&& call) {
  for (size_t begin = 0; begin < data.size();) {
    const size_t n = std::min<size_t>(data.size() - begin, INT_MAX);
    SX_TRY(call(data.data() + begin, static_cast<int>(n)));
    begin += n;
  }
  return Status::ok();
}

template <typename T>
Status allreduce_in_place(MPI_Comm comm, std::span<T> values, MPI_Op op) {
  return for_each_chunk(values, [&](T* p, int n) -> Status {
    SX_MPI(MPI_Allreduce(MPI_IN_PLACE, p, n, mpi_type<T>(), op, comm));
    return Status::ok();
  });
}

}  // namespace

StatusOr<std::unique_ptr<MpiEnv>> MpiEnv::init(int* argc, char*** argv, const MpiEnvOptions& options) {
  std::unique_ptr<MpiEnv> env(new MpiEnv());
  int initialized = 0;
  SX_MPI(MPI_Initialized(&initialized));
  if (initialized) {
    SX_MPI(MPI_Query_thread(&env->thread_level_));
  } else {
    SX_MPI(MPI_Init_thread(argc, argv, options.thread_level, &env->thread_level_));
    env->owns_mpi_ = true;
  }
  if (env->thread_level_ < options.thread_level)
    return Status::unavailable(std::string("MPI provides ") + thread_level_name(env->thread_level_) + ", we need " +
                               thread_level_name(options.thread_level) +
                               ". HINT: use an MPI built with thread support (Open MPI: --enable-mpi-thread-multiple)");

  SX_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &env->world_));
  SX_MPI(MPI_Comm_set_errhandler(env->world_, MPI_ERRORS_RETURN));
  SX_MPI(MPI_Comm_rank(env->world_, &env->rank_));
  SX_MPI(MPI_Comm_size(env->world_, &env->world_size_));

  MPI_Comm node = MPI_COMM_NULL;
  SX_MPI(MPI_Comm_split_type(env->world_, MPI_COMM_TYPE_SHARED, env->rank_, MPI_INFO_NULL, &node));
  SX_MPI(MPI_Comm_rank(node, &env->local_rank_));
  SX_MPI(MPI_Comm_size(node, &env->local_size_));
  SX_MPI(MPI_Comm_free(&node));
  int64_t leaders = env->local_rank_ == 0 ? 1 : 0;
  SX_TRY(env->allreduce_sum(std::span<int64_t>(&leaders, 1)));
  env->node_count_ = static_cast<int>(leaders);
  return env;
}

MpiEnv::~MpiEnv() {
  if (world_ != MPI_COMM_NULL) MPI_Comm_free(&world_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

Status MpiEnv::bcast(std::span<float> data, int root) {
  SX_CHECK_ARG(root >= 0 && root < world_size_, "bcast root must be a rank of the job");
  return for_each_chunk(data, [&](float* p, int n) -> Status {
    SX_MPI(MPI_Bcast(p, n, MPI_FLOAT, root, world_));
    return Status::ok();
  });
}

Status MpiEnv::allreduce_sum(std::span<int64_t> values) { return allreduce_in_place(world_, values, MPI_SUM); }
Status MpiEnv::allreduce_sum(std::span<double> values) { return allreduce_in_place(world_, values, MPI_SUM); }
Status MpiEnv::allreduce_max(std::span<double> values) { return allreduce_in_place(world_, values, MPI_MAX); }

Status MpiEnv::barrier() {
  SX_MPI(MPI_Barrier(world_));
  return Status::ok();
}

}  // namespace sx::worker
