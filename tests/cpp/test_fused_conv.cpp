// FusedConv (cpp/src/ops/ops_fused_conv.cpp; kernels/generic/conv_packed_f32.cpp): its
// reference against Conv's (+ Relu) on the unpacked weights, every kernel this CPU has against
// the reference on odd shapes, strides, pads and dilations, each kernel on packed and on plain
// weights against Conv's kernel of its ISA bit for bit (the same FMA chains), batch and thread
// invariance, the AVX-512 epilogue against the generic one, and what shape inference
// refuses. "fused_conv bench" (skipped unless asked for) times it against Conv's kernel and
// the Winograd one on ResNet-18's layers.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/generic/conv_f32.h"
#include "kernels/generic/conv_packed_f32.h"
#include "kernels/generic/winograd_f32.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
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

struct Case {
  Shape x;  // [N, C, H, W]
  int64_t M, kh, kw;
  std::vector<int64_t> strides, pads, dilations;
};

const Case kCases[] = {
    {{1, 3, 23, 19}, 64, 7, 7, {2, 2}, {3, 3, 3, 3}, {1, 1}},    // a stem: runs of 7 taps
    {{2, 17, 9, 11}, 40, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}},    // 40: a half-empty panel
    {{1, 20, 7, 7}, 33, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}},     // 49 rows: strips of 10, 9
    {{1, 5, 13, 6}, 7, 3, 2, {1, 3}, {0, 2, 1, 0}, {2, 1}},      // asymmetric all round
    {{1, 9, 8, 8}, 16, 1, 1, {2, 2}, {0, 0, 0, 0}, {1, 1}},      // 1x1 stride 2 (downsample)
    {{1, 4, 5, 5}, 5, 5, 5, {1, 1}, {4, 4, 4, 4}, {1, 1}},       // windows wholly in the pad
    {{1, 300, 4, 4}, 20, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}},    // K = 2700: several slices
    {{2, 6, 30, 31}, 70, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}},    // many row blocks
};

Node conv_node(const Case& c) {
  Node n = ember::test::node(OpType::Conv);
  n.attrs.set("strides", c.strides);
  n.attrs.set("pads", c.pads);
  n.attrs.set("dilations", c.dilations);
  return n;
}

Node fused_node(const Case& c, bool relu) {
  Node n = conv_node(c);
  n.op = OpType::FusedConv;
  n.attrs.set("m", c.M);
  n.attrs.set("kernel_shape", std::vector<int64_t>{c.kh, c.kw});
  n.attrs.set("activation", std::string(relu ? "relu" : "none"));
  return n;
}

Tensor packed(const Tensor& w) {
  const int64_t M = w.dim(0), K = w.numel() / std::max<int64_t>(M, 1);
  Tensor wp = Tensor::empty(DType::F32, {ceil_div(M, cpu::kConvPanel), K, cpu::kConvPanel});
  cpu::conv_packed_weights_f32(w.ptr<float>(), M, K, wp.ptr<float>());
  return wp;
}

struct NamedKernel {
  const char* name;
  KernelFn fused, conv;  // FusedConv's kernel and Conv's on the same micro-kernel
};

std::vector<NamedKernel> kernels() {
  std::vector<NamedKernel> ks = {{"fused_conv_f32", cpu::fused_conv_f32, cpu::conv_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2)
    ks.push_back({"fused_conv_f32_avx2", cpu::fused_conv_f32_avx2, cpu::conv_f32_avx2});
  if (cpu_isa() >= Isa::Avx512)
    ks.push_back({"fused_conv_f32_avx512", cpu::fused_conv_f32_avx512, cpu::conv_f32_avx512});
#endif
  return ks;
}

KernelFn winograd_best() {
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx512) return cpu::winograd_conv_f32_avx512;
  if (cpu_isa() >= Isa::Avx2) return cpu::winograd_conv_f32_avx2;
#endif
  return cpu::winograd_conv_f32;
}

