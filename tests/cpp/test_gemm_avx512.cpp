// AVX-512 f32 GEMM (kernels/x86/gemm_f32_avx512.cpp, drivers in gemm_x86.cpp): the micro-kernels
// against a double reference and against the AVX2 micro-kernel bit for bit (every c element is
// the same FMA chain), with odd kc, strides and row counts, rows past `rows` untouched; then
// the registered MatMul, Gemm, FusedMatMul, Conv, WinogradConv and Attention kernels against
// their AVX2 twins bit for bit (M = 1..40, N and K not multiples of 16) and the references
// within tolerance; FusedMatMul's AVX-512 erf-Gelu rows (kernels/x86/elementwise_avx512.cpp)
// against the AVX2 ones bit for bit and the reference.
// Fresh random data (the seed is printed). Skipped below Isa::Avx512.
// `x86 avx512 gemm bench` (EMBER_X86_BENCH=1; EMBER_BENCH_THREADS=n, EMBER_BENCH_ONLY=a part
// of the case names) times AVX2 vs AVX-512 drivers interleaved in one process: medians, GFLOP/s;
// `x86 avx512 fma peak` (EMBER_X86_BENCH=1) measures the FMA peak the GEMM is held to.
// NOTE: x86 builds only.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/generic/conv_f32.h"
#include "kernels/generic/kernels_generic.h"
#include "kernels/generic/winograd_f32.h"
#include "kernels/x86/kernels_x86.h"
#include "op_test_util.h"
#include "runtime/registry.h"

using namespace ember;
using ember::test::op_run;

namespace {

bool have_avx512() {
  if (cpu_isa() >= Isa::Avx512) return true;
  MESSAGE("skipped: this CPU (or EMBER_CPU_ISA) has no AVX-512 F/BW/VL/DQ + VNNI");
  return false;
}

uint32_t run_seed() {
  static const uint32_t seed = [] {
    uint32_t s = std::random_device{}();
    if (const char* env = std::getenv("EMBER_TEST_SEED")) s = (uint32_t)std::strtoul(env, 0, 10);
    std::printf("test_gemm_avx512: seed %u (EMBER_TEST_SEED replays it)\n", s);
    return s;
  }();
  return seed;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

Tensor random_f32(const Shape& s, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * 4) == 0;
}

// |a - b| <= tol * (1 + |b|) everywhere; counts the misses.
int64_t misses(const Tensor& a, const Tensor& b, double tol) {
  int64_t bad = 0;
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (!(std::fabs(x - y) <= tol * (1.0 + std::fabs(y)))) bad++;
  }
  return bad;
}

// c[i, j] (+)= sum_k a[i, k] b[k, j] in double, for the micro-kernels' tolerance.
double ref_dot(const float* a, const float* b, int64_t ldb, int64_t kc, double c0, double* mag) {
  double s = c0, m = std::fabs(c0);
  for (int64_t k = 0; k < kc; k++) {
    s += (double)a[k] * b[k * ldb];
    m += std::fabs((double)a[k] * b[k * ldb]);
  }
  *mag = m;
  return s;
}

// The AVX2 micro-kernel over `rows` rows in strips of 6: the bits every AVX-512 form must give.
void avx2_rows(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
               int64_t ldc, int rows, bool acc) {
  for (int r0 = 0; r0 < rows; r0 += 6)
    cpu::sgemm_micro_6x16_avx2(kc, a + r0 * lda, lda, b, ldb, c + r0 * ldc, ldc,
                               std::min(6, rows - r0), acc);
}

}  // namespace

