// Launch shapes of the CUDA AddNorm kernels (cuda/kernels/add_norm.h): walking the cached
// kernel's element assignment (j = lane + k * threads, k < kAddNormPerThread) on the CPU, every
// column of a row is visited exactly once and the block is a whole number of warps.
#include <vector>

#include "cuda/kernels/add_norm.h"
#include "doctest/doctest.h"

using namespace ember::cuda;

TEST_CASE("add_norm_launch: cached rows are covered once by whole warps") {
  for (int64_t cols : {1, 2, 7, 31, 32, 33, 255, 256, 257, 768, 769, 1024, 4096, 5125, 8191, 8192}) {
    CAPTURE(cols);
    const AddNormLaunch l = add_norm_launch(cols);
    REQUIRE(l.cached);
    CHECK(l.threads % 32 == 0);
    CHECK(l.threads >= 32);
    CHECK(l.threads <= 1024);
    CHECK(l.warp == (cols <= 32 * kAddNormPerThread));
    if (l.warp) CHECK(l.threads == 32);
    std::vector<int> seen(cols, 0);
    for (int lane = 0; lane < l.threads; lane++)
      for (int k = 0; k < kAddNormPerThread; k++) {
        const int64_t j = lane + (int64_t)k * l.threads;
        if (j < cols) seen[j]++;
      }
    for (int64_t j = 0; j < cols; j++) REQUIRE(seen[j] == 1);
  }
}

TEST_CASE("add_norm_launch: a block per row, without the register cache, past 8192 columns") {
  for (int64_t cols : {int64_t(8193), int64_t(16384), int64_t(100000), int64_t(1) << 33}) {
    CAPTURE(cols);
    const AddNormLaunch l = add_norm_launch(cols);
    CHECK_FALSE(l.cached);
    CHECK_FALSE(l.warp);
    CHECK(l.threads == 1024);
  }
}

TEST_CASE("add_norm_launch: blocks stay small for rows just past a warp's share") {
  // 257 columns: 33 threads' worth, rounded up to two warps, not a full 1024-thread block.
  CHECK(add_norm_launch(257).threads == 64);
  CHECK(add_norm_launch(768).threads == 96);
  CHECK(add_norm_launch(4096).threads == 512);
  CHECK(add_norm_launch(8192).threads == 1024);
}
