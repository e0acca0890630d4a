// Linalg and reduction ops (cpp/src/ops/ops_linalg.cpp, ops_reduce.cpp) and their fast f32
// kernels (kernels/generic/gemm_f32.cpp, norm_f32.cpp): each fast kernel against its OpDef
// reference on odd shapes with fresh random data, GEMM batch invariance (a row's bits do not
// depend on M or the thread count), broadcasting forms, shape inference and error paths.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/kernels_generic.h"
#include "op_test_util.h"
#include "ops/op_util.h"
#include "runtime/registry.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

using namespace ember;
using ember::test::random_f32;

namespace {

Tensor f32_tensor(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, s);
  REQUIRE((int64_t)v.size() == t.numel());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

Tensor i64_tensor(const Shape& s, const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty(DType::I64, s);
  REQUIRE((int64_t)v.size() == t.numel());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 8);
  return t;
}

// A node with inputs 0..n-1 (nullptr inputs marked absent) and `nout` outputs.
Node make_node(OpType op, const std::vector<const Tensor*>& in, int nout = 1) {
  Node n;
  n.op = op;
  n.name = "n";
  for (size_t i = 0; i < in.size(); i++) n.inputs.push_back(in[i] ? (int)i : -1);
  for (int i = 0; i < nout; i++) n.outputs.push_back(100 + i);
  return n;
}

std::vector<TensorType> infer(const Node& n, const std::vector<const Tensor*>& in) {
  InferCtx ic{n, {}, {}};
  for (const Tensor* t : in) {
    ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
    ic.values.push_back(t);
  }
  op_validate(n);
  return op_def(n.op).infer(ic);
}

bool supports(const Node& n, const std::vector<const Tensor*>& in, bool (*pred)(const InferCtx&)) {
  InferCtx ic{n, {}, {}};
  for (const Tensor* t : in) {
    ic.in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
    ic.values.push_back(t);
  }
  return pred(ic);
}

// Infers the outputs, allocates them and runs `fn` (the reference when null).
std::vector<Tensor> run(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn = nullptr,
                        int threads = 4) {
  std::vector<TensorType> types = infer(n, in);
  std::vector<Tensor> outs;
  for (const TensorType& t : types) outs.push_back(Tensor::empty(t.dtype, t.shape));
  std::vector<Tensor*> ptrs;
  for (Tensor& t : outs) ptrs.push_back(&t);
  KernelCtx ctx{n, in, ptrs, threads};
  (fn ? fn : op_def(n.op).reference)(ctx);
  return outs;
}

// |a - b| <= tol * (1 + |b|) elementwise; reports the first mismatch.
void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = tensor_get_f64(a, i), y = tensor_get_f64(b, i);
    if (std::isnan(y)) {
      CHECK(std::isnan(x));
      continue;
    }
    if (!(std::fabs(x - y) <= tol * (1.0 + std::fabs(y)))) {
      FAIL_CHECK("element ", i, " of ", shape_str(a.shape()), ": ", x, " vs ", y);
      return;
    }
  }
}

bool bit_equal(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, n * 4) == 0; }

struct NamedKernel {
  const char* name;
  KernelFn fn;
};

// MatMul and FusedMatMul kernels of every micro-kernel this CPU can run.
std::vector<NamedKernel> matmul_kernels() {
  std::vector<NamedKernel> ks = {{"matmul_f32", cpu::matmul_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"matmul_f32_avx2", cpu::matmul_f32_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"matmul_f32_avx512", cpu::matmul_f32_avx512});
#elif defined(__aarch64__)
  if (cpu_isa() >= Isa::Neon) ks.push_back({"matmul_f32_neon", cpu::matmul_f32_neon});
#endif
  return ks;
}

std::vector<NamedKernel> fused_matmul_kernels() {
  std::vector<NamedKernel> ks = {{"fused_matmul_f32", cpu::fused_matmul_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"fused_matmul_f32_avx2", cpu::fused_matmul_f32_avx2});
  if (cpu_isa() >= Isa::Avx512)
    ks.push_back({"fused_matmul_f32_avx512", cpu::fused_matmul_f32_avx512});
#elif defined(__aarch64__)
  if (cpu_isa() >= Isa::Neon) ks.push_back({"fused_matmul_f32_neon", cpu::fused_matmul_f32_neon});
#endif
  return ks;
}

}  // namespace

