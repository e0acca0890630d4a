// QMatMul (cpp/src/ops/ops_qmatmul.cpp) and its INT8 kernels (kernels/generic/gemm_i8.h): every
// kernel path against the reference on odd shapes, all activation modes and zero-point types,
// saturating activations and weights, int32 sums at their largest, exact integer accumulators,
// batch invariance over M and threads, the weight layout, and shape inference errors.
#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "ember/thread_pool.h"
#include "kernels/generic/gemm_i8.h"
#include "i8_test_util.h"
#include "op_test_util.h"
#include "runtime/registry.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

using namespace ember;

using namespace ember::test::i8;

TEST_CASE("i8 pack: every Wq[k, n] reads back through the documented layout, zero padded") {
  for (int64_t K : {1, 2, 3, 31, 64})
    for (int64_t N : {1, 15, 16, 17, 40}) {
      CAPTURE(K);
      CAPTURE(N);
      std::vector<int8_t> w = random_w(K, N, (uint32_t)(K * 100 + N));
      // Column-major source too (rs = 1, cs = K): the same packed bytes.
      std::vector<int8_t> wt(K * N);
      for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) wt[n * K + k] = w[k * N + n];
      int64_t P = (N + 15) / 16, KH = (K + 1) / 2;
      REQUIRE(cpu::qgemm_i8_packed_size(K, N) == P * KH * 32);
      std::vector<int8_t> p(P * KH * 32, 99), pt(P * KH * 32, 77);
      cpu::qgemm_i8_pack_b(w.data(), N, 1, K, N, p.data());
      cpu::qgemm_i8_pack_b(wt.data(), 1, K, K, N, pt.data());
      CHECK(p == pt);
      for (int64_t pp = 0; pp < P; pp++)
        for (int64_t kk = 0; kk < KH; kk++)
          for (int64_t j = 0; j < 16; j++)
            for (int64_t t = 0; t < 2; t++) {
              int64_t k = 2 * kk + t, n = 16 * pp + j;
              int8_t want = k < K && n < N ? w[k * N + n] : 0;
              REQUIRE(p[((pp * KH + kk) * 16 + j) * 2 + t] == want);
            }
    }
}

TEST_CASE("i8 QMatMul kernels match the reference: odd shapes, every a_mode, bias, activation") {
  const char* acts[] = {"none", "relu", "gelu", "gelu_tanh"};
  const char* modes[] = {"token", "static", "tensor_u8"};
  uint32_t seed = 1000;
  int count = 0;
  for (int64_t M : {1, 2, 5, 7, 13, 64})
    for (int64_t N : {1, 15, 17, 33, 100})
      for (int64_t K : {1, 3, 31, 64, 257, 4097})
        for (const char* mode : modes) {
          count++;
          std::string act = acts[count % 4];
          bool bias = count % 3 != 0;
          // Static zero points: absent, uint8 at both ends and between, int8 likewise.
          struct Zp {
            DType dt;
            int v;
          };
          const Zp zps[] = {{DType::Count, 0}, {DType::U8, 0}, {DType::U8, 128}, {DType::U8, 255},
                            {DType::I8, -128}, {DType::I8, 0}, {DType::I8, 127}};
          DType zt = zps[count % 7].dt;
          int zp = zps[count % 7].v;
          CAPTURE(M);
          CAPTURE(N);
          CAPTURE(K);
          CAPTURE(mode);
          CAPTURE(act);
          CAPTURE(bias);
          CAPTURE(zp);
          // Leading dims fold into M: A [2, M/2, K] when M is even.
          Shape as = M % 2 == 0 ? Shape{2, M / 2, K} : Shape{M, K};
          Case c = make_case(as, N, mode, bias, zt, zp, seed += 10);
          Node f = qnode(N, act, mode);
          Tensor ref = run(f, c.in());
          Shape want = as;
          want.back() = N;
          REQUIRE(ref.shape() == want);
          for (NamedKernel k : qmatmul_kernels()) {
            CAPTURE(k.name);
            check_out(run(f, c.in(), k.fn, 2), ref, act);
          }
          // The registry's generic row is the same kernel; the AVX2 row ranks first where it runs.
          test::OpRun r = test::op_run(f, c.in(), nullptr, true, 1, true);
          CHECK(std::string(r.fast->name) == "qmatmul_i8");
          check_out(r[0], ref, act);
          if (count == 1) {
            InferCtx ic{f, {}, {}};
            for (const Tensor* t : c.in()) {
              ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
              ic.values.push_back(t);
            }
            const KernelEntry* best = cpu_kernel_find(ic, cpu_isa());
            REQUIRE(best != nullptr);
#if defined(__x86_64__)
            const char* expect = cpu_isa() >= Isa::Avx512 ? "qmatmul_i8_avx512"
                                 : cpu_isa() >= Isa::Avx2   ? "qmatmul_i8_avx2"
                                                            : "qmatmul_i8";
#elif defined(__aarch64__)
            const char* expect = cpu_isa() >= Isa::Neon ? "qmatmul_i8_neon" : "qmatmul_i8";
#else
            const char* expect = "qmatmul_i8";  // no ISA-specific QMatMul kernel here yet
#endif
            CHECK(std::string(best->name) == expect);
          }
        }
}

