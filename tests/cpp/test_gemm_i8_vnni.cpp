// QMatMul on AVX-512 VNNI (kernels/x86/gemm_i8_avx512.cpp, driver gemm_i8_x86.cpp): the whole
// op bit for bit against the reference and the AVX2 path over M 1..300, odd N and K, every
// mode and zero point; K = 0; the micro-kernel's int32 sums, its in-register epilogue and its
// reads; the u8 codes, compensation and row quantizers; and a skipped timing case (the VNNI
// peak, QMatMul AVX2 vs AVX-512, the GEMM alone).
#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "doctest/doctest.h"
#include "ember/thread_pool.h"
#include "i8_test_util.h"

using namespace ember;
using namespace ember::test::i8;
using ember::test::median;

#if defined(__x86_64__)
TEST_CASE("i8 VNNI QMatMul: M 1..300, odd N and K, every mode and zero point, bit-identical") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  // M across the ones-row path (<= 8), one strip plus a tail, several row blocks (192) and
  // tasks; N around the 16-column panels and 48-column groups; K odd, around the 4-k quads,
  // past 2048 and 4096, and over the 8192-k slices.
  struct Zp {
    DType dt;
    int v;
  };
  const Zp zps[] = {{DType::Count, 0}, {DType::U8, 0}, {DType::U8, 255}, {DType::I8, -128},
                    {DType::I8, 127}, {DType::U8, 77}};
  const char* modes[] = {"token", "static", "tensor_u8"};
  const int64_t Ns[] = {1, 47, 49, 100, 257};
  const int64_t Ks[] = {1, 2, 5, 130, 513, 2051, 4097};
  uint32_t seed = 4242;
  int count = 0;
  std::vector<std::pair<int64_t, int64_t>> mk;  // (M, K) and N from the table
  for (int64_t M : {1, 3, 8, 9, 17, 97, 300})
    for (int rep = 0; rep < 4; rep++) mk.push_back({M, 0});
  // Several strips over K in 8192-k slices, the last one a lone pair row (K = 16389).
  mk.push_back({20, 16389});
  mk.push_back({300, 16389});
  for (auto [M, K0] : mk) {
    count++;
    int64_t N = Ns[(count * 3) % 5], K = K0 ? K0 : Ks[(count * 5) % 7];
    if (M * N * K > 40000000) K = K0 ? K0 : 1027;  // keeps the scalar reference quick
    if (M * N * K > 40000000) N = 7;
    std::string mode = modes[count % 3];
    Zp z = zps[count % 6];
    CAPTURE(M);
    CAPTURE(N);
    CAPTURE(K);
    CAPTURE(mode);
    CAPTURE(z.v);
    Case c = make_case({M, K}, N, mode, count % 2 == 0, z.dt, z.v, seed += 7);
    // Activations at the code limits: big values clamp (static, tensor_u8) or set the
    // row's scale (token), exact zeros give the zero point's code.
    float* ap = c.a.ptr<float>();
    for (int64_t i = 0; i < M * K; i += 3) ap[i] = i % 2 ? 1e3f : -1e3f;
    for (int64_t i = 1; i < M * K; i += 11) ap[i] = 0.0f;
    Node f = qnode(N, "none", mode);
    Tensor ref = run(f, c.in());
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      Tensor got = run(f, c.in(), cpu::qmatmul_i8_avx512, threads);
      CHECK(bit_equal(got, ref));
      CHECK(bit_equal(got, run(f, c.in(), cpu::qmatmul_i8_avx2, threads)));
    }
  }
}