TEST_CASE("gemm matmul_f32 matches the MatMul reference on odd shapes") {
  for (NamedKernel kern : matmul_kernels()) {
  CAPTURE(kern.name);
  uint32_t seed = 1;
  for (int64_t M : {1, 7, 33})
    for (int64_t K : {1, 7, 769})
      for (int64_t N : {1, 5, 130}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Tensor a = random_f32({M, K}, seed++), b = random_f32({K, N}, seed++);
        Node n = make_node(OpType::MatMul, {&a, &b});
        Tensor ref = run(n, {&a, &b})[0];
        Tensor fast = run(n, {&a, &b}, kern.fn)[0];
        check_close(fast, ref, 1e-4);
      }
  }
}

TEST_CASE("gemm matmul_f32 is batch invariant: a row's bits do not depend on M or threads") {
  for (NamedKernel kern : matmul_kernels()) {
  CAPTURE(kern.name);
  for (int64_t K : {1, 7, 300, 769})
    for (int64_t N : {5, 130, 300}) {
      CAPTURE(K);
      CAPTURE(N);
      const int64_t M = 300;
      Tensor a = random_f32({M, K}, 11), b = random_f32({K, N}, 12);
      Node n = make_node(OpType::MatMul, {&a, &b});
      Tensor big = run(n, {&a, &b}, kern.fn, 8)[0];
      Tensor one_thread = run(n, {&a, &b}, kern.fn, 1)[0];
      CHECK(bit_equal(big.ptr<float>(), one_thread.ptr<float>(), M * N));
      for (int64_t rows : {1, 3, 5, 33}) {
        for (int64_t r0 : {(int64_t)0, M - rows, (int64_t)137}) {
          Tensor part = Tensor::empty(DType::F32, {rows, K});
          std::memcpy(part.data(), a.ptr<float>() + r0 * K, rows * K * 4);
          Node np = make_node(OpType::MatMul, {&part, &b});
          Tensor small = run(np, {&part, &b}, kern.fn, 3)[0];
          CHECK_MESSAGE(bit_equal(small.ptr<float>(), big.ptr<float>() + r0 * N, rows * N),
                        "rows ", r0, "..", r0 + rows);
        }
      }
      // 1-D A (a GEMV) gives the same bits as the row of the matrix product.
      Tensor row = Tensor::empty(DType::F32, {K});
      std::memcpy(row.data(), a.ptr<float>() + 42 * K, K * 4);
      Node nv = make_node(OpType::MatMul, {&row, &b});
      Tensor v = run(nv, {&row, &b}, kern.fn)[0];
      CHECK(v.shape() == Shape{N});
      CHECK(bit_equal(v.ptr<float>(), big.ptr<float>() + 42 * N, N));
    }
  }
}

TEST_CASE("gemm matmul_f32 batch broadcasting and 1-D operands") {
  struct Case { Shape a, b, out; };
  const Case cases[] = {
      {{2, 3, 7, 9}, {3, 9, 5}, {2, 3, 7, 5}},
      {{2, 1, 7, 9}, {1, 3, 9, 5}, {2, 3, 7, 5}},
      {{3, 7, 9}, {9, 5}, {3, 7, 5}},
      {{7, 9}, {4, 9, 5}, {4, 7, 5}},
      {{9}, {4, 9, 5}, {4, 5}},
      {{4, 7, 9}, {9}, {4, 7}},
      {{9}, {9}, {}},
      {{2, 33, 769}, {2, 769, 130}, {2, 33, 130}},
      {{2, 0, 9}, {9, 5}, {2, 0, 5}},
      {{3, 4, 0}, {0, 5}, {3, 4, 5}},
  };
  uint32_t seed = 100;
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.a));
    CAPTURE(shape_str(c.b));
    Tensor a = random_f32(c.a, seed++), b = random_f32(c.b, seed++);
    Node n = make_node(OpType::MatMul, {&a, &b});
    Tensor ref = run(n, {&a, &b})[0];
    CHECK(ref.shape() == c.out);
    Tensor fast = run(n, {&a, &b}, cpu::matmul_f32)[0];
    check_close(fast, ref, 1e-4);
    if (c.a.back() == 0)
      for (int64_t i = 0; i < fast.numel(); i++) CHECK(fast.ptr<float>()[i] == 0.0f);
  }
}

