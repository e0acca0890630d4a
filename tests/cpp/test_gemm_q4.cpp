// INT4 weight GEMM, W4A16i (kernels/generic/gemm_q4.h, kernels/x86/gemm_q4_avx2.cpp) and its op
// Q4MatMul (cpp/src/ops/ops_q4matmul.cpp): every kernel path bit for bit against the reference
// on odd shapes, groups, zero points, bias and activations; extreme values; the pack functions
// against kernels/common/quant.cpp's dequantizers; accuracy against a float matmul on the
// dequantized weights; batch invariance over M, threads and paths; f16 scales and offsets bit
// for bit against the same values as f32; shape inference errors. The f32 path (rows flagged in
// f32_rows): against a double reference, batch invariant, mixed rows equal each path alone, the
// AVX2 panel dequantizer bit for bit against the generic one.
// The "q4 bench" cases (timing only) are in bench_gemm_q4.cpp.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/thread_pool.h"
#include "kernels/common/quant.h"
#include "kernels/generic/gemm_q4.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#include "op_test_util.h"
#include "q4_test_util.h"
#include "runtime/registry.h"

using namespace ember;
using ember::test::error_of;
using ember::test::op_run;
using ember::test::random_f32;
using namespace ember::test::q4;


TEST_CASE("q4matmul kernels match the reference bit for bit on odd shapes") {
  const char* acts[] = {"none", "relu", "gelu", "gelu_tanh"};
  uint32_t seed = 1;
  int combo = 0;
  for (int64_t K : {1, 31, 32, 33, 100, 257, 4096 + 32})
    for (int64_t N : {1, 3, 17, 33, 100})
      for (int64_t M : {1, 2, 3, 5, 17, 64}) {
        combo++;
        int64_t group = std::vector<int64_t>{32, 64, 128}[combo % 3];
        bool zp = combo % 2 == 0, with_bias = combo % 5 < 3;
        std::string act = acts[combo % 7 < 4 ? 0 : combo % 4];
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(group);
        CAPTURE(zp);
        CAPTURE(act);
        Q4W p = q4_from_float(random_f32({N, K}, seed++, -1.5f, 1.0f), group, zp);
        Tensor a = random_f32({M, K}, seed++, -3.0f, 3.0f), bias = random_f32({N}, seed++);
        const Tensor* b = with_bias ? &bias : nullptr;
        Tensor ref = q4_run(p, a, b, act, nullptr);
        for (NamedQ4 k : q4_kernels()) {
          CAPTURE(k.name);
          Tensor y = q4_run(p, a, b, act, k.fn, 2);
          REQUIRE(y.shape() == Shape{M, N});
          if (act == "none") CHECK(first_diff(y, ref) == -1);
          else check_close(y, ref, 1e-6);  // the activation rows are within a few ulp
        }
      }
}

TEST_CASE("q4matmul with f16 scales and offsets equals the same values as f32 bit for bit") {
  const char* acts[] = {"none", "relu", "gelu", "gelu_tanh"};
  uint32_t seed = 800;
  int combo = 0;
  for (int64_t group : {32, 64, 128})
    for (int64_t K : {1, 33, 257, 1000, 4096 + 32})
      for (int64_t N : {1, 5, 17, 33})
        for (int64_t M : {1, 2, 7, 64}) {
          combo++;
          bool zp = combo % 2 == 0, with_bias = combo % 3 != 0;
          std::string act = acts[combo % 5 < 3 ? 0 : combo % 4];
          CAPTURE(M);
          CAPTURE(N);
          CAPTURE(K);
          CAPTURE(group);
          CAPTURE(with_bias);
          CAPTURE(act);
          Q4W p32 = q4_from_float(random_f32({N, K}, seed++, -1.5f, 1.0f), group, zp);
          Q4Pair p = q4_f16_pair(p32);
          Tensor a = random_f32({M, K}, seed++, -3.0f, 3.0f), bias = random_f32({N}, seed++);
          const Tensor* b = with_bias ? &bias : nullptr;
          // The reference reads f16 as its f32 value.
          Tensor ref = q4_run(p.f32, a, b, act, nullptr);
          CHECK(first_diff(q4_run(p.f16, a, b, act, nullptr), ref) == -1);
          for (NamedQ4 k : q4_kernels()) {
            CAPTURE(k.name);
            for (int threads : {1, 2}) {
              CAPTURE(threads);
              Tensor y32 = q4_run(p.f32, a, b, act, k.fn, threads);
              Tensor y16 = q4_run(p.f16, a, b, act, k.fn, threads);
              REQUIRE(y16.shape() == Shape{M, N});
              CHECK(first_diff(y16, y32) == -1);
              if (act == "none") CHECK(first_diff(y16, ref) == -1);
            }
          }
        }
}