// K = 0: every row is the bias (or 0) through the epilogue, whatever the strips.
TEST_CASE("i8 QMatMul with K = 0 on every ISA path: the bias rows") {
  for (int64_t M : {1, 9, 300}) {
    CAPTURE(M);
    Case c = make_case({M, 0}, 37, "token", true, DType::Count, 0, 5);
    Node f = qnode(37, "none", "token");
    f.inputs = {0, 1, 2, 3};
    Tensor ref = run(f, c.in());
    for (int64_t i = 0; i < M * 37; i++)
      REQUIRE(ref.ptr<float>()[i] == c.bias.ptr<float>()[i % 37]);
    CHECK(bit_equal(run(f, c.in(), cpu::qmatmul_i8_avx2), ref));
    if (cpu_isa() >= Isa::Avx512) CHECK(bit_equal(run(f, c.in(), cpu::qmatmul_i8_avx512), ref));
  }
}

TEST_CASE("i8 VNNI micro-kernel: exact int32 sums, 1..3 panels, every row count, accumulate") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  std::mt19937 rng(31);
  for (int64_t K : {1, 2, 3, 4, 7, 130, 4099}) {
    int64_t kp = (K + 1) / 2, ldu = (K + 3) / 4 * 4 + 4, N = 48;
    std::vector<uint8_t> u(8 * ldu, 0);
    for (int i = 0; i < 8; i++)
      for (int64_t k = 0; k < K; k++) {
        int r = (int)(rng() % 4);  // the u8 limits half the time
        u[i * ldu + k] = (uint8_t)(r == 0 ? 0 : r == 1 ? 255 : rng() % 256);
      }
    std::vector<int8_t> w = random_w(K, N, (uint32_t)K);
    for (int64_t i = 0; i < K * N; i += 5) w[i] = i % 2 ? 127 : -128;
    Tensor wp = pack(w, K, N);
    int64_t bs = kp * 32;
    for (int panels = 1; panels <= 3; panels++)
      for (int rows = 1; rows <= 8; rows++) {
        CAPTURE(K);
        CAPTURE(panels);
        CAPTURE(rows);
        const int64_t ldc = 53;
        std::vector<int32_t> c(rows * ldc, 5);
        // Two calls, the second accumulating, split at an even pair count (the second may
        // have an odd one: a lone last pair row).
        int64_t k1 = kp / 4 * 2;
        auto call = [&](int64_t k0, int64_t n, bool acc) {
          cpu::qgemm_u8i8_micro_8x48_avx512(n, u.data() + 2 * k0, ldu, wp.ptr<int8_t>() + k0 * 32,
                                            bs, panels, c.data(), ldc, rows, acc, nullptr);
        };
        if (k1 > 0) call(0, k1, false);
        call(k1, kp - k1, k1 > 0);
        for (int i = 0; i < rows; i++) {
          for (int j = 0; j < 16 * panels; j++) {
            int32_t want = 0;
            for (int64_t k = 0; k < K; k++) want += u[i * ldu + k] * w[k * N + j];
            REQUIRE(c[i * ldc + j] == want);
          }
          for (int64_t j = 16 * panels; j < ldc; j++) REQUIRE(c[i * ldc + j] == 5);
        }
      }
  }
}

