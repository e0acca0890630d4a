// bf16 FusedMatMul (precision="bf16"; kernels/generic/gemm_bf16.cpp and
// kernels/x86/gemm_bf16_avx512bf16.cpp): the OpDef reference against a double-precision sum of
// the bf16-rounded operands, each kernel against the reference on odd shapes (K odd: the
// zero-padded last pair) with fresh random data, batch invariance, the packed layout's shape
// check, which registry row takes bf16 weights at each ISA, and the AVX-512 fp32 rows the
// bf16 kernels use against the AVX2 rows they port.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/gemm_bf16.h"
#include "op_test_util.h"
#include "ops/op_util.h"
#include "runtime/registry.h"
#if defined(__x86_64__)
#include "kernels/x86/gemm_bf16_x86.h"
#include "kernels/x86/kernels_x86.h"
#endif

using namespace ember;
using ember::test::random_f32;

namespace {

// W [K, N] packed as bf16 pairs.
Tensor pack_bf16(const Tensor& w) {
  int64_t K = w.dim(0), N = w.dim(1);
  Tensor p = Tensor::empty(DType::BF16, cpu::bgemm_packed_b_shape(K, N));
  cpu::bgemm_pack_b(w.ptr<float>(), N, 1, K, N, static_cast<uint16_t*>(p.data()));
  return p;
}

Node fused_node(int64_t n, const char* act, bool bias) {
  Node f;
  f.op = OpType::FusedMatMul;
  f.name = "fused_bf16";
  f.inputs = {0, 1};
  if (bias) f.inputs.push_back(2);
  f.outputs = {100};
  f.attrs.set("n", n);
  f.attrs.set("activation", std::string(act));
  return f;
}

InferCtx infer_ctx(const Node& n, const std::vector<const Tensor*>& in) {
  InferCtx ic{n, {}, {}};
  for (const Tensor* t : in) {
    ic.in.push_back(TensorType{t->dtype(), t->shape()});
    ic.values.push_back(t);
  }
  return ic;
}

// Runs `fn` (the reference when null) on `threads` threads.
Tensor run(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn = nullptr,
           int threads = 4) {
  op_validate(n);
  std::vector<TensorType> types = op_def(n.op).infer(infer_ctx(n, in));
  Tensor out = Tensor::empty(types[0].dtype, types[0].shape);
  std::vector<Tensor*> outs = {&out};
  KernelCtx ctx{n, in, outs, threads};
  (fn ? fn : op_def(n.op).reference)(ctx);
  return out;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// |a - b| <= tol * (1 + |b|) elementwise; reports the first mismatch.
void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (!(std::fabs(x - y) <= tol * (1.0 + std::fabs(y)))) {
      FAIL_CHECK("element ", i, " of ", shape_str(a.shape()), ": ", x, " vs ", y);
      return;
    }
  }
}

struct NamedKernel {
  const char* name;
  KernelFn fn;
};

// The bf16 FusedMatMul kernels this CPU can run.
std::vector<NamedKernel> bf16_kernels() {
  std::vector<NamedKernel> ks = {{"fused_matmul_bf16", cpu::fused_matmul_bf16}};
#if defined(__x86_64__)
  if (cpu_bf16_dot())
    ks.push_back({"fused_matmul_bf16_avx512bf16", cpu::fused_matmul_bf16_avx512bf16});
  else
    MESSAGE("no AVX512_BF16 (cpu_isa ", std::string(isa_name(cpu_isa())),
            "): fused_matmul_bf16_avx512bf16 not tested");
#endif
  return ks;
}

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

}  // namespace