TEST_CASE("x86 avx512 gemm micro-kernels: AVX2's bits, the reference, untouched rows") {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed());
  const cpu::GemmMicro& m = cpu::gemm_micro_avx512();
  CHECK(m.mr == 12);
  CHECK(m.nr == 16);
  for (int64_t kc : {1, 5, 37, 300})
    for (int64_t ldb : {16, 24, 41})  // packed panels, Winograd's V rows, B read in place
      for (int rows = 1; rows <= 12; rows++)
        for (bool acc : {false, true}) {
          CAPTURE(kc);
          CAPTURE(ldb);
          CAPTURE(rows);
          CAPTURE(acc);
          const int64_t lda = kc + 3, ldc = 45, pstride = kc * ldb + 7;
          std::vector<float> a = random_vec(12 * lda, rng);
          std::vector<float> b = random_vec(8 * pstride, rng);
          std::vector<float> c0 = random_vec(13 * ldc, rng);
          // One panel.
          std::vector<float> want = c0, got = c0;
          avx2_rows(kc, a.data(), lda, b.data(), ldb, want.data(), ldc, rows, acc);
          m.fn(kc, a.data(), lda, b.data(), ldb, got.data(), ldc, rows, acc);
          CHECK(std::memcmp(want.data(), got.data(), want.size() * 4) == 0);
          int64_t bad = 0;
          for (int i = 0; i < rows; i++)
            for (int j = 0; j < 16; j++) {
              double mag, r = ref_dot(a.data() + i * lda, b.data() + j, ldb, kc,
                                      acc ? c0[i * ldc + j] : 0.0, &mag);
              // A chain of kc + 1 roundings of at most 2^-24 x the running magnitude.
              if (!(std::fabs(got[i * ldc + j] - r) <= 6e-8 * (kc + 2) * mag)) bad++;
            }
          CHECK(bad == 0);
          bad = 0;  // rows past `rows`, columns past 16: untouched
          for (int64_t i = rows * ldc; i < 13 * ldc; i++) bad += got[i] != c0[i];
          for (int i = 0; i < rows; i++)
            for (int64_t j = 16; j < ldc; j++) bad += got[i * ldc + j] != c0[i * ldc + j];
          CHECK(bad == 0);
          // Two panels: each half the AVX2 kernel's bits on its panel.
          want = c0, got = c0;
          avx2_rows(kc, a.data(), lda, b.data(), ldb, want.data(), ldc, rows, acc);
          avx2_rows(kc, a.data(), lda, b.data() + pstride, ldb, want.data() + 16, ldc, rows, acc);
          m.fn2(kc, a.data(), lda, b.data(), ldb, pstride, got.data(), ldc, rows, acc);
          CHECK(std::memcmp(want.data(), got.data(), want.size() * 4) == 0);
          if (rows != 1) continue;
          // One row over 4 panels: AVX2's 1 x 64 row kernel; c[64..] untouched.
          std::vector<float> cw = random_vec(64 + 16, rng), cg = cw;
          cpu::sgemm_row_1x64_avx2(kc, a.data(), b.data(), ldb, pstride, cw.data(), acc);
          m.row4(kc, a.data(), b.data(), ldb, pstride, cg.data(), acc);
          CHECK(std::memcmp(cw.data(), cg.data(), cw.size() * 4) == 0);
        }
}