void relu_in_place(Tensor t) {  // a handle: writes the caller's data
  for (int64_t i = 0; i < t.numel(); i++) {
    float& v = t.ptr<float>()[i];
    v = v < 0.0f ? 0.0f : v;
  }
}

}  // namespace

TEST_CASE("fused_conv: the reference is Conv's, then the activation") {
  uint32_t seed = 10;
  for (const Case& c : kCases) {
    for (bool relu : {false, true}) {
      CAPTURE(shape_str(c.x));
      CAPTURE(relu);
      Tensor x = random_f32(c.x, seed++), w = random_f32({c.M, c.x[1], c.kh, c.kw}, seed++);
      Tensor b = random_f32({c.M}, seed++), wp = packed(w);
      auto conv = op_run(conv_node(c), {&x, &w, &b}, nullptr, false, 1, true);
      if (relu) relu_in_place(conv[0]);
      auto fused = op_run(fused_node(c, relu), {&x, &wp, &b}, nullptr, false, 1, true);
      // Both sum in double; the bias goes in before the one rounding in Conv's, after in ours.
      check_close(fused[0], conv[0], 1e-6);
    }
  }
}

TEST_CASE("fused_conv: kernels match the reference and Conv's kernel bit for bit") {
  uint32_t seed = 100;
  for (const NamedKernel& k : kernels()) {
    for (const Case& c : kCases) {
      for (bool relu : {false, true}) {
        CAPTURE(k.name);
        CAPTURE(shape_str(c.x));
        CAPTURE(relu);
        Tensor x = random_f32(c.x, seed++), w = random_f32({c.M, c.x[1], c.kh, c.kw}, seed++);
        Tensor b = random_f32({c.M}, seed++), wp = packed(w);
        const Tensor* bias = relu ? &b : nullptr;  // with and without a bias
        Node n = fused_node(c, relu);
        auto ref = op_run(n, {&x, &wp, bias}, nullptr, false, 1, true);
        auto fast = op_run(n, {&x, &wp, bias}, k.fused, false, 3, true);
        // Conv's weights as they are: Conv's kernel, the same bits.
        auto plain = op_run(n, {&x, &w, bias}, k.fused, false, 2, true);
        CHECK(same_bits(plain[0], fast[0]));
        auto plain_ref = op_run(n, {&x, &w, bias}, nullptr, false, 1, true);
        CHECK(same_bits(plain_ref[0], ref[0]));
        const double taps = (double)(c.x[1] * c.kh * c.kw);
        // Float sums of `taps` products of values in [-1, 1]; the reference sums in double.
        check_close(fast[0], ref[0], 3e-8 * taps + 1e-6);
        auto one = op_run(n, {&x, &wp, bias}, k.fused, false, 1, true);
        CHECK(same_bits(one[0], fast[0]));  // the thread count never changes the sums
        auto conv = op_run(conv_node(c), {&x, &w, bias}, k.conv, false, 2, true);
        if (relu) relu_in_place(conv[0]);
        CHECK(same_bits(fast[0], conv[0]));
      }
    }
  }
}

#if defined(__x86_64__)
TEST_CASE("fused_conv: the AVX-512 kernel gives the AVX2 kernel's bits") {
  if (cpu_isa() < Isa::Avx512 || cpu_isa() == Isa::Neon) return;
  uint32_t seed = 300;
  for (const Case& c : kCases) {
    CAPTURE(shape_str(c.x));
    Tensor x = random_f32(c.x, seed++), w = random_f32({c.M, c.x[1], c.kh, c.kw}, seed++);
    Tensor b = random_f32({c.M}, seed++), wp = packed(w);
    Node n = fused_node(c, true);
    for (const Tensor* wt : {&wp, &w}) {  // the gathering kernel and Conv's GEMM
      auto a2 = op_run(n, {&x, wt, &b}, cpu::fused_conv_f32_avx2, false, 2, true);
      auto a5 = op_run(n, {&x, wt, &b}, cpu::fused_conv_f32_avx512, false, 2, true);
      CHECK(same_bits(a2[0], a5[0]));
    }
  }
}
#endif