TEST_CASE("gemm bf16: the reference is A @ W on bf16-rounded operands, summed in fp32") {
  uint32_t seed = 9100;
  for (int64_t M : {1, 5})
    for (int64_t K : {1, 2, 7, 385})
      for (int64_t N : {1, 17, 40}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Tensor a = random_f32({M, K}, seed++, -2, 2), w = random_f32({K, N}, seed++, -2, 2);
        Tensor bias = random_f32({N}, seed++), wp = pack_bf16(w);
        Tensor got = run(fused_node(N, "none", true), {&a, &wp, &bias});
        for (int64_t m = 0; m < M; m++)
          for (int64_t n = 0; n < N; n++) {
            double want = bias.ptr<float>()[n], mag = std::fabs(want);
            for (int64_t k = 0; k < K; k++) {
              double p = (double)bf16_round(a.ptr<float>()[m * K + k]) *
                         bf16_round(w.ptr<float>()[k * N + n]);
              want += p;
              mag += std::fabs(p);
            }
            // fp32 sums: K + 1 roundings of at most 2^-24 of the running magnitude.
            double tol = (K + 1) * mag * 0x1p-24;
            double g = got.ptr<float>()[m * N + n];
            if (!(std::fabs(g - want) <= tol)) {
              FAIL_CHECK("C[", m, ", ", n, "] = ", g, ", want ", want, " +- ", tol);
              return;
            }
          }
        // Not fp32: the operands were rounded (an fp32 GEMM would differ by far less).
        double worst = 0;
        for (int64_t n = 0; n < N && K >= 7; n++) {
          double f32 = bias.ptr<float>()[n];
          for (int64_t k = 0; k < K; k++)
            f32 += (double)a.ptr<float>()[k] * w.ptr<float>()[k * N + n];
          worst = std::max(worst, std::fabs(f32 - got.ptr<float>()[n]));
        }
        if (K >= 7) CHECK(worst > 1e-4);
      }
}

TEST_CASE("gemm bf16 FusedMatMul kernels match the reference on odd shapes") {
  uint32_t seed = 9300;
  for (NamedKernel kern : bf16_kernels()) {
    for (const char* act : {"none", "relu", "gelu", "gelu_tanh"})
      for (int64_t M : {1, 2, 3, 7, 8, 9, 17, 40})
        for (int64_t K : {1, 3, 17, 385, 1001})
          for (int64_t N : {1, 15, 17, 33, 200}) {
            if (std::string(act) != "none" && (K == 1001 || M == 40)) continue;  // time
            CAPTURE(kern.name);
            CAPTURE(act);
            CAPTURE(M);
            CAPTURE(K);
            CAPTURE(N);
            Tensor a = random_f32({M, K}, seed++, -2, 2), w = random_f32({K, N}, seed++, -2, 2);
            Tensor bias = random_f32({N}, seed++), wp = pack_bf16(w);
            bool with_bias = N != 17;
            Node f = fused_node(N, act, with_bias);
            std::vector<const Tensor*> in = {&a, &wp};
            if (with_bias) in.push_back(&bias);
            Tensor ref = run(f, in);
            Tensor fast = run(f, in, kern.fn, 3);
            // Without an activation every element is the reference's own chain, bit for bit;
            // the activations' float rows are within a few ulp of the double ones.
            if (std::string(act) == "none")
              CHECK(bit_equal(fast, ref));
            else
              check_close(fast, ref, 1e-6);
          }
  }
}

TEST_CASE("gemm bf16 FusedMatMul is batch invariant") {
  for (NamedKernel kern : bf16_kernels()) {
    CAPTURE(kern.name);
    const int64_t M = 100, K = 385, N = 70;
    Tensor a = random_f32({M, K}, 17), w = random_f32({K, N}, 18), wp = pack_bf16(w);
    Tensor bias = random_f32({N}, 19);
    Node f = fused_node(N, "gelu", true);
    Tensor big = run(f, {&a, &wp, &bias}, kern.fn, 4);
    for (int64_t r0 : {0, 37, 99}) {
      for (int64_t rows : {1, 3}) {
        if (r0 + rows > M) continue;
        Tensor part = Tensor::empty(DType::F32, {rows, K});
        std::memcpy(part.data(), a.ptr<float>() + r0 * K, rows * K * 4);
        Tensor small = run(f, {&part, &wp, &bias}, kern.fn, 1);
        CHECK(std::memcmp(small.data(), big.ptr<float>() + r0 * N, rows * N * 4) == 0);
      }
    }
  }
}

