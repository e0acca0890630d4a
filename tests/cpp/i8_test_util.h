// Shared by the QMatMul tests (test_gemm_i8.cpp) and the AVX-512 VNNI ones (test_gemm_i8_vnni.cpp):
// random data, packed weights, QMatMul cases and runners, the kernels this CPU runs.
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/gemm_i8.h"
#include "op_test_util.h"
#include "runtime/registry.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

namespace ember::test::i8 {

// test::random_f32 with the wider default range the int8 tests use.
inline Tensor random_f32(const Shape& s, uint32_t seed, float lo = -3.0f, float hi = 3.0f) {
  return test::random_f32(s, seed, lo, hi);
}

// Wq [K, N] over the whole int8 range.
inline std::vector<int8_t> random_w(int64_t K, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-128, 127);
  std::vector<int8_t> w(K * N);
  for (int8_t& v : w) v = (int8_t)u(rng);
  return w;
}

inline Tensor pack(const std::vector<int8_t>& w, int64_t K, int64_t N) {
  Tensor p = Tensor::empty(DType::I8, {(N + 15) / 16, (K + 1) / 2, 16, 2});
  REQUIRE(p.numel() == cpu::qgemm_i8_packed_size(K, N));
  cpu::qgemm_i8_pack_b(w.data(), N, 1, K, N, p.ptr<int8_t>());
  return p;
}

inline Tensor scalar_f32(float v, bool rank1 = false) {
  Tensor t = Tensor::empty(DType::F32, rank1 ? Shape{1} : Shape{});
  t.ptr<float>()[0] = v;
  return t;
}

inline Tensor scalar_zp(DType dt, int v) {
  Tensor t = Tensor::empty(dt, {});
  if (dt == DType::I8) t.ptr<int8_t>()[0] = (int8_t)v;
  else t.ptr<uint8_t>()[0] = (uint8_t)v;
  return t;
}

inline Node qnode(int64_t n, const std::string& act = "none", const std::string& mode = "token") {
  Node f = test::node(OpType::QMatMul);
  f.attrs.set("n", n);
  f.attrs.set("activation", act);
  f.attrs.set("a_mode", mode);
  return f;
}

inline Tensor run(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn = nullptr, int threads = 2) {
  return test::op_run(n, in, fn, false, threads, true).out[0];
}

inline bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Exact (as values: relu may give -0 or 0) for none / relu, within `tol` for the gelu forms.
inline void check_out(const Tensor& got, const Tensor& ref, const std::string& act) {
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

inline std::vector<NamedKernel> qmatmul_kernels() {
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

inline std::vector<NamedMicro> micros() {
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

inline Case make_case(const Shape& a_shape, int64_t N, const std::string& mode, bool bias, DType zp_type,
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
inline std::vector<TensorType> infer_types(const Node& n0, const std::vector<TensorType>& types) {
  Node n = n0;
  n.inputs.clear();
  for (size_t i = 0; i < types.size(); i++)
    n.inputs.push_back(types[i].dtype == DType::Count ? -1 : (int)i);
  op_validate(n);
  InferCtx ic{n, types, std::vector<const Tensor*>(types.size(), nullptr)};
  return op_def(OpType::QMatMul).infer(ic);
}

}  // namespace ember::test::i8