TEST_CASE("q4matmul leading dims, absent bias and a 1-D input") {
  Q4W p = q4_from_float(random_f32({20, 96}, 3), 64, true);
  Tensor a = random_f32({2, 3, 96}, 4), a1 = random_f32({96}, 5);
  Tensor ref = q4_run(p, a, nullptr, "none", nullptr), ref1 = q4_run(p, a1, nullptr, "none", nullptr);
  CHECK(ref.shape() == Shape{2, 3, 20});
  CHECK(ref1.shape() == Shape{20});
  for (NamedQ4 k : q4_kernels()) {
    CAPTURE(k.name);
    CHECK(first_diff(q4_run(p, a, nullptr, "none", k.fn), ref) == -1);
    CHECK(first_diff(q4_run(p, a1, nullptr, "none", k.fn), ref1) == -1);
  }
  // The registry holds the generic kernel (op_run asks at Isa::Generic).
  test::OpRun r = op_run(q4_node(p), {&a, &p.codes, &p.scales, &p.offsets}, nullptr, true, 2, true);
  REQUIRE(r.fast != nullptr);
  CHECK(std::string(r.fast->name) == "q4matmul");
  CHECK(first_diff(r[0], ref) == -1);
}

#if defined(__x86_64__)
TEST_CASE("q4 AVX2 activation quantizer and tiles equal the generic ones bit for bit") {
  if (cpu_isa() < Isa::Avx2) return;  // no AVX2 on this CPU: nothing to compare
  uint32_t seed = 100;
  for (int64_t K : {1, 31, 32, 33, 95, 257, 1000})
    for (int64_t group : {32, 64, 128}) {
      CAPTURE(K);
      CAPTURE(group);
      const int64_t M = 9, lda = K + 3, nb = cpu::q4_blocks(K), ng = cpu::q4_groups(K, group);
      Tensor a = random_f32({M, lda}, seed++, -2.0f, 2.0f);
      float* ap = a.ptr<float>();
      ap[0] = 0.0f;  // a few special rows: zeros, tiny, huge
      for (int64_t k = 0; k < K; k++) ap[1 * lda + k] = 0.0f;
      for (int64_t k = 0; k < K; k++) ap[2 * lda + k] *= 1e-39f;
      for (int64_t k = 0; k < K; k++) ap[3 * lda + k] *= 3e37f;
      std::vector<int16_t> q0(M * nb * 32), q1(M * nb * 32);
      std::vector<float> d0(M * nb), d1(M * nb), g0(M * ng), g1(M * ng);
      cpu::q4_act_quantize16(ap, lda, M, K, group, q0.data(), d0.data(), g0.data());
      cpu::q4_act_quantize16_avx2(ap, lda, M, K, group, q1.data(), d1.data(), g1.data());
      CHECK(q0 == q1);
      CHECK(bit_equal(d0.data(), d1.data(), M * nb));
      CHECK(bit_equal(g0.data(), g1.data(), M * ng));
      for (int64_t m = 0; m < M; m++)  // zero padding past K
        for (int64_t j = K; j < nb * 32; j++) CHECK(q1[m * nb * 32 + j] == 0);

      const int64_t N = 11, ldy = N + 5;
      Q4W p = q4_from_float(random_f32({N, K}, seed++), group, K % 2 == 1);
      Q4Pair ph = q4_f16_pair(p);
      Tensor bias = random_f32({N}, seed++);
      for (int64_t rows : {1, 2, 3, 4, 5, 9})
        for (int64_t cols : {1, 2, 3, 4, 5, 11})
          for (bool with_bias : {false, true}) {
            CAPTURE(rows);
            CAPTURE(cols);
            std::vector<float> y0(rows * ldy, -1.0f), y1(rows * ldy, -1.0f);
            const float* b = with_bias ? bias.ptr<float>() : nullptr;
            cpu::q4_gemm_tile(q0.data(), d0.data(), g0.data(), rows, p.codes.ptr<uint8_t>(),
                              p.scales.ptr<float>(), p.offsets.ptr<float>(), b, cols, K, group,
                              y0.data(), ldy);
            cpu::q4_gemm_tile_avx2(q0.data(), d0.data(), g0.data(), rows,
                                   p.codes.ptr<uint8_t>(), p.scales.ptr<float>(),
                                   p.offsets.ptr<float>(), b, cols, K, group, y1.data(), ldy);
            CHECK(bit_equal(y0.data(), y1.data(), rows * ldy));  // padding untouched too
            CHECK(y1[cols] == -1.0f);
            // f16 scales and offsets: generic and AVX2 equal the f32 tiles on the same values.
            std::vector<float> z0(rows * ldy, -1.0f), h0(rows * ldy, -1.0f), h1(rows * ldy, -1.0f);
            cpu::q4_gemm_tile(q0.data(), d0.data(), g0.data(), rows, ph.f32.codes.ptr<uint8_t>(),
                              ph.f32.scales.ptr<float>(), ph.f32.offsets.ptr<float>(), b, cols, K,
                              group, z0.data(), ldy);
            cpu::q4_gemm_tile(q0.data(), d0.data(), g0.data(), rows, ph.f16.codes.ptr<uint8_t>(),
                              ph.f16.scales.ptr<uint16_t>(), ph.f16.offsets.ptr<uint16_t>(), b,
                              cols, K, group, h0.data(), ldy);
            cpu::q4_gemm_tile_avx2(q0.data(), d0.data(), g0.data(), rows,
                                   ph.f16.codes.ptr<uint8_t>(), ph.f16.scales.ptr<uint16_t>(),
                                   ph.f16.offsets.ptr<uint16_t>(), b, cols, K, group, h1.data(),
                                   ldy);
            CHECK(bit_equal(z0.data(), h0.data(), rows * ldy));
            CHECK(bit_equal(z0.data(), h1.data(), rows * ldy));
          }
    }
}
#endif