TEST_CASE("gemm bf16 FusedMatMul: packed shape check and registry rows") {
  Tensor a = random_f32({3, 9}, 1), w = random_f32({9, 20}, 2), wp = pack_bf16(w);
  CHECK(wp.shape() == Shape{2, 5, 16, 2});
  Node wrong_n = fused_node(40, "none", false);
  CHECK_THROWS_WITH(run(wrong_n, {&a, &wp}), doctest::Contains("is not packed pairs"));
  Tensor a8 = random_f32({3, 8}, 3);  // K 8 needs 4 pairs, not 5
  CHECK_THROWS_WITH(run(fused_node(20, "none", false), {&a8, &wp}),
                    doctest::Contains("is not packed pairs"));
  Node f = fused_node(20, "none", false);
  op_validate(f);
  InferCtx ic = infer_ctx(f, {&a, &wp});
  // bf16 weights only ever reach a bf16 row; the generic one at every lower ISA.
  const KernelEntry* best = cpu_kernel_find(ic, cpu_isa());
  REQUIRE(best != nullptr);
  CHECK(std::string(best->name) ==
        (cpu_bf16_dot() ? "fused_matmul_bf16_avx512bf16" : "fused_matmul_bf16"));
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    const KernelEntry* e = cpu_kernel_find(ic, isa);
    REQUIRE(e != nullptr);
    CHECK(std::string(e->name) == "fused_matmul_bf16");
  }
  // fp32 panels never reach a bf16 row.
  Tensor wf = Tensor::empty(DType::F32, {2, 9, 16});
  const KernelEntry* e32 = cpu_kernel_find(infer_ctx(f, {&a, &wf}), cpu_isa());
  REQUIRE(e32 != nullptr);
  CHECK(std::string(e32->name).find("bf16") == std::string::npos);
}

namespace {

Node attention_node(bool mask, const char* op, bool bshd, const char* precision) {
  Node n;
  n.op = OpType::Attention;
  n.name = "attn_bf16";
  n.inputs = {0, 1, 2};
  if (mask) n.inputs.push_back(3);
  n.outputs = {100};
  n.attrs.set("scale", std::string(op) == "mul" ? 0.35 : 2.8);
  n.attrs.set("scale_op", std::string(op));
  if (bshd) n.attrs.set("layout", std::string("bshd"));
  n.attrs.set("precision", std::string(precision));
  return n;
}

std::vector<NamedKernel> attention_bf16_kernels() {
  std::vector<NamedKernel> ks = {{"attention_bf16", cpu::attention_bf16}};
#if defined(__x86_64__)
  if (cpu_bf16_dot())
    ks.push_back({"attention_bf16_avx512bf16", cpu::attention_bf16_avx512bf16});
  else
    MESSAGE("no AVX512_BF16: attention_bf16_avx512bf16 not tested");
#endif
  return ks;
}

}  // namespace