TEST_CASE("fused_conv: an image's output does not depend on the batch") {
  const Case c{{3, 12, 15, 17}, 40, 3, 3, {2, 1}, {1, 0, 1, 2}, {1, 1}};
  Tensor x = random_f32(c.x, 7), w = random_f32({c.M, 12, 3, 3}, 8), b = random_f32({c.M}, 9);
  Tensor wp = packed(w);
  Node n = fused_node(c, true);
  for (const NamedKernel& k : kernels()) {
    CAPTURE(k.name);
    auto all = op_run(n, {&x, &wp, &b}, k.fused, false, 2, true);
    const int64_t per = x.numel() / 3, out_per = all[0].numel() / 3;
    for (int64_t i = 0; i < 3; i++) {
      Tensor xi = Tensor::empty(DType::F32, {1, 12, 15, 17});
      std::memcpy(xi.data(), x.ptr<float>() + i * per, per * 4);
      auto one = op_run(n, {&xi, &wp, &b}, k.fused, false, 2, true);
      CHECK(std::memcmp(one[0].data(), all[0].ptr<float>() + i * out_per, out_per * 4) == 0);
    }
  }
}

#if defined(__x86_64__)
TEST_CASE("fused_conv: the AVX-512 epilogue gives the generic one's bits") {
  if (cpu_isa() < Isa::Avx512) return;
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(), -1e-40f, -3e38f};
  Tensor tile = random_f32({40, 32}, 11, -2.0f, 2.0f), bias = random_f32({32}, 12);
  for (int64_t i = 0; i < tile.numel(); i += 7) tile.ptr<float>()[i] = specials[i % 6];
  for (int64_t rows : {1, 15, 16, 17, 33, 40})
    for (int64_t cols : {1, 16, 17, 32})
      for (bool relu : {false, true})
        for (const float* b : {(const float*)nullptr, (const float*)bias.ptr<float>()}) {
          CAPTURE(rows);
          CAPTURE(cols);
          const int64_t ys = rows + 3;
          std::vector<float> ya(32 * ys, 7.0f), yb(32 * ys, 7.0f);
          cpu::conv_tile_store(tile.ptr<float>(), rows, cols, b, relu, ya.data(), ys);
          cpu::conv_tile_store_avx512(tile.ptr<float>(), rows, cols, b, relu, yb.data(), ys);
          CHECK(std::memcmp(ya.data(), yb.data(), ya.size() * 4) == 0);  // and nothing past
        }
}
#endif

TEST_CASE("fused_conv: shape inference refuses what it cannot run") {
  const Case c{{1, 4, 6, 6}, 8, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}};
  Tensor x = random_f32(c.x, 1), wp = packed(random_f32({8, 4, 3, 3}, 2));
  auto run = [&](const Node& n, const Tensor& xx, const Tensor& ww) {
    return error_of([&] { op_run(n, {&xx, &ww}, nullptr, false, 1, true); });
  };
  CHECK(run(fused_node(c, false), x, wp) == std::nullopt);
  Tensor wrong_k = packed(random_f32({8, 5, 3, 3}, 3));
  Tensor wrong_m = packed(random_f32({40, 4, 3, 3}, 3));
  CHECK(run(fused_node(c, false), x, wrong_k) == ErrorKind::Model);
  CHECK(run(fused_node(c, false), x, wrong_m) == ErrorKind::Model);
  Node grouped = fused_node(c, false);
  grouped.attrs.set("group", int64_t(2));
  CHECK(run(grouped, x, wp) == ErrorKind::Model);
  Node act = fused_node(c, false);
  act.attrs.set("activation", std::string("gelu"));
  CHECK(run(act, x, wp) == ErrorKind::Model);
  Tensor x3 = random_f32({1, 4, 6}, 4);
  CHECK(run(fused_node(c, false), x3, wp) == ErrorKind::Model);
  Tensor tiny = random_f32({1, 4, 1, 1}, 5);
  Node valid = fused_node(c, false);
  valid.attrs.set("pads", std::vector<int64_t>{0, 0, 0, 0});
  CHECK(run(valid, tiny, wp) == ErrorKind::Model);  // smaller than the kernel
}