#if defined(__x86_64__)
TEST_CASE("q4 AVX-512 tiles equal the AVX2 ones bit for bit; a row alone equals it among 16") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("no AVX-512 VNNI on this CPU: skipped");
    return;
  }
  uint32_t seed = 1300;
  for (int64_t K : {1, 31, 33, 95, 160, 257, 576, 1000})
    for (int64_t group : {32, 64, 96, 128}) {
      CAPTURE(K);
      CAPTURE(group);
      const int64_t M = 17, nb = cpu::q4_blocks(K), ng = cpu::q4_groups(K, group);
      Tensor a = random_f32({M, K}, seed++, -2.0f, 2.0f);
      for (int64_t k = 0; k < K; k += 7) a.ptr<float>()[3 * K + k] *= 1e4f;  // uneven blocks
      std::vector<int16_t> q(M * nb * 32);
      std::vector<float> d(M * nb), gs(M * ng);
      cpu::q4_act_quantize16_avx2(a.ptr<float>(), K, M, K, group, q.data(), d.data(), gs.data());
      const int64_t N = 13, ldy = N + 3;
      Q4W p = q4_from_float(random_f32({N, K}, seed++, -1.5f, 1.0f), group, K % 2 == 1);
      Q4Pair ph = q4_f16_pair(p);
      Tensor bias = random_f32({N}, seed++);
      for (int64_t rows : {1, 2, 3, 4, 5, 8, 16, 17})
        for (int64_t cols : {1, 2, 3, 4, 5, 7, 9, 13})
          for (bool with_bias : {false, true}) {
            CAPTURE(rows);
            CAPTURE(cols);
            CAPTURE(with_bias);
            const float* b = with_bias ? bias.ptr<float>() : nullptr;
            for (bool f16 : {false, true}) {
              CAPTURE(f16);
              std::vector<float> y0(rows * ldy, -1.0f), y1(rows * ldy, -1.0f);
              if (f16) {
                const uint16_t* sc = ph.f16.scales.ptr<uint16_t>();
                const uint16_t* of = ph.f16.offsets.ptr<uint16_t>();
                cpu::q4_gemm_tile_avx2(q.data(), d.data(), gs.data(), rows, p.codes.ptr<uint8_t>(),
                                       sc, of, b, cols, K, group, y0.data(), ldy);
                cpu::q4_gemm_tile_avx512(q.data(), d.data(), gs.data(), rows,
                                         p.codes.ptr<uint8_t>(), sc, of, b, cols, K, group,
                                         y1.data(), ldy);
              } else {
                const float* sc = p.scales.ptr<float>();
                const float* of = p.offsets.ptr<float>();
                cpu::q4_gemm_tile_avx2(q.data(), d.data(), gs.data(), rows, p.codes.ptr<uint8_t>(),
                                       sc, of, b, cols, K, group, y0.data(), ldy);
                cpu::q4_gemm_tile_avx512(q.data(), d.data(), gs.data(), rows,
                                         p.codes.ptr<uint8_t>(), sc, of, b, cols, K, group,
                                         y1.data(), ldy);
              }
              CHECK(bit_equal(y0.data(), y1.data(), rows * ldy));  // padding untouched too
              CHECK(y1[cols] == -1.0f);
              // Each row alone (the GEMV) gives its bits in the tile.
              for (int64_t r : {int64_t(0), rows / 2, rows - 1}) {
                std::vector<float> y2(cols, -1.0f);
                if (f16)
                  cpu::q4_gemm_tile_avx512(q.data() + r * nb * 32, d.data() + r * nb,
                                           gs.data() + r * ng, 1, p.codes.ptr<uint8_t>(),
                                           ph.f16.scales.ptr<uint16_t>(),
                                           ph.f16.offsets.ptr<uint16_t>(), b, cols, K, group,
                                           y2.data(), cols);
                else
                  cpu::q4_gemm_tile_avx512(q.data() + r * nb * 32, d.data() + r * nb,
                                           gs.data() + r * ng, 1, p.codes.ptr<uint8_t>(),
                                           p.scales.ptr<float>(), p.offsets.ptr<float>(), b, cols,
                                           K, group, y2.data(), cols);
                CHECK(bit_equal(y2.data(), y1.data() + r * ldy, cols));
              }
            }
          }
    }
}
#endif

