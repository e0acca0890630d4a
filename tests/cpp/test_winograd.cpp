// WinogradConv (cpp/src/ops/ops_winograd.cpp; kernels/generic/winograd_f32.cpp and the AVX2
// tiles): its reference against Conv's direct reference (the same convolution up to
// rounding), every kernel this CPU has against the reference on odd shapes and pads, the AVX2
// tile transforms against the generic ones bit for bit, batch and thread invariance, and
// hostile shapes. "winograd bench" (skipped unless asked for) times the kernels against the
// direct Conv on ResNet-18's four 3x3 stages.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/generic/conv_f32.h"
#include "kernels/generic/winograd_f32.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif
#include "op_test_util.h"
#include "ops/op_util.h"

using namespace ember;
using ember::test::check_close;
using ember::test::same_bits;
using ember::test::error_of;
using ember::test::op_run;
using ember::test::random_f32;

namespace {

// U [16, M, C] for w [M, C, 3, 3].
Tensor winograd_u(const Tensor& w) {
  Tensor u = Tensor::empty(DType::F32, {16, w.dim(0), w.dim(1)});
  cpu::winograd_weights_f32(w.ptr<float>(), w.dim(0), w.dim(1), u.ptr<float>());
  return u;
}

Node winograd_node(std::vector<int64_t> pads, bool relu) {
  Node n = ember::test::node(OpType::WinogradConv);
  n.attrs.set("pads", pads);
  n.attrs.set("activation", std::string(relu ? "relu" : "none"));
  return n;
}

struct NamedKernel {
  const char* name;
  KernelFn fn;
};

std::vector<NamedKernel> winograd_kernels() {
  std::vector<NamedKernel> ks = {{"winograd_conv_f32", cpu::winograd_conv_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"winograd_conv_f32_avx2", cpu::winograd_conv_f32_avx2});
  if (cpu_isa() >= Isa::Avx512)
    ks.push_back({"winograd_conv_f32_avx512", cpu::winograd_conv_f32_avx512});
#endif
#if defined(__aarch64__)
  ks.push_back({"winograd_conv_f32_neon", cpu::winograd_conv_f32_neon});  // the NEON GEMM
#endif
  return ks;
}

struct Case {
  Shape x;  // [N, C, H, W]
  int64_t M;
  std::vector<int64_t> pads;
};

const Case kCases[] = {
    {{1, 16, 8, 8}, 16, {1, 1, 1, 1}},     // even output, one tile row per 8-tile step
    {{1, 17, 7, 9}, 19, {1, 1, 1, 1}},     // odd output: clipped edge tiles
    {{2, 20, 13, 11}, 23, {0, 2, 1, 0}},   // asymmetric pads, a batch
    {{1, 33, 5, 40}, 7, {1, 0, 0, 1}},     // rows of 20 tiles: 8-tile steps and a tail
    {{1, 16, 3, 3}, 16, {0, 0, 0, 0}},     // one output
    {{1, 9, 30, 4}, 31, {2, 2, 2, 2}},     // windows wholly in the padding
    {{2, 0, 6, 5}, 17, {1, 1, 1, 1}},      // no input channels: the bias
};

}  // namespace

TEST_CASE("winograd: the reference computes Conv up to rounding") {
  for (const Case& c : kCases) {
    CAPTURE(shape_str(c.x));
    Tensor x = random_f32(c.x, 1), w = random_f32({c.M, c.x[1], 3, 3}, 2), b = random_f32({c.M}, 3);
    Node conv = ember::test::node(OpType::Conv);
    conv.attrs.set("pads", c.pads);
    auto direct = op_run(conv, {&x, &w, &b}, nullptr, false, 1, true);
    Tensor u = winograd_u(w);
    auto wino = op_run(winograd_node(c.pads, false), {&x, &u, &b}, nullptr, false, 1, true);
    // Sums of 9 C products of values in [-1, 1]: rounding of order 1e-6 relative to sqrt(9 C).
    check_close(wino[0], direct[0], 1e-5 * std::sqrt(9.0 * (double)c.x[1]));
  }
}

TEST_CASE("winograd: fast kernels match the reference (odd shapes, pads, relu, threads)") {
  for (const NamedKernel& k : winograd_kernels()) {
    for (const Case& c : kCases) {
      for (bool relu : {false, true}) {
        CAPTURE(k.name);
        CAPTURE(shape_str(c.x));
        CAPTURE(relu);
        Tensor x = random_f32(c.x, 4), w = random_f32({c.M, c.x[1], 3, 3}, 5);
        Tensor b = random_f32({c.M}, 6), u = winograd_u(w);
        const Tensor* bias = relu ? &b : nullptr;
        Node n = winograd_node(c.pads, relu);
        auto ref = op_run(n, {&x, &u, bias}, nullptr, false, 1, true);
        auto fast = op_run(n, {&x, &u, bias}, k.fn, false, 3, true);
        check_close(fast[0], ref[0], 1e-5);  // the GEMM's fma rounds once where ref rounds twice
        auto one = op_run(n, {&x, &u, bias}, k.fn, false, 1, true);
        CHECK(same_bits(one[0], fast[0]));  // the thread count never changes the sums
      }
    }
  }
}