TEST_CASE("fused_conv bench: ResNet-18 layers against Conv's kernel and Winograd" *
          doctest::skip(true) *
          doctest::description("timing only; run with -tc='fused_conv bench*' --no-skip")) {
  using clock = std::chrono::steady_clock;
  const NamedKernel k = kernels().back();
  const Case layers[] = {
      {{1, 3, 224, 224}, 64, 7, 7, {2, 2}, {3, 3, 3, 3}, {1, 1}},
      {{1, 64, 56, 56}, 128, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}},
      {{1, 128, 28, 28}, 256, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}},
      {{1, 256, 14, 14}, 512, 3, 3, {2, 2}, {1, 1, 1, 1}, {1, 1}},
      {{1, 256, 14, 14}, 256, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}},
      {{1, 512, 7, 7}, 512, 3, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}},
  };
  const int threads = std::getenv("T") ? std::atoi(std::getenv("T")) : 2;  // T=1: one thread
  const int only = std::getenv("L") ? std::atoi(std::getenv("L")) : -1;  // one layer, for perf
  for (const Case& c : layers) {
    if (only >= 0 && &c != &layers[only]) continue;
    Tensor x = random_f32(c.x, 1), w = random_f32({c.M, c.x[1], c.kh, c.kw}, 2);
    Tensor b = random_f32({c.M}, 3), wp = packed(w);
    const bool wino = c.kh == 3 && c.strides[0] == 1;
    Tensor u = wino ? Tensor::empty(DType::F32, {16, c.M, c.x[1]}) : Tensor();
    if (wino) cpu::winograd_weights_f32(w.ptr<float>(), c.M, c.x[1], u.ptr<float>());
    Node wn = ember::test::node(OpType::WinogradConv);
    wn.attrs.set("pads", c.pads);
    wn.attrs.set("activation", std::string("relu"));
    std::vector<double> tc, tf, tw;
    // One thread: its CPU time (other work on the machine does not count); else wall time.
    auto time = [&](auto fn) {
      timespec c0, c1;
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
      auto t0 = clock::now();
      fn();
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
      if (threads == 1)
        return (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
      return std::chrono::duration<double>(clock::now() - t0).count();
    };
    const Node fn = fused_node(c, true);
    auto run_fused = [&] { op_run(fn, {&x, &wp, &b}, k.fused, false, threads, true); };
    auto run_wino = [&] { op_run(wn, {&x, &u, &b}, winograd_best(), false, threads, true); };
    // F=1: FusedConv alone (its weights stay in L3: what the kernel does when they are warm).
    const bool alone = std::getenv("F") && std::atoi(std::getenv("F")) == 1;
    for (int r = 0; r < 61; r++) {
      if (alone) {
        tc.push_back(0);
        tf.push_back(time(run_fused));
        if (wino) tw.push_back(0);
        continue;
      }
      tc.push_back(time([&] { op_run(conv_node(c), {&x, &w, &b}, k.conv, false, threads, true); }));
      tf.push_back(time(run_fused));
      if (wino)
        tw.push_back(time(run_wino));
    }
    std::sort(tc.begin(), tc.end());
    std::sort(tf.begin(), tf.end());
    std::sort(tw.begin(), tw.end());
    const double oh = (c.x[2] + 2 * c.pads[0] - c.kh) / c.strides[0] + 1;
    const double flop = 2.0 * c.M * c.x[1] * c.kh * c.kw * oh * oh;
    MESSAGE(shape_str(c.x), " -> ", c.M, " k", c.kh, " s", c.strides[0], ": conv ", tc[30] * 1e3,
            " ms, fused ", tf[30] * 1e3, " ms (", flop / tf[30] * 1e-9, " GFLOP/s)",
            wino ? ", winograd " + std::to_string(tw[30] * 1e3) + " ms" : std::string());
  }
}
