// The cuBLASLt GEMM path run end to end on the CPU, for the CUDA GEMM tests
// (cuda/tests/test_gemm.cpp; cuda/emu/tests/test_emu_gemm_epilogue.cpp, which fills C with the
// emulated gemm_fill_c): the column-major call emulated, ops_gemm.cpp's run_plan around it,
// and the MatMul / Gemm cases checked against the ops' reference kernels.
#pragma once
#include <cmath>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "cuda/src/gemm_plan.h"
#include "doctest/doctest.h"
#include "ember/op.h"
#include "tests/cpp/op_test_util.h"

namespace ember::cuda {

// What cublasLtMatmul computes with these column-major arguments: element (r, c) of a matrix
// with leading dim ld is at r + c * ld; D = alpha op(A) op(B) + beta C (C is D) + bias[row].
inline void emulate_lt(const LtGemmArgs& g, float alpha, float beta, const float* A,
                       const float* B, const float* C, float* D, const float* bias) {
  int64_t k = g.trans_a ? g.a_rows : g.a_cols;
  for (int64_t bi = 0; bi < g.batch; bi++) {
    const float* a = A + bi * g.stride_a;
    const float* b = B + bi * g.stride_b;
    const float* c = C + bi * g.stride_d;
    float* d = D + bi * g.stride_d;
    for (int64_t i = 0; i < g.d_rows; i++) {
      for (int64_t j = 0; j < g.d_cols; j++) {
        double s = 0;
        for (int64_t l = 0; l < k; l++) {
          double av = g.trans_a ? a[l + i * g.lda] : a[i + l * g.lda];
          double bv = g.trans_b ? b[j + l * g.ldb] : b[l + j * g.ldb];
          s += av * bv;
        }
        double y = alpha * s;
        if (beta != 0) y += beta * (double)c[i + j * g.ldd];
        if (bias) y += bias[i];
        d[i + j * g.ldd] = (float)y;
      }
    }
  }
}

// gemm_fill_c's contract (gemm_epilogue.h): the host version, or the kernel.
using GemmFill = std::function<void(const float* c, float* d, int64_t rows, int64_t cols,
                                    int64_t c_rs, int64_t c_cs, float scale)>;
inline void gemm_fill_c_host(const float* c, float* d, int64_t rows, int64_t cols, int64_t c_rs,
                             int64_t c_cs, float scale) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) d[r * cols + j] = c ? scale * c[r * c_rs + j * c_cs] : 0.0f;
}

// ops_gemm.cpp's run_plan with the emulated cuBLASLt call and `fill` for gemm_fill_c.
inline void run_emulated(const GemmPlan& p, const float* a, const float* b, const float* c,
                         float* d, const GemmFill& fill) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  if (p.k == 0)
    return fill(p.c == GemmC::None ? nullptr : c, d, p.batch * p.m, p.n, p.c_rs, p.c_cs, p.beta);
  if (p.c == GemmC::Broadcast) fill(c, d, p.batch * p.m, p.n, p.c_rs, p.c_cs, 1.0f);
  const float* lt_c = p.c == GemmC::Full ? c : d;
  const float* bias = p.c == GemmC::Bias ? c : nullptr;
  LtGemmArgs g = gemm_lt_args(p);
  emulate_lt(g, g.alpha, g.beta, b, a, lt_c, d, bias);
}

// The op's reference kernel on the same inputs, against the plan run emulated.
inline void check_against_reference(OpType op, const std::vector<Shape>& shapes, Node node,
                                    bool bias_epilogue, const GemmFill& fill) {
  std::mt19937 rng(1234);
  std::vector<Tensor> ins;
  for (const Shape& s : shapes) ins.push_back(test::random_f32(s, rng()));
  node.op = op;
  node.name = "n";
  InferCtx ic{node, {}, {}};
  std::vector<const Tensor*> in;
  for (const Tensor& t : ins) {
    ic.in.push_back({DType::F32, t.shape()});
    ic.values.push_back(nullptr);
    in.push_back(&t);
  }
  Shape out_shape = op_infer(ic)[0].shape;
  // NaN-filled outputs: a path that reads D before writing it shows.
  Tensor want = Tensor::zeros(DType::F32, out_shape), got = Tensor::empty(DType::F32, out_shape);
  for (int64_t i = 0; i < got.numel(); i++) got.ptr<float>()[i] = std::nanf("");
  KernelCtx kc{node, in, {&want}, 1};
  op_def(op).reference(kc);

  std::optional<GemmPlan> p;
  if (op == OpType::MatMul) {
    p = gemm_plan_matmul(shapes[0], shapes[1]);
  } else {
    const Attrs& at = node.attrs;
    p = gemm_plan_gemm(shapes[0], shapes[1], shapes.size() > 2 ? &shapes[2] : nullptr,
                       at.get_int("transA", 0), at.get_int("transB", 0), at.get_float("alpha", 1),
                       at.get_float("beta", 1), bias_epilogue);
  }
  REQUIRE(p.has_value());
  run_emulated(*p, ins[0].ptr<float>(), ins[1].ptr<float>(),
               ins.size() > 2 ? ins[2].ptr<float>() : nullptr, got.ptr<float>(), fill);
  for (int64_t i = 0; i < want.numel(); i++)
    REQUIRE(got.ptr<float>()[i] == doctest::Approx(want.ptr<float>()[i]).epsilon(1e-5));
}

