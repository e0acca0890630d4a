// AArch64 NEON kernels (kernels/arm/): the registry picks them on aarch64 (and the generic rows
// under a forced lower ISA), the f32 GEMM micro-kernels give the generic kernels' bits, and
// `arm neon gemm timings` prints generic vs NEON times of small GEMMs (under qemu-aarch64 in
// .ci/arm.sh: a check that the NEON path runs, not a benchmark). The kernels' reference checks
// live with their ops: tests/cpp/test_gemm.cpp, test_gemm_i8.cpp, test_rms_norm.cpp.
// NOTE: aarch64 builds only; elsewhere kernels/arm is not compiled.
#include "doctest/doctest.h"

#if defined(__aarch64__)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/arm/kernels_arm.h"
#include "kernels/generic/gemm_i8.h"
#include "kernels/generic/kernels_generic.h"
#include "op_test_util.h"
#include "runtime/registry.h"

using namespace ember;

namespace {

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

Tensor random_f32(const Shape& s, uint32_t seed) {
  Tensor t = Tensor::empty(DType::F32, s);
  std::vector<float> v = random_vec(t.numel(), seed);
  std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

// The registry's kernel for `n` on `in` at `isa`, or "" when none.
std::string picked(Node n, const std::vector<const Tensor*>& in, Isa isa) {
  n.inputs.clear();
  InferCtx ic{n, {}, {}};
  for (size_t i = 0; i < in.size(); i++) {
    n.inputs.push_back((int)i);
    ic.in.push_back(TensorType{in[i]->dtype(), in[i]->shape()});
    ic.values.push_back(in[i]);
  }
  const KernelEntry* e = cpu_kernel_find(ic, isa);
  return e ? e->name : "";
}

}  // namespace

TEST_CASE("arm neon: the registry picks the NEON kernels, and generic ones below Isa::Neon") {
  REQUIRE(cpu_isa() <= Isa::Neon);  // an aarch64 build never reports an x86 level
  bool neon = cpu_isa() == Isa::Neon;
  if (!neon)
    MESSAGE("EMBER_CPU_ISA forces ", std::string(isa_name(cpu_isa())), ": generic rows expected");
  Tensor a = random_f32({3, 40}, 1), b = random_f32({40, 17}, 2);
  Node mm = test::node(OpType::MatMul);
  CHECK(picked(mm, {&a, &b}, cpu_isa()) == (neon ? "matmul_f32_neon" : "matmul_f32"));
  CHECK(picked(mm, {&a, &b}, Isa::Generic) == "matmul_f32");
  // Avx2 sits between Generic and Neon in the enum; no x86 row exists here to be picked.
  CHECK(picked(mm, {&a, &b}, Isa::Avx2) == "matmul_f32");
  CHECK(picked(test::node(OpType::Gemm), {&a, &b}, cpu_isa()) ==
        (neon ? "gemm_f32_neon" : "gemm_f32"));
  Tensor wp = Tensor::empty(DType::F32, {2, 40, 16});
  Node fm = test::node(OpType::FusedMatMul);
  fm.attrs.set("n", (int64_t)17);
  CHECK(picked(fm, {&a, &wp}, cpu_isa()) == (neon ? "fused_matmul_f32_neon" : "fused_matmul_f32"));
  Tensor x = random_f32({4, 33}, 3), sc = random_f32({33}, 4);
  Node rms = test::node(OpType::RMSNormalization);
  CHECK(picked(rms, {&x, &sc}, cpu_isa()) == (neon ? "rms_norm_f32_neon" : "rms_norm_f32"));
  Node ln = test::node(OpType::LayerNormalization);
  CHECK(picked(ln, {&x, &sc, &sc}, cpu_isa()) == (neon ? "layer_norm_f32_neon" : "layer_norm_f32"));
  CHECK(picked(test::node(OpType::Softmax), {&x}, cpu_isa()) ==
        (neon ? "softmax_f32_neon" : "softmax_f32"));
  CHECK(picked(test::node(OpType::LogSoftmax), {&x}, cpu_isa()) ==
        (neon ? "log_softmax_f32_neon" : "log_softmax_f32"));
  // Ops without a NEON row keep their generic kernel at Isa::Neon.
  CHECK(picked(test::node(OpType::Exp), {&x}, Isa::Neon) == "exp_f32");
}

TEST_CASE("arm neon: f32 GEMM micro-kernels give the generic kernels' bits") {
  const cpu::GemmMicro& gen = cpu::gemm_micro_generic();
  const cpu::GemmMicro& neon = cpu::gemm_micro_neon();
  // Every row count and k tail of the 6 x 16 kernel, fresh and accumulating.
  for (int64_t kc : {1, 3, 4, 5, 8, 13, 64}) {
    std::vector<float> av = random_vec(6 * (kc + 3), 10 + kc), bv = random_vec(kc * 20, 20 + kc);
    for (int rows = 1; rows <= 6; rows++)
      for (bool acc : {false, true}) {
        CAPTURE(kc);
        CAPTURE(rows);
        CAPTURE(acc);
        std::vector<float> c0 = random_vec(6 * 18, 7), c1 = c0;
        for (int r0 = 0; r0 < rows; r0 += gen.mr)  // the generic kernel is 4 rows high
          gen.fn(kc, av.data() + r0 * (kc + 3), kc + 3, bv.data(), 20, c0.data() + r0 * 18, 18,
                 std::min(gen.mr, rows - r0), acc);
        neon.fn(kc, av.data(), kc + 3, bv.data(), 20, c1.data(), 18, rows, acc);
        CHECK(std::memcmp(c0.data(), c1.data(), c0.size() * 4) == 0);
      }
  }
  // Whole GEMMs through the driver: blocks, column tails, the 1 x 64 row path, KC slices.
  for (int64_t M : {1, 2, 7, 13})
    for (int64_t K : {1, 6, 300})
      for (int64_t N : {5, 16, 67, 130}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        std::vector<float> A = random_vec(M * K, 1), B = random_vec(K * N, 2);
        std::vector<float> c0(M * N, -1.0f), c1(M * N, -2.0f);
        cpu::SgemmArgs g;
        g.M = M;
        g.N = N;
        g.K = K;
        g.a = A.data();
        g.a_rs = K;
        g.b = B.data();
        g.b_rs = N;
        g.c = c0.data();
        g.c_rs = N;
        cpu::sgemm(g, 1, gen);
        g.c = c1.data();
        cpu::sgemm(g, 2, neon);
        CHECK(std::memcmp(c0.data(), c1.data(), c0.size() * 4) == 0);
      }
}

TEST_CASE("arm neon: norm rows give the generic kernels' bits and match the references") {
  for (int64_t n : {1, 3, 15, 16, 17, 33, 64, 769, 5125})
    for (bool bias : {false, true})
      for (int outputs : {1, 3}) {
        CAPTURE(n);
        CAPTURE(bias);
        CAPTURE(outputs);
        Tensor x = random_f32({3, n}, 30 + n), sc = random_f32({n}, 31), b = random_f32({n}, 32);
        // Rows with a large common offset: the variance of (x - mean) is what is tested.
        for (int64_t i = 0; i < n; i++) x.ptr<float>()[2 * n + i] += 100.0f;
        std::vector<const Tensor*> in = {&x, &sc};
        if (bias) in.push_back(&b);
        Node ln = test::node(OpType::LayerNormalization, outputs);
        ln.attrs.set("epsilon", 1e-5);
        test::OpRun ref = test::op_run(ln, in, nullptr, false, 1, true);
        test::OpRun gen = test::op_run(ln, in, cpu::layer_norm_f32, false, 2, true);
        test::OpRun got = test::op_run(ln, in, cpu::layer_norm_f32_neon, false, 2, true);
        for (int o = 0; o < outputs; o++) {
          CAPTURE(o);
          const Tensor& g = got[o];
          CHECK(std::memcmp(g.data(), gen[o].data(), g.numel() * 4) == 0);
          for (int64_t i = 0; i < g.numel(); i++) {
            float w = ref[o].ptr<float>()[i], v = g.ptr<float>()[i];
            if (!(std::fabs(v - w) <= 1e-4f * (1.0f + std::fabs(w)))) {
              FAIL_CHECK("element ", i, ": ", v, " vs ", w);
              break;
            }
          }
        }
        if (bias || outputs > 1) continue;
        Node rms = test::node(OpType::RMSNormalization);
        rms.attrs.set("epsilon", 1e-5);
        test::OpRun rg = test::op_run(rms, {&x, &sc}, cpu::rms_norm_f32, false, 2, true);
        test::OpRun rn = test::op_run(rms, {&x, &sc}, cpu::rms_norm_f32_neon, false, 2, true);
        CHECK(std::memcmp(rn[0].data(), rg[0].data(), rg[0].numel() * 4) == 0);
      }
}

// Distance in units in the last place; NaN == NaN.
static int64_t ulps(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    int64_t mag = i & 0x7fffffff;
    return i < 0 ? -mag : mag;
  };
  int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

TEST_CASE("arm neon: softmax and log-softmax rows match the references") {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 rng(11);
  for (OpType op : {OpType::Softmax, OpType::LogSoftmax}) {
    CAPTURE(std::string(op_name(op)));
    KernelFn fn = op == OpType::Softmax ? cpu::softmax_f32_neon : cpu::log_softmax_f32_neon;
    int64_t worst = 0;
    for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 33, 769, 5125})
      for (float w : {1.0f, 20.0f, 100.0f}) {
        CAPTURE(n);
        CAPTURE(w);
        std::uniform_real_distribution<float> u(-w, w);
        Tensor x = Tensor::empty(DType::F32, {3, n});
        for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] = u(rng);
        Node nd = test::node(op);
        test::OpRun ref = test::op_run(nd, {&x}, nullptr, false, 1, true);
        test::OpRun got = test::op_run(nd, {&x}, fn, false, 2, true);
        for (int64_t i = 0; i < x.numel(); i++) {
          float e = ref[0].ptr<float>()[i], f = got[0].ptr<float>()[i];
          // Log-softmax near 0 is -log(1 + tiny): only the absolute error means anything.
          if (op == OpType::LogSoftmax && std::fabs(e) < 1e-3f) {
            CHECK(std::fabs(f - e) <= 1e-9);
            continue;
          }
          worst = std::max(worst, ulps(f, e));
        }
      }
    MESSAGE(std::string(op_name(op)), " neon: max ", worst, " ulp");
    CHECK(worst <= 4);
    // Special rows: a NaN or +inf makes the row NaN (as the reference), -inf gives 0, +-100.
    const std::vector<std::vector<float>> rows = {
        {1.0f, kNan, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f},
        {1.0f, 2.0f, kInf, 3.0f},
        {-kInf, 1.0f, 2.0f, -kInf, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, -kInf},
        {100.0f, -100.0f, 100.0f, 0.0f, -0.0f, 50.0f, -50.0f},
        {kNan, kNan},
        {-kInf, -kInf, -kInf},
    };
    for (const std::vector<float>& row : rows) {
      CAPTURE(row.size());
      Tensor x = Tensor::empty(DType::F32, {1, (int64_t)row.size()});
      std::memcpy(x.data(), row.data(), row.size() * 4);
      test::OpRun ref = test::op_run(test::node(op), {&x}, nullptr, false, 1, true);
      test::OpRun got = test::op_run(test::node(op), {&x}, fn, false, 1, true);
      for (size_t j = 0; j < row.size(); j++)
        CHECK(ulps(got[0].ptr<float>()[j], ref[0].ptr<float>()[j]) <= 4);
    }
  }
}