TEST_CASE("q4matmul extreme values: codes 0 and 15, +-amax, zero blocks, huge, tiny, clamped") {
  const int64_t N = 6, K = 160, group = 64, M = 7;
  Q4W p = q4_alloc(N, K, group);
  uint8_t* c = p.codes.ptr<uint8_t>();
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < cpu::q4_blocks(K) * 16; i++)
      c[n * cpu::q4_blocks(K) * 16 + i] = n == 0 ? 0x00 : n == 1 ? 0xff : (uint8_t)(i * 37 + n);
  Tensor scales = random_f32(p.scales.shape(), 1, 0.5f, 2.0f);
  Tensor offsets = random_f32(p.offsets.shape(), 2, -8.0f, 1.0f);
  p.scales = scales;
  p.offsets = offsets;
  p.scales.ptr<float>()[2 * 3 + 1] = 1e30f;  // a huge and a tiny group scale
  p.scales.ptr<float>()[3 * 3 + 2] = 1e-30f;
  Tensor a = random_f32({M, K}, 3, -1.0f, 1.0f);
  float* ap = a.ptr<float>();
  for (int64_t k = 0; k < K; k++) {
    ap[0 * K + k] = k % 3 ? 5.0f : -5.0f;          // every element at +-amax: q = +-32767
    if (k < 32) ap[1 * K + k] = 0.0f;              // a block of zeros, the rest random
    ap[2 * K + k] *= 1e25f;                        // huge
    ap[3 * K + k] *= k < 128 ? 1e-36f : 1e-44f;    // tiny, subnormal, and a block whose d is 0
    ap[4 * K + k] = k % 32 == 5 ? 1.0f : 1e-3f;    // one outlier per block
  }
  // Row 3, block 2: subnormals whose d rounds down (81590 / 32767 = 2.49 -> 2 units of 2^-149),
  // so amax / d = 40795 and the clamp to +-32767 decides q.
  for (int64_t k = 64; k < 96; k++)
    ap[3 * K + k] = std::ldexp((float)(k % 4 == 0 ? 81590 : (k * 2311) % 60000), -149) *
                    (k % 8 < 4 ? 1.0f : -1.0f);
  ap[5 * K + 40] = NAN;  // a non-finite element makes its row NaN
  ap[6 * K + 159] = -INFINITY;
  using QuantFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int16_t*, float*,
                           float*);
  std::vector<QuantFn> quantizers = {cpu::q4_act_quantize16};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) quantizers.push_back(cpu::q4_act_quantize16_avx2);
#endif
  for (QuantFn quant : quantizers) {
    int16_t q[5 * 32];
    float d[5], gs[3];
    quant(ap + 3 * K, K, 1, K, group, q, d, gs);
    CHECK(d[0] > 0.0f);
    CHECK(d[2] == std::ldexp(2.0f, -149));
    CHECK(d[4] == 0.0f);  // the tiny block quantizes to zeros
    for (int j = 0; j < 32; j++) {
      float v = ap[3 * K + 64 + j] / d[2];
      int want = std::fabs(v) > 32767 ? (v > 0 ? 32767 : -32767) : (int)std::nearbyint(v);
      CHECK(q[64 + j] == want);
    }
    CHECK((q[64] == 32767 && q[68] == -32767));
    CHECK((q[65] > -32767 && q[65] < 32767));
    quant(ap, K, 1, K, group, q, d, gs);
    CHECK((q[0] == -32767 && q[1] == 32767));
  }
  Tensor bias = random_f32({N}, 4);
  Tensor ref = q4_run(p, a, &bias, "none", nullptr);
  for (int64_t n = 0; n < N; n++) {
    CHECK(std::isnan(ref.ptr<float>()[5 * N + n]));
    CHECK(std::isnan(ref.ptr<float>()[6 * N + n]));
    for (int64_t m = 0; m < 5; m++)  // but huge A x huge scale (row 2, column 2) overflows
      CHECK(std::isfinite(ref.ptr<float>()[m * N + n]) == (m != 2 || n != 2));
  }
  // Row 0 against exact integer arithmetic: q = +-32767, d = 5 / 32767.
  const int64_t ng = 3;
  for (int64_t n : {0, 1}) {
    double want = bias.ptr<float>()[n];
    for (int64_t k = 0; k < K; k++) {
      int code = n == 0 ? 0 : 15;
      double w = code * (double)p.scales.ptr<float>()[n * ng + k / group] +
                 p.offsets.ptr<float>()[n * ng + k / group];
      want += w * (k % 3 ? 32767 : -32767) * (double)(5.0f / 32767.0f);
    }
    CHECK(ref.ptr<float>()[n] == doctest::Approx(want).epsilon(1e-5));
  }
  for (NamedQ4 k : q4_kernels()) {
    CAPTURE(k.name);
    for (int64_t m0 = 0; m0 < M; m0++) {  // and each row alone
      Tensor row = Tensor::empty(DType::F32, {1, K});
      std::memcpy(row.data(), ap + m0 * K, K * 4);
      Tensor one = q4_run(p, row, &bias, "none", k.fn, 1);
      if (m0 >= 5)
        for (int64_t n = 0; n < N; n++) CHECK(std::isnan(one.ptr<float>()[n]));
      else
        CHECK(bit_equal(one.ptr<float>(), ref.ptr<float>() + m0 * N, N));
    }
    CHECK(first_diff(q4_run(p, a, &bias, "none", k.fn), ref) == -1);
  }
}