TEST_CASE("gemm MatMul reference: exact small products in every dtype, errors") {
  // [[1, 2], [3, 4]] @ [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64}) {
    CAPTURE(dtype_name(dt));
    Tensor a = Tensor::empty(dt, {2, 2}), b = Tensor::empty(dt, {2, 2});
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same_v<T, bool>) {
        for (int i = 0; i < 4; i++) {
          store(a.ptr<T>(), i, (compute_t<T>)(i + 1));
          store(b.ptr<T>(), i, (compute_t<T>)(i + 5));
        }
      }
    });
    Node n = make_node(OpType::MatMul, {&a, &b});
    Tensor out = run(n, {&a, &b})[0];
    CHECK(out.dtype() == dt);
    const double want[] = {19, 22, 43, 50};
    for (int i = 0; i < 4; i++) CHECK(tensor_get_f64(out, i) == want[i]);
  }
  Tensor a = random_f32({3, 4}, 1), b = random_f32({5, 6}, 2), s = random_f32({}, 3);
  Node n = make_node(OpType::MatMul, {&a, &b});
  CHECK_THROWS_WITH(infer(n, {&a, &b}), doctest::Contains("[MatMul]"));
  CHECK_THROWS(infer(n, {&s, &b}));
  Tensor c = random_f32({2, 3, 4}, 4), d = random_f32({3, 4, 5}, 5);
  CHECK_THROWS_WITH(infer(n, {&c, &d}), doctest::Contains("broadcast"));
  Tensor e = i64_tensor({4, 5}, std::vector<int64_t>(20, 1));
  CHECK_THROWS_WITH(infer(n, {&a, &e}), doctest::Contains("int64"));
}

TEST_CASE("gemm gemm_f32 matches the Gemm reference (trans, alpha, beta, C broadcast)") {
  const int64_t M = 33, K = 769, N = 130;
  uint32_t seed = 200;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int ci = 0; ci < 6; ci++) {
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(ci);
        Tensor a = random_f32(ta ? Shape{K, M} : Shape{M, K}, seed++);
        Tensor b = random_f32(tb ? Shape{N, K} : Shape{K, N}, seed++);
        const Shape c_shapes[] = {{}, {N}, {M, 1}, {M, N}, {1, N}, {1}};
        Tensor c = random_f32(c_shapes[ci], seed++);
        std::vector<const Tensor*> in = {&a, &b};
        if (ci != 5 || ta) in.push_back(&c);  // ci 5 without transA: no C at all
        Node n = make_node(OpType::Gemm, in);
        n.attrs.set("transA", (int64_t)ta);
        n.attrs.set("transB", (int64_t)tb);
        if (ci % 2) n.attrs.set("alpha", 0.5);
        if (ci % 3 == 1) n.attrs.set("beta", -2.0);
        Tensor ref = run(n, in)[0];
        CHECK(ref.shape() == Shape{M, N});
        Tensor fast = run(n, in, cpu::gemm_f32)[0];
        check_close(fast, ref, 1e-4);
      }
  // Gemm shares MatMul's sums: with alpha 1 and no C its bits equal matmul_f32's.
  Tensor a = random_f32({7, 769}, 1), b = random_f32({769, 5}, 2);
  Node g = make_node(OpType::Gemm, {&a, &b});
  Node m = make_node(OpType::MatMul, {&a, &b});
  Tensor yg = run(g, {&a, &b}, cpu::gemm_f32)[0], ym = run(m, {&a, &b}, cpu::matmul_f32)[0];
  CHECK(bit_equal(yg.ptr<float>(), ym.ptr<float>(), 35));
  // Bad C / inner dims.
  Tensor bad_c = random_f32({2, N}, 3), bb = random_f32({5, 7}, 4);
  Tensor a2 = random_f32({M, K}, 5), b2 = random_f32({K, N}, 6);
  Node nc = make_node(OpType::Gemm, {&a2, &b2, &bad_c});
  CHECK_THROWS_WITH(infer(nc, {&a2, &b2, &bad_c}), doctest::Contains("does not broadcast"));
  Node nk = make_node(OpType::Gemm, {&a2, &bb});
  CHECK_THROWS_WITH(infer(nk, {&a2, &bb}), doctest::Contains("inner dims"));
  Node nu = make_node(OpType::Gemm, {&a2, &b2});
  nu.attrs.set("broadcast", (int64_t)1);
  CHECK_THROWS_WITH(op_validate(nu), doctest::Contains("unknown attribute"));
}

