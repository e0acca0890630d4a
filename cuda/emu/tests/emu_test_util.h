// Shared by the emulated kernel tests (cuda/emu/tests): random inputs, the comparisons against
// a reference's outputs (byte for byte, or floats to a tolerance), and run_adapter, which runs a
// CUDA op adapter (cuda/src/ops_*.cpp) on the emulated device (cuda/emu/backend_emu.cpp) beside
// the op's reference kernel: inputs known on the host as plan-time constants, outputs
// pre-filled with 0xff bytes (NaN, -1) so an unwritten element shows, and supports() must
// accept the node (a case the device would refuse tests nothing).
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/src/cuda_ops.h"
#include "doctest/doctest.h"
#include "tests/cpp/op_test_util.h"

namespace ember::cuda {

using SupportsFn = bool (*)(const InferCtx& ctx, const DeviceOptions& options);

// Uniform floats in [-2, 2) for F32; random bytes for every other dtype but Bool (0 or 1).
inline Tensor random_of(DType t, const Shape& s, uint32_t seed) {
  if (t == DType::F32) return test::random_f32(s, seed, -2.0f, 2.0f);
  Tensor x = Tensor::empty(t, s);
  std::mt19937 g(seed);
  auto* p = static_cast<uint8_t*>(x.data());
  for (size_t i = 0; i < x.nbytes(); i++) p[i] = t == DType::Bool ? g() % 2 : (uint8_t)g();
  return x;
}

// An integer tensor (I64 or I32) holding `v`.
inline Tensor ints(DType t, const Shape& s, const std::vector<int64_t>& v) {
  Tensor x = Tensor::empty(t, s);
  REQUIRE((int64_t)v.size() == x.numel());
  for (size_t i = 0; i < v.size(); i++) {
    if (t == DType::I64)
      x.ptr<int64_t>()[i] = v[i];
    else
      x.ptr<int32_t>()[i] = (int32_t)v[i];
  }
  return x;
}

struct AdapterRun {
  std::vector<Tensor> want, got;  // the reference's outputs, the adapter's
};

// The reference and `adapter` on inputs `in` (nullptr: an absent optional input). n.outputs
// names the outputs (default one).
inline AdapterRun run_adapter(Node n, const std::vector<const Tensor*>& in, KernelFn adapter,
                              SupportsFn supports, const DeviceOptions& opt = {}) {
  if (n.outputs.empty()) n.outputs = {100};
  AdapterRun r;
  test::OpRun ref = test::op_run(n, in, nullptr, false, 1, true);
  r.want = ref.out;
  n.inputs.clear();
  for (size_t i = 0; i < in.size(); i++) n.inputs.push_back(in[i] ? (int)i : -1);
  std::vector<TensorType> types;
  for (const Tensor* t : in) types.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  InferCtx ictx{n, types, in};
  REQUIRE(supports(ictx, opt));
  std::vector<Tensor*> outs;
  for (const TensorType& t : ref.types) {
    r.got.push_back(Tensor::empty(t.dtype, t.shape));
    std::memset(r.got.back().data(), 0xff, r.got.back().nbytes());
  }
  for (Tensor& t : r.got) outs.push_back(&t);
  KernelCtx kc{n, in, outs, 1};
  kc.device_options = &opt;
  kc.host_in = in;
  adapter(kc);
  return r;
}

// Whether element i of an F16 / BF16 tensor is a NaN.
inline bool is_nan_16(const Tensor& t, int64_t i) {
  const uint16_t b = static_cast<const uint16_t*>(t.data())[i];
  return t.dtype() == DType::F16 ? std::isnan(f16_to_f32(b)) : std::isnan(bf16_to_f32(b));
}

// The same bytes (movement, exact ops). `any_nan_16`: F16 / BF16 NaNs match any NaN (a device
// conversion gives the canonical NaN where the reference keeps a payload).
inline void check_same(const Tensor& want, const Tensor& got, bool any_nan_16 = false) {
  REQUIRE(want.shape() == got.shape());
  REQUIRE(want.dtype() == got.dtype());
  int64_t bad = 0, first = -1;
  const size_t es = dtype_size(want.dtype());
  const bool f16 = any_nan_16 && (want.dtype() == DType::F16 || want.dtype() == DType::BF16);
  for (int64_t i = 0; i < want.numel(); i++) {
    const bool differ = std::memcmp(static_cast<const char*>(want.data()) + i * es,
                                    static_cast<const char*>(got.data()) + i * es, es) != 0 &&
                        !(f16 && is_nan_16(want, i) && is_nan_16(got, i));
    if (differ && first < 0) first = i;
    bad += differ;
  }
  CAPTURE(first);
  CHECK(bad == 0);
}

// F32: |got - want| <= tol * (1 + |want|), NaN where the reference has NaN, infinities equal.
inline void check_near(const Tensor& want, const Tensor& got, double tol) {
  REQUIRE(want.shape() == got.shape());
  REQUIRE(want.dtype() == DType::F32);
  REQUIRE(got.dtype() == DType::F32);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < want.numel(); i++) {
    const float w = want.ptr<float>()[i], y = got.ptr<float>()[i];
    if (std::isnan(w) || std::isnan(y) || std::isinf(w)) {
      bad += !(std::isnan(w) && std::isnan(y)) && w != y;
      continue;
    }
    const double err = std::fabs((double)y - w);
    worst = std::max(worst, err / (1 + std::fabs(w)));
    bad += !(err <= tol * (1 + std::fabs(w)));
  }
  CAPTURE(worst);
  CHECK(bad == 0);
}

}  // namespace ember::cuda