// The epilogue in the micro-kernel: the AVX2 epilogue's bits on (exact sum - comp), comp given
// (after an accumulating split) or summed by the kernel (a_off x column sums, mod 2^32); only
// the `cols` existing columns and the call's rows are written.
TEST_CASE("i8 VNNI micro-kernel epilogue: AVX2 bits, comp given or summed, partial columns") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  std::mt19937 rng(37);
  for (int64_t K : {1, 6, 131, 4099}) {
    int64_t kp = (K + 1) / 2, ldu = (K + 3) / 4 * 4, N = 48;
    std::vector<uint8_t> u(8 * ldu, 0);
    for (int i = 0; i < 8; i++)
      for (int64_t k = 0; k < K; k++) u[i * ldu + k] = (uint8_t)(rng() % 256);
    std::vector<int8_t> w = random_w(K, N, (uint32_t)K + 1);
    Tensor wp = pack(w, K, N);
    std::vector<float> a_scale(8), w_scale(N), bias(N);
    for (float& v : a_scale) v = 1e-3f * (float)(rng() % 1000 + 1);
    for (float& v : w_scale) v = 1e-3f * (float)(rng() % 1000 + 1);
    for (float& v : bias) v = (float)(int)(rng() % 200) - 100.0f;
    std::vector<int32_t> comp(N);
    for (int32_t& v : comp) v = (int32_t)rng();
    int32_t a_off = (int32_t)(rng() % 256);
    for (bool summed : {false, true})
      for (int panels = 1; panels <= 3; panels++)
        for (int rows : {1, 3, 8})
          for (int64_t cols : {16 * panels, 16 * panels - 5})
            for (bool with_bias : {false, true}) {
              CAPTURE(K);
              CAPTURE(summed);
              CAPTURE(panels);
              CAPTURE(rows);
              CAPTURE(cols);
              const int64_t ldy = 50, ldc = 48;
              std::vector<float> y(9 * ldy, -7.0f);
              std::vector<int32_t> c(rows * ldc, 0);
              cpu::QGemmU8Epilogue e;
              e.comp = summed ? nullptr : comp.data();
              e.a_off = a_off;
              e.a_scale = a_scale.data();
              e.w_scale = w_scale.data();
              e.bias = with_bias ? bias.data() : nullptr;
              e.y = y.data();
              e.ldy = ldy;
              e.cols = cols;
              const int8_t* b = wp.ptr<int8_t>();
              int64_t k1 = summed ? 0 : kp / 4 * 2;  // summed: one call over all of K
              if (k1 > 0)
                cpu::qgemm_u8i8_micro_8x48_avx512(k1, u.data(), ldu, b, kp * 32, panels, c.data(),
                                                  ldc, rows, false, nullptr);
              cpu::qgemm_u8i8_micro_8x48_avx512(kp - k1, u.data() + 2 * k1, ldu, b + k1 * 32,
                                                kp * 32, panels, c.data(), ldc, rows, k1 > 0, &e);
              for (int i = 0; i < 9; i++) {
                std::vector<int32_t> diff(cols);
                for (int64_t j = 0; j < cols; j++) {
                  uint32_t sum = 0, col = 0;
                  for (int64_t k = 0; k < K; k++) {
                    sum += (uint32_t)(u[(i % 8) * ldu + k] * w[k * N + j]);
                    col += (uint32_t)w[k * N + j];
                  }
                  uint32_t cp = summed ? (uint32_t)a_off * col : (uint32_t)comp[j];
                  diff[j] = (int32_t)(sum - cp);
                }
                std::vector<float> want(cols);
                cpu::qgemm_i8_epilogue_avx2(diff.data(), cols, a_scale[i % 8], w_scale.data(),
                                            e.bias, want.data());
                for (int64_t j = 0; j < ldy; j++) {
                  bool written = i < rows && j < cols;
                  if (written) REQUIRE(std::memcmp(&y[i * ldy + j], &want[j], 4) == 0);
                  else REQUIRE(y[i * ldy + j] == -7.0f);
                }
              }
            }
  }
}

#if defined(__linux__)
TEST_CASE("i8 VNNI micro-kernel reads no further than its rows (u ends at a guard page)") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  const int64_t page = 4096;
  for (int rows = 1; rows <= 8; rows++)
    for (int64_t kp : {1, 2, 3, 2049}) {
      CAPTURE(rows);
      CAPTURE(kp);
      int64_t lda = (2 * kp + 3) / 4 * 4, bytes = rows * lda;
      int64_t pages = (bytes + page - 1) / page + 1;
      void* mem = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      REQUIRE(mem != MAP_FAILED);
      char* base = static_cast<char*>(mem);
      REQUIRE(mprotect(base + (pages - 1) * page, page, PROT_NONE) == 0);
      uint8_t* u = reinterpret_cast<uint8_t*>(base + (pages - 1) * page - bytes);
      for (int64_t i = 0; i < bytes; i++) u[i] = (uint8_t)(i % 251);
      std::vector<int8_t> b(kp * 32, 0);
      for (int64_t kk = 0; kk < kp; kk++)
        for (int t = 0; t < 2; t++) b[kk * 32 + 15 * 2 + t] = 2;  // column 15: weights 2
      std::vector<int32_t> c(rows * 16);
      cpu::qgemm_u8i8_micro_8x48_avx512(kp, u, lda, b.data(), kp * 32, 1, c.data(), 16, rows,
                                        false, nullptr);
      for (int i = 0; i < rows; i++) {
        int32_t want = 0;
        for (int64_t k = 0; k < 2 * kp; k++) want += 2 * u[i * lda + k];
        CHECK(c[i * 16 + 15] == want);
      }
      munmap(mem, pages * page);
    }
}
#endif

