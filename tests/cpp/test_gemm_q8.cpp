// INT8 per-32-block weight GEMM, W8A16i (kernels/generic/gemm_q8.h, kernels/x86/gemm_q8_avx2.cpp),
// its op Q8MatMul and the embedding op Q8Gather (cpp/src/ops/ops_q8matmul.cpp): the int16
// activation quantizers against a plain scalar reading of the spec (ties, zeros, non-finite);
// every kernel path bit for bit against the reference on odd shapes, bias and activations;
// extreme values (lanes at 4 * 32767 * 128); the pack functions against kernels/common/quant.cpp's
// Q8_0 dequantizer; accuracy against a double matmul on the dequantized weights; batch
// invariance over M, threads and paths; Q8Gather rows and index errors; shape inference errors.
// "q8 bench" (skipped unless asked for) measures the GEMV bandwidth on SmolLM2's tied LM head
// [49152, 576] against a plain read of the same bytes.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/thread_pool.h"
#include "kernels/common/quant.h"
#include "kernels/generic/gemm_q8.h"
#include "op_test_util.h"
#include "runtime/registry.h"

using namespace ember;
using ember::test::random_f32;
using ember::test::error_of;
using ember::test::op_run;

namespace {

struct NamedQ8 {
  std::string name;
  KernelFn fn;
};

// The Q8MatMul kernels this CPU can run.
std::vector<NamedQ8> q8_kernels() {
  std::vector<NamedQ8> ks = {{"q8matmul", cpu::q8matmul}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"q8matmul_avx2", cpu::q8matmul_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"q8matmul_avx512", cpu::q8matmul_avx512});
#endif
  return ks;
}

// Packed weights (codes, scales) of N x K.
struct Q8W {
  int64_t N = 0, K = 0;
  Tensor codes, scales;
};

Q8W q8_alloc(int64_t N, int64_t K) {
  Q8W w{N, K};
  w.codes = Tensor::zeros(DType::I8, {N, cpu::q8_blocks(K), 32});
  w.scales = Tensor::zeros(DType::F32, {N, cpu::q8_blocks(K)});
  return w;
}

Q8W q8_from_float(const Tensor& w) {
  Q8W p = q8_alloc(w.dim(0), w.dim(1));
  cpu::q8_quantize(w.ptr<float>(), p.N, p.K, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
  return p;
}

// Raw codes over the whole int8 range (-128 included, which q8_quantize never makes; GGUF
// files may), zero past K, and random positive scales.
Q8W q8_random(int64_t N, int64_t K, uint32_t seed) {
  Q8W p = q8_alloc(N, K);
  std::mt19937 rng(seed);
  const int64_t nb = cpu::q8_blocks(K);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < nb * 32; k++)
      p.codes.ptr<int8_t>()[n * nb * 32 + k] = k < K ? (int8_t)(rng() & 0xff) : 0;
  p.scales = random_f32({N, nb}, seed + 1, 1e-3f, 2e-2f);
  return p;
}

// W [N, K] as the kernels see it: code * scale.
std::vector<float> q8_weights(const Q8W& p) {
  const int64_t nb = cpu::q8_blocks(p.K);
  std::vector<float> w(p.N * p.K);
  for (int64_t n = 0; n < p.N; n++)
    for (int64_t k = 0; k < p.K; k++)
      w[n * p.K + k] = (float)p.codes.ptr<int8_t>()[(n * nb + k / 32) * 32 + k % 32] *
                       p.scales.ptr<float>()[n * nb + k / 32];
  return w;
}

Node q8_node(const Q8W& p, const std::string& act = "none") {
  Node n = test::node(OpType::Q8MatMul);
  n.attrs.set("n", p.N);
  n.attrs.set("k", p.K);
  if (act != "none") n.attrs.set("activation", act);
  return n;
}

// Runs Q8MatMul with `fn` (the reference when null).
Tensor q8_run(const Q8W& p, const Tensor& a, const Tensor* bias, const std::string& act,
              KernelFn fn, int threads = 2) {
  return op_run(q8_node(p, act), {&a, &p.codes, &p.scales, bias}, fn, false, threads, true)[0];
}

bool bit_equal(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, n * 4) == 0; }

// Index of the first element whose bits differ (NaNs equal), -1 when none.
int64_t first_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    float x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (std::memcmp(&x, &y, 4) != 0 && !(std::isnan(x) && std::isnan(y))) return i;
  }
  return -1;
}

void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (!(std::fabs(x - y) <= tol * (1.0 + std::fabs(y)))) {
      FAIL_CHECK("element ", i, ": ", x, " vs ", y);
      return;
    }
  }
}

using QuantFn = void (*)(const float*, int64_t, int64_t, int64_t, int16_t*, float*);

struct NamedQuant {
  std::string name;
  QuantFn fn;
};

// The activation quantizers this CPU can run.
std::vector<NamedQuant> q8_quantizers() {
  std::vector<NamedQuant> qs = {{"q8_act_quantize16", cpu::q8_act_quantize16}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) qs.push_back({"q8_act_quantize16_avx2", cpu::q8_act_quantize16_avx2});
#endif
  return qs;
}

// Round half to even without nearbyint (and so without the rounding mode): x is a quotient of
// |x| <= about 65534, so x - floor(x) is exact.
int round_half_even(float x) {
  float r = std::floor(x), f = x - r;
  int c = (int)r;
  if (f > 0.5f || (f == 0.5f && c % 2 != 0)) c++;
  return c;
}