TEST_CASE("winograd: a fused residual is Add then Relu, bit for bit, broadcast too") {
  for (const NamedKernel& k : winograd_kernels()) {
    for (const Case& c : kCases) {
      CAPTURE(k.name);
      CAPTURE(shape_str(c.x));
      Tensor x = random_f32(c.x, 21), w = random_f32({c.M, c.x[1], 3, 3}, 22);
      Tensor b = random_f32({c.M}, 23), u = winograd_u(w);
      const int64_t oh = c.x[2] + c.pads[0] + c.pads[2] - 2;
      const int64_t ow = c.x[3] + c.pads[1] + c.pads[3] - 2;
      // Y's shape (the fused path), then shapes Add broadcasts: per channel, and a batch of 2
      // from one image.
      for (Shape rs : {Shape{c.x[0], c.M, oh, ow}, Shape{c.M, 1, 1}, Shape{2, c.M, oh, ow}}) {
        if (rs[0] == 2 && c.x[0] != 1) continue;
        CAPTURE(shape_str(rs));
        Tensor r = random_f32(rs, 24);
        Node plain = winograd_node(c.pads, false);
        auto conv = op_run(plain, {&x, &u, &b}, k.fn, false, 2, true);
        Node add = ember::test::node(OpType::Add), relu = ember::test::node(OpType::Relu);
        auto sum = op_run(add, {&conv[0], &r}, nullptr, false, 1, true);
        auto want = op_run(relu, {&sum[0]}, nullptr, false, 1, true);
        auto fused = op_run(winograd_node(c.pads, true), {&x, &u, &b, &r}, k.fn, false, 2, true);
        CHECK(same_bits(fused[0], want[0]));
        auto ref = op_run(winograd_node(c.pads, true), {&x, &u, &b, &r}, nullptr, false, 1, true);
        check_close(fused[0], ref[0], 1e-5);
      }
    }
  }
}

TEST_CASE("winograd: an image's output does not depend on the batch") {
  Tensor x = random_f32({3, 24, 15, 17}, 7), w = random_f32({40, 24, 3, 3}, 8);
  Tensor u = winograd_u(w);
  Node n = winograd_node({1, 1, 1, 1}, true);
  for (const NamedKernel& k : winograd_kernels()) {
    CAPTURE(k.name);
    auto all = op_run(n, {&x, &u}, k.fn, false, 2, true);
    int64_t per = x.numel() / 3, out_per = all[0].numel() / 3;
    for (int64_t i = 0; i < 3; i++) {
      Tensor xi = Tensor::empty(DType::F32, {1, 24, 15, 17});
      std::memcpy(xi.data(), x.ptr<float>() + i * per, per * 4);
      auto one = op_run(n, {&xi, &u}, k.fn, false, 2, true);
      CHECK(std::memcmp(one[0].data(), all[0].ptr<float>() + i * out_per, out_per * 4) == 0);
    }
  }
}

#if defined(__x86_64__)
TEST_CASE("winograd: AVX2 tile transforms give the generic ones' bits") {
  if (cpu_isa() < Isa::Avx2) return;
  const cpu::WinogradTiles& gen = cpu::winograd_tiles_generic();
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1e3f, 1e3f);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(), 1e-40f, -3e38f};
  for (int64_t n : {1, 7, 8, 9, 16, 23, 37}) {
    CAPTURE(n);
    const int64_t n8 = (n + 7) / 8 * 8, ss = 2 * n8 + 2;  // what the contract lets kernels read
    std::vector<float> s(4 * ss), m(16 * n8);
    for (size_t i = 0; i < s.size(); i++) s[i] = i % 11 == 3 ? specials[i % 6] : u(rng);
    for (size_t i = 0; i < m.size(); i++) m[i] = i % 13 == 5 ? specials[i % 6] : u(rng);
    std::vector<float> va(16 * n8), vb(16 * n8);  // v rows n8 apart: room for whole steps
    gen.input(s.data(), ss, n, va.data(), n8);
    cpu::winograd_input_avx2(s.data(), ss, n, vb.data(), n8);
    for (int64_t xi = 0; xi < 16; xi++)  // the n tiles; past them the contract allows garbage
      CHECK(std::memcmp(va.data() + xi * n8, vb.data() + xi * n8, n * 4) == 0);
    std::vector<float> r(4 * n);  // a residual, rows as the output's
    for (size_t i = 0; i < r.size(); i++) r[i] = i % 7 == 2 ? specials[i % 6] : u(rng);
    for (bool relu : {false, true})
      for (const float* r0 : {(const float*)nullptr, (const float*)r.data()}) {
        const float* r1 = r0 ? r0 + 2 * n : nullptr;
        std::vector<float> ya(4 * n), yb(4 * n);
        gen.output(m.data(), n8, n, 0.25f, relu, ya.data(), ya.data() + 2 * n, r0, r1);
        cpu::winograd_output_avx2(m.data(), n8, n, 0.25f, relu, yb.data(), yb.data() + 2 * n,
                                  r0, r1);
        CHECK(std::memcmp(ya.data(), yb.data(), ya.size() * 4) == 0);
      }
  }
}
#endif