TEST_CASE("x86 avx512 GEMM drivers: the registry picks them, AVX2's bits, the references") {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed() + 1);
  // Each op: the AVX-512 kernel equals the AVX2 one bit for bit and the reference within
  // tol; returns the kernel the registry picks for the node at this CPU's ISA.
  auto check_op = [&](Node n, const std::vector<const Tensor*>& in, KernelFn fast,
                      KernelFn avx2, double tol, int threads) {
    test::OpRun want = op_run(n, in, avx2, false, threads, true);
    test::OpRun got = op_run(n, in, fast, false, threads, true);
    test::OpRun ref = op_run(n, in, nullptr, false, 1, true);
    CHECK(same_bits(got[0], want[0]));
    CHECK(misses(got[0], ref[0], tol) == 0);
    n.inputs.clear();
    std::vector<TensorType> types;
    for (size_t i = 0; i < in.size(); i++) {
      n.inputs.push_back((int)i);
      types.push_back({in[i]->dtype(), in[i]->shape()});
    }
    const KernelEntry* e = cpu_kernel_find(InferCtx{n, types, in}, cpu_isa());
    return e ? std::string(e->name) : std::string();
  };
  // MatMul: M = 1..40 (strips of 12 and their tails, the one-row kernel), K over one KC slice.
  for (int64_t M = 1; M <= 40; M++)
    for (int64_t K : {37, 300})
      for (int64_t N : {19, 45, 150}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Tensor a = random_f32({M, K}, rng), b = random_f32({K, N}, rng);
        Node n = test::node(OpType::MatMul);
        std::string name = check_op(n, {&a, &b}, cpu::matmul_f32_avx512, cpu::matmul_f32_avx2,
                                    1e-4, M % 3 + 1);
        CHECK(name == "matmul_f32_avx512");
      }
  {
    // Several row blocks: B packed whole once (sgemm), rows 0..12 as a GEMM of their own.
    Tensor a = random_f32({400, 300}, rng), b = random_f32({300, 45}, rng);
    check_op(test::node(OpType::MatMul), {&a, &b}, cpu::matmul_f32_avx512, cpu::matmul_f32_avx2,
             1e-4, 2);
    Tensor top = Tensor::empty(DType::F32, {13, 300});
    std::memcpy(top.data(), a.data(), 13 * 300 * 4);
    test::OpRun all = op_run(test::node(OpType::MatMul), {&a, &b}, cpu::matmul_f32_avx512,
                             false, 2, true);
    test::OpRun part = op_run(test::node(OpType::MatMul), {&top, &b}, cpu::matmul_f32_avx512,
                              false, 1, true);
    CHECK(std::memcmp(all[0].data(), part[0].data(), 13 * 45 * 4) == 0);
  }
  // Gemm with transposed operands (A packed, B packed from columns), alpha, beta, C.
  for (int64_t M : {1, 13, 40}) {
    CAPTURE(M);
    const int64_t K = 70, N = 53;
    Tensor a = random_f32({K, M}, rng), b = random_f32({N, K}, rng), c = random_f32({N}, rng);
    Node n = test::node(OpType::Gemm);
    n.attrs.set("transA", int64_t(1));
    n.attrs.set("transB", int64_t(1));
    n.attrs.set("alpha", 0.75);
    n.attrs.set("beta", -1.5);
    CHECK(check_op(n, {&a, &b, &c}, cpu::gemm_f32_avx512, cpu::gemm_f32_avx2, 1e-4, 2) ==
          "gemm_f32_avx512");
  }
  // FusedMatMul on pre-packed weights, bias and erf-GELU.
  for (int64_t M = 1; M <= 40; M++)
    for (int64_t N : {45, 150}) {
      CAPTURE(M);
      CAPTURE(N);
      const int64_t K = 300;
      Tensor a = random_f32({2, M, K}, rng, -2, 2), w = random_f32({K, N}, rng, -2, 2);
      Tensor bias = random_f32({N}, rng);
      Tensor wp = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
      cpu::sgemm_pack_b(w.ptr<float>(), N, 1, K, N, wp.ptr<float>());
      Node n = test::node(OpType::FusedMatMul);
      n.attrs.set("n", N);
      n.attrs.set("activation", std::string("gelu"));
      std::string name = check_op(n, {&a, &wp, &bias}, cpu::fused_matmul_f32_avx512,
                                  cpu::fused_matmul_f32_avx2, 2e-5 * std::sqrt((double)K), 2);
      CHECK(name == "fused_matmul_f32_avx512");
    }
  // Conv: output channels are the GEMM's M; im2col, a 1x1, and patches packed into panels.
  struct ConvCase {
    Shape x, w;
    std::vector<int64_t> pads;
  };
  const ConvCase convs[] = {
      {{1, 5, 9, 11}, {0, 5, 3, 3}, {1, 1, 1, 1}},
      {{2, 19, 7, 13}, {0, 19, 1, 1}, {0, 0, 0, 0}},
      {{1, 7, 75, 77}, {0, 7, 3, 3}, {1, 0, 0, 1}},
  };
  for (const ConvCase& cc : convs)
    for (int64_t M = 1; M <= 40; M++) {
      CAPTURE(shape_str(cc.x));
      CAPTURE(M);
      Shape ws = cc.w;
      ws[0] = M;
      Tensor x = random_f32(cc.x, rng), w = random_f32(ws, rng), b = random_f32({M}, rng);
      Node n = test::node(OpType::Conv);
      n.attrs.set("pads", cc.pads);
      std::string name = check_op(n, {&x, &w, &b}, cpu::conv_f32_avx512, cpu::conv_f32_avx2,
                                  1e-4, 2);
      CHECK(name == "conv_f32_avx512");
    }
  // WinogradConv: U [16, M, C] from 3x3 weights; odd channels and image sizes.
  for (int64_t M = 1; M <= 40; M++)
    for (const Shape& xs : {Shape{1, 17, 7, 9}, Shape{2, 33, 12, 21}}) {
      CAPTURE(M);
      CAPTURE(shape_str(xs));
      Tensor x = random_f32(xs, rng), w = random_f32({M, xs[1], 3, 3}, rng);
      Tensor u = Tensor::empty(DType::F32, {16, M, xs[1]}), b = random_f32({M}, rng);
      cpu::winograd_weights_f32(w.ptr<float>(), M, xs[1], u.ptr<float>());
      Node n = test::node(OpType::WinogradConv);
      n.attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
      n.attrs.set("activation", std::string("relu"));
      std::string name = check_op(n, {&x, &u, &b}, cpu::winograd_conv_f32_avx512,
                                  cpu::winograd_conv_f32_avx2, 1e-4, 2);
      CHECK(name == "winograd_conv_f32_avx512");
    }
  // Attention: S = 1..40 query rows, T and D not multiples of 16, a key mask.
  for (int64_t S = 1; S <= 40; S++) {
    CAPTURE(S);
    const int64_t D = 37, T = 45, Dv = 29;
    Tensor q = random_f32({2, 3, S, D}, rng), k = random_f32({2, 3, D, T}, rng);
    Tensor v = random_f32({2, 3, T, Dv}, rng), mask = random_f32({2, 1, 1, T}, rng, -3, 0);
    Node n = test::node(OpType::Attention);
    n.attrs.set("scale", 0.2);
    std::string name = check_op(n, {&q, &k, &v, &mask}, cpu::attention_f32_avx512,
                                cpu::attention_f32_avx2, 2e-5, 2);
    CHECK(name == "attention_f32_avx512");
  }
}