// The spec of Q8MatMul's activation quantizer read plainly: per 32-block zero-padded past K,
// d = amax / 32767 (NaN for a block with an inf or NaN, whose q are 0), q = round(a / d)
// clamped to +-32767, 0 where d = 0.
void spec_quantize16(const float* a, int64_t lda, int64_t M, int64_t K, int16_t* q, float* d) {
  const int64_t nb = cpu::q8_blocks(K);
  for (int64_t m = 0; m < M; m++)
    for (int64_t b = 0; b < nb; b++) {
      float amax = 0.0f;
      bool finite = true;
      for (int64_t k = 32 * b; k < std::min(K, 32 * b + 32); k++) {
        float x = a[m * lda + k];
        if (std::isnan(x) || std::isinf(x)) finite = false;
        if (std::fabs(x) > amax) amax = std::fabs(x);
      }
      float db = finite ? amax / 32767.0f : NAN;
      d[m * nb + b] = db;
      for (int64_t j = 0; j < 32; j++) {
        int64_t k = 32 * b + j;
        int c = 0;
        if (finite && db != 0.0f && k < K)
          c = std::min(32767, std::max(-32767, round_half_even(a[m * lda + k] / db)));
        q[m * nb * 32 + k] = (int16_t)c;
      }
    }
}

Node gather_node(int64_t k) {
  Node n = test::node(OpType::Q8Gather);
  n.attrs.set("k", k);
  return n;
}

}  // namespace

TEST_CASE("q8 activation quantizers match a plain reading of the spec: ties, zeros, non-finite") {
  std::mt19937 rng(50);
  std::uniform_int_distribution<int> code(-32767, 32766);
  std::uniform_int_distribution<int> expo(-30, 30);
  int64_t ties = 0, odd_ties = 0;
  for (int64_t K : {1, 7, 31, 32, 33, 100, 576, 1000}) {
    CAPTURE(K);
    const int64_t M = 9, lda = K + 3, nb = cpu::q8_blocks(K);
    Tensor a = random_f32({M, lda}, 51 + (uint32_t)K, -3.0f, 3.0f);
    float* ap = a.ptr<float>();
    // Row 1: ties. In each block one element is +-32767 * 2^e, so d = 2^e, and every other is
    // (c + 0.5) * 2^e: a / d = c + 0.5 exactly.
    for (int64_t b = 0; b < nb; b++) {
      const float scale = std::ldexp(1.0f, expo(rng));
      const int64_t len = std::min<int64_t>(32, K - 32 * b), top = (b * 7) % len;
      for (int64_t j = 0; j < len; j++)
        ap[1 * lda + 32 * b + j] = j == top ? (b % 2 ? -32767.0f : 32767.0f) * scale
                                            : ((float)code(rng) + 0.5f) * scale;
    }
    for (int64_t k = 0; k < K; k++) {
      ap[2 * lda + k] = k % 5 == 0 ? 0.0f : ap[2 * lda + k];  // scattered zeros
      ap[3 * lda + k] = k < 32 ? 0.0f : ap[3 * lda + k];       // an all-zero block (d = 0)
      ap[4 * lda + k] *= 1e-39f;                                // subnormal inputs
      ap[5 * lda + k] *= k < 32 ? 1e-42f : 3e37f;              // d underflows to 0; huge
      ap[6 * lda + k] = (float)(k % 9) - 4.0f;                  // small integers, amax 4
    }
    if (K > 40) ap[7 * lda + 40] = NAN;  // a NaN block, the row's other blocks as usual
    ap[8 * lda + K - 1] = -INFINITY;      // an inf in the tail block
    std::vector<int16_t> want(M * nb * 32);
    std::vector<float> dwant(M * nb);
    spec_quantize16(ap, lda, M, K, want.data(), dwant.data());
    CHECK(dwant[3 * nb] == 0.0f);
    CHECK(std::isnan(dwant[8 * nb + nb - 1]));
    for (int64_t k = 0; k < K; k++) {
      float x = ap[1 * lda + k] / dwant[nb + k / 32];
      if (x != std::floor(x)) {
        ties++;
        odd_ties += ((int)std::floor(x) % 2 != 0);
        CHECK(std::fabs(x - std::floor(x) - 0.5f) == 0.0f);
      }
    }
    for (NamedQuant qz : q8_quantizers()) {
      CAPTURE(qz.name);
      std::vector<int16_t> q(M * nb * 32, 0x5555);  // garbage: every element gets written
      std::vector<float> d(M * nb, -1.0f);
      qz.fn(ap, lda, M, K, q.data(), d.data());
      CHECK(std::memcmp(q.data(), want.data(), q.size() * 2) == 0);
      for (int64_t i = 0; i < M * nb; i++) {
        CAPTURE(i);
        bool both_nan = std::isnan(d[i]) && std::isnan(dwant[i]);
        CHECK((std::memcmp(&d[i], &dwant[i], 4) == 0 || both_nan));
      }
      // One row at a time gives the same bits.
      std::vector<int16_t> q1(nb * 32);
      std::vector<float> d1(nb);
      qz.fn(ap + 6 * lda, lda, 1, K, q1.data(), d1.data());
      CHECK(std::memcmp(q1.data(), want.data() + 6 * nb * 32, nb * 64) == 0);
    }
  }
  // Both parities of ties occurred (so round-half-even was exercised both ways).
  CHECK(ties > 1000);
  CHECK(odd_ties > 300);
  CHECK(ties - odd_ties > 300);
}