TEST_CASE("q4 pack from Q4G matches q4g_dequantize within float rounding") {
  uint32_t seed = 200;
  for (int64_t K : {1, 33, 100, 256, 300})
    for (int64_t group : {32, 64, 128})
      for (bool zp : {false, true}) {
        CAPTURE(K);
        CAPTURE(group);
        CAPTURE(zp);
        const int64_t N = 7;
        Tensor w = random_f32({N, K}, seed++, -2.0f, 0.5f);
        std::vector<uint8_t> q(N * q4g_row_bytes(K, group)), z(N * q4g_zp_row_bytes(K, group));
        std::vector<float> s(N * q4g_groups(K, group)), ref(N * K);
        q4g_quantize(w.ptr<float>(), N, K, group, zp, q.data(), s.data(), z.data());
        q4g_dequantize(q.data(), s.data(), zp ? z.data() : nullptr, N, K, group, ref.data());
        Q4W p = q4_alloc(N, K, group);
        cpu::q4_pack_from_q4g(q.data(), s.data(), zp ? z.data() : nullptr, N, K, group,
                              p.codes.ptr<uint8_t>(), p.scales.ptr<float>(),
                              p.offsets.ptr<float>());
        std::vector<float> got = q4_weights(p);
        for (int64_t i = 0; i < N * K; i++) {
          float scale = s[(i / K) * q4g_groups(K, group) + (i % K) / group];
          // (q - zp) * s once rounded vs q * s + (-zp * s): two roundings of values <= 15 |s|.
          CHECK(std::fabs(got[i] - ref[i]) <= 16.0f * std::fabs(scale) * 0x1p-23f);
        }
        // q4_quantize is exactly q4g_quantize followed by this pack.
        Q4W p2 = q4_from_float(w, group, zp);
        CHECK(std::memcmp(p2.codes.data(), p.codes.data(), p.codes.nbytes()) == 0);
        CHECK(bit_equal(p2.scales.ptr<float>(), p.scales.ptr<float>(), p.scales.numel()));
        CHECK(bit_equal(p2.offsets.ptr<float>(), p.offsets.ptr<float>(), p.offsets.numel()));
        // Codes past K are 0.
        const int64_t nb = cpu::q4_blocks(K);
        for (int64_t n = 0; n < N; n++)
          for (int64_t k = K; k < nb * 32; k++) {
            const uint8_t* blk = p.codes.ptr<uint8_t>() + (n * nb + k / 32) * 16;
            int j = (int)(k % 32);
            CHECK((j < 16 ? blk[j] & 15 : blk[j - 16] >> 4) == 0);
          }
      }
}

TEST_CASE("q4 pack from GGUF Q4_0 and Q4_1 reconstructs the blocks exactly") {
  const int64_t N = 5, K = 96;
  Tensor w = random_f32({N, K}, 300, -3.0f, 2.0f);
  std::vector<block_q4_0> b0(N * K / 32);
  std::vector<block_q4_1> b1(N * K / 32);
  q4_0_from_float(w.ptr<float>(), b0.data(), N * K);
  q4_1_from_float(w.ptr<float>(), b1.data(), N * K);
  std::vector<float> ref0(N * K), ref1(N * K);
  q4_0_to_float(b0.data(), ref0.data(), N * K);
  q4_1_to_float(b1.data(), ref1.data(), N * K);
  Q4W p0 = q4_alloc(N, K, 32), p1 = q4_alloc(N, K, 32);
  cpu::q4_pack_from_q4_0(b0.data(), N, K, p0.codes.ptr<uint8_t>(), p0.scales.ptr<float>(),
                         p0.offsets.ptr<float>());
  cpu::q4_pack_from_q4_1(b1.data(), N, K, p1.codes.ptr<uint8_t>(), p1.scales.ptr<float>(),
                         p1.offsets.ptr<float>());
  std::vector<float> got0 = q4_weights(p0), got1 = q4_weights(p1);
  CHECK(bit_equal(got0.data(), ref0.data(), N * K));
  // q4_1_to_float rounds q * d, then adds m; q * d is exact, so one fma rounds the same.
  CHECK(bit_equal(got1.data(), ref1.data(), N * K));
  // Q4MatMul on the packed Q4_0 weights matches a float matmul on the dequantized ones.
  Tensor a = random_f32({3, K}, 301);
  for (NamedQ4 k : q4_kernels()) {
    Tensor y = q4_run(p0, a, nullptr, "none", k.fn);
    for (int64_t m = 0; m < 3; m++)
      for (int64_t n = 0; n < N; n++) {
        double want = 0, bound = 0;
        for (int64_t j = 0; j < K; j++) {
          want += (double)a.ptr<float>()[m * K + j] * ref0[n * K + j];
          bound += std::fabs(ref0[n * K + j]) / 65534.0;  // |a| <= 1: step <= 1 / 32767
        }
        CHECK(std::fabs(y.ptr<float>()[m * N + n] - want) <= bound * 1.01 + 1e-6);
      }
  }
  CHECK(error_of([&] {
          cpu::q4_pack_from_q4_0(b0.data(), N, 40, p0.codes.ptr<uint8_t>(),
                                 p0.scales.ptr<float>(), p0.offsets.ptr<float>());
        }) == ErrorKind::Model);
  CHECK(error_of([&] {
          cpu::q4_quantize(w.ptr<float>(), N, K, 48, false, p0.codes.ptr<uint8_t>(),
                           p0.scales.ptr<float>(), p0.offsets.ptr<float>());
        }) == ErrorKind::Model);
}