TEST_CASE("i8 QMatMul kernels are bit-identical to each other (same integers, same epilogue)") {
  std::vector<NamedKernel> ks = qmatmul_kernels();
  uint32_t seed = 77;
  for (const char* mode : {"token", "static", "tensor_u8"})
    for (const char* act : {"none", "relu"})
      for (int64_t K : {7, 300, 4097}) {
        CAPTURE(mode);
        CAPTURE(act);
        CAPTURE(K);
        Case c = make_case({37, K}, 45, mode, true, DType::I8, -3, seed += 5);
        Node f = qnode(45, act, mode);
        Tensor ref = run(f, c.in());
        for (NamedKernel k : ks) {
          CAPTURE(k.name);
          Tensor got = run(f, c.in(), k.fn, 2);
          if (std::string(act) == "none") CHECK(bit_equal(got, ref));
          check_out(got, ref, act);
        }
      }
}

TEST_CASE("i8 QMatMul saturation: static codes hit both clamps, weights at -128 and 127") {
  const int64_t M = 9, K = 67, N = 21;
  std::vector<int8_t> w = random_w(K, N, 5);
  for (int64_t k = 0; k < K; k++)
    for (int64_t n = 0; n < N; n++)
      if ((k + n) % 3 == 0) w[k * N + n] = (k % 2) ? 127 : -128;
  Tensor wp = pack(w, K, N);
  // Values far outside any code range, plus ties (x / s = i + 0.5) and exact zeros.
  Tensor a = random_f32({M, K}, 6, -1e4f, 1e4f);
  for (int64_t i = 0; i < M * K; i += 5) a.ptr<float>()[i] = (float)((i % 11) - 5) + 0.5f;
  for (int64_t i = 2; i < M * K; i += 13) a.ptr<float>()[i] = 0.0f;
  Tensor ws = random_f32({N}, 7, 0.5f, 1.5f), b = random_f32({N}, 8);
  struct Zp {
    DType dt;
    int v;
  };
  for (Zp z : {Zp{DType::U8, 0}, Zp{DType::U8, 255}, Zp{DType::U8, 3}, Zp{DType::I8, -128},
               Zp{DType::I8, 127}, Zp{DType::Count, 0}}) {
    for (float s : {1.0f, 0.5f, 1e-3f}) {
      CAPTURE(z.v);
      CAPTURE(s);
      Tensor sc = scalar_f32(s), zp = scalar_zp(z.dt == DType::Count ? DType::U8 : z.dt, z.v);
      std::vector<const Tensor*> in = {&a, &wp, &ws, &b, &sc};
      if (z.dt != DType::Count) in.push_back(&zp);
      Node f = qnode(N, "none", "static");
      Tensor ref = run(f, in);
      for (NamedKernel k : qmatmul_kernels()) {
        CAPTURE(k.name);
        CHECK(bit_equal(run(f, in, k.fn, 2), ref));
      }
    }
  }
  // Token and tensor_u8 modes with the same extreme rows.
  for (const char* mode : {"token", "tensor_u8"}) {
    Node f = qnode(N, "relu", mode);
    Tensor ref = run(f, {&a, &wp, &ws, &b});
    for (NamedKernel k : qmatmul_kernels()) check_out(run(f, {&a, &wp, &ws, &b}, k.fn, 2), ref, "relu");
  }
}

