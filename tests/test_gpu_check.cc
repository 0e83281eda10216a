// launch/gpu-check on a machine without a GPU (every machine here): it stops at once, before any
// build, with exit 2 and one line that says what is missing and what it expected.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "model/cuda/cuda_backend.h"
#include "tests/test_train_util.h"

namespace sx::worker::testing {
namespace {

TEST(GpuCheck, FailsFastWithOneLineWithoutAGpu) {
  auto count = model::cuda_device_count();
  if (count.is_ok() && count.value() > 0) GTEST_SKIP() << "a GPU is visible: run launch/gpu-check itself";
  const fs::path dir = temp_dir("gpu_check");
  const fs::path script = fs::path(SX_TESTS_DIR) / ".." / "launch" / "gpu-check";
  const fs::path log = dir / "gpu-check.log";
  const std::string build = (dir / "build-gpu").string();
  setenv("BUILD_DIR", build.c_str(), 1);
  EXPECT_EQ(wait_exit(spawn({script.string(), (dir / "out.json").string()}, log)), 2);
  unsetenv("BUILD_DIR");
  std::istringstream in(read_text(log));
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  ASSERT_EQ(lines.size(), 1u) << read_text(log);
  EXPECT_EQ(lines[0].rfind("launch/gpu-check: no GPU", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("expected an NVIDIA GPU"), std::string::npos) << lines[0];
  EXPECT_FALSE(fs::exists(build)) << "nothing is built without a GPU";
  EXPECT_FALSE(fs::exists(dir / "out.json"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sx::worker::testing
