// QMatMul (W8A8) cases for the CUDA q8 tests (cuda/tests/test_q8.cpp, which emulates the device
// algorithm on the host, and cuda/emu/tests/test_emu_q8.cpp, which runs q8_gemm.cu on the
// emulated device): random weights in the CPU's packed layout, the node, inputs with the edge
// values the quantizers must handle, and the op's reference output.
#pragma once
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/src/q8_pack.h"
#include "doctest/doctest.h"
#include "ember/op.h"

namespace ember::cuda {

inline std::vector<int8_t> random_wq(int64_t k, int64_t n, std::mt19937& g) {
  std::uniform_int_distribution<int> d(-128, 127);  // saturating values included
  std::vector<int8_t> wq(k * n);
  for (auto& v : wq) v = (int8_t)d(g);
  return wq;
}

inline Tensor cpu_packed(const std::vector<int8_t>& wq, int64_t k, int64_t n) {
  Tensor t = Tensor::empty(DType::I8, {(n + 15) / 16, (k + 1) / 2, 16, 2});
  q8_cpu_pack(wq.data(), k, n, t.ptr<int8_t>());
  return t;
}

inline Node qmatmul_node(int64_t n, const std::string& mode, const std::string& act = "none") {
  Node node;
  node.op = OpType::QMatMul;
  node.name = "qmm";
  node.attrs.set("n", n);
  node.attrs.set("a_mode", mode);
  node.attrs.set("activation", act);
  return node;
}

// An a_mode with its zero point (static mode) and an activation.
struct Q8Case {
  std::string mode;
  int zp;
  bool zp_signed;
  std::string act;
};
// Every a_mode, uint8 and int8 zero points at both ends, relu.
inline std::vector<Q8Case> q8_cases() {
  return {
      {"token", 0, false, "none"},     {"token", 0, false, "relu"},
      {"static", 128, false, "none"},  {"static", 0, false, "relu"},
      {"static", 255, false, "none"},  {"static", -128, true, "none"},
      {"static", 127, true, "none"},   {"static", 3, true, "relu"},
      {"tensor_u8", 0, false, "none"},
  };
}

// One QMatMul's inputs (A [m, k] with an all-zero row and a NaN, Wp, w_scale, bias, and the
// static scale / zero point) and the reference's Y.
struct Q8Run {
  int64_t m, k, n;
  Node node;
  std::vector<float> a, w_scale, bias;
  Tensor wp, y;
  float a_scale = 0.05f;
  int zp;  // static mode's zero point, else 0
  bool zp_signed;
};
inline Q8Run q8_run(const Q8Case& c, int64_t m, int64_t k, int64_t n, std::mt19937& g) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const bool st = c.mode == "static";
  Q8Run r{m, k, n, qmatmul_node(n, c.mode, c.act), {}, {}, {}, {}, {}, 0.05f,
          st ? c.zp : 0, c.zp_signed};
  r.wp = cpu_packed(random_wq(k, n, g), k, n);
  r.a.resize(m * k);
  for (auto& v : r.a) v = nd(g) * 3.0f;
  if (m > 1)
    for (int64_t i = 0; i < k; i++) r.a[k + i] = 0.0f;  // an all-zero row: FLT_MIN
  if (k > 2) r.a[0] = NAN;                              // NaN: to the low bound
  r.w_scale.resize(n);
  r.bias.resize(n);
  for (int64_t j = 0; j < n; j++) r.w_scale[j] = std::fabs(nd(g)) * 0.01f;
  for (int64_t j = 0; j < n; j++) r.bias[j] = nd(g);

  Tensor a = Tensor::empty(DType::F32, {m, k});
  std::copy(r.a.begin(), r.a.end(), a.ptr<float>());
  Tensor ws = Tensor::empty(DType::F32, {n}), bias = Tensor::empty(DType::F32, {n});
  std::copy(r.w_scale.begin(), r.w_scale.end(), ws.ptr<float>());
  std::copy(r.bias.begin(), r.bias.end(), bias.ptr<float>());
  Tensor sc = Tensor::empty(DType::F32, {});
  sc.ptr<float>()[0] = r.a_scale;
  Tensor zp = Tensor::empty(c.zp_signed ? DType::I8 : DType::U8, {});
  if (c.zp_signed) zp.ptr<int8_t>()[0] = (int8_t)c.zp;
  else zp.ptr<uint8_t>()[0] = (uint8_t)c.zp;
  r.y = Tensor::empty(DType::F32, {m, n});
  KernelCtx ctx{r.node, {&a, &r.wp, &ws, &bias, st ? &sc : nullptr, st ? &zp : nullptr}, {&r.y}};
  op_def(OpType::QMatMul).reference(ctx);
  return r;
}

}  // namespace ember::cuda