TEST_CASE("i8 row quantizers: codes of every ISA equal, clamps, ties, NaN and inf") {
  const int64_t K = 203;
  Tensor x = random_f32({K}, 11, -300.0f, 300.0f);
  float* xp = x.ptr<float>();
  for (int64_t i = 0; i < K; i += 7) xp[i] = (float)(i % 9) - 4.5f;  // ties at s = 1
  xp[3] = std::numeric_limits<float>::quiet_NaN();
  xp[4] = std::numeric_limits<float>::infinity();
  xp[5] = -std::numeric_limits<float>::infinity();
  xp[6] = 1e30f;
  xp[8] = -0.0f;
  xp[9] = FLT_MIN / 4;  // denormal
  struct Lin {
    float s;
    int zp, lo, hi;
  };
  std::vector<NamedMicro> ms = micros();
  for (int64_t k : {K, K - 1, (int64_t)1, (int64_t)8, (int64_t)9}) {
    CAPTURE(k);
    std::vector<int16_t> want(k + 1, -1);
    for (Lin l : {Lin{1.0f, 0, 0, 255}, Lin{1.0f, 255, 0, 255}, Lin{0.7f, -128, -128, 127},
                  Lin{2.0f, 127, -128, 127}, Lin{1.0f, 0, -127, 127}}) {
      CAPTURE(l.zp);
      cpu::quantize_row_i8_linear(xp, k, l.s, l.zp, l.lo, l.hi, want.data());
      for (int64_t i = 0; i < k; i++) {
        float r = std::nearbyint(xp[i] / l.s) + (float)l.zp;
        int32_t q = std::isnan(r) ? l.lo : (int32_t)std::fmin(std::fmax(r, (float)l.lo), (float)l.hi);
        REQUIRE(want[i] == q - l.zp);
      }
      if (k % 2) CHECK(want[k] == 0);
      for (NamedMicro m : ms) {
        std::vector<int16_t> got(k + 1, -1);
        m.quant->linear(xp, k, l.s, l.zp, l.lo, l.hi, got.data());
        CHECK(got == want);
      }
    }
    // Half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
    float ties[3] = {0.5f, 1.5f, -2.5f};
    int16_t tq[4];
    cpu::quantize_row_i8_linear(ties, 3, 1.0f, 0, -127, 127, tq);
    CHECK(tq[0] == 0);
    CHECK(tq[1] == 2);
    CHECK(tq[2] == -2);
    CHECK(tq[3] == 0);
  }
  // Token rows: finite rows give the same scale and codes on every ISA; NaN is ignored by amax.
  Tensor y = random_f32({K}, 12, -5.0f, 5.0f);
  y.ptr<float>()[17] = std::numeric_limits<float>::quiet_NaN();
  const float* yp = y.ptr<float>();
  for (int64_t k : {K, (int64_t)16, (int64_t)3}) {
    CAPTURE(k);
    std::vector<int16_t> want(k + 1);
    float s = cpu::quantize_row_i8_token(yp, k, want.data());
    float amax = 0.0f;
    for (int64_t i = 0; i < k; i++)
      if (!std::isnan(yp[i])) amax = std::fmax(amax, std::fabs(yp[i]));
    CHECK(s == std::fmax(amax / 127.0f, FLT_MIN));
    for (int64_t i = 0; i < k; i++)
      if (!std::isnan(yp[i])) CHECK(want[i] == (int)std::nearbyint(yp[i] / s));
    for (NamedMicro m : ms) {
      std::vector<int16_t> got(k + 1);
      CHECK(m.quant->token(yp, k, got.data()) == s);
      CHECK(got == want);
    }
  }
  std::vector<int16_t> z(2);
  float zeros[1] = {0.0f};
  CHECK(cpu::quantize_row_i8_token(zeros, 1, z.data()) == FLT_MIN);
  CHECK(z[0] == 0);
  // Range scan for tensor_u8: NaN ignored, starting from (lo, hi).
  for (NamedMicro m : ms) {
    float lo = 0.0f, hi = 0.0f;
    m.quant->minmax(y.ptr<float>(), K, &lo, &hi);
    float l2 = 0.0f, h2 = 0.0f;
    for (int64_t i = 0; i < K; i++)
      if (!std::isnan(y.ptr<float>()[i])) {
        l2 = std::fmin(l2, y.ptr<float>()[i]);
        h2 = std::fmax(h2, y.ptr<float>()[i]);
      }
    CHECK(lo == l2);
    CHECK(hi == h2);
  }
}