TEST_CASE("x86 avx512 erf-Gelu rows: AVX2's bits, the reference") {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed() + 3);
  const float inf = std::numeric_limits<float>::infinity();
  auto same = [](float a, float b) {
    return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 4) == 0;
  };
  // erf-Gelu: normal and wide random data, every binade, the tails, specials; in place too.
  std::vector<float> x;
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 20000; i++) x.push_back(nd(rng));
  for (int e = 0; e < 255; e++)
    for (int i = 0; i < 8; i++) {
      uint32_t u = (bits(rng) & 0x807fffffu) | (uint32_t)e << 23;
      float f;
      std::memcpy(&f, &u, 4);
      x.push_back(f);
    }
  for (float f : {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(), 14.5f, -14.5f,
                  14.500001f, -14.500001f, 1e-45f, -1e-45f, 0.875f, -0.875f})
    x.push_back(f);
  for (size_t n : {(size_t)0, (size_t)1, (size_t)15, (size_t)17, (size_t)33, x.size()}) {
    CAPTURE(n);
    std::vector<float> want(n + 1, 7.0f), got(n + 1, 7.0f), in_place(x.begin(), x.begin() + n);
    cpu::gelu_erf_f32_array_avx2(x.data(), want.data(), (int64_t)n);
    cpu::gelu_erf_f32_array_avx512(x.data(), got.data(), (int64_t)n);
    cpu::gelu_erf_f32_array_avx512(in_place.data(), in_place.data(), (int64_t)n);
    int64_t bad = 0;
    for (size_t i = 0; i <= n; i++) bad += !same(got[i], want[i]);  // got[n]: untouched
    for (size_t i = 0; i < n; i++) bad += !same(in_place[i], want[i]);
    CHECK(bad == 0);
  }
  // Against the double reference: within AVX2's bound (3 ulp, tests/cpp/test_x86_kernels.cpp).
  Tensor xt = Tensor::empty(DType::F32, {(int64_t)x.size()});
  std::memcpy(xt.data(), x.data(), x.size() * 4);
  Node g = test::node(OpType::Gelu);
  g.attrs.set("approximate", std::string("none"));
  test::OpRun ref = op_run(g, {&xt}, nullptr, false, 1, true);
  std::vector<float> y(x.size());
  cpu::gelu_erf_f32_array_avx512(x.data(), y.data(), (int64_t)x.size());
  int64_t far = 0;
  for (size_t i = 0; i < x.size(); i++) {
    float r = ref[0].ptr<float>()[i];
    if (std::isnan(r) || std::isnan(y[i])) {
      far += std::isnan(r) != std::isnan(y[i]);
      continue;
    }
    if (y[i] == r) continue;  // infinities too
    double ulp = std::fabs(std::nextafter(r, inf) - r);
    if (r == 0.0f) ulp = std::numeric_limits<float>::denorm_min();
    if (!(std::fabs((double)y[i] - r) <= 3 * ulp) && far++ < 5)
      MESSAGE("x ", x[i], " gelu ", y[i], " reference ", r);
  }
  CHECK(far == 0);
}