TEST_CASE("norm_f32 softmax and log-softmax match their references") {
  struct Case { Shape s; int64_t axis; bool legacy; };
  const Case cases[] = {
      {{3, 7}, -1, false}, {{2, 5, 769}, 2, false}, {{4, 1}, -1, false}, {{2, 3, 5, 1}, 2, false},
      {{2, 3, 5}, 1, true}, {{6, 130}, 1, true}, {{2, 3, 4}, 0, true}, {{2, 3}, 2, true},
  };
  uint32_t seed = 300;
  for (const Case& c : cases)
    for (OpType op : {OpType::Softmax, OpType::LogSoftmax}) {
      CAPTURE(shape_str(c.s));
      CAPTURE(c.axis);
      CAPTURE(c.legacy);
      Tensor x = random_f32(c.s, seed++, -20.0f, 20.0f);
      Node n = make_node(op, {&x});
      n.attrs.set("axis", c.axis);
      if (c.legacy) n.attrs.set("legacy_axis_2d", (int64_t)1);
      REQUIRE(supports(n, {&x}, cpu::softmax_f32_supports));
      Tensor ref = run(n, {&x})[0];
      Tensor fast =
          run(n, {&x}, op == OpType::Softmax ? cpu::softmax_f32 : cpu::log_softmax_f32)[0];
      check_close(fast, ref, 1e-5);
    }
  // Softmax over a middle axis is the reference's job (not contiguous).
  Tensor x = random_f32({2, 3, 4}, 1);
  Node n = make_node(OpType::Softmax, {&x});
  n.attrs.set("axis", (int64_t)1);
  CHECK_FALSE(supports(n, {&x}, cpu::softmax_f32_supports));
  Tensor y = run(n, {&x})[0];
  for (int64_t o = 0; o < 2; o++)
    for (int64_t i = 0; i < 4; i++) {
      double s = 0;
      for (int64_t j = 0; j < 3; j++) s += y.ptr<float>()[o * 12 + j * 4 + i];
      CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
    }
  // Legacy 2-D: normalises over all of dims [axis:].
  Node nl = make_node(OpType::Softmax, {&x});
  nl.attrs.set("axis", (int64_t)1);
  nl.attrs.set("legacy_axis_2d", (int64_t)1);
  Tensor yl = run(nl, {&x})[0];
  double s = 0;
  for (int64_t j = 0; j < 12; j++) s += yl.ptr<float>()[j];
  CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  // Large inputs stay finite (max subtracted).
  Tensor big = f32_tensor({3}, {1000.0f, 1000.0f, -1000.0f});
  Node nb = make_node(OpType::Softmax, {&big});
  Tensor yb = run(nb, {&big}, cpu::softmax_f32)[0];
  CHECK(yb.ptr<float>()[0] == doctest::Approx(0.5));
  CHECK(yb.ptr<float>()[2] == 0.0f);
  n.attrs.set("axis", (int64_t)3);
  CHECK_THROWS_WITH(infer(n, {&x}), doctest::Contains("out of range"));
}

TEST_CASE("norm_f32 layer_norm_f32 matches the LayerNormalization reference") {
  struct Case { Shape x; int64_t axis; Shape scale; bool bias; };
  const Case cases[] = {
      {{5, 7}, -1, {7}, true},          {{2, 33, 384}, -1, {384}, true},
      {{3, 4, 5}, 1, {4, 5}, false},    {{3, 769}, 1, {1, 769}, true},
      {{2, 3, 4}, 0, {2, 3, 4}, true},  {{4, 1}, -1, {1}, true},
  };
  uint32_t seed = 400;
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.x));
    CAPTURE(c.axis);
    Tensor x = random_f32(c.x, seed++, -3.0f, 5.0f);
    Tensor sc = random_f32(c.scale, seed++), b = random_f32(c.scale, seed++);
    std::vector<const Tensor*> in = {&x, &sc};
    if (c.bias) in.push_back(&b);
    Node n = make_node(OpType::LayerNormalization, in, 3);
    n.attrs.set("axis", c.axis);
    n.attrs.set("epsilon", 1e-3);
    REQUIRE(supports(n, in, cpu::layer_norm_f32_supports));
    std::vector<Tensor> ref = run(n, in), fast = run(n, in, cpu::layer_norm_f32);
    REQUIRE(ref.size() == 3);
    int axis = (int)(c.axis < 0 ? c.axis + (int64_t)c.x.size() : c.axis);
    Shape stat(c.x.begin(), c.x.begin() + axis);
    stat.resize(c.x.size(), 1);
    CHECK(ref[1].shape() == stat);
    CHECK(ref[1].dtype() == DType::F32);
    for (int i = 0; i < 3; i++) check_close(fast[i], ref[i], 2e-5);
  }
  // Scale broadcast within the normalised dims: reference only.
  Tensor x = random_f32({3, 4, 5}, 1), sc = random_f32({5}, 2);
  Node n = make_node(OpType::LayerNormalization, {&x, &sc});
  n.attrs.set("axis", (int64_t)1);
  CHECK_FALSE(supports(n, {&x, &sc}, cpu::layer_norm_f32_supports));
  Tensor y = run(n, {&x, &sc})[0];
  CHECK(y.shape() == x.shape());
  // Known values: x = [1, 2, 3, 4] -> mean 2.5, var 1.25.
  Tensor x4 = f32_tensor({1, 4}, {1, 2, 3, 4}), one4 = f32_tensor({4}, {1, 1, 1, 1});
  Node n4 = make_node(OpType::LayerNormalization, {&x4, &one4}, 3);
  n4.attrs.set("epsilon", 0.0);
  std::vector<Tensor> r4 = run(n4, {&x4, &one4});
  CHECK(r4[0].ptr<float>()[0] == doctest::Approx(-1.5 / std::sqrt(1.25)));
  CHECK(r4[1].ptr<float>()[0] == doctest::Approx(2.5));
  CHECK(r4[2].ptr<float>()[0] == doctest::Approx(1.0 / std::sqrt(1.25)));
  Tensor bad = random_f32({3}, 3);
  Node nb = make_node(OpType::LayerNormalization, {&x4, &bad});
  CHECK_THROWS_WITH(infer(nb, {&x4, &bad}), doctest::Contains("does not broadcast"));
}