TEST_CASE("q8 matmul kernels match the reference bit for bit on odd shapes") {
  const char* acts[] = {"none", "relu", "gelu", "gelu_tanh"};
  uint32_t seed = 1;
  int combo = 0;
  for (int64_t K : {32, 33, 100, 576, 1000})
    for (int64_t N : {1, 7, 33, 49})
      for (int64_t M : {1, 2, 7, 64}) {
        combo++;
        bool raw = combo % 3 == 0, with_bias = combo % 5 < 3;
        std::string act = acts[combo % 7 < 4 ? 0 : combo % 4];
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(raw);
        CAPTURE(with_bias);
        CAPTURE(act);
        Q8W p = raw ? q8_random(N, K, seed) : q8_from_float(random_f32({N, K}, seed, -1.5f, 1.0f));
        seed++;
        Tensor a = random_f32({M, K}, seed++, -3.0f, 3.0f), bias = random_f32({N}, seed++);
        const Tensor* b = with_bias ? &bias : nullptr;
        Tensor ref = q8_run(p, a, b, act, nullptr);
        for (NamedQ8 k : q8_kernels()) {
          CAPTURE(k.name);
          for (int threads : {1, 2}) {
            Tensor y = q8_run(p, a, b, act, k.fn, threads);
            REQUIRE(y.shape() == Shape{M, N});
            if (act == "none") CHECK(first_diff(y, ref) == -1);
            else check_close(y, ref, 1e-6);  // the activation rows are within a few ulp
          }
        }
      }
}

TEST_CASE("q8 matmul leading dims, absent bias, a 1-D input and the registry") {
  Q8W p = q8_from_float(random_f32({20, 96}, 3));
  Tensor a = random_f32({2, 3, 96}, 4), a1 = random_f32({96}, 5);
  Tensor ref = q8_run(p, a, nullptr, "none", nullptr), ref1 = q8_run(p, a1, nullptr, "none", nullptr);
  CHECK(ref.shape() == Shape{2, 3, 20});
  CHECK(ref1.shape() == Shape{20});
  for (NamedQ8 k : q8_kernels()) {
    CAPTURE(k.name);
    CHECK(first_diff(q8_run(p, a, nullptr, "none", k.fn), ref) == -1);
    CHECK(first_diff(q8_run(p, a1, nullptr, "none", k.fn), ref1) == -1);
  }
  // The registry holds the generic kernel (op_run asks at Isa::Generic).
  test::OpRun r = op_run(q8_node(p), {&a, &p.codes, &p.scales}, nullptr, true, 2, true);
  REQUIRE(r.fast != nullptr);
  CHECK(std::string(r.fast->name) == "q8matmul");
  CHECK(first_diff(r[0], ref) == -1);
  // M = 0 leaves an empty output.
  Tensor a0 = Tensor::zeros(DType::F32, {0, 96});
  for (NamedQ8 k : q8_kernels()) CHECK(q8_run(p, a0, nullptr, "none", k.fn).shape() == Shape{0, 20});
}

#if defined(__x86_64__)
TEST_CASE("q8 AVX2 tiles equal the generic ones bit for bit") {
  if (cpu_isa() < Isa::Avx2) return;  // no AVX2 on this CPU: nothing to compare
  uint32_t seed = 100;
  for (int64_t K : {1, 31, 32, 33, 95, 257, 288, 576, 1000}) {
    CAPTURE(K);
    const int64_t M = 9, nb = cpu::q8_blocks(K);
    Tensor a = random_f32({M, K}, seed++, -2.0f, 2.0f);
    float* ap = a.ptr<float>();
    for (int64_t k = 0; k < K; k++) ap[1 * K + k] = 0.0f;  // special rows: zeros, tiny, huge
    for (int64_t k = 0; k < K; k++) ap[2 * K + k] *= 1e-39f;
    for (int64_t k = 0; k < K; k++) ap[3 * K + k] *= 3e37f;
    for (int64_t k = 0; k < K; k++) ap[4 * K + k] = k % 2 ? 2.0f : -2.0f;  // q = +-32767
    std::vector<int16_t> q(M * nb * 32);
    std::vector<float> d(M * nb);
    cpu::q8_act_quantize16_avx2(ap, K, M, K, q.data(), d.data());
    const int64_t N = 13, ldy = N + 5;
    Q8W p = q8_random(N, K, seed++);
    Tensor bias = random_f32({N}, seed++);
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 9})
      for (int64_t cols : {1, 2, 3, 4, 5, 8, 13})
        for (bool with_bias : {false, true}) {
          CAPTURE(rows);
          CAPTURE(cols);
          std::vector<float> y0(rows * ldy, -1.0f), y1(rows * ldy, -1.0f);
          const float* b = with_bias ? bias.ptr<float>() : nullptr;
          cpu::q8_gemm_tile(q.data(), d.data(), rows, p.codes.ptr<int8_t>(), p.scales.ptr<float>(),
                            b, cols, K, y0.data(), ldy);
          cpu::q8_gemm_tile_avx2(q.data(), d.data(), rows, p.codes.ptr<int8_t>(),
                                 p.scales.ptr<float>(), b, cols, K, y1.data(), ldy);
          CHECK(bit_equal(y0.data(), y1.data(), rows * ldy));  // padding untouched too
          CHECK(y1[cols] == -1.0f);
        }
  }
}
#endif

