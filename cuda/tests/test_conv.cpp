// Host tests of the CUDA conv and pool plans (cuda/src/conv_plan.h): path choice, im2col
// chunking under the scratch bound, the GEMM calls of a chunk, and the kernels' index maths
// emulated on the CPU (im2col + naive strided-batched GEMMs, the direct kernel, the pool
// window walk) against the ops' reference kernels on odd shapes.
#include <vector>

#include "cuda/tests/conv_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

TEST_CASE("conv_plan: path choice") {
  ConvPlan p;
  auto plan_of = [&](const ConvCase& c, int64_t bytes = kConvColsBytes) {
    REQUIRE(conv_plan(conv2d_of(c), bytes, &p));
    return p.path;
  };
  CHECK(plan_of({{2, 8, 7, 9}, {16, 8, 3, 3}, 1, {}, {}, {1, 1, 1, 1}}) == ConvPath::Im2col);
  CHECK(plan_of({{2, 8, 7, 9}, {16, 8, 1, 1}}) == ConvPath::Gemm1x1);
  CHECK(plan_of({{2, 8, 7, 9}, {16, 2, 1, 1}, 4}) == ConvPath::Gemm1x1);  // grouped 1x1
  // End pads grow the output of a 1x1 conv: im2col writes the zero columns.
  CHECK(plan_of({{2, 8, 7, 9}, {16, 8, 1, 1}, 1, {}, {}, {0, 0, 1, 1}}) == ConvPath::Im2col);
  CHECK(plan_of({{2, 8, 7, 9}, {16, 8, 1, 1}, 1, {2, 2}}) == ConvPath::Im2col);
  CHECK(plan_of({{2, 8, 7, 9}, {8, 1, 3, 3}, 8}) == ConvPath::Direct);    // depthwise
  CHECK(plan_of({{2, 8, 7, 9}, {16, 1, 3, 3}, 8}) == ConvPath::Direct);   // multiplier 2
  CHECK(plan_of({{2, 1, 7, 9}, {4, 1, 3, 3}}) == ConvPath::Direct);       // one input channel
  CHECK(plan_of({{0, 8, 7, 9}, {16, 8, 3, 3}}) == ConvPath::Empty);
  CHECK(plan_of({{2, 0, 7, 9}, {16, 0, 3, 3}}) == ConvPath::Fill);
  CHECK(plan_of({{2, 8, 9}, {16, 8, 3}}) == ConvPath::Im2col);            // 1-D

  // 3-D convs are not 2-D.
  ConvCase c3{{1, 2, 3, 4, 5}, {4, 2, 2, 2, 2}};
  Node n = conv_node(c3);
  InferCtx ctx{n, {{DType::F32, c3.x}, {DType::F32, c3.w}}, {}};
  Conv2d g;
  CHECK_FALSE(conv2d_from(conv_geom(ctx, c3.x, c3.w, false), &g));
}

