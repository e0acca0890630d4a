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
#include "op_test_util.h"
#include "runtime/registry.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

using namespace ember;

namespace {

Tensor random_f32(const Shape& s, uint32_t seed, float lo = -3.0f, float hi = 3.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

// Wq [K, N] over the whole int8 range.
std::vector<int8_t> random_w(int64_t K, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-128, 127);
  std::vector<int8_t> w(K * N);
  for (int8_t& v : w) v = (int8_t)u(rng);
  return w;
}

Tensor pack(const std::vector<int8_t>& w, int64_t K, int64_t N) {
  Tensor p = Tensor::empty(DType::I8, {(N + 15) / 16, (K + 1) / 2, 16, 2});
  REQUIRE(p.numel() == cpu::qgemm_i8_packed_size(K, N));
  cpu::qgemm_i8_pack_b(w.data(), N, 1, K, N, p.ptr<int8_t>());
  return p;
}

Tensor scalar_f32(float v, bool rank1 = false) {
  Tensor t = Tensor::empty(DType::F32, rank1 ? Shape{1} : Shape{});
  t.ptr<float>()[0] = v;
  return t;
}

Tensor scalar_zp(DType dt, int v) {
  Tensor t = Tensor::empty(dt, {});
  if (dt == DType::I8) t.ptr<int8_t>()[0] = (int8_t)v;
  else t.ptr<uint8_t>()[0] = (uint8_t)v;
  return t;
}

Node qnode(int64_t n, const std::string& act = "none", const std::string& mode = "token") {
  Node f = test::node(OpType::QMatMul);
  f.attrs.set("n", n);
  f.attrs.set("activation", act);
  f.attrs.set("a_mode", mode);
  return f;
}

Tensor run(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn = nullptr, int threads = 2) {
  return test::op_run(n, in, fn, false, threads, true).out[0];
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Exact (as values: relu may give -0 or 0) for none / relu, within `tol` for the gelu forms.
void check_out(const Tensor& got, const Tensor& ref, const std::string& act) {
  REQUIRE(got.shape() == ref.shape());
  double tol = act == "gelu" || act == "gelu_tanh" ? 2e-6 : 0.0;
  for (int64_t i = 0; i < got.numel(); i++) {
    float x = got.ptr<float>()[i], y = ref.ptr<float>()[i];
    if (!(std::fabs((double)x - y) <= tol * (1.0 + std::fabs(y)))) {
      FAIL_CHECK("element ", i, " of ", shape_str(got.shape()), ": ", x, " vs ", y);
      return;
    }
  }
}

struct NamedKernel {
  const char* name;
  KernelFn fn;
};

std::vector<NamedKernel> qmatmul_kernels() {
  std::vector<NamedKernel> ks = {{"qmatmul_i8", cpu::qmatmul_i8}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"qmatmul_i8_avx2", cpu::qmatmul_i8_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"qmatmul_i8_avx512", cpu::qmatmul_i8_avx512});
#elif defined(__aarch64__)
  if (cpu_isa() >= Isa::Neon) ks.push_back({"qmatmul_i8_neon", cpu::qmatmul_i8_neon});
#endif
  return ks;
}

struct NamedMicro {
  const cpu::QGemmI8Micro* micro;
  const cpu::QuantizeRowsI8* quant;
};

std::vector<NamedMicro> micros() {
  static const cpu::QuantizeRowsI8 generic{cpu::quantize_row_i8_token, cpu::quantize_row_i8_linear,
                                           cpu::minmax_f32_row};
  std::vector<NamedMicro> ms = {{&cpu::qgemm_i8_micro_generic(), &generic}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ms.push_back({&cpu::qgemm_i8_micro_avx2(), &cpu::quantize_rows_i8_avx2()});
#elif defined(__aarch64__)
  if (cpu_isa() >= Isa::Neon) ms.push_back({&cpu::qgemm_i8_micro_neon(), &generic});
#endif
  return ms;
}

// Inputs of a QMatMul case; `in()` lists them in input order (absent ones nullptr).
struct Case {
  Tensor a, wp, w_scale, bias, a_scale, zp;
  bool has_bias = false, has_scale = false, has_zp = false;
  std::vector<const Tensor*> in() const {
    std::vector<const Tensor*> v = {&a, &wp, &w_scale, has_bias ? &bias : nullptr};
    if (has_scale || has_zp) v.push_back(has_scale ? &a_scale : nullptr);
    if (has_zp) v.push_back(&zp);
    return v;
  }
};

Case make_case(const Shape& a_shape, int64_t N, const std::string& mode, bool bias, DType zp_type,
               int zp, uint32_t seed) {
  int64_t K = a_shape.back();
  Case c;
  c.a = random_f32(a_shape, seed);
  c.wp = pack(random_w(K, N, seed + 1), K, N);
  c.w_scale = random_f32({N}, seed + 2, 0.001f, 0.02f);
  c.bias = random_f32({N}, seed + 3, -1.0f, 1.0f);
  c.has_bias = bias;
  if (mode == "static") {
    // Codes span about +-2.5 around the zero point: A in +-3 clamps at both ends.
    c.a_scale = scalar_f32(0.02f, seed % 2 == 0);
    c.has_scale = true;
    c.has_zp = zp_type != DType::Count;
    if (c.has_zp) c.zp = scalar_zp(zp_type, zp);
  }
  return c;
}

// Infers a QMatMul from input types only (no tensors needed for the huge ones).
std::vector<TensorType> infer_types(const Node& n0, const std::vector<TensorType>& types) {
  Node n = n0;
  n.inputs.clear();
  for (size_t i = 0; i < types.size(); i++)
    n.inputs.push_back(types[i].dtype == DType::Count ? -1 : (int)i);
  op_validate(n);
  InferCtx ic{n, types, std::vector<const Tensor*>(types.size(), nullptr)};
  return op_def(OpType::QMatMul).infer(ic);
}

}  // namespace

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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
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