#if defined(__x86_64__)
TEST_CASE("q8 AVX-512 tiles equal the AVX2 ones bit for bit; a row alone equals it among 16") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("no AVX-512 VNNI on this CPU: skipped");
    return;
  }
  uint32_t seed = 1300;
  for (int64_t K : {1, 31, 33, 95, 257, 288, 576, 1000}) {
    CAPTURE(K);
    const int64_t M = 17, nb = cpu::q8_blocks(K);
    Tensor a = random_f32({M, K}, seed++, -2.0f, 2.0f);
    float* ap = a.ptr<float>();
    for (int64_t k = 0; k < K; k++) ap[1 * K + k] = k % 2 ? 2.0f : -2.0f;  // q = +-32767
    for (int64_t k = 0; k < K; k += 5) ap[2 * K + k] *= 1e4f;               // uneven blocks
    std::vector<int16_t> q(M * nb * 32);
    std::vector<float> d(M * nb);
    cpu::q8_act_quantize16_avx2(ap, K, M, K, q.data(), d.data());
    const int64_t N = 29, ldy = N + 3;
    Q8W p = q8_random(N, K, seed++);
    Tensor bias = random_f32({N}, seed++);
    for (int64_t rows : {1, 2, 3, 4, 5, 8, 16, 17})
      for (int64_t cols : {1, 2, 3, 5, 8, 9, 13, 17, 29})
        for (bool with_bias : {false, true}) {
          CAPTURE(rows);
          CAPTURE(cols);
          CAPTURE(with_bias);
          std::vector<float> y0(rows * ldy, -1.0f), y1(rows * ldy, -1.0f);
          const float* b = with_bias ? bias.ptr<float>() : nullptr;
          cpu::q8_gemm_tile_avx2(q.data(), d.data(), rows, p.codes.ptr<int8_t>(),
                                 p.scales.ptr<float>(), b, cols, K, y0.data(), ldy);
          cpu::q8_gemm_tile_avx512(q.data(), d.data(), rows, p.codes.ptr<int8_t>(),
                                   p.scales.ptr<float>(), b, cols, K, y1.data(), ldy);
          CHECK(bit_equal(y0.data(), y1.data(), rows * ldy));  // padding untouched too
          CHECK(y1[cols] == -1.0f);
          // Each row alone (the GEMV) gives its bits in the tile.
          for (int64_t r : {int64_t(0), rows / 2, rows - 1}) {
            std::vector<float> y2(cols, -1.0f);
            cpu::q8_gemm_tile_avx512(q.data() + r * nb * 32, d.data() + r * nb, 1,
                                     p.codes.ptr<int8_t>(), p.scales.ptr<float>(), b, cols, K,
                                     y2.data(), cols);
            CHECK(bit_equal(y2.data(), y1.data() + r * ldy, cols));
          }
        }
  }
}
#endif

TEST_CASE("q8 matmul extreme values: codes -128 and 127, +-amax, zero blocks, huge, tiny, NaN") {
  const int64_t N = 6, K = 160, M = 8, nb = 5;
  Q8W p = q8_alloc(N, K);
  int8_t* c = p.codes.ptr<int8_t>();
  std::mt19937 rng(1);
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < nb * 32; i++)
      c[n * nb * 32 + i] = n == 0 ? -128 : n == 1 ? 127 : n == 2 ? (i % 2 ? -128 : 127) : (int8_t)rng();
  p.scales = random_f32({N, nb}, 2, 0.5f, 2.0f);
  p.scales.ptr<float>()[3 * nb + 1] = 1e30f;  // a huge and a tiny block scale
  p.scales.ptr<float>()[4 * nb + 2] = 1e-30f;
  Tensor a = random_f32({M, K}, 3, -1.0f, 1.0f);
  float* ap = a.ptr<float>();
  for (int64_t k = 0; k < K; k++) {
    ap[0 * K + k] = k % 3 ? 5.0f : -5.0f;          // every element at +-amax: q = +-32767
    if (k < 32) ap[1 * K + k] = 0.0f;              // a block of zeros, the rest random
    ap[2 * K + k] *= 1e25f;                        // huge
    ap[3 * K + k] *= k < 128 ? 1e-36f : 1e-44f;    // tiny, subnormal, and a block whose d is 0
    ap[4 * K + k] = k % 32 == 5 ? 1.0f : 1e-3f;    // one outlier per block
    ap[7 * K + k] = 5.0f;  // q = 32767 throughout: lanes at +-4 * 32767 * 128 for codes +-128
  }
  ap[5 * K + 40] = NAN;  // a non-finite element makes its row NaN
  ap[6 * K + 159] = -INFINITY;
  Tensor bias = random_f32({N}, 4);
  Tensor ref = q8_run(p, a, &bias, "none", nullptr);
  for (int64_t n = 0; n < N; n++) {
    CHECK(std::isnan(ref.ptr<float>()[5 * N + n]));
    CHECK(std::isnan(ref.ptr<float>()[6 * N + n]));
    for (int64_t m : {0, 1, 2, 3, 4, 7})  // but huge A x huge scale (row 2, column 3) overflows
      CHECK(std::isfinite(ref.ptr<float>()[m * N + n]) == (m != 2 || n != 3));
  }
  // Rows 0 and 7 against exact arithmetic: q = +-32767, d = 5 / 32767; row 7's lanes reach
  // -+4 * 32767 * 128 on columns 0 and 1 (an int16 overflow or saturation would show).
  for (int64_t m : {0, 7})
    for (int64_t n : {0, 1, 2}) {
      double want = bias.ptr<float>()[n];
      for (int64_t k = 0; k < K; k++) {
        double w = c[n * nb * 32 + k] * (double)p.scales.ptr<float>()[n * nb + k / 32];
        want += w * (m == 7 || k % 3 ? 32767 : -32767) * (double)(5.0f / 32767.0f);
      }
      CAPTURE(m);
      CAPTURE(n);
      CHECK(ref.ptr<float>()[m * N + n] == doctest::Approx(want).epsilon(1e-6));
    }
  for (NamedQ8 k : q8_kernels()) {
    CAPTURE(k.name);
    for (int64_t m0 = 0; m0 < M; m0++) {  // and each row alone
      Tensor row = Tensor::empty(DType::F32, {1, K});
      std::memcpy(row.data(), ap + m0 * K, K * 4);
      Tensor one = q8_run(p, row, &bias, "none", k.fn, 1);
      if (m0 == 5 || m0 == 6)
        for (int64_t n = 0; n < N; n++) CHECK(std::isnan(one.ptr<float>()[n]));
      else
        CHECK(bit_equal(one.ptr<float>(), ref.ptr<float>() + m0 * N, N));
    }
    CHECK(first_diff(q8_run(p, a, &bias, "none", k.fn), ref) == -1);
    CHECK(first_diff(q8_run(p, a, &bias, "relu", k.fn), q8_run(p, a, &bias, "relu", nullptr)) == -1);
  }
}