TEST_CASE("q4matmul error against a float matmul is that of 16-bit activations") {
  const int64_t M = 8, N = 64, K = 1000;
  for (int64_t group : {32, 128}) {
    Q4W p = q4_from_float(random_f32({N, K}, 400, -1.0f, 1.0f), group, true);
    std::vector<float> w = q4_weights(p);
    std::mt19937 rng(401);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Tensor a = Tensor::empty(DType::F32, {M, K});
    for (int64_t i = 0; i < M * K; i++) a.ptr<float>()[i] = nd(rng);
    for (NamedQ4 k : q4_kernels()) {
      CAPTURE(k.name);
      Tensor y = q4_run(p, a, nullptr, "none", k.fn);
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
      // ~2e-5 for normal data (8-bit activations: ~4e-3).
      CHECK(std::sqrt(err2 / ref2) < 1e-4);
    }
  }
}

TEST_CASE("q4matmul is batch invariant: M, threads and GEMV/GEMM paths give the same bits") {
  const int64_t M = 64, N = 512, K = 2048 + 32;
  Q4W p = q4_from_float(random_f32({N, K}, 500), 128, true);
  Tensor a = random_f32({M, K}, 501, -2.0f, 2.0f), bias = random_f32({N}, 502);
  Tensor first;
  bool have_first = false;
  for (NamedQ4 k : q4_kernels()) {
    CAPTURE(k.name);
    Tensor big = q4_run(p, a, &bias, "gelu", k.fn, 2);
    Tensor big1 = q4_run(p, a, &bias, "gelu", k.fn, 1);
    CHECK(first_diff(big, big1) == -1);
    Tensor seven = Tensor::empty(DType::F32, {7, K});
    std::memcpy(seven.data(), a.ptr<float>() + 20 * K, 7 * K * 4);
    for (int threads : {1, 2}) {
      Tensor y7 = q4_run(p, seven, &bias, "gelu", k.fn, threads);
      CHECK(bit_equal(y7.ptr<float>(), big.ptr<float>() + 20 * N, 7 * N));
    }
    for (int64_t r0 : {0, 23, 63})
      for (int threads : {1, 2}) {
        Tensor row = Tensor::empty(DType::F32, {1, K});
        std::memcpy(row.data(), a.ptr<float>() + r0 * K, K * 4);
        Tensor one = q4_run(p, row, &bias, "gelu", k.fn, threads);
        CHECK(bit_equal(one.ptr<float>(), big.ptr<float>() + r0 * N, N));
      }
    // Generic and AVX2 give the same sums (activations aside).
    Tensor plain = q4_run(p, a, &bias, "none", k.fn, 2);
    if (!have_first) first = plain;
    have_first = true;
    CHECK(first_diff(plain, first) == -1);
  }
}

TEST_CASE("q4matmul f32 rows: kernels within float rounding of a double reference, odd shapes") {
  uint32_t seed = 900;
  int combo = 0;
  for (int64_t K : {1, 31, 33, 100, 257, 600, 4096 + 32})
    for (int64_t N : {1, 15, 17, 33, 100})
      for (int64_t M : {1, 2, 7, 33}) {
        combo++;
        int64_t group = std::vector<int64_t>{32, 64, 128}[combo % 3];
        bool zp = combo % 2 == 0, with_bias = combo % 3 != 0;
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(group);
        Q4W p = q4_from_float(random_f32({N, K}, seed++, -1.5f, 1.0f), group, zp);
        Tensor a = random_f32({M, K}, seed++, -3.0f, 3.0f), bias = random_f32({N}, seed++);
        const Tensor* b = with_bias ? &bias : nullptr;
        Tensor flags = row_flags(M, 0);
        Tensor ref = q4_run_rows(p, a, b, "none", nullptr, flags);
        // The bound: K roundings of partial sums no larger than sum |a w|.
        std::vector<float> w = q4_weights(p);
        std::vector<double> bound(M * N);
        for (int64_t m = 0; m < M; m++)
          for (int64_t n = 0; n < N; n++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
              s += std::fabs((double)a.ptr<float>()[m * K + k] * w[n * K + k]);
            bound[m * N + n] = (K + 2) * std::ldexp(s, -23) + 1e-30;
          }
        for (NamedQ4 k : q4_kernels()) {
          CAPTURE(k.name);
          Tensor y = q4_run_rows(p, a, b, "none", k.fn, flags);
          REQUIRE(y.shape() == Shape{M, N});
          for (int64_t i = 0; i < M * N; i++) {
            CAPTURE(i);
            CHECK(std::fabs((double)y.ptr<float>()[i] - ref.ptr<float>()[i]) <= bound[i]);
          }
          // f16 scales and offsets give the bits of the same values as f32.
          Q4Pair ph = q4_f16_pair(p);
          CHECK(first_diff(q4_run_rows(ph.f16, a, b, "relu", k.fn, flags),
                           q4_run_rows(ph.f32, a, b, "relu", k.fn, flags)) == -1);
        }
      }
}