inline Node gemm_node(int ta, int tb, double alpha, double beta) {
  Node n;
  n.attrs.set("transA", int64_t(ta));
  n.attrs.set("transB", int64_t(tb));
  n.attrs.set("alpha", alpha);
  n.attrs.set("beta", beta);
  return n;
}

// MatMul shapes for check_against_reference: 1-D operands, folded and strided batches, K == 0.
inline std::vector<std::pair<Shape, Shape>> matmul_reference_cases() {
  return {
      {{3, 4}, {4, 5}},       {{1, 7}, {7, 9}},          {{2, 3, 5}, {5, 4}},
      {{2, 3, 5}, {1, 5, 4}}, {{2, 3, 5}, {2, 5, 4}},   {{3, 5}, {2, 5, 4}},
      {{5}, {2, 5, 4}},       {{2, 3, 5}, {5}},          {{5}, {5}},
      {{5}, {5, 4}},          {{1, 2, 3, 5}, {2, 5, 4}}, {{3, 0}, {0, 4}},
      {{2, 0, 5}, {5, 4}},    {{7, 769}, {769, 13}},
  };
}

// Gemm cases for check_against_reference: every way C enters (GemmC), transposes, K == 0.
struct GemmCase {
  Shape a, b;
  std::optional<Shape> c;
  int ta, tb;
  double alpha, beta;
  bool bias = true;
};
inline std::vector<GemmCase> gemm_reference_cases() {
  return {
      {{3, 4}, {4, 5}, std::nullopt, 0, 0, 1, 1},
      {{4, 3}, {4, 5}, std::nullopt, 1, 0, 0.5, 1},
      {{3, 4}, {5, 4}, Shape{5}, 0, 1, 1, 1},           // Bias
      {{4, 3}, {5, 4}, Shape{1, 5}, 1, 1, 2, 1},        // Bias, both transposed
      {{3, 4}, {4, 5}, Shape{5}, 0, 0, 1, 0.25},        // row, beta != 1: Broadcast
      {{3, 4}, {4, 5}, Shape{5}, 0, 0, 1, 1, false},    // row without the epilogue
      {{3, 4}, {4, 5}, Shape{3, 5}, 0, 0, -1.5, 0.75},  // Full
      {{3, 4}, {4, 5}, Shape{3, 1}, 0, 0, 1, 2},        // column
      {{3, 4}, {4, 5}, Shape{}, 0, 0, 1, 3},            // scalar
      {{3, 4}, {4, 5}, Shape{3, 5}, 0, 0, 1, 0},        // beta 0
      {{3, 0}, {0, 5}, Shape{3, 1}, 0, 0, 1, 2},        // K == 0: beta * C
      {{0, 3}, {5, 0}, std::nullopt, 1, 1, 1, 1},       // K == 0, no C: zeros
      {{1, 4}, {4, 5}, Shape{5}, 0, 0, 1, 1},           // m == 1: Full
  };
}

// Every MatMul and Gemm case against its reference, C filled by `fill`.
inline void check_gemm_reference_cases(const GemmFill& fill) {
  for (const auto& [a, b] : matmul_reference_cases()) {
    CAPTURE(shape_str(a));
    CAPTURE(shape_str(b));
    check_against_reference(OpType::MatMul, {a, b}, Node{}, true, fill);
  }
  for (const GemmCase& c : gemm_reference_cases()) {
    CAPTURE(shape_str(c.a));
    CAPTURE(shape_str(c.b));
    std::vector<Shape> shapes = {c.a, c.b};
    if (c.c) shapes.push_back(*c.c);
    check_against_reference(OpType::Gemm, shapes, gemm_node(c.ta, c.tb, c.alpha, c.beta), c.bias,
                            fill);
  }
}

}  // namespace ember::cuda