TEST_CASE("i8 VNNI pieces: u8 codes with their offset, compensation mod 2^32, row quantizers") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  std::mt19937 rng(17);
  for (int64_t k : {1, 3, 4, 31, 32, 33, 100}) {
    for (int32_t off : {0, 128, 255}) {
      CAPTURE(k);
      CAPTURE(off);
      std::vector<int16_t> q(k + 1);
      for (int64_t i = 0; i < k; i++) q[i] = (int16_t)((int)(rng() % 256) - off);
      q[0] = (int16_t)-off;  // u8 0
      q[k - 1] = (int16_t)(255 - off);  // u8 255
      std::vector<uint8_t> u(k + 8, 0xAB);
      cpu::qgemm_i8_codes_u8_avx512(q.data(), k, off, u.data());
      int64_t k4 = (k + 3) / 4 * 4;
      for (int64_t i = 0; i < k; i++) REQUIRE(u[i] == q[i] + off);
      for (int64_t i = k; i < k4; i++) CHECK(u[i] == 0);
      for (int64_t i = k4; i < k + 8; i++) CHECK(u[i] == 0xAB);  // nothing past k4 written
    }
  }
  // off x column sums wraps like the int32 sums: K = 65536 weights -128 and 127.
  const int64_t K = 65536, kh = K / 2;
  std::vector<int8_t> w(K * 16);
  for (int64_t kk = 0; kk < K; kk++)
    for (int j = 0; j < 16; j++) w[kk * 16 + j] = j % 2 ? 127 : -128;
  std::vector<int8_t> wp(cpu::qgemm_i8_packed_size(K, 16));
  cpu::qgemm_i8_pack_b(w.data(), 16, 1, K, 16, wp.data());
  int32_t s[16];
  cpu::qgemm_i8_comp_avx512(wp.data(), kh, 255, s);
  for (int j = 0; j < 16; j++)
    CHECK(s[j] == (int32_t)(uint32_t)(255u * (uint32_t)(int32_t)((j % 2 ? 127 : -128) * K)));
  // Every pair-row count around the 128-row int16 blocks and the odd tail.
  for (int64_t k : {1, 2, 3, 5, 255, 256, 257, 258, 513}) {
    CAPTURE(k);
    std::vector<int8_t> wk = random_w(k, 16, (uint32_t)k);
    std::vector<int8_t> wkp(cpu::qgemm_i8_packed_size(k, 16));
    cpu::qgemm_i8_pack_b(wk.data(), 16, 1, k, 16, wkp.data());
    int32_t got[16];
    cpu::qgemm_i8_comp_avx512(wkp.data(), (k + 1) / 2, 131, got);
    for (int j = 0; j < 16; j++) {
      int32_t sum = 0;
      for (int64_t i = 0; i < k; i++) sum += wk[i * 16 + j];
      CHECK(got[j] == 131 * sum);
    }
  }
  // The u8 row quantizers: the generic quantizers' codes plus their offset, the same scale,
  // zeros from k to k rounded up to 4 and nothing written past that.
  for (int64_t k : {1, 3, 4, 15, 16, 17, 31, 100, 387}) {
    std::vector<float> x(k);
    for (float& v : x) v = (float)((int)(rng() % 2001) - 1000) * 0.013f;
    x[k / 2] = std::numeric_limits<float>::quiet_NaN();
    if (k > 3) {
      x[1] = 1e30f;  // clamps at both ends
      x[2] = -std::numeric_limits<float>::infinity();
    }
    int64_t k4 = (k + 3) / 4 * 4;
    struct Lin {
      float s;
      int32_t zp, qmin, qmax;
    };
    for (Lin l : {Lin{0.05f, 140, 0, 255}, Lin{0.05f, -3, -128, 127}, Lin{1e-3f, 0, 0, 255},
                  Lin{7.0f, 127, -128, 127}}) {
      CAPTURE(k);
      CAPTURE(l.zp);
      std::vector<int16_t> q(k + 1);
      cpu::quantize_row_i8_linear(x.data(), k, l.s, l.zp, l.qmin, l.qmax, q.data());
      std::vector<uint8_t> u(k4 + 8, 0xAB);
      cpu::quantize_row_u8_linear_avx512(x.data(), k, l.s, l.zp, l.qmin, l.qmax, u.data());
      int32_t off = l.zp + (l.qmin < 0 ? 128 : 0);
      for (int64_t i = 0; i < k; i++) REQUIRE((int)u[i] == q[i] + off);
      for (int64_t i = k; i < k4; i++) CHECK(u[i] == 0);
      for (int64_t i = k4; i < k4 + 8; i++) CHECK(u[i] == 0xAB);
    }
    // Token: with the huge values, and with plain ones (NaN kept: max ignores it).
    for (int pass = 0; pass < 2; pass++) {
      if (pass == 1 && k > 3) x[1] = x[2] = 0.5f;
      std::vector<int16_t> q(k + 1);
      std::vector<uint8_t> u(k4 + 8, 0xAB);
      float s_want = cpu::quantize_row_i8_token(x.data(), k, q.data());
      float s_got = cpu::quantize_row_u8_token_avx512(x.data(), k, u.data());
      CHECK(std::memcmp(&s_want, &s_got, 4) == 0);
      for (int64_t i = 0; i < k; i++) REQUIRE((int)u[i] == q[i] + 128);
      for (int64_t i = k; i < k4; i++) CHECK(u[i] == 0);
      for (int64_t i = k4; i < k4 + 8; i++) CHECK(u[i] == 0xAB);
    }
  }
  // The token quantizer divides only near half-integers: quotients at, just above and just
  // below every n + 1/2 (the ties round to even), and many spread rows, against the generic
  // quantizer's division.
  for (float amax : {1.0f, 3.7f, 1e-30f, 6.5e4f, 1e-41f}) {
    float s = std::max(amax / 127.0f, FLT_MIN);
    std::vector<float> x = {amax, -amax};
    for (int n = -128; n <= 127; n++) {
      float h = ((float)n + 0.5f) * s;
      for (float v : {h, std::nextafter(h, 0.0f), std::nextafter(h, 1e30f),
                      std::nextafter(std::nextafter(h, -1e30f), -1e30f)})
        if (std::fabs(v) <= amax) x.push_back(v);
    }
    int64_t k = (int64_t)x.size();
    std::vector<int16_t> q(k + 1);
    std::vector<uint8_t> u((k + 3) / 4 * 4);
    float s_want = cpu::quantize_row_i8_token(x.data(), k, q.data());
    float s_got = cpu::quantize_row_u8_token_avx512(x.data(), k, u.data());
    CAPTURE(amax);
    REQUIRE(std::memcmp(&s_want, &s_got, 4) == 0);
    for (int64_t i = 0; i < k; i++) REQUIRE((int)u[i] == q[i] + 128);
  }
  std::mt19937 big(99);
  for (int row = 0; row < 400; row++) {
    int64_t k = 1 + (int64_t)(big() % 3000);
    float scale = std::ldexp(1.0f, (int)(big() % 60) - 30);
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> x(k);
    for (float& v : x) v = nd(big);
    std::vector<int16_t> q(k + 1);
    std::vector<uint8_t> u((k + 3) / 4 * 4);
    float s_want = cpu::quantize_row_i8_token(x.data(), k, q.data());
    float s_got = cpu::quantize_row_u8_token_avx512(x.data(), k, u.data());
    REQUIRE(std::memcmp(&s_want, &s_got, 4) == 0);
    for (int64_t i = 0; i < k; i++) REQUIRE((int)u[i] == q[i] + 128);
  }
}