TEST_CASE("q8 matmul lane extremes are exact: 4 * 32767 * 128 in one lane") {
  // One block, codes all -128 or all 127, scale 1, a all +-5: q = +-32767, every lane is
  // p = 4 * 32767 * code, and y = sum8 of 8 equal fl(p * d): 8 * fl(p * d), exactly.
  const int64_t N = 3, K = 32, M = 2;
  Q8W p = q8_alloc(N, K);
  for (int64_t j = 0; j < 32; j++) {
    p.codes.ptr<int8_t>()[j] = -128;
    p.codes.ptr<int8_t>()[32 + j] = 127;
    p.codes.ptr<int8_t>()[64 + j] = j % 2 ? 127 : -128;
  }
  for (int64_t n = 0; n < N; n++) p.scales.ptr<float>()[n] = 1.0f;
  Tensor a = Tensor::empty(DType::F32, {M, K});
  for (int64_t k = 0; k < K; k++) {
    a.ptr<float>()[k] = 5.0f;
    a.ptr<float>()[K + k] = -5.0f;
  }
  const float d = 5.0f / 32767.0f;
  const int64_t lane[N] = {4 * 32767 * -128, 4 * 32767 * 127, 2 * 32767 * (127 - 128)};
  auto want = [&](int64_t m, int64_t n) {
    double pd = (double)(m == 0 ? lane[n] : -lane[n]) * (double)d;  // exact in double
    return 8.0f * (float)pd;
  };
  CHECK(lane[0] == -16776704);
  std::vector<NamedQ8> ks = q8_kernels();
  ks.insert(ks.begin(), {"reference", nullptr});
  for (const NamedQ8& k : ks) {
    CAPTURE(k.name);
    Tensor y = q8_run(p, a, nullptr, "none", k.fn, 1);
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        CAPTURE(m);
        CAPTURE(n);
        CHECK(y.ptr<float>()[m * N + n] == want(m, n));
      }
  }
}