TEST_CASE("i8 micro-kernels: exact int32 sums at the largest K (65536 x 255 x -128)") {
  for (NamedMicro nm : micros()) {
    const cpu::QGemmI8Micro& m = *nm.micro;
    CAPTURE(m.name);
    const int64_t K = 65536, kp = K / 2;
    std::vector<int16_t> a(8 * K);
    std::vector<int8_t> w(K * 16);
    std::mt19937 rng(3);
    for (int64_t i = 0; i < 8 * K; i++) a[i] = (i / K) % 2 ? -255 : 255;
    for (int64_t k = 0; k < K; k++)
      for (int j = 0; j < 16; j++) w[k * 16 + j] = j < 8 ? -128 : (int8_t)((int)(rng() % 256) - 128);
    std::vector<int8_t> wp(cpu::qgemm_i8_packed_size(K, 16));
    cpu::qgemm_i8_pack_b(w.data(), 16, 1, K, 16, wp.data());
    int64_t want[8][16];
    for (int i = 0; i < m.mr; i++)
      for (int j = 0; j < 16; j++) {
        want[i][j] = 0;
        for (int64_t k = 0; k < K; k++) want[i][j] += (int64_t)a[i * K + k] * w[k * 16 + j];
        if (j < 8) REQUIRE(std::llabs(want[i][j]) == 2139095040);
      }
    for (int rows = 1; rows <= m.mr; rows++) {
      CAPTURE(rows);
      std::vector<int32_t> c(rows * 20, 0);
      // Two halves: the second accumulates onto the first.
      m.fn(kp / 2, a.data(), K, wp.data(), c.data(), 20, rows, false);
      m.fn(kp - kp / 2, a.data() + kp, K, wp.data() + (kp / 2) * 32, c.data(), 20, rows, true);
      for (int i = 0; i < rows; i++)
        for (int j = 0; j < 16; j++) REQUIRE(c[i * 20 + j] == want[i][j]);
    }
  }
}

#if defined(__linux__)
TEST_CASE("i8 micro-kernels read no further than their rows (A ends at a guard page)") {
  // g++ 12 -O3 once vectorised the generic kernel's row loads past the last row.
  const int64_t page = 4096;
  std::vector<const cpu::QGemmI8Micro*> ms;
  for (NamedMicro nm : micros()) ms.push_back(nm.micro);
#if defined(__aarch64__)
  // Codes here are within int8, so the sdot kernel (token mode only) is checked too.
  if (cpu_isa() >= Isa::Neon && cpu::arm_has_dotprod()) ms.push_back(&cpu::qgemm_i8_micro_dotprod());
#endif
  for (const cpu::QGemmI8Micro* mp : ms) {
    const cpu::QGemmI8Micro& m = *mp;
    CAPTURE(m.name);
    for (int rows = 1; rows <= m.mr; rows++)
      for (int64_t lda : {2, 4, 34, 4098}) {
        CAPTURE(rows);
        CAPTURE(lda);
        int64_t bytes = rows * lda * 2, pages = (bytes + page - 1) / page + 1;
        void* mem = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(mem != MAP_FAILED);
        char* base = static_cast<char*>(mem);
        REQUIRE(mprotect(base + (pages - 1) * page, page, PROT_NONE) == 0);
        int16_t* a = reinterpret_cast<int16_t*>(base + (pages - 1) * page - bytes);
        for (int64_t i = 0; i < rows * lda; i++) a[i] = (int16_t)(i % 7 - 3);
        std::vector<int8_t> b(lda / 2 * 32, 2);
        std::vector<int32_t> c(rows * 16);
        m.fn(lda / 2, a, lda, b.data(), c.data(), 16, rows, false);
        for (int i = 0; i < rows; i++) {
          int32_t want = 0;
          for (int64_t k = 0; k < lda; k++) want += 2 * a[i * lda + k];
          CHECK(c[i * 16 + 15] == want);
        }
        munmap(mem, pages * page);
      }
  }
}
#endif