TEST_CASE(
    "norm_f32 reduce_mean_f32 / reduce_sum_f32 match the references (trailing and middle dims)") {
  struct Case { Shape s; std::vector<int64_t> axes; bool keepdims; };
  const Case cases[] = {
      {{4, 7}, {-1}, true},        {{2, 33, 769}, {2}, false},  {{3, 4, 5}, {1, 2}, true},
      {{3, 4, 5}, {}, false},      {{3, 4, 1}, {1}, true},      {{3, 1, 5}, {0, 2}, false},
      {{2, 3, 0}, {2}, true},      {{1, 40000}, {-1}, true},    {{3, 4, 5}, {1}, true},
      {{8, 128, 384}, {1}, false}, {{2, 3, 4, 5}, {1, -2}, true}, {{1, 1000, 3}, {1}, false},
      {{2, 0, 3}, {1}, true},      {{2, 3, 1, 4, 5}, {1, 3}, true},
  };
  uint32_t seed = 500;
  for (const Case& c : cases)
    for (OpType op : {OpType::ReduceMean, OpType::ReduceSum}) {
      CAPTURE(shape_str(c.s));
      CAPTURE(c.axes.size());
      Tensor x = random_f32(c.s, seed++);
      Tensor axes = i64_tensor({(int64_t)c.axes.size()}, c.axes);
      std::vector<const Tensor*> in = {&x};
      if (!c.axes.empty()) in.push_back(&axes);
      Node n = make_node(op, in);
      n.attrs.set("keepdims", (int64_t)c.keepdims);
      REQUIRE(supports(n, in, cpu::reduce_f32_supports));
      Tensor ref = run(n, in)[0];
      Tensor fast =
          run(n, in, op == OpType::ReduceMean ? cpu::reduce_mean_f32 : cpu::reduce_sum_f32)[0];
      check_close(fast, ref, 1e-6);
    }
  // Reduced dims not one run: reference only.
  Tensor x = random_f32({3, 4, 5}, 1), ax = i64_tensor({2}, {0, 2});
  Node n = make_node(OpType::ReduceSum, {&x, &ax});
  CHECK_FALSE(supports(n, {&x, &ax}, cpu::reduce_f32_supports));
  Tensor none = i64_tensor({0}, {});
  Node nn = make_node(OpType::ReduceSum, {&x, &none});
  nn.attrs.set("noop_with_empty_axes", (int64_t)1);
  CHECK_FALSE(supports(nn, {&x, &none}, cpu::reduce_f32_supports));
  Tensor y = run(nn, {&x, &none})[0];
  CHECK(y.shape() == x.shape());
  CHECK(bit_equal(y.ptr<float>(), x.ptr<float>(), x.numel()));
}