TEST_CASE("q4matmul f32 rows are batch invariant; mixed rows equal each path alone") {
  const int64_t M = 70, N = 300, K = 1000;
  Q4W p = q4_from_float(random_f32({N, K}, 950), 32, true);
  Tensor a = random_f32({M, K}, 951, -2.0f, 2.0f), bias = random_f32({N}, 952);
  for (NamedQ4 k : q4_kernels()) {
    CAPTURE(k.name);
    Tensor all = q4_run_rows(p, a, &bias, "gelu", k.fn, row_flags(M, 0));
    Tensor none = q4_run_rows(p, a, &bias, "gelu", k.fn, row_flags(M, 1));  // all W4A16i
    CHECK(first_diff(none, q4_run(p, a, &bias, "gelu", k.fn)) == -1);        // = no flags
    CHECK(first_diff(all, q4_run_rows(p, a, &bias, "gelu", k.fn, row_flags(M, 0), 1)) == -1);
    // The paths differ (int16 activations vs f32) but stay close.
    CHECK(first_diff(all, none) != -1);
    check_close(all, none, 1e-3);
    // Every row alone, and in a mixed batch, gives its path's bits.
    Tensor mixed = q4_run_rows(p, a, &bias, "gelu", k.fn, row_flags(M, 3));
    for (int64_t m = 0; m < M; m++) {
      CAPTURE(m);
      const Tensor& want = m % 3 ? all : none;
      CHECK(bit_equal(mixed.ptr<float>() + m * N, want.ptr<float>() + m * N, N));
    }
    for (int64_t r0 : {0, 5, 69}) {
      Tensor row = Tensor::empty(DType::F32, {1, K});
      std::memcpy(row.data(), a.ptr<float>() + r0 * K, K * 4);
      Tensor one = q4_run_rows(p, row, &bias, "gelu", k.fn, row_flags(1, 0));
      CHECK(bit_equal(one.ptr<float>(), all.ptr<float>() + r0 * N, N));
    }
  }
}

#if defined(__x86_64__)
TEST_CASE("q4 AVX2 B-panel dequantizer equals the generic one bit for bit") {
  if (cpu_isa() < Isa::Avx2) return;
  uint32_t seed = 960;
  for (int64_t K : {1, 9, 32, 100, 300, 600})
    for (int64_t group : {32, 64, 128}) {
      CAPTURE(K);
      CAPTURE(group);
      const int64_t N = 37;
      Q4W p = q4_from_float(random_f32({N, K}, seed++), group, K % 2 == 0);
      Q4Pair ph = q4_f16_pair(p);
      std::vector<float> w = q4_weights(p);
      for (int64_t k0 = 0; k0 < K; k0 += 256)
        for (auto [j0, j1] : std::vector<std::pair<int64_t, int64_t>>{{0, N}, {16, 37}, {32, 33}, {5, 20}}) {
          CAPTURE(k0);
          CAPTURE(j0);
          CAPTURE(j1);
          const int64_t kc = std::min<int64_t>(256, K - k0), panels = (j1 - j0 + 15) / 16;
          std::vector<float> g(panels * kc * 16, -1.0f), v(panels * kc * 16, -2.0f);
          cpu::q4_dequant_panels(p.codes.ptr<uint8_t>(), p.scales.ptr<float>(),
                                 p.offsets.ptr<float>(), K, group, k0, kc, j0, j1, g.data());
          cpu::q4_dequant_panels_avx2(p.codes.ptr<uint8_t>(), p.scales.ptr<float>(),
                                      p.offsets.ptr<float>(), K, group, k0, kc, j0, j1, v.data());
          CHECK(bit_equal(g.data(), v.data(), (int64_t)g.size()));
          for (int64_t i = 0; i < (int64_t)g.size(); i++) {  // W's values, zeros past j1
            const int64_t pan = i / (kc * 16), k = k0 + (i / 16) % kc, n = j0 + pan * 16 + i % 16;
            if (g[i] != (n < j1 ? w[n * K + k] : 0.0f)) {
              FAIL_CHECK("element ", i);
              break;
            }
          }
          std::vector<float> h(g.size(), -3.0f);
          cpu::q4_dequant_panels_avx2(ph.f16.codes.ptr<uint8_t>(), ph.f16.scales.ptr<uint16_t>(),
                                      ph.f16.offsets.ptr<uint16_t>(), K, group, k0, kc, j0, j1,
                                      h.data());
          std::vector<float> h32(g.size(), -4.0f);
          cpu::q4_dequant_panels(ph.f32.codes.ptr<uint8_t>(), ph.f32.scales.ptr<float>(),
                                 ph.f32.offsets.ptr<float>(), K, group, k0, kc, j0, j1, h32.data());
          CHECK(bit_equal(h.data(), h32.data(), (int64_t)g.size()));
        }
    }
}
#endif