TEST_CASE("q8 pack from GGUF Q8_0 reconstructs the blocks exactly") {
  const int64_t N = 5, K = 96;
  Tensor w = random_f32({N, K}, 300, -3.0f, 2.0f);
  std::vector<block_q8_0> blk(N * K / 32);
  q8_0_from_float(w.ptr<float>(), blk.data(), N * K);
  blk[3].qs[7] = -128;  // ggml never writes -128, but a file may hold it
  std::vector<float> ref(N * K);
  q8_0_to_float(blk.data(), ref.data(), N * K);
  Q8W p = q8_alloc(N, K);
  cpu::q8_pack_from_q8_0(blk.data(), N, K, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
  std::vector<float> got = q8_weights(p);
  CHECK(bit_equal(got.data(), ref.data(), N * K));
  for (int64_t i = 0; i < N * K / 32; i++) {
    CHECK(p.scales.ptr<float>()[i] == f16_to_f32(blk[i].d));
    CHECK(std::memcmp(p.codes.ptr<int8_t>() + 32 * i, blk[i].qs, 32) == 0);
  }
  // Q8MatMul on them matches a double matmul on the dequantized weights within the activation
  // rounding (half a step, amax / 65534, per element) and float summation.
  Tensor a = random_f32({3, K}, 301);
  for (NamedQ8 k : q8_kernels()) {
    Tensor y = q8_run(p, a, nullptr, "none", k.fn);
    for (int64_t m = 0; m < 3; m++)
      for (int64_t n = 0; n < N; n++) {
        double want = 0, bound = 0;
        for (int64_t j = 0; j < K; j++) {
          want += (double)a.ptr<float>()[m * K + j] * ref[n * K + j];
          bound += std::fabs(ref[n * K + j]) / 65534.0;  // |a| <= 1
        }
        CHECK(std::fabs(y.ptr<float>()[m * N + n] - want) <= bound * 1.01 + 1e-5);
      }
  }
  CHECK(error_of([&] {
          cpu::q8_pack_from_q8_0(blk.data(), N, 40, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
        }) == ErrorKind::Model);
  CHECK(error_of([&] {
          cpu::q8_pack_from_q8_0(blk.data(), -1, K, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
        }) == ErrorKind::Model);
}

TEST_CASE("q8 quantize: round to nearest per 32-block, zeros past K") {
  uint32_t seed = 350;
  for (int64_t K : {1, 32, 33, 100, 576}) {
    CAPTURE(K);
    const int64_t N = 7, nb = cpu::q8_blocks(K);
    Tensor w = random_f32({N, K}, seed++, -2.0f, 0.5f);
    for (int64_t k = 0; k < std::min<int64_t>(K, 32); k++) w.ptr<float>()[3 * K + k] = 0.0f;
    Q8W p = q8_from_float(w);
    std::vector<float> got = q8_weights(p);
    for (int64_t n = 0; n < N; n++)
      for (int64_t b = 0; b < nb; b++) {
        float amax = 0;
        for (int64_t k = 32 * b; k < std::min(K, 32 * b + 32); k++)
          amax = std::max(amax, std::fabs(w.ptr<float>()[n * K + k]));
        float d = p.scales.ptr<float>()[n * nb + b];
        CHECK(d == amax / 127.0f);
        for (int64_t j = 0; j < 32; j++) {
          int code = p.codes.ptr<int8_t>()[(n * nb + b) * 32 + j];
          int64_t k = 32 * b + j;
          if (k >= K) {
            CHECK(code == 0);
            continue;
          }
          CHECK(std::abs(code) <= 127);
          // round(x / d): within half a step (and the rounding of x / d).
          CHECK(std::fabs(got[n * K + k] - w.ptr<float>()[n * K + k]) <= d * (0.5f + 1e-5f) + 1e-30f);
        }
      }
    // The amax element of each block is exactly +-127.
    for (int64_t n = 0; n < N; n++) {
      const int8_t* c0 = p.codes.ptr<int8_t>() + n * nb * 32;
      if (n == 3) {  // its first block is zeros
        for (int j = 0; j < 32; j++) CHECK(c0[j] == 0);
        CHECK(p.scales.ptr<float>()[n * nb] == 0.0f);
        continue;
      }
      int mx = 0;
      for (int j = 0; j < 32; j++) mx = std::max(mx, std::abs((int)c0[j]));
      CHECK(mx == 127);
    }
  }
  Tensor bad = random_f32({2, 40}, 360);
  bad.ptr<float>()[45] = INFINITY;
  Q8W p = q8_alloc(2, 40);
  CHECK(error_of([&] {
          cpu::q8_quantize(bad.ptr<float>(), 2, 40, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
        }) == ErrorKind::Model);
  CHECK(error_of([&] {
          cpu::q8_quantize(bad.ptr<float>(), 2, 0, p.codes.ptr<int8_t>(), p.scales.ptr<float>());
        }) == ErrorKind::Model);
}

TEST_CASE("q8 matmul error against a double matmul is that of 16-bit activations") {
  const int64_t M = 8, N = 64, K = 1000;
  Q8W p = q8_from_float(random_f32({N, K}, 400, -1.0f, 1.0f));
  std::vector<float> w = q8_weights(p);
  std::mt19937 rng(401);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensor a = Tensor::empty(DType::F32, {M, K});
  for (int64_t i = 0; i < M * K; i++) a.ptr<float>()[i] = nd(rng);
  for (NamedQ8 k : q8_kernels()) {
    CAPTURE(k.name);
    Tensor y = q8_run(p, a, nullptr, "none", k.fn);
    double err2 = 0, ref2 = 0;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        double want = 0, bound = 0;
        for (int64_t j = 0; j < K; j++) {
          const float* ab = a.ptr<float>() + m * K + j / 32 * 32;
          float amax = 0;
          for (int64_t t = 0; t < std::min<int64_t>(32, K - j / 32 * 32); t++)
            amax = std::max(amax, std::fabs(ab[t]));
          want += (double)a.ptr<float>()[m * K + j] * w[n * K + j];
          bound += std::fabs(w[n * K + j]) * amax / 65534.0;  // half a quantization step
        }
        double got = y.ptr<float>()[m * N + n];
        CHECK(std::fabs(got - want) <= bound * 1.001 + 1e-4);
        err2 += (got - want) * (got - want);
        ref2 += want * want;
      }
    MESSAGE(k.name, ": relative RMS error vs double on the dequantized weights ",
            std::sqrt(err2 / ref2));
    CHECK(std::sqrt(err2 / ref2) < 1e-4);  // int8 activations: < 1e-2
  }
}

TEST_CASE("q8 matmul is batch invariant: M, threads and GEMV/GEMM paths give the same bits") {
  const int64_t M = 64, N = 517, K = 576 + 32;
  Q8W p = q8_random(N, K, 500);
  Tensor a = random_f32({M, K}, 501, -2.0f, 2.0f), bias = random_f32({N}, 502);
  Tensor first;
  bool have_first = false;
  for (NamedQ8 k : q8_kernels()) {
    CAPTURE(k.name);
    Tensor big = q8_run(p, a, &bias, "gelu", k.fn, 2);
    Tensor big1 = q8_run(p, a, &bias, "gelu", k.fn, 1);
    CHECK(first_diff(big, big1) == -1);
    Tensor seven = Tensor::empty(DType::F32, {7, K});
    std::memcpy(seven.data(), a.ptr<float>() + 20 * K, 7 * K * 4);
    for (int threads : {1, 2}) {
      Tensor y7 = q8_run(p, seven, &bias, "gelu", k.fn, threads);
      CHECK(bit_equal(y7.ptr<float>(), big.ptr<float>() + 20 * N, 7 * N));
    }
    for (int64_t r0 : {0, 23, 63})
      for (int threads : {1, 2}) {
        Tensor row = Tensor::empty(DType::F32, {1, K});
        std::memcpy(row.data(), a.ptr<float>() + r0 * K, K * 4);
        Tensor one = q8_run(p, row, &bias, "gelu", k.fn, threads);
        CHECK(bit_equal(one.ptr<float>(), big.ptr<float>() + r0 * N, N));
      }
    // Generic and AVX2 give the same sums (activations aside), and so does the reference.
    Tensor plain = q8_run(p, a, &bias, "none", k.fn, 2);
    if (!have_first) first = q8_run(p, a, &bias, "none", nullptr);
    have_first = true;
    CHECK(first_diff(plain, first) == -1);
  }
}

TEST_CASE("q8 gather: rows are codes times their block scale, indices wrap, errors") {
  const int64_t V = 50, K = 100, nb = 4;
  Q8W p = q8_random(V, K, 600);
  p.codes.ptr<int8_t>()[7 * nb * 32 + 3] = -128;
  std::vector<float> w = q8_weights(p);
  Tensor i64 = Tensor::empty(DType::I64, {2, 3}), i32 = Tensor::empty(DType::I32, {4});
  const int64_t want64[] = {0, 7, 49, -1, -50, 7};
  const int32_t want32[] = {3, -3, 0, 49};
  std::memcpy(i64.data(), want64, sizeof want64);
  std::memcpy(i32.data(), want32, sizeof want32);
  for (int pass = 0; pass < 2; pass++) {
    const Tensor& idx = pass ? i32 : i64;
    test::OpRun r = op_run(gather_node(K), {&p.codes, &p.scales, &idx}, nullptr, pass == 1, 1, true);
    if (pass == 1) {
      REQUIRE(r.fast != nullptr);
      CHECK(std::string(r.fast->name) == "q8gather");
    }
    Shape want_shape = idx.shape();
    want_shape.push_back(K);
    REQUIRE(r[0].shape() == want_shape);
    for (int64_t i = 0; i < idx.numel(); i++) {
      int64_t v = pass ? want32[i] : want64[i];
      if (v < 0) v += V;
      CHECK(bit_equal(r[0].ptr<float>() + i * K, w.data() + v * K, K));
    }
  }
  // Out of range: an Input error naming the node, the index and the range.
  Tensor bad = Tensor::empty(DType::I64, {2});
  bad.ptr<int64_t>()[0] = 1;
  for (int64_t v : {int64_t(50), int64_t(-51), int64_t(50000)}) {
    bad.ptr<int64_t>()[1] = v;
    CHECK(error_of([&] { op_run(gather_node(K), {&p.codes, &p.scales, &bad}, nullptr, false, 1, true); }) ==
          ErrorKind::Input);
  }
  Node named = gather_node(K);
  named.name = "x";
  CHECK_THROWS_WITH(op_run(named, {&p.codes, &p.scales, &bad}, nullptr, false, 1, true),
                    "[Q8Gather] node 'x': index 50000 out of range [0, 50)");
  // An empty index tensor gives an empty output.
  Tensor none = Tensor::zeros(DType::I32, {0});
  CHECK(op_run(gather_node(K), {&p.codes, &p.scales, &none}, nullptr, false, 1, true)[0].shape() ==
        Shape{0, K});
}

TEST_CASE("q8 matmul and gather shape inference and their errors") {
  Q8W p = q8_from_float(random_f32({10, 70}, 700));
  Tensor a = random_f32({4, 70}, 701), bias = random_f32({10}, 702);
  auto infer = [&](const Node& n, std::vector<const Tensor*> in) {
    return op_run(n, in, nullptr, false, 1, true);
  };
  auto err = [&](Node n, std::vector<const Tensor*> in) {
    return error_of([&] { infer(n, in); });
  };
  Node good = q8_node(p);
  CHECK(infer(good, {&a, &p.codes, &p.scales, &bias}).types[0].shape == Shape{4, 10});
  CHECK((op_def(OpType::Q8MatMul).flags & kOpFused) != 0);
  CHECK((op_def(OpType::Q8Gather).flags & kOpFused) != 0);
  std::vector<const Tensor*> in = {&a, &p.codes, &p.scales};
  Node bad_k = good;
  bad_k.attrs.set("k", int64_t(71));
  CHECK(err(bad_k, in) == ErrorKind::Model);
  Node bad_n = good;
  bad_n.attrs.set("n", int64_t(11));
  CHECK(err(bad_n, in) == ErrorKind::Model);
  Node zero_k = good;
  zero_k.attrs.set("k", int64_t(0));
  CHECK(err(zero_k, in) == ErrorKind::Model);
  Node no_n = test::node(OpType::Q8MatMul);
  no_n.attrs.set("k", int64_t(70));
  CHECK(err(no_n, in) == ErrorKind::Model);
  CHECK(err(q8_node(p, "swish"), in) == ErrorKind::Model);
  Tensor a_short = random_f32({4, 69}, 703), a_scalar = Tensor::zeros(DType::F32, {});
  Tensor a_f64 = Tensor::zeros(DType::F64, {4, 70}), codes_u8 = Tensor::zeros(DType::U8, {10, 3, 32});
  Tensor codes_short = Tensor::zeros(DType::I8, {10, 2, 32}), codes_q4 = Tensor::zeros(DType::I8, {10, 3, 16});
  Tensor scales_f16 = Tensor::zeros(DType::F16, {10, 3}), scales_short = Tensor::zeros(DType::F32, {10, 2});
  Tensor bias_long = Tensor::zeros(DType::F32, {11}), bias_i32 = Tensor::zeros(DType::I32, {10});
  CHECK(err(good, {&a_short, &p.codes, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a_scalar, &p.codes, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a_f64, &p.codes, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_u8, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_short, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_q4, &p.scales}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &scales_f16}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &scales_short}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &bias_long}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &bias_i32}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes}) == ErrorKind::Model);  // too few inputs
  CHECK_THROWS_WITH(infer(good, {&a, &codes_short, &p.scales}),
                    "[Q8MatMul] node 'n': codes must be int8 [10, 3, 32], got int8 [10, 2, 32]");
  CHECK_THROWS_WITH(infer(good, {&a_short, &p.codes, &p.scales}), doctest::Contains("does not end in K = 70"));

  // Q8Gather: k against the table, its dtypes, the index dtype.
  Tensor idx = Tensor::zeros(DType::I64, {5});
  Tensor idx_f = Tensor::zeros(DType::F32, {5});
  Node g = gather_node(70);
  CHECK(infer(g, {&p.codes, &p.scales, &idx}).types[0].shape == Shape{5, 70});
  Node g_big = gather_node(97);
  CHECK(err(g_big, {&p.codes, &p.scales, &idx}) == ErrorKind::Model);
  Node g_zero = gather_node(0);
  CHECK(err(g_zero, {&p.codes, &p.scales, &idx}) == ErrorKind::Model);
  Node g_huge = gather_node(INT64_MAX);
  CHECK(err(g_huge, {&p.codes, &p.scales, &idx}) == ErrorKind::Model);
  CHECK(err(g, {&p.codes, &p.scales, &idx_f}) == ErrorKind::Model);
  CHECK(err(g, {&codes_u8, &p.scales, &idx}) == ErrorKind::Model);
  CHECK(err(g, {&p.codes, &scales_short, &idx}) == ErrorKind::Model);
  Tensor scales_rows = Tensor::zeros(DType::F32, {9, 3});
  CHECK(err(g, {&p.codes, &scales_rows, &idx}) == ErrorKind::Model);
  CHECK_THROWS_WITH(infer(g, {&codes_short, &p.scales, &idx}),
                    "[Q8Gather] node 'n': codes must be int8 [V, 3, 32], got int8 [10, 2, 32]");
  CHECK_THROWS_WITH(infer(g, {&p.codes, &p.scales, &idx_f}),
                    doctest::Contains("indices must be int32 or int64"));
}