namespace {

// The VNNI peak: independent zmm vpdpbusd (64 MACs each), 24 chains in zmm0..23; GOPS = 2 ops
// per MAC. Written in asm: with intrinsics g++ 12 keeps the accumulators on the stack.
__attribute__((target("avx512f,avx512bw,avx512vnni")))
double vnni_loop_seconds(int64_t iters) {
  auto t0 = std::chrono::steady_clock::now();
  __asm__ volatile(
      "vpternlogd $0xff, %%zmm24, %%zmm24, %%zmm24\n\t"
      "vpabsb %%zmm24, %%zmm25\n\t"
      "1:\n\t"
#define EMBER_DP(i) "vpdpbusd %%zmm24, %%zmm25, %%zmm" #i "\n\t"
      EMBER_DP(0) EMBER_DP(1) EMBER_DP(2) EMBER_DP(3) EMBER_DP(4) EMBER_DP(5) EMBER_DP(6)
      EMBER_DP(7) EMBER_DP(8) EMBER_DP(9) EMBER_DP(10) EMBER_DP(11) EMBER_DP(12) EMBER_DP(13)
      EMBER_DP(14) EMBER_DP(15) EMBER_DP(16) EMBER_DP(17) EMBER_DP(18) EMBER_DP(19)
      EMBER_DP(20) EMBER_DP(21) EMBER_DP(22) EMBER_DP(23)
#undef EMBER_DP
      "dec %0\n\t"
      "jnz 1b\n\t"
      : "+r"(iters)
      :
      : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19",
        "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// Timing, not a check: ./build/dev/ember_tests -tc='i8 VNNI benchmark*' --no-skip. The VNNI
// peak on 1 and 2 threads (each thread its own loop, started together on the shared pool),
// then QMatMul AVX2 vs AVX-512 interleaved round by round, medians over the rounds.
TEST_CASE("i8 VNNI benchmark: peak and QMatMul avx2 vs avx512, medians" * doctest::skip()) {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("skipped: this CPU has no AVX-512 VNNI");
    return;
  }
  const int64_t iters = 1 << 20;  // 24 x 64 MACs each
  for (int threads : {1, 2}) {
    std::vector<double> gops;
    for (int r = 0; r < 31; r++) {
      std::vector<double> t(threads);
      auto t0 = std::chrono::steady_clock::now();
      parallel_for(threads, 1, threads, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) t[i] = vnni_loop_seconds(iters);
      });
      double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      gops.push_back(2.0 * 64 * 24 * (double)iters * threads / wall * 1e-9);
    }
    std::printf("VNNI peak, %d thread(s): median %.1f GOPS (max %.1f)\n", threads, median(gops),
                *std::max_element(gops.begin(), gops.end()));
  }
  struct Shape3 {
    int64_t M, N, K;
  };
  std::vector<Shape3> shapes = {{2048, 2048, 2048}, {128, 384, 384}, {128, 1536, 384},
                                {128, 384, 1536}, {64, 4096, 4096}, {1, 4096, 4096},
                                {8, 4096, 4096}};
  // EMBER_I8_BENCH=M,N,K runs that shape alone (for a profiler).
  if (const char* env = std::getenv("EMBER_I8_BENCH")) {
    long long m = 0, n = 0, k = 0;
    if (std::sscanf(env, "%lld,%lld,%lld", &m, &n, &k) == 3) shapes = {{m, n, k}};
  }
  for (Shape3 sh : shapes) {
    Case c = make_case({sh.M, sh.K}, sh.N, "token", true, DType::Count, 0, 1);
    std::vector<const Tensor*> in = c.in();
    Node f = qnode(sh.N, "none", "token");
    f.inputs = {0, 1, 2, 3};
    Tensor out = Tensor::empty(DType::F32, {sh.M, sh.N});
    double ops = 2.0 * sh.M * sh.N * sh.K;
    int rounds = (int)std::clamp(2e9 / ops, 5.0, 301.0);
    // The VNNI GEMM alone on u8 codes made ahead (as torch._int_mm takes int8 codes): the
    // QMatMul's time less A's quantization.
    std::vector<uint8_t> codes(sh.M * ((sh.K + 3) / 4 * 4));
    std::vector<float> scales(sh.M);
    cpu::QGemmI8Args g;
    g.M = sh.M;
    g.N = sh.N;
    g.K = sh.K;
    g.ldu = (sh.K + 3) / 4 * 4;
    for (int64_t m = 0; m < sh.M; m++)
      scales[m] = cpu::quantize_row_u8_token_avx512(c.a.ptr<float>() + m * sh.K, sh.K,
                                                    codes.data() + m * g.ldu);
    g.u = codes.data();
    g.a_scale = scales.data();
    g.a_off = 128;
    g.b_packed = c.wp.ptr<int8_t>();
    g.w_scale = c.w_scale.ptr<float>();
    g.bias = c.bias.ptr<float>();
    g.c = out.ptr<float>();
    g.ldc = sh.N;
    for (int threads : {1, 2}) {
      KernelCtx ctx{f, in, {&out}, threads};
      std::vector<double> t2, t5, tg;
      // Wall time, and on one thread also the thread's CPU time: on a shared machine the
      // latter leaves out the time other processes held the core.
      std::vector<double> c2, c5, cg;
      auto time = [&](const std::function<void(const KernelCtx&)>& fn, std::vector<double>* cpu) {
        timespec c0, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        auto t0 = std::chrono::steady_clock::now();
        fn(ctx);
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        double ns = 1e9 * (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec);
        if (cpu) cpu->push_back(ns * 1e-9);
        return wall;
      };
      time(cpu::qmatmul_i8_avx2, nullptr);
      time(cpu::qmatmul_i8_avx512, nullptr);
      auto gemm = [&](const KernelCtx&) { cpu::qgemm_i8_vnni(g, threads); };
      for (int r = 0; r < rounds; r++) {
        t2.push_back(time(cpu::qmatmul_i8_avx2, &c2));
        t5.push_back(time(cpu::qmatmul_i8_avx512, &c5));
        tg.push_back(time(gemm, &cg));
      }
      double m2 = median(t2), m5 = median(t5), mg = median(tg);
      std::printf("M=%5lld N=%5lld K=%5lld threads=%d: avx2 %8.3f ms %6.1f GOPS | avx512 %8.3f ms "
                  "%6.1f GOPS | x%.2f | GEMM alone %6.1f GOPS (%d rounds)\n",
                  (long long)sh.M, (long long)sh.N, (long long)sh.K, threads, m2 * 1e3,
                  ops / m2 * 1e-9, m5 * 1e3, ops / m5 * 1e-9, m2 / m5, ops / mg * 1e-9, rounds);
      if (threads == 1)
        std::printf("%46s thread CPU time: avx2 %6.1f GOPS | avx512 %6.1f GOPS | GEMM alone "
                    "%6.1f GOPS\n", "", ops / median(c2) * 1e-9, ops / median(c5) * 1e-9,
                    ops / median(cg) * 1e-9);
    }
  }
}
#endif