TEST_CASE("q4matmul shape inference and its errors") {
  Q4W p = q4_from_float(random_f32({10, 70}, 600), 64, false);
  Tensor a = random_f32({4, 70}, 601), bias = random_f32({10}, 602);
  auto infer = [&](const Node& n, std::vector<const Tensor*> in) {
    return op_run(n, in, nullptr, false, 1, true);
  };
  auto err = [&](Node n, std::vector<const Tensor*> in) {
    return error_of([&] { infer(n, in); });
  };
  Node good = q4_node(p);
  CHECK(infer(good, {&a, &p.codes, &p.scales, &p.offsets, &bias}).types[0].shape == Shape{4, 10});
  CHECK((op_def(OpType::Q4MatMul).flags & kOpFused) != 0);
  std::vector<const Tensor*> in = {&a, &p.codes, &p.scales, &p.offsets};
  // Attributes.
  for (int64_t g : {0, 16, 48, -32}) {
    Node n = good;
    n.attrs.set("group", g);
    CHECK(err(n, in) == ErrorKind::Model);
  }
  Node bad_k = good;
  bad_k.attrs.set("k", int64_t(71));
  CHECK(err(bad_k, in) == ErrorKind::Model);
  Node bad_n = good;
  bad_n.attrs.set("n", int64_t(11));
  CHECK(err(bad_n, in) == ErrorKind::Model);
  Node no_group = test::node(OpType::Q4MatMul);
  no_group.attrs.set("n", int64_t(10));
  no_group.attrs.set("k", int64_t(70));
  CHECK(err(no_group, in) == ErrorKind::Model);
  CHECK(err(q4_node(p, "swish"), in) == ErrorKind::Model);
  // Shapes and dtypes.
  Tensor a_short = random_f32({4, 69}, 603), a_scalar = Tensor::zeros(DType::F32, {});
  Tensor a_f64 = Tensor::zeros(DType::F64, {4, 70}), codes_i8 = Tensor::zeros(DType::I8, {10, 3, 16});
  Tensor codes_short = Tensor::zeros(DType::U8, {10, 2, 16}), codes_wide = Tensor::zeros(DType::U8, {10, 3, 32});
  Tensor scales_f16 = Tensor::zeros(DType::F16, {10, 2}), scales_short = Tensor::zeros(DType::F32, {10, 1});
  Tensor bias_long = Tensor::zeros(DType::F32, {11}), bias_i32 = Tensor::zeros(DType::I32, {10});
  CHECK(err(good, {&a_short, &p.codes, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a_scalar, &p.codes, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a_f64, &p.codes, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_i8, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_short, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &codes_wide, &p.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &scales_f16, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &scales_short}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &p.offsets, &bias_long}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &p.offsets, &bias_i32}) == ErrorKind::Model);
  // f16 scales and offsets: both or neither; no other dtype.
  Q4Pair ph = q4_f16_pair(p);
  CHECK(infer(good, {&a, &p.codes, &ph.f16.scales, &ph.f16.offsets}).types[0].shape ==
        Shape{4, 10});
  CHECK(err(good, {&a, &p.codes, &ph.f16.scales, &p.offsets}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales, &ph.f16.offsets}) == ErrorKind::Model);
  CHECK_THROWS_WITH(infer(good, {&a, &p.codes, &ph.f16.scales, &p.offsets}),
                    doctest::Contains("same dtype"));
  Tensor s_bf16 = Tensor::zeros(DType::BF16, {10, 2}), s_f64 = Tensor::zeros(DType::F64, {10, 2});
  CHECK(err(good, {&a, &p.codes, &s_bf16, &s_bf16}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &s_f64, &s_f64}) == ErrorKind::Model);
  Tensor s16_short = Tensor::zeros(DType::F16, {10, 1});
  CHECK(err(good, {&a, &p.codes, &s16_short, &s16_short}) == ErrorKind::Model);
  CHECK(err(good, {&a, &p.codes, &p.scales}) == ErrorKind::Model);  // too few inputs
  // f32_rows: bool or uint8, one per row of A.
  Tensor rows_u8 = Tensor::zeros(DType::U8, {4}), rows_b = Tensor::zeros(DType::Bool, {4});
  Tensor rows_short = Tensor::zeros(DType::U8, {3}), rows_i32 = Tensor::zeros(DType::I32, {4});
  Tensor rows_2d = Tensor::zeros(DType::U8, {4, 1});
  CHECK(infer(good, {&a, &p.codes, &p.scales, &p.offsets, nullptr, &rows_u8}).types[0].shape ==
        Shape{4, 10});
  CHECK(infer(good, {&a, &p.codes, &p.scales, &p.offsets, nullptr, &rows_b}).types[0].shape ==
        Shape{4, 10});
  for (const Tensor* bad : {&rows_short, &rows_i32, &rows_2d})
    CHECK(err(good, {&a, &p.codes, &p.scales, &p.offsets, nullptr, bad}) == ErrorKind::Model);
  CHECK_THROWS_WITH(infer(good, {&a, &p.codes, &p.scales, &p.offsets, nullptr, &rows_short}),
                    doctest::Contains("f32_rows"));
  CHECK_THROWS_WITH(infer(good, {&a, &codes_short, &p.scales, &p.offsets}),
                    doctest::Contains("[Q4MatMul]"));
}

TEST_CASE("q4 weights take at most 0.16 of their fp32 bytes (N = K = 4096, group 128)") {
  const int64_t N = 4096, K = 4096, group = 128;
  double q4 = N * cpu::q4_blocks(K) * 16.0 + 2.0 * N * cpu::q4_groups(K, group) * 4.0;
  double ratio = q4 / (N * K * 4.0);
  MESSAGE("q4 bytes / fp32 bytes = ", ratio);
  CHECK(ratio <= 0.16);
}