TEST_CASE("i8 QMatMul at K = 65536 with extreme codes matches the reference exactly") {
  const int64_t M = 3, K = 65536, N = 17;
  std::vector<int8_t> w(K * N);
  for (int64_t i = 0; i < K * N; i++) w[i] = i % N < 9 ? -128 : 127;
  Tensor wp = pack(w, K, N);
  Tensor a = Tensor::empty(DType::F32, {M, K});
  for (int64_t i = 0; i < M * K; i++) a.ptr<float>()[i] = (i / K) == 1 ? 1e9f : -1e9f;
  Tensor ws = random_f32({N}, 1, 0.5f, 2.0f);
  // static, int8 zero point 127: A -> -128 - 127 = -255 (and 127 - 127 = 0 on row 1).
  Tensor sc = scalar_f32(1.0f), zp = scalar_zp(DType::I8, 127);
  Node fs = qnode(N, "none", "static");
  Tensor ref = run(fs, {&a, &wp, &ws, nullptr, &sc, &zp});
  CHECK(ref.ptr<float>()[0] == (float)(2139095040.0f * 1.0f) * ws.ptr<float>()[0]);
  Node ft = qnode(N, "none", "token");
  Tensor ref_t = run(ft, {&a, &wp, &ws});
  for (NamedKernel k : qmatmul_kernels()) {
    CAPTURE(k.name);
    CHECK(bit_equal(run(fs, {&a, &wp, &ws, nullptr, &sc, &zp}, k.fn, 2), ref));
    CHECK(bit_equal(run(ft, {&a, &wp, &ws}, k.fn, 2), ref_t));
  }
}

TEST_CASE("i8 QMatMul is batch invariant: a row's bits do not depend on M or threads") {
  const int64_t M = 64, N = 100;
  for (const char* mode : {"token", "static"})
    for (const char* act : {"none", "gelu"})
      for (int64_t K : {31, 257, 4097}) {
        CAPTURE(mode);
        CAPTURE(act);
        CAPTURE(K);
        Case c = make_case({M, K}, N, mode, true, DType::U8, 131, (uint32_t)K);
        Node f = qnode(N, act, mode);
        for (NamedKernel k : qmatmul_kernels()) {
          CAPTURE(k.name);
          Tensor big = run(f, c.in(), k.fn, 2);
          CHECK(bit_equal(run(f, c.in(), k.fn, 1), big));
          for (int64_t rows : {1, 7, 8, 9}) {
            for (int64_t r0 : {(int64_t)0, (int64_t)29, M - rows}) {
              Case part = c;
              part.a = Tensor::empty(DType::F32, {rows, K});
              std::memcpy(part.a.data(), c.a.ptr<float>() + r0 * K, rows * K * 4);
              for (int threads : {1, 2}) {
                Tensor small = run(f, part.in(), k.fn, threads);
                CHECK_MESSAGE(std::memcmp(small.data(), big.ptr<float>() + r0 * N, rows * N * 4) == 0,
                              "rows ", r0, "..", r0 + rows, " threads ", threads);
              }
            }
          }
        }
      }
}

