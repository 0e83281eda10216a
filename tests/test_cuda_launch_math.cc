// The CUDA kernels' index and launch-geometry arithmetic (model/cuda/launch_math.h), checked on the
// host against direct loops: the kernels call these very functions, so a GPU is not needed to prove them.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "model/cuda/launch_math.h"

namespace sx::model::cuda {
namespace {

TEST(CudaLaunchMath, TransposeMapsAreInversePermutations) {
  for (auto [n, c, hw] : {std::array<int64_t, 3>{2, 3, 5}, {1, 64, 49}, {3, 1, 7}, {2, 7, 1}}) {
    const int64_t count = n * c * hw;
    std::vector<int> seen(size_t(count), 0);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t j = nchw_of_nhwc(i, c, hw);
      ASSERT_GE(j, 0);
      ASSERT_LT(j, count);
      ++seen[size_t(j)];
      EXPECT_EQ(nhwc_of_nchw(j, c, hw), i);
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
    // Against the nested loops that define the layouts.
    for (int64_t in = 0; in < n; ++in)
      for (int64_t ic = 0; ic < c; ++ic)
        for (int64_t p = 0; p < hw; ++p) {
          const int64_t nhwc = (in * hw + p) * c + ic, nchw = (in * c + ic) * hw + p;
          EXPECT_EQ(nhwc_offset(in, ic, p, c, hw), nhwc);
          EXPECT_EQ(nchw_offset(in, ic, p, c, hw), nchw);
          EXPECT_EQ(nchw_of_nhwc(nhwc, c, hw), nchw);
        }
  }
}

TEST(CudaLaunchMath, WeightsChannelsLastMatchesTheNestedLoops) {
  const int64_t oc = 6, cg = 4, kh = 3, kw = 3, khw = kh * kw;
  for (int64_t k = 0; k < oc; ++k)
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t r = 0; r < kh; ++r)
        for (int64_t s = 0; s < kw; ++s) {
          const int64_t kcrs = ((k * cg + c) * kh + r) * kw + s, krsc = ((k * kh + r) * kw + s) * cg + c;
          EXPECT_EQ(krsc_of_kcrs(kcrs, cg, khw), krsc);
        }
  // 1x1: the two layouts coincide.
  for (int64_t i = 0; i < 64 * 32; ++i) EXPECT_EQ(krsc_of_kcrs(i, 32, 1), i);
}

TEST(CudaLaunchMath, GridCoversEveryItemWithinTheCap) {
  for (int64_t count : {int64_t(1), int64_t(255), int64_t(256), int64_t(257), int64_t(1) << 20, int64_t(3) << 30}) {
    for (int sm : {0, 1, 108, 132}) {
      const Grid1d g = grid_1d(count, sm);
      EXPECT_GE(g.blocks, 1);
      EXPECT_LE(int64_t(g.blocks), int64_t(std::max(sm, 1)) * 8);
      // A grid-stride loop covers everything whatever the grid; without the cap one pass would do.
      if (int64_t(std::max(sm, 1)) * 8 * 256 >= count) {
        EXPECT_GE(int64_t(g.blocks) * g.threads, count);
      }
    }
  }
  EXPECT_EQ(grid_1d(0, 108).blocks, 1);
}

TEST(CudaLaunchMath, SegmentOfFindsTheOwnerIncludingAfterEmptySegments) {
  const std::vector<int64_t> counts = {3, 0, 5, 1, 0, 0, 4};
  std::vector<int64_t> start(counts.size() + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), start.begin() + 1);
  int64_t j = 0;
  for (int s = 0; s < int(counts.size()); ++s)
    for (int64_t k = 0; k < counts[size_t(s)]; ++k, ++j) EXPECT_EQ(segment_of(start.data(), int(counts.size()), j), s);
  EXPECT_EQ(j, start.back());
}

}  // namespace
}  // namespace sx::model::cuda
