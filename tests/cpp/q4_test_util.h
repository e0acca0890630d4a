// Shared by the Q4MatMul tests (test_gemm_q4.cpp) and benchmarks (bench_gemm_q4.cpp): the
// kernels this CPU runs, packed test weights, runners and bitwise comparisons.
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "kernels/generic/gemm_q4.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#include "op_test_util.h"
#include "runtime/registry.h"

namespace ember::test::q4 {

struct NamedQ4 {
  const char* name;
  KernelFn fn;
};

// The Q4MatMul kernels this CPU can run.
inline std::vector<NamedQ4> q4_kernels() {
  std::vector<NamedQ4> ks = {{"q4matmul", cpu::q4matmul}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"q4matmul_avx2", cpu::q4matmul_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"q4matmul_avx512", cpu::q4matmul_avx512});
#endif
  return ks;
}

// Packed weights (codes, scales, offsets) of N x K.
struct Q4W {
  int64_t N = 0, K = 0, group = 0;
  Tensor codes, scales, offsets;
};

inline Q4W q4_alloc(int64_t N, int64_t K, int64_t group) {
  Q4W w{N, K, group};
  w.codes = Tensor::zeros(DType::U8, {N, cpu::q4_blocks(K), 16});
  w.scales = Tensor::zeros(DType::F32, {N, cpu::q4_groups(K, group)});
  w.offsets = Tensor::zeros(DType::F32, {N, cpu::q4_groups(K, group)});
  return w;
}

inline Q4W q4_from_float(const Tensor& w, int64_t group, bool zp) {
  Q4W p = q4_alloc(w.dim(0), w.dim(1), group);
  cpu::q4_quantize(w.ptr<float>(), p.N, p.K, group, zp, p.codes.ptr<uint8_t>(),
                   p.scales.ptr<float>(), p.offsets.ptr<float>());
  return p;
}

// W [N, K] as the kernels see it: code * scale + offset (one rounding: fma).
inline std::vector<float> q4_weights(const Q4W& p) {
  const int64_t nb = cpu::q4_blocks(p.K), ng = cpu::q4_groups(p.K, p.group);
  std::vector<float> w(p.N * p.K);
  for (int64_t n = 0; n < p.N; n++)
    for (int64_t k = 0; k < p.K; k++) {
      const uint8_t* blk = p.codes.ptr<uint8_t>() + (n * nb + k / 32) * 16;
      int j = (int)(k % 32), c = j < 16 ? blk[j] & 15 : blk[j - 16] >> 4;
      int64_t g = n * ng + k / p.group;
      w[n * p.K + k] = std::fma((float)c, p.scales.ptr<float>()[g], p.offsets.ptr<float>()[g]);
    }
  return w;
}

// p with its scales and offsets rounded to f16 (a few special values put in: subnormal, -0,
// the largest half), twice: those values as f32, and as f16. The codes are shared.
struct Q4Pair {
  Q4W f32, f16;
};
inline Q4Pair q4_f16_pair(const Q4W& p) {
  Q4Pair r{p, p};
  r.f32.scales = Tensor::empty(DType::F32, p.scales.shape());
  r.f32.offsets = Tensor::empty(DType::F32, p.offsets.shape());
  r.f16.scales = Tensor::empty(DType::F16, p.scales.shape());
  r.f16.offsets = Tensor::empty(DType::F16, p.offsets.shape());
  const int64_t n = p.scales.numel();
  for (int which = 0; which < 2; which++) {
    const float* src = (which ? p.offsets : p.scales).ptr<float>();
    float* f = (which ? r.f32.offsets : r.f32.scales).ptr<float>();
    uint16_t* h = (which ? r.f16.offsets : r.f16.scales).ptr<uint16_t>();
    for (int64_t i = 0; i < n; i++) {
      float v = src[i];
      if (i % 13 == 5) v = std::ldexp(which ? -3.0f : 5.0f, -22);  // f16 subnormals
      if (i % 29 == 7) v = which ? -0.0f : 65504.0f;
      h[i] = f32_to_f16(v);
      f[i] = f16_to_f32(h[i]);
    }
  }
  return r;
}

inline Node q4_node(const Q4W& p, const std::string& act = "none") {
  Node n = test::node(OpType::Q4MatMul);
  n.attrs.set("n", p.N);
  n.attrs.set("k", p.K);
  n.attrs.set("group", p.group);
  if (act != "none") n.attrs.set("activation", act);
  return n;
}

// Runs Q4MatMul with `fn` (the reference when null).
inline Tensor q4_run(const Q4W& p, const Tensor& a, const Tensor* bias,
                     const std::string& act, KernelFn fn, int threads = 2) {
  return op_run(q4_node(p, act), {&a, &p.codes, &p.scales, &p.offsets, bias}, fn, false, threads,
                true)[0];
}

// Q4MatMul with f32_rows (u8 [M], one flag per row).
inline Tensor q4_run_rows(const Q4W& p, const Tensor& a, const Tensor* bias,
                          const std::string& act, KernelFn fn, const Tensor& f32_rows,
                          int threads = 2) {
  return op_run(q4_node(p, act), {&a, &p.codes, &p.scales, &p.offsets, bias, &f32_rows}, fn,
                false, threads, true)[0];
}

// every 0: all f32; else row m is f32 when m % every != 0.
inline Tensor row_flags(int64_t M, int every) {
  Tensor t = Tensor::empty(DType::U8, {M});
  for (int64_t m = 0; m < M; m++) t.ptr<uint8_t>()[m] = every == 0 || m % every != 0;
  return t;
}

inline bool bit_equal(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, n * 4) == 0;
}

// Index of the first element whose bits differ (NaNs equal), -1 when none.
inline int64_t first_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    float x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (std::memcmp(&x, &y, 4) != 0 && !(std::isnan(x) && std::isnan(y))) return i;
  }
  return -1;
}

inline void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (!(std::fabs(x - y) <= tol * (1.0 + std::fabs(y)))) {
      FAIL_CHECK("element ", i, ": ", x, " vs ", y);
      return;
    }
  }
}

}  // namespace ember::test::q4