TEST_CASE("i8 QMatMul qgemm_i8 directly: unit scales give the exact integer sums") {
  const int64_t M = 13, K = 257, N = 33, lda = 260;
  std::mt19937 rng(9);
  std::vector<int16_t> a(M * lda, 0);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) a[m * lda + k] = (int16_t)((int)(rng() % 511) - 255);
  std::vector<int8_t> w = random_w(K, N, 10);
  Tensor wp = pack(w, K, N);
  std::vector<float> ones_m(M, 1.0f), ones_n(N, 1.0f);
  for (NamedMicro nm : micros()) {
    CAPTURE(nm.micro->name);
    std::vector<float> c(M * (N + 3), -1.0f);
    cpu::QGemmI8Args g;
    g.M = M;
    g.N = N;
    g.K = K;
    g.a = a.data();
    g.lda = lda;
    g.b_packed = wp.ptr<int8_t>();
    g.a_scale = ones_m.data();
    g.w_scale = ones_n.data();
    g.c = c.data();
    g.ldc = N + 3;
    cpu::qgemm_i8(g, 2, *nm.micro);
    for (int64_t m = 0; m < M; m++) {
      for (int64_t n = 0; n < N; n++) {
        int32_t want = 0;
        for (int64_t k = 0; k < K; k++) want += a[m * lda + k] * w[k * N + n];
        REQUIRE(c[m * (N + 3) + n] == (float)want);
      }
      for (int64_t n = N; n < N + 3; n++) CHECK(c[m * (N + 3) + n] == -1.0f);  // ldc gap untouched
    }
  }
}

TEST_CASE("i8 QMatMul shape inference: output shape and clear Model errors") {
  auto f32 = [](Shape s) { return TensorType{DType::F32, std::move(s)}; };
  auto i8 = [](Shape s) { return TensorType{DType::I8, std::move(s)}; };
  TensorType none{};
  Node f = qnode(20);
  // A [2, 3, 37] -> [2, 3, 20]; Wp [2, 19, 16, 2].
  CHECK(infer_types(f, {f32({2, 3, 37}), i8({2, 19, 16, 2}), f32({20})})[0].shape == Shape{2, 3, 20});
  auto err = [&](const Node& n, const std::vector<TensorType>& t) {
    return test::error_of([&] { infer_types(n, t); });
  };
  auto msg = [&](const Node& n, const std::vector<TensorType>& t) -> std::string {
    try {
      infer_types(n, t);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::vector<TensorType> ok = {f32({3, 37}), i8({2, 19, 16, 2}), f32({20})};
  CHECK_FALSE(err(f, ok).has_value());
  // Wp shape vs K and n.
  CHECK(err(f, {f32({3, 37}), i8({2, 18, 16, 2}), f32({20})}) == ErrorKind::Model);
  CHECK(msg(f, {f32({3, 37}), i8({2, 18, 16, 2}), f32({20})}).find("does not fit K = 37") != std::string::npos);
  CHECK(err(qnode(40), {f32({3, 37}), i8({2, 19, 16, 2}), f32({40})}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), i8({2, 19, 32}), f32({20})}) == ErrorKind::Model);
  // K over 65536.
  CHECK(err(qnode(16), {f32({1, 65537}), i8({1, 32769, 16, 2}), f32({16})}) == ErrorKind::Model);
  CHECK(msg(qnode(16), {f32({1, 65537}), i8({1, 32769, 16, 2}), f32({16})}).find("65536") != std::string::npos);
  CHECK_FALSE(err(qnode(16), {f32({1, 65536}), i8({1, 32768, 16, 2}), f32({16})}).has_value());
  // dtypes.
  CHECK(err(f, {TensorType{DType::F16, {3, 37}}, i8({2, 19, 16, 2}), f32({20})}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), TensorType{DType::U8, {2, 19, 16, 2}}, f32({20})}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), i8({2, 19, 16, 2}), TensorType{DType::F16, {20}}}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), i8({2, 19, 16, 2}), f32({19})}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), f32({21})}) == ErrorKind::Model);
  CHECK(err(f, {f32({}), i8({2, 0, 16, 2}), f32({20})}) == ErrorKind::Model);
  // a_scale / zero point presence vs a_mode.
  Node st = qnode(20, "none", "static");
  CHECK_FALSE(err(st, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, f32({})}).has_value());
  CHECK_FALSE(err(st, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, f32({1}),
                       TensorType{DType::I8, {}}}).has_value());
  CHECK(err(st, ok) == ErrorKind::Model);
  CHECK(msg(st, ok).find("a_scale") != std::string::npos);
  CHECK(err(st, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, f32({2})}) == ErrorKind::Model);
  CHECK(err(st, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, f32({}),
                 TensorType{DType::I32, {}}}) == ErrorKind::Model);
  CHECK(err(f, {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, f32({})}) == ErrorKind::Model);
  CHECK(err(qnode(20, "none", "tensor_u8"), {f32({3, 37}), i8({2, 19, 16, 2}), f32({20}), none, none,
                                              TensorType{DType::U8, {}}}) == ErrorKind::Model);
  // Attributes.
  CHECK(err(qnode(20, "swish"), ok) == ErrorKind::Model);
  CHECK(err(qnode(20, "none", "channel"), ok) == ErrorKind::Model);
  Node no_n = test::node(OpType::QMatMul);
  CHECK(err(no_n, ok) == ErrorKind::Model);
}