TEST_CASE("gemm bf16 Attention kernels match the bf16 reference: shapes, masks, odd D and T") {
  uint32_t seed = 9700;
  struct Shp {
    Shape q, k, v, mask;  // mask empty: none
  };
  std::vector<Shp> shapes = {
      {{2, 3, 7, 9}, {2, 3, 9, 7}, {2, 3, 7, 5}, {2, 1, 1, 7}},         // key mask, D odd
      {{1, 4, 33, 16}, {1, 4, 16, 33}, {1, 4, 33, 17}, {1, 1, 33, 33}},  // causal [S, T]
      {{1, 2, 1, 32}, {1, 2, 32, 71}, {1, 2, 71, 32}, {}},              // one query row
      {{3, 5, 4}, {1, 4, 9}, {3, 9, 6}, {9}},                           // broadcast K
      {{2, 40, 8}, {2, 8, 40}, {2, 40, 8}, {2, 40, 1}},                 // mask over T
  };
  // layout bshd: Q [B, S, H, D], K [B, T, H, D], V [B, T, H, Dv]
  std::vector<Shp> heads = {
      {{2, 7, 3, 8}, {2, 9, 3, 8}, {2, 9, 3, 5}, {2, 1, 1, 9}},
      {{1, 33, 4, 15}, {1, 33, 4, 15}, {1, 33, 4, 16}, {1, 1, 33, 33}},
      {{3, 1, 2, 32}, {1, 70, 2, 32}, {1, 70, 2, 32}, {}},
  };
  for (NamedKernel kern : attention_bf16_kernels())
    for (int layout = 0; layout < 2; layout++)
      for (const Shp& sh : layout ? heads : shapes)
        for (const char* op : {"mul", "div"}) {
          CAPTURE(kern.name);
          CAPTURE(layout);
          CAPTURE(shape_str(sh.q));
          CAPTURE(op);
          Tensor q = random_f32(sh.q, seed++, -2, 2), k = random_f32(sh.k, seed++, -2, 2);
          Tensor v = random_f32(sh.v, seed++), m = random_f32(sh.mask, seed++, -3, 0);
          std::vector<const Tensor*> in = {&q, &k, &v};
          if (!sh.mask.empty()) in.push_back(&m);
          Node n = attention_node(!sh.mask.empty(), op, layout, "bf16");
          Tensor ref = run(n, in);
          Tensor fast = run(n, in, kern.fn, 3);
          // The exponentials differ by an ulp or two (exp_f32_array vs std::exp), which can
          // move a bf16-rounded P by one bf16 ulp (2^-8).
          check_close(fast, ref, 2e-3);
          // bf16 against fp32: close, but not the same numbers.
          Tensor f32 = run(attention_node(!sh.mask.empty(), op, layout, "fp32"), in);
          check_close(ref, f32, 3e-2);
          bool differs = std::memcmp(ref.data(), f32.data(), ref.nbytes()) != 0;
          CHECK(differs);
        }
  Tensor q = random_f32({2, 4, 8}, 1), k = random_f32({2, 8, 4}, 2), v = random_f32({2, 4, 8}, 3);
  CHECK_THROWS_WITH(run(attention_node(false, "mul", false, "fp16"), {&q, &k, &v}),
                    doctest::Contains("precision must be"));
}

TEST_CASE("gemm bf16 Attention is batch invariant: a query row's bits ignore the other rows") {
  for (NamedKernel kern : attention_bf16_kernels()) {
    CAPTURE(kern.name);
    const int64_t S = 300, T = 300, D = 33, Dv = 20;  // S x T > one score block: several tasks
    Tensor q = random_f32({1, S, D}, 31), k = random_f32({1, D, T}, 32);
    Tensor v = random_f32({1, T, Dv}, 33);
    Node n = attention_node(false, "mul", false, "bf16");
    Tensor all = run(n, {&q, &k, &v}, kern.fn, 4);
    for (int64_t r0 : {0, 131, 299}) {
      Tensor one = Tensor::empty(DType::F32, {1, 1, D});
      std::memcpy(one.data(), q.ptr<float>() + r0 * D, D * 4);
      Tensor y = run(n, {&one, &k, &v}, kern.fn, 1);
      CHECK(std::memcmp(y.data(), all.ptr<float>() + r0 * Dv, Dv * 4) == 0);
    }
  }
}