TEST_CASE("x86 avx512 attention score rows: AVX2's bits, the reference") {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed() + 4);
  auto same = [](float a, float b) {
    return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 4) == 0;
  };
  // Scale by * and /; no mask, a broadcast mask value, a mask row; lengths around 8 and 16.
  for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 24, 45, 128, 769})
    for (int form = 0; form < 6; form++) {
      CAPTURE(n);
      CAPTURE(form);
      const bool div = form % 2;
      const int64_t mask_t = form / 2 == 2 ? 1 : 0;
      std::vector<float> s = random_vec(n + 1, rng), m = random_vec(n, rng);
      for (float& v : s) v *= 8.0f;
      const float* mask = form / 2 == 0 ? nullptr : m.data();
      std::vector<float> want = s, got = s, ref = s;
      float sw = cpu::attention_scores_row_avx2(want.data(), n, 0.3f, div, mask, mask_t);
      float sg = cpu::attention_scores_row_avx512(got.data(), n, 0.3f, div, mask, mask_t);
      float sr = cpu::attention_scores_row(ref.data(), n, 0.3f, div, mask, mask_t);
      CHECK(same(sg, sw));
      CHECK(std::memcmp(got.data(), want.data(), (n + 1) * 4) == 0);  // s[n] untouched
      CHECK(std::fabs(sg - sr) <= 1e-6f * (float)n * sr);
      // exp of a float argument rounded differently: ~1 ulp of the argument (|x| < 8).
      int64_t bad = 0;
      for (int64_t t = 0; t < n; t++) bad += !(std::fabs(got[t] - ref[t]) <= 4e-6f * ref[t]);
      CHECK(bad == 0);
    }
  // A NaN score: the max ignores it, its exp stays NaN, as in the AVX2 row.
  std::vector<float> s = {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f, -2.0f}, t = s;
  float a = cpu::attention_scores_row_avx512(s.data(), 4, 1.0f, false, nullptr, 0);
  float b = cpu::attention_scores_row_avx2(t.data(), 4, 1.0f, false, nullptr, 0);
  CHECK(same(a, b));
  for (int i = 0; i < 4; i++) CHECK(same(s[i], t[i]));
}

TEST_CASE("x86 avx512 attention score rows, several at once: the one-row kernel's bits") {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed() + 5);
  auto same = [](float a, float b) {
    return std::isnan(a) ? std::isnan(b) : std::memcmp(&a, &b, 4) == 0;
  };
  // 1..9 rows (groups of 4 and the rest), lengths around 16; no mask, one value, a row per
  // query row (mask_s = n), one row for all (mask_s = 0), padding masks (keys past a point or
  // whole rows at -FLT_MAX or -inf: exps of +0 skipped); * and /; NaN and -inf scores.
  for (int64_t rows : {1, 3, 4, 5, 8, 9})
    for (int64_t n : {1, 7, 15, 16, 17, 33, 128, 131})
      for (int form = 0; form < 12; form++) {
        CAPTURE(rows);
        CAPTURE(n);
        CAPTURE(form);
        const bool div = form % 2;
        // 0 none, 1 broadcast value, 2 row per query, 3 shared row, 4 and 5 padding
        const int kind = form / 2;
        const int64_t mask_t = kind >= 2 ? 1 : 0;
        const int64_t mask_s = kind == 2 || kind >= 4 ? n : kind == 1 ? 1 : 0;
        const int64_t ld = n + 3;
        std::vector<float> s = random_vec(rows * ld, rng), m = random_vec(rows * n, rng);
        const float pad = kind == 4 ? -std::numeric_limits<float>::max() : -INFINITY;
        for (int64_t r = 0; r < rows && kind >= 4; r++)
          for (int64_t t = r % 3 == 2 ? 0 : (n + r) / 3; t < n; t++) m[r * n + t] = pad;
        for (float& v : s) v *= 8.0f;
        if (rows * n > 20) {
          s[2] = std::numeric_limits<float>::quiet_NaN();
          s[s.size() / 2] = -INFINITY;
        }
        const float* mask = kind == 0 ? nullptr : m.data();
        std::vector<float> want = s, got = s, sw(rows), sg(rows);
        for (int64_t r = 0; r < rows; r++)
          sw[r] = cpu::attention_scores_row_avx512(want.data() + r * ld, n, 0.3f, div,
                                                   mask ? mask + r * mask_s : nullptr, mask_t);
        cpu::attention_scores_rows_avx512(got.data(), rows, ld, n, 0.3f, div, mask, mask_s,
                                          mask_t, sg.data());
        int64_t diff = 0;
        for (int64_t r = 0; r < rows; r++) diff += !same(sg[r], sw[r]);
        for (size_t i = 0; i < s.size(); i++) diff += !same(got[i], want[i]);  // gaps untouched
        CHECK(diff == 0);
      }
}

