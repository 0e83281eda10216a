#include <gtest/gtest.h>

#include "common/status.h"
#include "model/tensor.h"

namespace sx {
namespace {

Status fails_when_negative(int x) {
  SX_CHECK_ARG(x >= 0, "x must be non-negative");
  return Status::ok();
}

Status chain(int x) {
  SX_TRY(fails_when_negative(x));
  return Status::ok();
}

StatusOr<int> twice(int x) {
  SX_TRY(fails_when_negative(x));
  return 2 * x;
}

Status use_twice(int x, int* out) {
  SX_ASSIGN_OR_RETURN(*out, twice(x));
  return Status::ok();
}

TEST(Status, TryPropagatesTheFirstError) {
  EXPECT_TRUE(chain(1).is_ok());
  Status s = chain(-1);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("x must be non-negative"), std::string::npos);
  EXPECT_NE(s.message().find("x >= 0"), std::string::npos);
}

TEST(Status, AssignOrReturn) {
  int v = 0;
  EXPECT_TRUE(use_twice(4, &v).is_ok());
  EXPECT_EQ(v, 8);
  EXPECT_FALSE(use_twice(-4, &v).is_ok());
  EXPECT_EQ(v, 8);
}

TEST(Tensor, BlockedLayoutsPadChannels) {
  using model::Layout;
  EXPECT_EQ(model::padded_channels(3, Layout::kNChw16c), 16);
  EXPECT_EQ(model::padded_channels(32, Layout::kNChw16c), 32);
  EXPECT_EQ(model::padded_channels(3, Layout::kNCHW), 3);
  EXPECT_EQ(model::padded_count({2, 3, 4, 5}, Layout::kNChw8c), 2 * 8 * 4 * 5);
}

}  // namespace
}  // namespace sx