TEST_CASE("norm_f32 Reduce references: values, dtypes, empty sets and errors") {
  // [[1, 5, 3], [4, 2, 6]]
  Tensor x = f32_tensor({2, 3}, {1, 5, 3, 4, 2, 6});
  Tensor ax1 = i64_tensor({1}, {1}), ax0 = i64_tensor({1}, {-2});
  Node nmax = make_node(OpType::ReduceMax, {&x, &ax1});
  nmax.attrs.set("keepdims", (int64_t)0);
  Tensor m = run(nmax, {&x, &ax1})[0];
  CHECK(m.shape() == Shape{2});
  CHECK(m.ptr<float>()[0] == 5.0f);
  CHECK(m.ptr<float>()[1] == 6.0f);
  Node nmean = make_node(OpType::ReduceMean, {&x, &ax0});
  Tensor mean = run(nmean, {&x, &ax0})[0];
  CHECK(mean.shape() == Shape{1, 3});
  CHECK(mean.ptr<float>()[0] == 2.5f);
  Node nsum = make_node(OpType::ReduceSum, {&x});
  nsum.attrs.set("keepdims", (int64_t)0);
  Tensor sum = run(nsum, {&x})[0];
  CHECK(sum.shape() == Shape{});
  CHECK(sum.ptr<float>()[0] == 21.0f);
  // Opset-11 attribute form.
  Node nattr = make_node(OpType::ReduceSum, {&x});
  nattr.attrs.set("axes", std::vector<int64_t>{1});
  CHECK(run(nattr, {&x})[0].shape() == Shape{2, 1});
  // Integers: int64 accumulation, mean truncates like numpy.
  Tensor xi = Tensor::empty(DType::I32, {1, 3});
  xi.ptr<int32_t>()[0] = 1;
  xi.ptr<int32_t>()[1] = 2;
  xi.ptr<int32_t>()[2] = 2;
  Node nmi = make_node(OpType::ReduceMean, {&xi});
  CHECK(run(nmi, {&xi})[0].ptr<int32_t>()[0] == 1);
  Node nmx = make_node(OpType::ReduceMax, {&xi});
  CHECK(run(nmx, {&xi})[0].ptr<int32_t>()[0] == 2);
  // Empty reductions: Sum 0, Max -inf (the ONNX spec), Mean NaN.
  Tensor e = Tensor::empty(DType::F32, {2, 0});
  Node es = make_node(OpType::ReduceSum, {&e, &ax1});
  Tensor rs = run(es, {&e, &ax1})[0];
  CHECK(rs.shape() == Shape{2, 1});
  CHECK(rs.ptr<float>()[0] == 0.0f);
  Node em = make_node(OpType::ReduceMax, {&e, &ax1});
  CHECK(run(em, {&e, &ax1})[0].ptr<float>()[1] == -std::numeric_limits<float>::infinity());
  Node emean = make_node(OpType::ReduceMean, {&e, &ax1});
  CHECK(std::isnan(run(emean, {&e, &ax1})[0].ptr<float>()[0]));
  // Errors: duplicate / out-of-range axes, data-dependent axes, wrong axes dtype.
  Tensor dup = i64_tensor({2}, {1, -1}), far = i64_tensor({1}, {2});
  Node nd = make_node(OpType::ReduceSum, {&x, &dup});
  CHECK_THROWS_WITH(infer(nd, {&x, &dup}), doctest::Contains("twice"));
  CHECK_THROWS_WITH(infer(nd, {&x, &far}), doctest::Contains("out of range"));
  InferCtx ic{nd, {{DType::F32, {2, 3}}, {DType::I64, {1}}}, {nullptr, nullptr}};
  CHECK_THROWS_WITH(op_def(OpType::ReduceSum).infer(ic), doctest::Contains("data-dependent"));
  Tensor ax32 = Tensor::empty(DType::I32, {1});
  ax32.ptr<int32_t>()[0] = 0;
  CHECK_THROWS_WITH(infer(nd, {&x, &ax32}), doctest::Contains("int64"));
  Tensor xb = Tensor::empty(DType::Bool, {2});
  xb.ptr<bool>()[0] = false;
  xb.ptr<bool>()[1] = true;
  Node nbool = make_node(OpType::ReduceMax, {&xb});
  CHECK(run(nbool, {&xb})[0].ptr<bool>()[0] == true);
  Node nbs = make_node(OpType::ReduceSum, {&xb});
  CHECK_THROWS_WITH(infer(nbs, {&xb}), doctest::Contains("unsupported dtype"));
}

namespace {

// W [K, N] packed for FusedMatMul.
Tensor pack_weights(const Tensor& w) {
  int64_t K = w.dim(0), N = w.dim(1);
  Tensor p = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
  cpu::sgemm_pack_b(w.ptr<float>(), N, 1, K, N, p.ptr<float>());
  return p;
}

Node fused_node(int64_t n, const char* act, bool bias) {
  Node f;
  f.op = OpType::FusedMatMul;
  f.name = "fused";
  f.inputs = {0, 1};
  if (bias) f.inputs.push_back(2);
  f.outputs = {100};
  f.attrs.set("n", n);
  f.attrs.set("activation", std::string(act));
  return f;
}

}  // namespace