#if defined(__x86_64__)
TEST_CASE("gemm bf16: the AVX512_BF16 roundings have the generic ones' bits") {
  if (!cpu_bf16_dot()) {
    MESSAGE("no AVX512_BF16: the roundings are not tested");
    return;
  }
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int64_t n : {1, 15, 16, 17, 100}) {
    CAPTURE(n);
    std::vector<float> x0(n), x1(n);
    for (int64_t i = 0; i < n; i++) x0[i] = u(rng), x1[i] = u(rng) * 1e-3f;
    x0[0] = 1.00390625f;  // a tie: nearest even rounds it down to 1
    const int64_t lines = (n + 15) / 16, stride = 40;
    std::vector<uint32_t> want(lines * stride, 0xdeadbeef), got = want;
    cpu::bgemm_micro_generic().round_pairs(x0.data(), x1.data(), n, want.data(), stride);
    cpu::bf16_round_pairs_avx512bf16(x0.data(), x1.data(), n, got.data(), stride);
    CHECK(want == got);  // padding lanes zero, the gaps between lines untouched in both
    CHECK(want[0] == ((uint32_t)f32_to_bf16(x1[0]) << 16 | 0x3f80u));
    std::vector<uint16_t> r(n + 1, 0x1234), g(n + 1, 0x1234);
    cpu::bgemm_micro_generic().round_a(x0.data(), r.data(), n);
    cpu::bf16_round_avx512bf16(x0.data(), g.data(), n);
    CHECK(r == g);
  }
}

TEST_CASE("gemm bf16: the AVX-512 erf-Gelu and score rows match the AVX2 rows") {
  if (cpu_isa() < Isa::Avx512) {
    MESSAGE("no AVX-512 (cpu_isa ", std::string(isa_name(cpu_isa())), "): rows not tested");
    return;
  }
  std::mt19937 rng(4242);
  std::uniform_real_distribution<float> u(-16.0f, 16.0f);
  const float specials[] = {0.0f, -0.0f, 14.5f, -14.5f, 14.6f, -14.6f, 1e-30f, -1e-30f,
                            INFINITY, -INFINITY, NAN, 3e38f, -3e38f, 0.875f, -5.0f};
  for (int64_t n : {1, 7, 15, 16, 17, 33, 100, 1001}) {
    CAPTURE(n);
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; i++) x[i] = i < 15 && n > 15 ? specials[i] : u(rng);
    std::vector<float> want(n + 1, 7.0f), got(n + 1, 7.0f), inplace = x;
    cpu::gelu_erf_f32_array_avx2(x.data(), want.data(), n);
    cpu::gelu_erf_f32_array_avx512(x.data(), got.data(), n);
    cpu::gelu_erf_f32_array_avx512(inplace.data(), inplace.data(), n);
    CHECK(std::memcmp(got.data(), want.data(), (n + 1) * 4) == 0);  // and nothing past n
    CHECK(std::memcmp(inplace.data(), want.data(), n * 4) == 0);
    for (int mask_kind = 0; mask_kind < 3; mask_kind++)  // none, one per key, broadcast
      for (bool div : {false, true}) {
        CAPTURE(mask_kind);
        std::vector<float> m(n);
        for (int64_t i = 0; i < n; i++) m[i] = i % 5 == 4 ? -1e4f : u(rng) / 8;
        const float* mp = mask_kind ? m.data() : nullptr;
        const int64_t mt = mask_kind == 1 ? 1 : 0;
        std::vector<float> s2(n + 1), s5(n + 1);
        for (int64_t i = 0; i < n; i++) s2[i] = s5[i] = u(rng);
        s2[n] = s5[n] = 7.0f;
        float sum2 = cpu::attention_scores_row_avx2(s2.data(), n, 0.3f, div, mp, mt);
        float sum5 = cpu::attention_scores_row_avx512(s5.data(), n, 0.3f, div, mp, mt);
        // g++ may fuse the scale and the mask add into one FMA in either kernel (the
        // intrinsics are plain vector arithmetic to it): the argument of exp can differ by
        // one rounding, |arg| < 40 here, so exp by 40 * 2^-24 relative.
        for (int64_t i = 0; i < n; i++)
          if (!(std::fabs(s5[i] - s2[i]) <= 3e-6f * s2[i])) {
            FAIL_CHECK("score ", i, ": ", s5[i], " vs ", s2[i]);
            break;
          }
        if (mask_kind == 0) CHECK(std::memcmp(s2.data(), s5.data(), n * 4) == 0);
        CHECK(s5[n] == 7.0f);  // nothing past n
        CHECK(std::fabs(sum5 - sum2) <= 3e-6f * sum2);
        CHECK(sum5 >= 1.0f);                             // the max's exp is 1
      }
  }
}
#endif