TEST_CASE("winograd: shape inference refuses what it cannot run") {
  Tensor x = random_f32({1, 8, 6, 6}, 1), u = random_f32({16, 4, 8}, 2);
  auto run = [&](const Node& n, const Tensor& xx, const Tensor& uu, const Tensor* b = nullptr) {
    return error_of([&] { op_run(n, {&xx, &uu, b}, nullptr, false, 1, true); });
  };
  CHECK(run(winograd_node({1, 1, 1, 1}, false), x, u) == std::nullopt);
  Tensor u_bad = random_f32({9, 4, 8}, 3), u_c = random_f32({16, 4, 7}, 3);
  CHECK(run(winograd_node({1, 1, 1, 1}, false), x, u_bad) == ErrorKind::Model);
  CHECK(run(winograd_node({1, 1, 1, 1}, false), x, u_c) == ErrorKind::Model);
  CHECK(run(winograd_node({1, 1, 1}, false), x, u) == ErrorKind::Model);
  CHECK(run(winograd_node({-1, 1, 1, 1}, false), x, u) == ErrorKind::Model);
  Tensor tiny = random_f32({1, 8, 2, 6}, 4);
  CHECK(run(winograd_node({0, 0, 0, 0}, false), tiny, u) == ErrorKind::Model);
  Tensor b_bad = random_f32({5}, 5);
  CHECK(run(winograd_node({1, 1, 1, 1}, false), x, u, &b_bad) == ErrorKind::Model);
  Node gelu = winograd_node({1, 1, 1, 1}, false);
  gelu.attrs.set("activation", std::string("gelu"));
  CHECK(run(gelu, x, u) == ErrorKind::Model);
}

TEST_CASE("winograd bench: ResNet-18 3x3 stages against the direct Conv" *
          doctest::skip(true) * doctest::description("timing only; run with -tc='winograd bench*' --no-skip")) {
  using clock = std::chrono::steady_clock;
  KernelFn direct = cpu::conv_f32;
  std::string direct_name = "conv_f32";
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) direct = cpu::conv_f32_avx2, direct_name = "conv_f32_avx2";
#endif
  const NamedKernel wk = winograd_kernels().back();
  for (auto [c, h] : {std::pair<int64_t, int64_t>{64, 56}, {128, 28}, {256, 14}, {512, 7}}) {
    Tensor x = random_f32({1, c, h, h}, 1), w = random_f32({c, c, 3, 3}, 2), b = random_f32({c}, 3);
    Tensor u = winograd_u(w);
    Node cn = ember::test::node(OpType::Conv);
    cn.attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    Node wn = winograd_node({1, 1, 1, 1}, true);
    std::vector<double> td, tw;
    for (int r = 0; r < 41; r++) {
      auto t0 = clock::now();
      op_run(cn, {&x, &w, &b}, direct, false, 2, true);
      td.push_back(std::chrono::duration<double>(clock::now() - t0).count());
      t0 = clock::now();
      op_run(wn, {&x, &u, &b}, wk.fn, false, 2, true);
      tw.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
    std::sort(td.begin(), td.end());
    std::sort(tw.begin(), tw.end());
    double flop = 2.0 * c * c * 9 * h * h, tiles = (double)((h + 1) / 2) * ((h + 1) / 2);
    MESSAGE(c, " ch ", h, "x", h, ": ", direct_name, " ", td[20] * 1e3, " ms (", flop / td[20] * 1e-9,
            " GFLOP/s), ", std::string(wk.name), " ", tw[20] * 1e3, " ms (direct-equivalent ",
            flop / tw[20] * 1e-9, " GFLOP/s, GEMM ", 2.0 * 16 * c * c * tiles / tw[20] * 1e-9, ")");
  }
}