TEST_CASE("arm neon: int8 micro-kernels (smlal, sdot) give the generic kernel's integers") {
  const cpu::QGemmI8Micro& gen = cpu::qgemm_i8_micro_generic();
  std::vector<const cpu::QGemmI8Micro*> ms = {&cpu::qgemm_i8_micro_neon()};
  if (cpu::arm_has_dotprod()) ms.push_back(&cpu::qgemm_i8_micro_dotprod());
  else MESSAGE("sdot micro-kernel skipped: this CPU has no dotprod (HWCAP_ASIMDDP)");
  std::mt19937 rng(21);
  for (const cpu::QGemmI8Micro* m : ms) {
    CAPTURE(m->name);
    bool sdot = m == &cpu::qgemm_i8_micro_dotprod();
    // Codes at the contract's limits: +-255 (smlal), -128..127 (sdot), extremes included.
    int lo = sdot ? -128 : -255, hi = sdot ? 127 : 255;
    std::uniform_int_distribution<int> ua(lo, hi), uw(-128, 127), uc(-100000, 100000);
    for (int64_t kp : {1, 2, 3, 4, 7, 64, 1023}) {
      const int64_t lda = 2 * kp + 6, ldc = 20;
      std::vector<int16_t> a(6 * lda);
      for (int16_t& v : a) v = (int16_t)ua(rng);
      a[0] = (int16_t)lo;
      a[1] = (int16_t)hi;
      std::vector<int8_t> b(kp * 32);
      for (int8_t& v : b) v = (int8_t)uw(rng);
      b[0] = -128;
      b[1] = 127;
      for (int rows = 1; rows <= 6; rows++)
        for (bool acc : {false, true}) {
          CAPTURE(kp);
          CAPTURE(rows);
          CAPTURE(acc);
          std::vector<int32_t> c0(6 * ldc);
          for (int32_t& v : c0) v = uc(rng);
          std::vector<int32_t> c1 = c0;
          for (int r0 = 0; r0 < rows; r0 += gen.mr)
            gen.fn(kp, a.data() + r0 * lda, lda, b.data(), c0.data() + r0 * ldc, ldc,
                   std::min(gen.mr, rows - r0), acc);
          m->fn(kp, a.data(), lda, b.data(), c1.data(), ldc, rows, acc);
          CHECK(c0 == c1);
        }
    }
  }
  // The epilogue: two roundings then the add, as the generic one (bits), tails included.
  for (int64_t n : {1, 4, 7, 16, 35}) {
    std::vector<int32_t> acc(n);
    std::vector<float> ws(n), bias(n);
    std::uniform_int_distribution<int> ui(-2000000, 2000000);
    std::uniform_real_distribution<float> uf(-1.0f, 1.0f);
    for (int64_t j = 0; j < n; j++) {
      acc[j] = ui(rng);
      ws[j] = uf(rng) * 1e-3f;
      bias[j] = uf(rng);
    }
    for (const float* bp : {(const float*)nullptr, (const float*)bias.data()}) {
      std::vector<float> y0(n), y1(n);
      gen.epilogue(acc.data(), n, 0.0137f, ws.data(), bp, y0.data());
      cpu::qgemm_i8_epilogue_neon(acc.data(), n, 0.0137f, ws.data(), bp, y1.data());
      CHECK(std::memcmp(y0.data(), y1.data(), n * 4) == 0);
    }
  }
}

