// Shared by the op tests: build a node, run one op's infer + kernel on given inputs, and
// catch ember errors by kind.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "runtime/registry.h"

namespace ember::test {

// A float32 tensor of uniform values in [lo, hi) from `seed`.
inline Tensor random_f32(const Shape& s, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

inline Node node(OpType op, int outputs = 1) {
  Node n;
  n.op = op;
  n.name = "n";
  for (int i = 0; i < outputs; i++) n.outputs.push_back(100 + i);
  return n;
}

struct OpRun {
  std::vector<TensorType> types;
  std::vector<Tensor> out;
  const KernelEntry* fast = nullptr;  // the registry's kernel for this node, if any
  const Tensor& operator[](int i) const { return out[i]; }
};

// Validates the node, infers (input values known unless told otherwise), allocates the outputs
// and runs `fn`, the registry's fast kernel when `use_fast` (which must exist), or the
// reference. nullptr inputs are absent optional inputs.
inline OpRun op_run(Node n, const std::vector<const Tensor*>& in, KernelFn fn, bool use_fast,
                    int threads, bool values_known) {
  n.inputs.clear();
  std::vector<TensorType> types;
  for (size_t i = 0; i < in.size(); i++) {
    n.inputs.push_back(in[i] ? (int)i : -1);
    types.push_back(in[i] ? TensorType{in[i]->dtype(), in[i]->shape()} : TensorType{});
  }
  op_validate(n);
  std::vector<const Tensor*> values = in;
  if (!values_known) values.assign(in.size(), nullptr);
  InferCtx ictx{n, types, values};
  OpRun r;
  r.types = op_def(n.op).infer(ictx);
  r.fast = cpu_kernel_find(ictx, Isa::Generic);
  for (const TensorType& t : r.types) r.out.push_back(Tensor::zeros(t.dtype, t.shape));
  std::vector<Tensor*> outs;
  for (Tensor& t : r.out) outs.push_back(&t);
  KernelCtx kctx{n, in, outs, threads};
  if (use_fast) {
    REQUIRE(r.fast != nullptr);
    fn = r.fast->fn;
  }
  (fn ? fn : op_def(n.op).reference)(kctx);
  return r;
}

// The kind of the ember::Error `f` throws; nullopt when it throws none.
inline std::optional<ErrorKind> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  return std::nullopt;
}

// Float tensors: |a - b| <= tol * (1 + |b|) for every element (the first miss fails the check).
inline void check_close(const Tensor& a, const Tensor& b, double tol) {
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); i++) {
    double x = a.ptr<float>()[i], y = b.ptr<float>()[i];
    if (std::fabs(x - y) > tol * (1.0 + std::fabs(y))) {
      FAIL_CHECK("element ", i, ": ", x, " vs ", y);
      return;
    }
  }
}

// The same shape, dtype and bits.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.data(), b.data(), (size_t)a.numel() * dtype_size(a.dtype())) == 0;
}

// The median of timings (the upper one of an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds since t0.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One measurement's timings over interleaved rounds: its best round (what the machine can do)
// and its median.
struct Timings {
  std::vector<double> t;
  double best() const { return *std::min_element(t.begin(), t.end()); }
  double median() const { return test::median(t); }
};

}  // namespace ember::test