// 12 independent zmm FMA chains (3x the 4-cycle latency of 2 pipes' worth), iters steps.
__attribute__((target("avx512f"), noinline)) float fma_chains_avx512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(0.001f * (float)i);
  const __m512 a = _mm512_set1_ps(0.9999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

TEST_CASE("x86 avx512 fma peak" * doctest::skip(std::getenv("EMBER_X86_BENCH") == nullptr)) {
  if (!have_avx512()) return;
  // Each thread times its own run (a few ms); medians and maxima over 41 rounds.
  const int64_t iters = 2000000;
  const double flop = 12.0 * 32.0 * (double)iters;
  for (int threads = 1; threads <= 2; threads++) {
    std::vector<double> g;
    for (int round = 0; round < 41; round++) {
      std::vector<double> sec(threads);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; t++)
        pool.emplace_back([&, t] {
          auto t0 = std::chrono::steady_clock::now();
          volatile float sink = fma_chains_avx512(iters);
          (void)sink;
          sec[t] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        });
      for (std::thread& t : pool) t.join();
      double sum = 0.0;
      for (double s : sec) sum += flop / s / 1e9;
      g.push_back(sum);
    }
    std::sort(g.begin(), g.end());
    std::printf("zmm FMA peak, %d thread(s): median %.1f, max %.1f GFLOP/s\n", threads,
                g[g.size() / 2], g.back());
  }
}