TEST_CASE("gemm FusedMatMul: packed weights, bias and activation match MatMul + Add + act") {
  uint32_t seed = 500;
  for (NamedKernel kern : fused_matmul_kernels()) {
    for (const char* act : {"none", "relu", "gelu", "gelu_tanh"})
      for (int64_t M : {1, 6, 7, 130})
        for (int64_t K : {1, 17, 300})
          for (int64_t N : {1, 16, 33, 200}) {
            CAPTURE(kern.name);
            CAPTURE(act);
            CAPTURE(M);
            CAPTURE(K);
            CAPTURE(N);
            Tensor a = random_f32({2, M, K}, seed++, -2, 2), w = random_f32({K, N}, seed++, -2, 2);
            Tensor bias = random_f32({N}, seed++), wp = pack_weights(w);
            bool with_bias = N != 16;
            Node f = fused_node(N, act, with_bias);
            std::vector<const Tensor*> in = {&a, &wp};
            if (with_bias) in.push_back(&bias);
            Tensor ref = run(f, in)[0];
            Tensor fast = run(f, in, kern.fn, 3)[0];
            CHECK(fast.shape() == Shape{2, M, N});
            check_close(fast, ref, 2e-5 * std::sqrt((double)K + 1));
            // The same sums as MatMul on the unpacked weights (bias and act after).
            if (std::string(act) == "none" && !with_bias) {
              Node mm = make_node(OpType::MatMul, {&a, &w});
              Tensor plain = run(mm, {&a, &w}, kern.fn == cpu::fused_matmul_f32
                                                     ? cpu::matmul_f32 : matmul_kernels().back().fn)[0];
              CHECK(bit_equal(plain.ptr<float>(), fast.ptr<float>(), fast.numel()));
            }
          }
  }
}

TEST_CASE("gemm FusedMatMul is batch invariant and checks its packed weights") {
  for (NamedKernel kern : fused_matmul_kernels()) {
    CAPTURE(kern.name);
    // N = 200 and more: small GEMMs cut into column blocks on several threads (sgemm).
    const int64_t K = 384;
    for (auto [M, N] : {std::pair<int64_t, int64_t>{100, 70}, {37, 200}, {128, 384}, {128, 390}})
      for (int threads : {2, 4}) {
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(threads);
        Tensor a = random_f32({M, K}, 7 + N), w = random_f32({K, N}, 8 + N), wp = pack_weights(w);
        Node f = fused_node(N, "gelu", false);
        Tensor big = run(f, {&a, &wp}, kern.fn, threads)[0];
        check_close(big, run(f, {&a, &wp})[0], 2e-5 * std::sqrt((double)K + 1));
        for (int64_t r0 : {(int64_t)0, M / 3, M - 1}) {
          Tensor row = Tensor::empty(DType::F32, {1, K});
          std::memcpy(row.data(), a.ptr<float>() + r0 * K, K * 4);
          Tensor one = run(f, {&row, &wp}, kern.fn, 1)[0];
          CHECK(bit_equal(one.ptr<float>(), big.ptr<float>() + r0 * N, N));
        }
      }
  }
  Tensor a = random_f32({3, 8}, 1), w = random_f32({8, 20}, 2), wp = pack_weights(w);
  Node wrong_n = fused_node(40, "none", false);
  CHECK_THROWS_WITH(infer(wrong_n, {&a, &wp}), doctest::Contains("does not fit"));
  Node bad_act = fused_node(20, "swish", false);
  CHECK_THROWS_WITH(infer(bad_act, {&a, &wp}), doctest::Contains("unknown activation"));
}

TEST_CASE("gemm FusedMatMul with W unpacked (packed 0, device sessions) matches the packed form") {
  uint32_t seed = 700;
  for (NamedKernel kern : fused_matmul_kernels()) {
    for (const char* act : {"none", "relu", "gelu"})
      for (int64_t M : {1, 7})
        for (int64_t K : {1, 17, 300})
          for (int64_t N : {1, 33}) {
            CAPTURE(kern.name);
            CAPTURE(act);
            CAPTURE(M);
            CAPTURE(K);
            CAPTURE(N);
            Tensor a = random_f32({2, M, K}, seed++, -2, 2), w = random_f32({K, N}, seed++, -2, 2);
            Tensor bias = random_f32({N}, seed++), wp = pack_weights(w);
            Node packed = fused_node(N, act, true), plain = fused_node(N, act, true);
            plain.attrs.set("packed", int64_t(0));
            Tensor want_ref = run(packed, {&a, &wp, &bias})[0];
            Tensor got_ref = run(plain, {&a, &w, &bias})[0];
            CHECK(bit_equal(got_ref.ptr<float>(), want_ref.ptr<float>(), want_ref.numel()));
            // The kernels pack W per call: the same sums as with panels made at load.
            Tensor want = run(packed, {&a, &wp, &bias}, kern.fn, 3)[0];
            Tensor got = run(plain, {&a, &w, &bias}, kern.fn, 3)[0];
            CHECK(bit_equal(got.ptr<float>(), want.ptr<float>(), want.numel()));
          }
  }
  Tensor a = random_f32({3, 8}, 1), w = random_f32({8, 20}, 2), wp = pack_weights(w);
  Node plain = fused_node(20, "none", false);
  plain.attrs.set("packed", int64_t(0));
  CHECK_THROWS_WITH(infer(plain, {&a, &wp}), doctest::Contains("is not [K = 8, N = 20]"));
  Node wrong_n = fused_node(21, "none", false);
  wrong_n.attrs.set("packed", int64_t(0));
  CHECK_THROWS_WITH(infer(wrong_n, {&a, &w}), doctest::Contains("is not [K = 8, N = 21]"));
}