TEST_CASE("arm neon gemm timings (generic vs NEON; qemu times are not hardware times)") {
  struct Shape3 {
    int64_t M, K, N;
  };
  for (Shape3 s : {Shape3{1, 512, 512}, Shape3{16, 256, 256}, Shape3{64, 256, 256}}) {
    Tensor x = random_f32({s.M, s.K}, 5), w = random_f32({s.K, s.N}, 6);
    Tensor wp = Tensor::empty(DType::F32, {(s.N + 15) / 16, s.K, 16});
    cpu::sgemm_pack_b(w.ptr<float>(), s.N, 1, s.K, s.N, wp.ptr<float>());
    Node fm = test::node(OpType::FusedMatMul);
    fm.inputs = {0, 1};
    fm.attrs.set("n", s.N);
    Tensor y0 = Tensor::empty(DType::F32, {s.M, s.N}), y1 = Tensor::empty(DType::F32, {s.M, s.N});
    auto time_ms = [&](KernelFn fn, Tensor& y) {
      KernelCtx ctx{fm, {&x, &wp}, {&y}, 1};
      fn(ctx);  // warm-up
      double best = 1e30;
      for (int r = 0; r < 3; r++) {
        auto t0 = std::chrono::steady_clock::now();
        fn(ctx);
        best = std::min(best, std::chrono::duration<double, std::milli>(
                                  std::chrono::steady_clock::now() - t0).count());
      }
      return best;
    };
    double tg = time_ms(cpu::fused_matmul_f32, y0), tn = time_ms(cpu::fused_matmul_f32_neon, y1);
    CHECK(std::memcmp(y0.data(), y1.data(), y0.numel() * 4) == 0);
    MESSAGE("FusedMatMul M=", s.M, " K=", s.K, " N=", s.N, ": generic ", tg, " ms, neon ", tn,
            " ms (1 thread)");
  }
  // Micro-kernels alone: a 6 x 16 tile over K = 512, 200 times (generic: 4 + 2 rows).
  auto time_ms = [](const std::function<void()>& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 200; i++) f();
      best = std::min(best, std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const int64_t K = 512;
  std::vector<float> af = random_vec(6 * K, 40), bf = random_vec(K * 16, 41), cf(6 * 16);
  const cpu::GemmMicro &fg = cpu::gemm_micro_generic(), &fn = cpu::gemm_micro_neon();
  double t_fg = time_ms([&] {
    fg.fn(K, af.data(), K, bf.data(), 16, cf.data(), 16, 4, false);
    fg.fn(K, af.data() + 4 * K, K, bf.data(), 16, cf.data() + 64, 16, 2, false);
  });
  double t_fn = time_ms([&] { fn.fn(K, af.data(), K, bf.data(), 16, cf.data(), 16, 6, false); });
  MESSAGE("f32 6x16 tile, K=512, x200: generic ", t_fg, " ms, neon ", t_fn, " ms");
  std::vector<int16_t> ai(6 * K, 3);
  std::vector<int8_t> bi(K * 16, -5);
  std::vector<int32_t> ci(6 * 16);
  const cpu::QGemmI8Micro& ig = cpu::qgemm_i8_micro_generic();
  double t_ig = time_ms([&] {
    ig.fn(K / 2, ai.data(), K, bi.data(), ci.data(), 16, 4, false);
    ig.fn(K / 2, ai.data() + 4 * K, K, bi.data(), ci.data() + 64, 16, 2, false);
  });
  double t_in = time_ms([&] {
    cpu::qgemm_i8_micro_neon().fn(K / 2, ai.data(), K, bi.data(), ci.data(), 16, 6, false);
  });
  double t_id = -1;
  if (cpu::arm_has_dotprod())
    t_id = time_ms([&] {
      cpu::qgemm_i8_micro_dotprod().fn(K / 2, ai.data(), K, bi.data(), ci.data(), 16, 6, false);
    });
  MESSAGE("i8 6x16 tile, K=512, x200: generic ", t_ig, " ms, neon smlal ", t_in,
          " ms, neon sdot ", t_id, " ms (-1: no dotprod)");
}

#endif  // __aarch64__