// Timing, not a check (best of several runs, wall clock): ./build/dev/ember_tests
// -tc='i8 benchmark*' --no-skip. The fp32 FusedMatMul of the same shape runs beside it.
TEST_CASE("i8 benchmark: QMatMul GOPS (2 M N K / s) vs fp32 FusedMatMul" * doctest::skip()) {
  struct Shape3 {
    int64_t M, N, K;
  };
  auto best_of = [](int reps, const std::function<void()>& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
      auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  for (Shape3 sh : {Shape3{2048, 2048, 2048}, Shape3{1, 4096, 4096}, Shape3{64, 4096, 4096}}) {
    Case c = make_case({sh.M, sh.K}, sh.N, "token", true, DType::Count, 0, 1);
    std::vector<const Tensor*> in = c.in();
    Node f = qnode(sh.N, "none", "token");
    f.inputs = {0, 1, 2, 3};
    Tensor wf = Tensor::empty(DType::F32, {(sh.N + 15) / 16, sh.K, 16});
    std::vector<float> w32(sh.K * sh.N, 0.01f);
    cpu::sgemm_pack_b(w32.data(), sh.N, 1, sh.K, sh.N, wf.ptr<float>());
    Node ff = test::node(OpType::FusedMatMul);
    ff.inputs = {0, 1};
    ff.attrs.set("n", sh.N);
    Tensor out = Tensor::empty(DType::F32, {sh.M, sh.N});
    int reps = sh.M == 1 ? 200 : sh.M == 64 ? 20 : 5;
    double ops = 2.0 * sh.M * sh.N * sh.K;
    KernelFn f32 = cpu::fused_matmul_f32;
#if defined(__x86_64__)
    if (cpu_isa() >= Isa::Avx2) f32 = cpu::fused_matmul_f32_avx2;
#elif defined(__aarch64__)
    if (cpu_isa() >= Isa::Neon) f32 = cpu::fused_matmul_f32_neon;
#endif
    for (int threads : {1, 2}) {
      KernelCtx cf{ff, {&c.a, &wf}, {&out}, threads};
      double tf = best_of(reps, [&] { f32(cf); });
      for (NamedKernel k : qmatmul_kernels()) {
        if (std::string(k.name) == "qmatmul_i8" && sh.M > 64) continue;
        KernelCtx ctx{f, in, {&out}, threads};
        double t = best_of(reps, [&] { k.fn(ctx); });
        std::printf("%-16s M=%5lld N=%5lld K=%5lld threads=%d: %8.3f ms %7.1f GOPS (fp32 %7.1f GFLOP/s, x%.2f)\n",
                    k.name, (long long)sh.M, (long long)sh.N, (long long)sh.K, threads, t * 1e3,
                    ops / t * 1e-9, ops / tf * 1e-9, tf / t);
      }
    }
  }
}