TEST_CASE("x86 avx512 gemm bench" * doctest::skip(std::getenv("EMBER_X86_BENCH") == nullptr)) {
  if (!have_avx512()) return;
  std::mt19937 rng(run_seed() + 2);
  const char* env = std::getenv("EMBER_BENCH_THREADS");
  const int threads = env ? std::atoi(env) : 2;
  // MiniLM's FusedMatMuls (batch 1 and 32 x seq 128), a 2048^3 MatMul, a GEMV, its attention.
  struct B {
    std::string name;
    Node n;
    std::vector<Tensor> in;
    KernelFn avx2, avx512;
    double flop;
  };
  std::vector<B> benches;
  auto fused = [&](int64_t M, int64_t K, int64_t N, const char* act) {
    Tensor a = random_f32({M, K}, rng), w = random_f32({K, N}, rng), bias = random_f32({N}, rng);
    Tensor wp = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
    cpu::sgemm_pack_b(w.ptr<float>(), N, 1, K, N, wp.ptr<float>());
    Node n = test::node(OpType::FusedMatMul);
    n.attrs.set("n", N);
    n.attrs.set("activation", std::string(act));
    n.inputs = {0, 1, 2};
    std::string name = "fused " + std::to_string(M) + "x" + std::to_string(K) + "x" +
                       std::to_string(N) + " " + act;
    benches.push_back({name, n, {a, wp, bias}, cpu::fused_matmul_f32_avx2,
                       cpu::fused_matmul_f32_avx512, 2.0 * M * K * N});
  };
  fused(128, 384, 384, "none");
  fused(128, 384, 1536, "gelu");
  fused(128, 1536, 384, "none");
  fused(4096, 384, 1536, "gelu");
  fused(1, 384, 1536, "none");
  {
    Tensor a = random_f32({2048, 2048}, rng), b = random_f32({2048, 2048}, rng);
    Node n = test::node(OpType::MatMul);
    n.inputs = {0, 1};
    benches.push_back({"matmul 2048^3 (B packed per block)", n, {a, b}, cpu::matmul_f32_avx2,
                       cpu::matmul_f32_avx512, 2.0 * 2048 * 2048 * 2048});
  }
  {
    // MiniLM's attention at batch 1: 12 heads, S = T = 128, D = 32, a key mask.
    Tensor q = random_f32({1, 12, 128, 32}, rng), k = random_f32({1, 12, 32, 128}, rng);
    Tensor v = random_f32({1, 12, 128, 32}, rng), m = random_f32({1, 1, 1, 128}, rng, -3, 0);
    Node n = test::node(OpType::Attention);
    n.attrs.set("scale", 0.17);
    n.inputs = {0, 1, 2, 3};
    benches.push_back({"attention 12x128x128x32", n, {q, k, v, m}, cpu::attention_f32_avx2,
                       cpu::attention_f32_avx512, 12 * 2 * 2.0 * 128 * 128 * 32});
  }
  {
    // The same in MiniLM's fused layout (bshd: Q, K, V and Y are [1, 128, 12, 32]).
    Tensor q = random_f32({1, 128, 12, 32}, rng), k = random_f32({1, 128, 12, 32}, rng);
    Tensor v = random_f32({1, 128, 12, 32}, rng), m = random_f32({1, 1, 1, 128}, rng, -3, 0);
    Node n = test::node(OpType::Attention);
    n.attrs.set("scale", 0.17);
    n.attrs.set("layout", std::string("bshd"));
    n.inputs = {0, 1, 2, 3};
    benches.push_back({"attention bshd 12x128x128x32", n, {q, k, v, m}, cpu::attention_f32_avx2,
                       cpu::attention_f32_avx512, 12 * 2 * 2.0 * 128 * 128 * 32});
  }
  for (auto [c, h] : {std::pair<int64_t, int64_t>{64, 56}, {128, 28}, {256, 14}, {512, 7}}) {
    // ResNet-18's 3x3 stages; GFLOP/s of the direct convolution's count.
    Tensor x = random_f32({1, c, h, h}, rng), w = random_f32({c, c, 3, 3}, rng);
    Tensor u = Tensor::empty(DType::F32, {16, c, c}), b = random_f32({c}, rng);
    cpu::winograd_weights_f32(w.ptr<float>(), c, c, u.ptr<float>());
    Node n = test::node(OpType::WinogradConv);
    n.attrs.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    n.attrs.set("activation", std::string("relu"));
    n.inputs = {0, 1, 2};
    std::string name = "winograd " + std::to_string(c) + "x" + std::to_string(h) + "^2";
    benches.push_back({name, n, {x, u, b}, cpu::winograd_conv_f32_avx2,
                       cpu::winograd_conv_f32_avx512, 2.0 * c * c * 9 * h * h});
  }
  std::printf("threads %d; median of 15 rounds, AVX2 and AVX-512 alternating\n", threads);
  const char* only = std::getenv("EMBER_BENCH_ONLY");  // a substring of the names to run
  for (B& b : benches) {
    if (only && b.name.find(only) == std::string::npos) continue;
    std::vector<const Tensor*> in;
    for (const Tensor& t : b.in) in.push_back(&t);
    test::OpRun out = op_run(b.n, in, b.avx512, false, threads, true);
    Tensor y = out[0];
    KernelCtx ctx{b.n, in, {&y}, threads};
    const int reps = std::max(1, (int)(2e8 / b.flop));  // ~1 ms and more per timing
    std::vector<double> t2, t5;
    auto time = [&](KernelFn fn) {
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; r++) fn(ctx);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    };
    time(b.avx2);
    time(b.avx512);
    for (int round = 0; round < 15; round++) {
      t2.push_back(time(b.avx2));
      t5.push_back(time(b.avx512));
    }
    std::sort(t2.begin(), t2.end());
    std::sort(t5.begin(), t5.end());
    double m2 = t2[t2.size() / 2], m5 = t5[t5.size() / 2];
    std::printf("%-36s avx2 %9.1f us %6.1f GFLOP/s   avx512 %9.1f us %6.1f GFLOP/s   x%.2f\n",
                b.name.c_str(), m2 * 1e6, b.flop / m2 / 1e9, m5 * 1e6, b.flop / m5 / 1e9, m2 / m5);
  }
}

#endif  // __x86_64__