TEST_CASE("q8 bench: LM head GEMV bandwidth vs a streaming read, GEMM throughput" *
          doctest::skip(true) * doctest::description("timing only; run with -tc='q8 bench*' --no-skip")) {
  // Rounds interleave every measurement so that load from other processes hits all of them;
  // each reports its best round (what the machine can do) and its median.
  using clock = std::chrono::steady_clock;
  using Stat = test::Timings;
  const auto seconds = test::seconds_since;
  // GEMV: SmolLM2's tied LM head [49152, 576] (28.3 MB codes + 3.5 MB scales), 4 copies
  // rotated (127 MB, 4x L3), so every call streams its weights from memory.
  const int64_t N = 49152, K = 576, mats = 4;
  std::vector<Q8W> ws;
  for (int64_t i = 0; i < mats; i++) ws.push_back(q8_random(N, K, 800 + (uint32_t)i));
  const double wbytes = (double)ws[0].codes.nbytes() + (double)ws[0].scales.nbytes();
  Tensor x = random_f32({1, K}, 801), y = Tensor::zeros(DType::F32, {1, N});
  Tensor x64 = random_f32({64, K}, 802), y64 = Tensor::zeros(DType::F32, {64, N});
  // The plain read to compare with: a sum over the same bytes in the same rotation, each
  // thread taking its share of every matrix's codes and scales, as the GEMV does.
  uint64_t sink = 0;
  auto sum_words = [](const void* p, int64_t bytes) {
    const uint64_t* w = static_cast<const uint64_t*>(p);
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i + 4 <= bytes / 8; i += 4) {
      s0 += w[i];
      s1 += w[i + 1];
      s2 += w[i + 2];
      s3 += w[i + 3];
    }
    return s0 + s1 + s2 + s3;
  };
  auto stream = [&](int threads) {
    std::vector<uint64_t> part(threads * 8, 0);
    for (const Q8W& p : ws)
      parallel_for(threads, 1, threads, [&](int64_t i0, int64_t i1) {
        for (int64_t th = i0; th < i1; th++) {
          int64_t cb = p.codes.nbytes() / threads, sb = p.scales.nbytes() / threads;
          part[th * 8] += sum_words(p.codes.ptr<int8_t>() + th * cb, cb) +
                          sum_words(p.scales.ptr<char>() + th * sb, sb);
        }
      });
    for (uint64_t v : part) sink += v;
  };
  // The kernel alone, on inputs already in place.
  auto call = [&](KernelFn fn, const Q8W& p, const Tensor& a, Tensor& out, int threads) {
    Node node = q8_node(p);
    node.inputs = {0, 1, 2};
    KernelCtx ctx{node, {&a, &p.codes, &p.scales}, {&out}, threads};
    fn(ctx);
  };
  // Every kernel but the generic one (slow on x86: fmaf calls) in each round, interleaved.
  std::vector<NamedQ8> ks;
  for (NamedQ8 k : q8_kernels())
    if (k.name != "q8matmul" || q8_kernels().size() == 1) ks.push_back(k);
  Tensor x16 = random_f32({16, K}, 803), y16 = Tensor::zeros(DType::F32, {16, N});
  const int rounds = 25;
  std::vector<std::array<Stat, 3>> st(ks.size()), gemv(ks.size()), gemm16(ks.size()),
      gemm(ks.size());
  for (int r = 0; r < rounds; r++)
    for (int threads : {1, 2})
      for (size_t i = 0; i < ks.size(); i++) {
        auto t0 = clock::now();
        stream(threads);
        st[i][threads].t.push_back(seconds(t0) / mats);
        t0 = clock::now();
        for (const Q8W& p : ws) call(ks[i].fn, p, x, y, threads);
        gemv[i][threads].t.push_back(seconds(t0) / mats);
        t0 = clock::now();
        call(ks[i].fn, ws[r % mats], x16, y16, threads);  // decode with 16 requests
        gemm16[i][threads].t.push_back(seconds(t0));
        if (r % 5 == 0) {
          t0 = clock::now();
          call(ks[i].fn, ws[0], x64, y64, threads);
          gemm[i][threads].t.push_back(seconds(t0));
        }
      }
  for (size_t i = 0; i < ks.size(); i++)
    for (int threads : {1, 2}) {
      const Stat &s = st[i][threads], &g = gemv[i][threads], &g16 = gemm16[i][threads];
      MESSAGE(ks[i].name, ", ", threads, " thread(s), best (median): plain read of the weights ",
              wbytes / s.best() / 1e9, " (", wbytes / s.median() / 1e9, ") GB/s; GEMV 49152x576 ",
              wbytes / g.best() / 1e9, " (", wbytes / g.median() / 1e9, ") GB/s, ",
              g.best() * 1e3, " ms = ", s.best() / g.best(), " (", s.median() / g.median(),
              ") of the read; GEMM M=16 ", g16.best() * 1e3, " (", g16.median() * 1e3, ") ms, ",
              16.0 * N * K / g16.median() / 1e9, " GMAC/s (median); M=64 ",
              2.0 * 64 * N * K / gemm[i][threads].best() / 1e9, " GOPS");
    }
  CHECK(sink != 1);
}