namespace {

Node conv_node(const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
               const std::vector<int64_t>& dil, int64_t group, bool bias, const char* precision) {
  Node n;
  n.op = OpType::Conv;
  n.name = "conv_bf16";
  n.inputs = {0, 1};
  if (bias) n.inputs.push_back(2);
  n.outputs = {100};
  n.attrs.set("strides", strides);
  n.attrs.set("pads", pads);
  n.attrs.set("dilations", dil);
  n.attrs.set("group", group);
  n.attrs.set("precision", std::string(precision));
  return n;
}

std::vector<NamedKernel> conv_bf16_kernels() {
  std::vector<NamedKernel> ks = {{"conv_bf16", cpu::conv_bf16}};
#if defined(__x86_64__)
  if (cpu_bf16_dot()) ks.push_back({"conv_bf16_avx512bf16", cpu::conv_bf16_avx512bf16});
#endif
  return ks;
}

}  // namespace

TEST_CASE("gemm bf16 Conv kernels match the bf16 reference bit for bit: kernels, strides, pads") {
  struct Case {
    Shape x, w;
    std::vector<int64_t> strides, pads, dil;
    int64_t group;
  };
  const std::vector<Case> cases = {
      {{2, 3, 11, 9}, {5, 3, 3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1},   // K = 27: odd
      {{1, 3, 17, 17}, {7, 3, 7, 7}, {2, 2}, {3, 3, 3, 3}, {1, 1}, 1},  // stem-like
      {{1, 8, 6, 7}, {9, 8, 1, 1}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1},    // pointwise
      {{1, 4, 9, 9}, {6, 2, 3, 3}, {2, 1}, {0, 1, 2, 0}, {2, 1}, 2},    // groups, dilation
      {{3, 5, 13}, {4, 5, 3}, {2}, {1, 1}, {1}, 1},                      // 1-D, batch 3
  };
  uint32_t seed = 9900;
  for (NamedKernel kern : conv_bf16_kernels())
    for (const Case& c : cases)
      for (bool bias : {false, true}) {
        CAPTURE(kern.name);
        CAPTURE(shape_str(c.w));
        CAPTURE(bias);
        Tensor x = random_f32(c.x, seed++, -2, 2), w = random_f32(c.w, seed++, -1, 1);
        Tensor b = random_f32({c.w[0]}, seed++);
        std::vector<const Tensor*> in = {&x, &w};
        if (bias) in.push_back(&b);
        Node n = conv_node(c.strides, c.pads, c.dil, c.group, bias, "bf16");
        Tensor ref = run(n, in);
        Tensor fast = run(n, in, kern.fn, 3);
        CHECK(bit_equal(fast, ref));
        // Near fp32: operand roundings of 2^-9 over kg = C/G x taps random-signed products.
        Tensor f32 = run(conv_node(c.strides, c.pads, c.dil, c.group, bias, "fp32"), in);
        check_close(ref, f32, 1e-2 * std::sqrt((double)(w.numel() / w.dim(0))));
        CHECK(std::memcmp(ref.data(), f32.data(), ref.nbytes()) != 0);
        // Image 0 alone has the bits it has in the batch.
        if (c.x[0] > 1) {
          Shape one = c.x;
          one[0] = 1;
          Tensor x0 = Tensor::empty(DType::F32, one);
          std::memcpy(x0.data(), x.data(), x0.nbytes());
          std::vector<const Tensor*> in0 = in;
          in0[0] = &x0;
          Tensor y0 = run(n, in0, kern.fn, 2);
          CHECK(std::memcmp(y0.data(), fast.data(), y0.nbytes()) == 0);
        }
      }
  Tensor x = random_f32({1, 2, 5, 5}, 1), w = random_f32({3, 2, 3, 3}, 2);
  CHECK_THROWS_WITH(run(conv_node({1, 1}, {0, 0, 0, 0}, {1, 1}, 1, false, "fp16"), {&x, &w}),
                    doctest::Contains("precision 'fp16'"));
}
