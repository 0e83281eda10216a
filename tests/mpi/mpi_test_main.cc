// main() of every tests/mpi executable: MPI up before the tests, GoogleTest's normal output on
// rank 0 only, other ranks print just their failures ("[rank r] ..."), and the exit code is
// non-zero on every rank when any rank had a failure, so mpirun and ctest see it.
#include <cstdio>
#include <memory>

#include <gtest/gtest.h>

#include "tests/mpi/mpi_test_env.h"

namespace sx::test {
namespace {

std::unique_ptr<worker::MpiEnv> g_env;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

worker::MpiEnv& mpi_env() { return *g_env; }

}  // namespace sx::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto env = sx::worker::MpiEnv::init(&argc, &argv);
  if (!env.is_ok()) {
    std::fprintf(stderr, "MPI init failed: %s\n", env.status().to_string().c_str());
    return 1;
  }
  sx::test::g_env = std::move(env).value();
  const int rank = sx::test::g_env->rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new sx::test::RankFailurePrinter(rank));
  }
  int64_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  if (!sx::test::g_env->allreduce_sum(std::span<int64_t>(&failed, 1)).is_ok()) failed = 1;
  if (rank == 0) std::printf("MPI world size %d: %lld rank(s) failed\n", sx::test::g_env->world_size(), static_cast<long long>(failed));
  sx::test::g_env.reset();  // MPI_Finalize
  return failed == 0 ? 0 : 1;
}
