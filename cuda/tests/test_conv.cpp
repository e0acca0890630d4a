// Host tests of the CUDA conv and pool plans (cuda/src/conv_plan.h): path choice, im2col
// chunking under the scratch bound, the GEMM calls of a chunk, and the kernels' index maths
// emulated on the CPU (im2col + naive strided-batched GEMMs, the direct kernel, the pool
// window walk) against the ops' reference kernels on odd shapes.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/src/conv_plan.h"
#include "doctest/doctest.h"
#include "kernels/generic/conv_f32.h"
#include "ops/pool_geom.h"

using namespace ember;
using namespace ember::cuda;

namespace {

struct ConvCase {
  Shape x, w;
  int64_t group = 1;
  std::vector<int64_t> strides, dilations, pads;
  std::string auto_pad;
  bool bias = true;
};

Node conv_node(const ConvCase& c) {
  Node n;
  n.op = OpType::Conv;
  n.name = "conv";
  if (c.group != 1) n.attrs.set("group", c.group);
  if (!c.strides.empty()) n.attrs.set("strides", c.strides);
  if (!c.dilations.empty()) n.attrs.set("dilations", c.dilations);
  if (!c.pads.empty()) n.attrs.set("pads", c.pads);
  if (!c.auto_pad.empty()) n.attrs.set("auto_pad", c.auto_pad);
  return n;
}

Conv2d conv2d_of(const ConvCase& c) {
  Node n = conv_node(c);
  InferCtx ctx{n, {{DType::F32, c.x}, {DType::F32, c.w}}, {}};
  Conv2d g;
  REQUIRE(conv2d_from(conv_geom(ctx, c.x, c.w, false), &g));
  return g;
}

Tensor random_tensor(const Shape& s, std::mt19937& gen) {
  Tensor t = Tensor::empty(DType::F32, s);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = dist(gen);
  return t;
}

// What conv_cuda launches, on the CPU: bias fill, then per chunk im2col and the GEMM calls.
void emulate_conv(const Conv2d& g, const ConvPlan& plan, const float* x, const float* w,
                  const float* bias, float* y) {
  int64_t P = g.P();
  bool i32 = conv_fits_int32(g);  // the index type the kernels pick
  if (plan.path == ConvPath::Empty) return;
  if (plan.path == ConvPath::Direct) {
    for (int64_t n = 0, i = 0; n < g.N; n++)
      for (int64_t m = 0; m < g.M; m++)
        for (int64_t oy = 0; oy < g.OH; oy++)
          for (int64_t ox = 0; ox < g.OW; ox++, i++)
            y[i] = (i32 ? conv_direct_one<int>(g, x, w, (int)n, (int)m, (int)oy, (int)ox)
                        : conv_direct_one<int64_t>(g, x, w, n, m, oy, ox)) +
                   (bias ? bias[m] : 0.0f);
    return;
  }
  for (int64_t i = 0; i < g.N * g.M * P; i++) y[i] = bias ? bias[(i / P) % g.M] : 0.0f;
  if (plan.path == ConvPath::Fill) return;
  std::vector<float> cols(plan.cols_elems);
  for (int64_t n0 = 0; n0 < g.N; n0 += plan.nb) {
    for (int64_t p0 = 0; p0 < P; p0 += plan.pc) {
      int64_t nb = std::min(plan.nb, g.N - n0), pc = std::min(plan.pc, P - p0);
      const float* b = x;
      if (plan.path == ConvPath::Im2col) {
        int64_t n = nb * g.rows() * pc;
        REQUIRE(n <= plan.cols_elems);
        for (int64_t i = 0; i < n; i++) {
          int64_t s = i32 ? im2col_source<int>(g, (int)n0, (int)p0, (int)pc, (int)i)
                          : im2col_source<int64_t>(g, n0, p0, pc, i);
          cols[i] = s >= 0 ? x[s] : 0.0f;
        }
        b = cols.data();
      } else {
        REQUIRE((n0 == 0 && nb == g.N && pc == P));
      }
      for (const ConvGemmCall& c : conv_gemm_calls(g, n0, nb, p0, pc))
        for (int64_t bi = 0; bi < c.batch; bi++) {
          const float* A = w + c.a_off + bi * c.stride_a;
          const float* B = b + c.b_off + bi * c.stride_b;
          float* D = y + c.d_off + bi * c.stride_d;
          for (int64_t i = 0; i < c.m; i++)
            for (int64_t j = 0; j < c.n; j++) {
              float acc = 0;
              for (int64_t k = 0; k < c.k; k++) acc += A[i * c.k + k] * B[k * c.ldb + j];
              D[i * c.ldd + j] += acc;
            }
        }
    }
  }
}

// The reference's Y and the emulated plan's Y agree, at the default and at a small budget.
void check_conv(const ConvCase& c, int64_t cols_bytes, ConvPath want_path) {
  std::mt19937 gen(1234);
  Node n = conv_node(c);
  InferCtx ic{n, {{DType::F32, c.x}, {DType::F32, c.w}}, {}};
  int64_t M = c.w[0];
  if (c.bias) ic.in.push_back({DType::F32, {M}});
  std::vector<TensorType> out = op_infer(ic);
  Tensor x = random_tensor(c.x, gen), w = random_tensor(c.w, gen), b = random_tensor({M}, gen);
  Tensor want = Tensor::empty(DType::F32, out[0].shape);
  std::vector<const Tensor*> ins = {&x, &w};
  if (c.bias) ins.push_back(&b);
  KernelCtx kc{n, ins, {&want}};
  op_def(OpType::Conv).reference(kc);

  Conv2d g = conv2d_of(c);
  ConvPlan plan;
  REQUIRE(conv_plan(g, cols_bytes, &plan));
  CHECK(plan.path == want_path);
  Tensor got = Tensor::empty(DType::F32, out[0].shape);
  for (int64_t i = 0; i < got.numel(); i++) got.ptr<float>()[i] = 12345.0f;
  emulate_conv(g, plan, x.ptr<float>(), w.ptr<float>(), c.bias ? b.ptr<float>() : nullptr,
               got.ptr<float>());
  // fp32 sums in another order than the reference's double ones.
  float tol = 1e-5f * std::sqrt((float)std::max<int64_t>(g.kg(), 1)) + 1e-6f;
  for (int64_t i = 0; i < want.numel(); i++) {
    CAPTURE(i);
    REQUIRE(std::fabs(got.ptr<float>()[i] - want.ptr<float>()[i]) <= tol);
  }
}

}  // namespace

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
  int64_t big = kConvColsBytes;
  // 3x3 pad 1 on a 7x9 image, batch 3; then a budget of one image, and of 256-pixel chunks.
  ConvCase base{{3, 5, 7, 9}, {6, 5, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};
  check_conv(base, big, ConvPath::Im2col);
  check_conv(base, 5 * 9 * 63 * 4, ConvPath::Im2col);
  ConvCase wide{{2, 3, 17, 31}, {4, 3, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};  // 527 pixels
  check_conv(wide, 3 * 9 * 4 * 300, ConvPath::Im2col);                  // chunks of 256 pixels
  check_conv({{1, 5, 7, 9}, {6, 5, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", false}, big,
             ConvPath::Im2col);                                         // stride 2, no bias
  check_conv({{3, 4, 9, 11}, {5, 4, 3, 3}, 1, {1, 1}, {2, 2}, {2, 1, 0, 3}}, big,
             ConvPath::Im2col);                                         // dilation 2, odd pads
  check_conv({{2, 4, 7, 9}, {5, 4, 2, 4}, 1, {2, 3}, {}, {}, "SAME_UPPER"}, big, ConvPath::Im2col);
  check_conv({{2, 4, 7, 9}, {5, 4, 3, 2}, 1, {2, 1}, {}, {}, "SAME_LOWER"}, big, ConvPath::Im2col);
  check_conv({{2, 4, 7, 9}, {5, 4, 3, 3}, 1, {}, {}, {}, "VALID"}, big, ConvPath::Im2col);
  check_conv({{3, 8, 7, 9}, {6, 8, 1, 1}}, big, ConvPath::Gemm1x1);
  check_conv({{3, 8, 7, 9}, {8, 2, 1, 1}, 4, {}, {}, {}, "", false}, big, ConvPath::Gemm1x1);
  check_conv({{3, 8, 7, 9}, {12, 2, 3, 3}, 4, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Im2col);
  check_conv({{6, 8, 7, 9}, {12, 4, 3, 3}, 2, {2, 1}, {}, {0, 1, 1, 0}}, big, ConvPath::Im2col);
  check_conv({{6, 8, 7, 9}, {12, 4, 3, 3}, 2, {}, {}, {1, 1, 1, 1}}, 72 * 63 * 4 * 4,
             ConvPath::Im2col);                                         // 4 + 2 images
  check_conv({{3, 8, 7, 9}, {8, 1, 3, 3}, 8, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Direct);
  check_conv({{2, 6, 7, 9}, {12, 1, 5, 3}, 6, {2, 1}, {1, 2}, {2, 1, 2, 1}}, big, ConvPath::Direct);
  check_conv({{2, 1, 7, 9}, {4, 1, 3, 3}, 1, {}, {}, {}, "", false}, big, ConvPath::Direct);
  check_conv({{3, 4, 13}, {6, 4, 3}, 1, {2}, {}, {1, 1}}, big, ConvPath::Im2col);  // 1-D
  check_conv({{3, 4, 13}, {4, 1, 3}, 4, {}, {}, {1, 1}}, big, ConvPath::Direct);   // 1-D depthwise
  check_conv({{2, 0, 7, 9}, {5, 0, 3, 3}, 1, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Fill);
  check_conv({{1, 3, 1, 1}, {2, 3, 1, 1}}, big, ConvPath::Gemm1x1);
}

namespace {

Node pool_node(OpType op, std::vector<int64_t> k, std::vector<int64_t> s, std::vector<int64_t> pads,
               std::vector<int64_t> d, bool ceil_mode, bool include_pad, const std::string& ap) {
  Node n;
  n.op = op;
  n.name = "pool";
  n.outputs = {0};
  n.attrs.set("kernel_shape", k);
  if (!s.empty()) n.attrs.set("strides", s);
  if (!pads.empty()) n.attrs.set("pads", pads);
  if (!d.empty()) n.attrs.set("dilations", d);
  if (ceil_mode) n.attrs.set("ceil_mode", int64_t(1));
  if (include_pad) n.attrs.set("count_include_pad", int64_t(1));
  if (!ap.empty()) n.attrs.set("auto_pad", ap);
  return n;
}

void check_pool(const Node& n, const Shape& xs, bool with_nan) {
  std::mt19937 gen(99);
  Tensor x = random_tensor(xs, gen);
  if (with_nan)
    for (int64_t i = 0; i < x.numel(); i += 7) x.ptr<float>()[i] = NAN;
  InferCtx ic{n, {{DType::F32, xs}}, {nullptr}};
  std::vector<TensorType> out = op_infer(ic);
  Tensor want = Tensor::empty(DType::F32, out[0].shape);
  KernelCtx kc{n, {&x}, {&want}};
  op_def(n.op).reference(kc);

  Pool2d p;
  bool include_pad = n.attrs.get_int("count_include_pad", 0) != 0;
  REQUIRE(pool2d_from(pool_geom(ic, xs), xs[0], xs[1], n.op == OpType::MaxPool, include_pad, &p));
  REQUIRE(p.planes * p.OH * p.OW == want.numel());
  for (int64_t i = 0; i < want.numel(); i++) {
    int64_t ox = i % p.OW, oy = i / p.OW % p.OH, plane = i / (p.OW * p.OH);
    float got = pool_one(p, x.ptr<float>() + plane * p.H * p.W, oy, ox);
    float w = want.ptr<float>()[i];
    CAPTURE(i);
    if (std::isnan(w)) REQUIRE(std::isnan(got));
    else REQUIRE(got == doctest::Approx(w).epsilon(1e-6));
  }
}

}  // namespace

TEST_CASE("pool_one: the kernels' window walk matches the reference") {
  const bool ceil_on = true, ceil_off = false, incl = true, excl = false;
  for (OpType op : {OpType::MaxPool, OpType::AveragePool}) {
    CAPTURE(op_name(op));
    for (bool nan : {false, true}) {
      auto check = [&](Node n, const Shape& xs) { check_pool(n, xs, nan); };
      check(pool_node(op, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, ceil_off, excl, ""), {2, 3, 7, 9});
      check(pool_node(op, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, ceil_on, excl, ""), {2, 3, 8, 10});
      check(pool_node(op, {2, 3}, {3, 2}, {0, 1, 2, 2}, {2, 1}, ceil_on, excl, ""), {1, 2, 9, 11});
      check(pool_node(op, {3, 2}, {1, 1}, {}, {}, ceil_off, excl, "SAME_UPPER"), {2, 2, 7, 9});
      check(pool_node(op, {3, 2}, {2, 2}, {}, {}, ceil_off, excl, "SAME_LOWER"), {2, 2, 7, 9});
      check(pool_node(op, {5}, {2}, {2, 2}, {}, ceil_on, excl, ""), {2, 3, 13});  // 1-D
      check(pool_node(op, {1, 1}, {2, 2}, {}, {}, ceil_off, excl, ""), {1, 2, 7, 9});
      check(pool_node(op, {7, 9}, {}, {}, {}, ceil_off, excl, ""), {1, 2, 7, 9});
    }
  }
  // AveragePool's divisor counts the padding where asked (but not the ceil_mode overhang).
  for (bool mode : {ceil_off, ceil_on}) {
    OpType avg = OpType::AveragePool;
    check_pool(pool_node(avg, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, mode, incl, ""), {2, 3, 8, 10},
               false);
    check_pool(pool_node(avg, {4, 3}, {3, 2}, {2, 0, 1, 1}, {1, 2}, mode, incl, ""),
               {2, 3, 11, 10}, false);
  }
}

TEST_CASE("pool2d_from: 1-D and 2-D only") {
  Node n = pool_node(OpType::MaxPool, {2, 2, 2}, {}, {}, {}, false, false, "");
  Shape xs = {1, 2, 4, 4, 4};
  InferCtx ic{n, {{DType::F32, xs}}, {nullptr}};
  Pool2d p;
  CHECK_FALSE(pool2d_from(pool_geom(ic, xs), 1, 2, true, false, &p));
}