TEST_CASE("gemm Attention kernels match the reference: shapes, masks, scale forms") {
  std::vector<NamedKernel> ks = {{"attention_f32", cpu::attention_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"attention_f32_avx2", cpu::attention_f32_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"attention_f32_avx512", cpu::attention_f32_avx512});
#endif
  uint32_t seed = 900;
  struct Shp {
    Shape q, k, v, mask;  // mask empty: none
  };
  std::vector<Shp> shapes = {
      {{2, 3, 7, 8}, {2, 3, 8, 7}, {2, 3, 7, 5}, {2, 1, 1, 7}},     // BERT key mask
      {{1, 4, 33, 16}, {1, 4, 16, 33}, {1, 4, 33, 16}, {1, 1, 33, 33}},  // causal [S, T]
      {{1, 2, 1, 32}, {1, 2, 32, 70}, {1, 2, 70, 32}, {}},          // one query row
      {{3, 5, 4}, {1, 4, 9}, {3, 9, 6}, {9}},                       // broadcast K, 1-D mask
      {{2, 40, 8}, {2, 8, 40}, {2, 40, 8}, {2, 40, 1}},             // mask broadcast over T
  };
  // layout bshd: Q [B, S, H, D], K [B, T, H, D], V [B, T, H, Dv]; B and H broadcast.
  std::vector<Shp> heads = {
      {{2, 7, 3, 8}, {2, 9, 3, 8}, {2, 9, 3, 5}, {2, 1, 1, 9}},
      {{1, 33, 4, 16}, {1, 33, 4, 16}, {1, 33, 4, 16}, {1, 1, 33, 33}},
      {{3, 1, 2, 32}, {1, 70, 2, 32}, {1, 70, 2, 32}, {}},
      {{2, 5, 1, 4}, {2, 6, 3, 4}, {2, 6, 3, 7}, {6}},
  };
  for (NamedKernel kern : ks)
    for (int layout = 0; layout < 2; layout++)
    for (const Shp& sh : layout ? heads : shapes)
      for (const char* op : {"mul", "div"}) {
        CAPTURE(kern.name);
        CAPTURE(layout);
        CAPTURE(shape_str(sh.q));
        CAPTURE(op);
        Tensor q = random_f32(sh.q, seed++, -2, 2), k = random_f32(sh.k, seed++, -2, 2);
        Tensor v = random_f32(sh.v, seed++), m = random_f32(sh.mask, seed++, -3, 0);
        Node n;
        n.op = OpType::Attention;
        n.name = "attn";
        n.inputs = {0, 1, 2};
        if (!sh.mask.empty()) n.inputs.push_back(3);
        n.outputs = {100};
        n.attrs.set("scale", std::string(op) == "mul" ? 0.35 : 2.8);
        n.attrs.set("scale_op", std::string(op));
        if (layout) n.attrs.set("layout", std::string("bshd"));
        std::vector<const Tensor*> in = {&q, &k, &v};
        if (!sh.mask.empty()) in.push_back(&m);
        Tensor ref = run(n, in)[0];
        Tensor fast = run(n, in, kern.fn, 3)[0];
        check_close(fast, ref, 2e-5);
      }
  // Shapes that do not chain, or a mask that would grow the scores, are refused.
  Tensor q = random_f32({2, 4, 8}, 1), k = random_f32({2, 7, 4}, 2), v = random_f32({2, 4, 8}, 3);
  Node n;
  n.op = OpType::Attention;
  n.name = "attn";
  n.inputs = {0, 1, 2};
  n.outputs = {100};
  CHECK_THROWS_WITH(infer(n, {&q, &k, &v}), doctest::Contains("do not chain"));
  Tensor k2 = random_f32({2, 8, 4}, 2), big_mask = random_f32({2, 9, 4}, 4);
  n.inputs.push_back(3);
  CHECK_THROWS_WITH(infer(n, {&q, &k2, &v, &big_mask}), doctest::Contains("does not broadcast"));
}