TEST_CASE("conv_plan: im2col chunks stay under the scratch bound") {
  ConvCase c{{5, 8, 7, 9}, {16, 8, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};
  Conv2d g = conv2d_of(c);
  int64_t per_image = 8 * 9 * 63 * 4;
  ConvPlan p;
  REQUIRE(conv_plan(g, kConvColsBytes, &p));
  CHECK(p.nb == 5);
  CHECK(p.pc == 63);
  REQUIRE(conv_plan(g, 2 * per_image + 5, &p));
  CHECK(p.nb == 2);
  CHECK(p.pc == 63);
  CHECK(p.cols_elems * 4 <= 2 * per_image + 5);
  CHECK(p.gemm_calls == 3);  // chunks of 2, 2, 1 images, one group
  // Less than an image: pixel chunks of one image, but none narrower than kConvMinPixelChunk.
  ConvCase big{{1, 64, 40, 40}, {8, 64, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};
  Conv2d gb = conv2d_of(big);
  int64_t rows_bytes = 64 * 9 * 4;
  REQUIRE(conv_plan(gb, rows_bytes * 700, &p));
  CHECK(p.nb == 1);
  CHECK(p.pc == 640);
  CHECK(p.gemm_calls == 3);  // 1600 pixels
  CHECK(p.cols_elems * 4 <= rows_bytes * 700);
  CHECK_FALSE(conv_plan(gb, rows_bytes * 100, &p));
}

TEST_CASE("conv_fits_int32: 32-bit kernel maths only where every index fits") {
  CHECK(conv_fits_int32(conv2d_of({{2, 64, 56, 56}, {64, 64, 3, 3}, 1, {}, {}, {1, 1, 1, 1}})));
  // A dilation whose window reaches past 2^31 on a tiny, hugely padded input.
  int64_t big = int64_t(1) << 30;
  ConvCase far{{1, 2, 1, 1}, {2, 2, 3, 1}, 1, {}, {big, 1}, {big, 0, big, 0}};
  Conv2d g = conv2d_of(far);
  CHECK(g.OH == 1);
  CHECK_FALSE(conv_fits_int32(g));
  CHECK_FALSE(conv_fits_int32(conv2d_of({{1, 1, 50000, 50000}, {1, 1, 1, 1}})));
}

TEST_CASE("conv_gemm_calls: per group or per image, whichever makes fewer calls") {
  ConvCase c{{3, 8, 7, 9}, {12, 2, 3, 3}, 4, {}, {}, {1, 1, 1, 1}};
  Conv2d g = conv2d_of(c);  // mg 3, kg 18, rows 72, P 63
  std::vector<ConvGemmCall> calls = conv_gemm_calls(g, 0, 3, 0, 63);
  REQUIRE(calls.size() == 3);  // 3 images < 4 groups: one call per image
  CHECK(calls[1].batch == 4);
  CHECK(calls[1].stride_a == 3 * 18);
  CHECK(calls[1].b_off == 72 * 63);
  CHECK(calls[1].stride_b == 18 * 63);
  CHECK(calls[1].d_off == 12 * 63);
  CHECK(calls[1].stride_d == 3 * 63);
  calls = conv_gemm_calls(g, 1, 2, 0, 63);
  REQUIRE(calls.size() == 2);
  CHECK(calls[0].d_off == 12 * 63);
  ConvCase c2{{6, 8, 7, 9}, {12, 4, 3, 3}, 2, {}, {}, {1, 1, 1, 1}};
  Conv2d g2 = conv2d_of(c2);  // mg 6, kg 36, rows 72
  calls = conv_gemm_calls(g2, 0, 6, 0, 63);
  REQUIRE(calls.size() == 2);  // 2 groups < 6 images: one call per group
  CHECK(calls[1].batch == 6);
  CHECK(calls[1].stride_a == 0);
  CHECK(calls[1].a_off == 6 * 36);
  CHECK(calls[1].b_off == 36 * 63);
  CHECK(calls[1].stride_b == 72 * 63);
  CHECK(calls[1].d_off == 6 * 63);
  CHECK(calls[1].stride_d == 12 * 63);
  // A pixel chunk writes into the middle of each Y row (ld P).
  calls = conv_gemm_calls(g2, 4, 1, 10, 20);
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].n == 20);
  CHECK(calls[0].ldb == 20);
  CHECK(calls[0].ldd == 63);
  CHECK(calls[0].d_off == 4 * 12 * 63 + 10);
}

TEST_CASE("conv emulation: im2col + GEMM calls and the direct kernel match the reference") {
  check_conv_runs(conv_host_steps());
}

TEST_CASE("pool_one: the kernels' window walk matches the reference") {
  for_each_pool_case([](const Node& n, const Shape& xs, bool with_nan) {
    PoolRun r = pool_run(n, xs, with_nan);
    std::vector<float> got(r.want.numel());
    for (int64_t i = 0; i < r.want.numel(); i++) {
      int64_t ox = i % r.p.OW, oy = i / r.p.OW % r.p.OH, plane = i / (r.p.OW * r.p.OH);
      got[i] = pool_one(r.p, r.x.ptr<float>() + plane * r.p.H * r.p.W, oy, ox);
    }
    check_pool_out(r.want, got.data());
  });
}

TEST_CASE("pool2d_from: 1-D and 2-D only") {
  Node n = pool_node(OpType::MaxPool, {2, 2, 2}, {}, {}, {}, false, false, "");
  Shape xs = {1, 2, 4, 4, 4};
  InferCtx ic{n, {{DType::F32, xs}}, {nullptr}};
  Pool2d p;
  CHECK_FALSE(pool2d_from(pool_geom(ic, xs), 1, 2, true, false, &p));
}
