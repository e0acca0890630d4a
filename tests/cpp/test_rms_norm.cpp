// RMSNormalization (cpp/src/ops/ops_linalg.cpp) and its fast f32 kernels (generic rms_norm_f32
// in kernels/generic/norm_f32.cpp, AVX2 rms_norm_f32_row_avx2 / rms_norm_f32_avx2 in
// kernels/x86/): rows against the double reference on odd lengths, with and without scale,
// a scalar scale, batch invariance (a row's bits do not depend on the rows around it or the
// thread count), values whose squares overflow float, zeros, inf / NaN, shape inference errors.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/dtype.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/kernels_generic.h"
#include "runtime/registry.h"
#include "tests/cpp/op_test_util.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm.h"
#endif

using namespace ember;

namespace {

using RowFn = void (*)(const float* x, const float* scale, float* y, int64_t n, float eps);

struct RowKernel {
  const char* name;
  RowFn row;
  KernelFn driver;
};

// The row kernels this CPU can run: generic always, AVX2 where present.
std::vector<RowKernel> row_kernels() {
  std::vector<RowKernel> v = {{"generic", cpu::rms_norm_f32_row, cpu::rms_norm_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2)
    v.push_back({"avx2", cpu::rms_norm_f32_row_avx2, cpu::rms_norm_f32_avx2});
  else MESSAGE("AVX2 rows skipped: this CPU (or EMBER_CPU_ISA) has no AVX2+FMA");
#elif defined(__aarch64__)
  if (cpu_isa() >= Isa::Neon)
    v.push_back({"neon", cpu::rms_norm_f32_row_neon, cpu::rms_norm_f32_neon});
#endif
  return v;
}

// Distance in units in the last place; NaN == NaN, +0 == -0.
int64_t ulps(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  auto key = [](float f) {
    int32_t i = std::bit_cast<int32_t>(f);
    int64_t mag = i & 0x7fffffff;
    return i < 0 ? -mag : mag;
  };
  int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

Tensor f32(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, s);
  REQUIRE((int64_t)v.size() == t.numel());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

Tensor random_f32(const Shape& s, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

Node rms_node(int64_t axis = -1, double eps = 1e-5) {
  Node n = test::node(OpType::RMSNormalization);
  n.attrs.set("axis", axis);
  n.attrs.set("epsilon", eps);
  return n;
}

bool supports(const Node& node, const std::vector<const Tensor*>& in) {
  Node n = node;
  n.inputs.clear();
  std::vector<TensorType> types;
  for (size_t i = 0; i < in.size(); i++) {
    n.inputs.push_back((int)i);
    types.push_back({in[i]->dtype(), in[i]->shape()});
  }
  return cpu::rms_norm_f32_supports(InferCtx{n, types, in});
}

// Max ulp distance between `got` [n] and the reference output; NaN must match NaN.
int64_t max_ulps(const float* got, const Tensor& ref) {
  int64_t worst = 0;
  for (int64_t i = 0; i < ref.numel(); i++)
    worst = std::max(worst, ulps(got[i], ref.ptr<float>()[i]));
  return worst;
}

}  // namespace

TEST_CASE("rms_norm reference: known values, broadcast scale, shape inference errors") {
  // x = [1, 2, 3, 4]: mean(x^2) = 7.5.
  Tensor x = f32({1, 4}, {1, 2, 3, 4}), sc = f32({4}, {1, 2, 1, 0.5f});
  test::OpRun r = test::op_run(rms_node(-1, 0.0), {&x, &sc}, nullptr, false, 1, true);
  REQUIRE(r.out.size() == 1);
  CHECK(r.types[0].shape == x.shape());
  const float want[] = {1, 4, 3, 2};
  for (int i = 0; i < 4; i++)
    CHECK(r[0].ptr<float>()[i] == doctest::Approx(want[i] / std::sqrt(7.5)).epsilon(1e-7));
  // axis 1 over [2, 3, 4] with scale [4] broadcast within X[1:]: reference only.
  std::mt19937 rng(7);
  Tensor x3 = random_f32({2, 3, 4}, rng, -2, 2), s4 = random_f32({4}, rng, -1, 1);
  Node n1 = rms_node(1);
  CHECK_FALSE(supports(n1, {&x3, &s4}));
  Tensor y3 = test::op_run(n1, {&x3, &s4}, nullptr, false, 1, true)[0];
  for (int64_t b = 0; b < 2; b++) {
    double sq = 0;
    for (int64_t j = 0; j < 12; j++) sq += std::pow((double)x3.ptr<float>()[b * 12 + j], 2);
    double inv = 1 / std::sqrt(sq / 12 + 1e-5);
    for (int64_t j = 0; j < 12; j++)
      CHECK(y3.ptr<float>()[b * 12 + j] ==
            (float)(x3.ptr<float>()[b * 12 + j] * inv * s4.ptr<float>()[j % 4]));
  }
  // Errors name the op.
  auto infer_error = [](const Node& n, const std::vector<const Tensor*>& in) {
    try {
      test::op_run(n, in, nullptr, false, 1, true);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  Node st = rms_node();
  st.attrs.set("stash_type", (int64_t)16);
  CHECK(infer_error(st, {&x, &sc}).find("[RMSNormalization]") != std::string::npos);
  CHECK(infer_error(st, {&x, &sc}).find("stash_type 16 is not supported") != std::string::npos);
  Tensor s3 = random_f32({3}, rng, -1, 1);
  CHECK(infer_error(rms_node(), {&x, &s3}).find("does not broadcast") != std::string::npos);
  Tensor s16 = Tensor::zeros(DType::F16, {4});
  CHECK(infer_error(rms_node(), {&x, &s16}).find("scale is float16, X is float32") !=
        std::string::npos);
  Tensor xi = Tensor::zeros(DType::I32, {1, 4}), si = Tensor::zeros(DType::I32, {4});
  CHECK(infer_error(rms_node(), {&xi, &si}).find("unsupported dtype") != std::string::npos);
  CHECK(infer_error(rms_node(2), {&x, &sc}).find("out of range") != std::string::npos);
}

TEST_CASE("rms_norm_f32 supports: contiguous X[axis:], scale exactly X[axis:] or one element") {
  std::mt19937 rng(8);
  Tensor x = random_f32({3, 4, 5}, rng, -1, 1);
  Tensor s45 = random_f32({4, 5}, rng, -1, 1), s145 = random_f32({1, 4, 5}, rng, -1, 1);
  Tensor s5 = random_f32({5}, rng, -1, 1), s1 = random_f32({1}, rng, -1, 1);
  Tensor s0 = random_f32({}, rng, -1, 1), s345 = random_f32({3, 4, 5}, rng, -1, 1);
  CHECK(supports(rms_node(1), {&x, &s45}));
  CHECK(supports(rms_node(-2), {&x, &s145}));
  CHECK(supports(rms_node(-1), {&x, &s5}));
  CHECK(supports(rms_node(1), {&x, &s1}));
  CHECK(supports(rms_node(0), {&x, &s0}));
  CHECK(supports(rms_node(0), {&x, &s345}));
  CHECK_FALSE(supports(rms_node(1), {&x, &s5}));     // broadcast within X[1:]
  CHECK_FALSE(supports(rms_node(-1), {&x, &s345}));  // scale varies over the rows
  Node st = rms_node();
  st.attrs.set("stash_type", (int64_t)16);
  CHECK_FALSE(supports(st, {&x, &s5}));
}

TEST_CASE("rms_norm rows (generic, avx2) match the reference on odd lengths") {
  std::mt19937 rng(20240611);
  constexpr int64_t kRows = 3;
  for (const RowKernel& k : row_kernels()) {
    CAPTURE(std::string(k.name));
    int64_t worst = 0;
    for (int64_t n : {1, 7, 33, 384, 769, 5125}) {
      for (float w : {1.0f, 100.0f}) {
        CAPTURE(n);
        CAPTURE(w);
        Tensor x = random_f32({kRows, n}, rng, -w, w), sc = random_f32({n}, rng, -2, 2);
        Tensor ones = Tensor::empty(DType::F32, {n});
        for (int64_t j = 0; j < n; j++) ones.ptr<float>()[j] = 1.0f;
        Tensor ref = test::op_run(rms_node(), {&x, &sc}, nullptr, false, 1, true)[0];
        Tensor ref1 = test::op_run(rms_node(), {&x, &ones}, nullptr, false, 1, true)[0];
        std::vector<float> y(kRows * n, -7.0f), y1(kRows * n, -7.0f);
        for (int64_t r = 0; r < kRows; r++) {
          k.row(x.ptr<float>() + r * n, sc.ptr<float>(), y.data() + r * n, n, 1e-5f);
          k.row(x.ptr<float>() + r * n, nullptr, y1.data() + r * n, n, 1e-5f);  // ones
        }
        worst = std::max({worst, max_ulps(y.data(), ref), max_ulps(y1.data(), ref1)});
        // In place (x == y) gives the same bits.
        std::vector<float> z(x.ptr<float>(), x.ptr<float>() + n);
        k.row(z.data(), sc.ptr<float>(), z.data(), n, 1e-5f);
        CHECK(std::memcmp(z.data(), y.data(), n * 4) == 0);
      }
    }
    MESSAGE(std::string(k.name), " rms_norm row: max ", worst, " ulp");
    CHECK(worst <= 3);
  }
}

TEST_CASE("rms_norm drivers: batch invariant, threads 1 vs 2 bit-identical, scalar scale") {
  std::mt19937 rng(99);
  for (const RowKernel& k : row_kernels()) {
    CAPTURE(std::string(k.name));
    for (int64_t n : {7, 384, 769}) {
      CAPTURE(n);
      constexpr int64_t kRows = 67;
      Tensor x = random_f32({kRows, n}, rng, -3, 3), sc = random_f32({n}, rng, -2, 2);
      test::OpRun one = test::op_run(rms_node(), {&x, &sc}, k.driver, false, 1, true);
      test::OpRun two = test::op_run(rms_node(), {&x, &sc}, k.driver, false, 2, true);
      CHECK(std::memcmp(one[0].data(), two[0].data(), x.numel() * 4) == 0);
      // Each row alone gives the bits it had among 67 rows.
      for (int64_t r : {int64_t(0), int64_t(33), kRows - 1}) {
        const float* row = x.ptr<float>() + r * n;
        Tensor xr = f32({1, n}, std::vector<float>(row, row + n));
        Tensor yr = test::op_run(rms_node(), {&xr, &sc}, k.driver, false, 2, true)[0];
        CHECK(std::memcmp(yr.data(), one[0].ptr<float>() + r * n, n * 4) == 0);
      }
      Tensor ref = test::op_run(rms_node(), {&x, &sc}, nullptr, false, 1, true)[0];
      CHECK(max_ulps(one[0].ptr<float>(), ref) <= 3);
      // A one-element scale (fuse_rms_norm's ones, or any scalar) broadcasts over the row.
      for (float s : {1.0f, -2.5f}) {
        Tensor s1 = f32({1}, {s});
        Tensor got = test::op_run(rms_node(), {&x, &s1}, k.driver, false, 2, true)[0];
        Tensor want = test::op_run(rms_node(), {&x, &s1}, nullptr, false, 1, true)[0];
        CHECK(max_ulps(got.ptr<float>(), want) <= 3);
      }
    }
    // axis 1 over [2, 3, 129]: rows of 387.
    Tensor x3 = random_f32({2, 3, 129}, rng, -3, 3), s3 = random_f32({3, 129}, rng, -2, 2);
    Tensor got = test::op_run(rms_node(1), {&x3, &s3}, k.driver, false, 2, true)[0];
    Tensor want = test::op_run(rms_node(1), {&x3, &s3}, nullptr, false, 1, true)[0];
    CHECK(max_ulps(got.ptr<float>(), want) <= 3);
    // Empty tensors do nothing.
    for (const Shape& s : {Shape{0, 7}, Shape{7, 0}}) {
      Tensor xe = Tensor::empty(DType::F32, s), se = Tensor::empty(DType::F32, {s[1]});
      CHECK(test::op_run(rms_node(), {&xe, &se}, k.driver, false, 2, true)[0].numel() == 0);
    }
  }
  // The registry picks a fast kernel for a plain [rows, D] node.
  Tensor x = random_f32({4, 33}, rng, -1, 1), sc = random_f32({33}, rng, -1, 1);
  test::OpRun r = test::op_run(rms_node(), {&x, &sc}, nullptr, true, 1, true);
  REQUIRE(r.fast != nullptr);
  CHECK(std::string(r.fast->name) == "rms_norm_f32");
}

TEST_CASE("rms_norm extreme rows: squares past FLT_MAX, zeros, tiny values, inf and NaN") {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
  constexpr float kMax = std::numeric_limits<float>::max();
  // Each row of 37 (a vector tail) repeats its pattern; epsilon per row.
  struct Row {
    const char* what;
    std::vector<float> pattern;
    double eps;
  };
  const Row rows[] = {
      {"1e20 (x^2 overflows float)", {1e20f, -3e20f, 2e19f, 5e20f}, 1e-5},
      {"1e30", {1e30f, -2e30f, 7e29f}, 1e-6},
      {"near FLT_MAX (1/rms below FLT_MIN)", {kMax, -kMax / 3, kMax / 2}, 1e-5},
      {"zeros", {0.0f, -0.0f}, 1e-5},
      {"zeros, eps 0 (0 * inf = NaN)", {0.0f}, 0.0},
      {"tiny, eps 0 (1/rms past FLT_MAX)", {1e-41f, -3e-42f, 2e-40f}, 0.0},
      {"small with eps", {1e-3f, -2e-3f}, 1e-5},
      {"inf", {1.0f, kInf, -2.0f}, 1e-5},
      {"NaN", {1.0f, kNan}, 1e-5},
  };
  constexpr int64_t n = 37;
  std::mt19937 rng(5);
  Tensor sc = random_f32({n}, rng, 0.5f, 2.0f);
  for (const RowKernel& k : row_kernels()) {
    CAPTURE(std::string(k.name));
    for (const Row& row : rows) {
      CAPTURE(std::string(row.what));
      std::vector<float> v(n);
      for (int64_t j = 0; j < n; j++) v[j] = row.pattern[j % row.pattern.size()];
      Tensor x = f32({1, n}, v);
      Tensor ref = test::op_run(rms_node(-1, row.eps), {&x, &sc}, nullptr, false, 1, true)[0];
      std::vector<float> y(n);
      k.row(v.data(), sc.ptr<float>(), y.data(), n, (float)row.eps);
      CHECK(max_ulps(y.data(), ref) <= 3);
      Tensor yd = test::op_run(rms_node(-1, row.eps), {&x, &sc}, k.driver, false, 1, true)[0];
      CHECK(std::memcmp(yd.data(), y.data(), n * 4) == 0);
    }
  }
  // The values themselves: a 1e20 row normalises to O(1), not to the 0 of a float x^2.
  std::vector<float> v(n, 1e20f);
  Tensor x = f32({1, n}, v), ones = f32({1}, {1.0f});
  Tensor y = test::op_run(rms_node(), {&x, &ones}, nullptr, false, 1, true)[0];
  CHECK(y.ptr<float>()[0] == doctest::Approx(1.0));
  Tensor z = f32({1, 2}, {0.0f, 0.0f}), s2 = f32({2}, {1, 1});
  Tensor yz = test::op_run(rms_node(), {&z, &s2}, nullptr, false, 1, true)[0];
  CHECK(yz.ptr<float>()[0] == 0.0f);
}

TEST_CASE("rms_norm reference in float16 and bfloat16 rounds the double result once") {
  // onnx.reference sums bfloat16 squares in bfloat16 (8% off at D = 769): not an oracle here.
  std::mt19937 rng(11);
  constexpr int64_t n = 769;
  Tensor x = random_f32({3, n}, rng, -4, 4), sc = random_f32({n}, rng, -2, 2);
  for (DType t : {DType::F16, DType::BF16}) {
    CAPTURE(std::string(dtype_name(t)));
    auto to_half = [t](float f) { return t == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f); };
    auto to_f32 = [t](uint16_t h) { return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h); };
    Tensor xh = Tensor::empty(t, x.shape()), sh = Tensor::empty(t, sc.shape());
    Tensor xf = Tensor::empty(DType::F32, x.shape()), sf = Tensor::empty(DType::F32, sc.shape());
    for (int64_t i = 0; i < x.numel(); i++) {
      uint16_t h = to_half(x.ptr<float>()[i]);
      static_cast<uint16_t*>(xh.data())[i] = h;
      xf.ptr<float>()[i] = to_f32(h);
    }
    for (int64_t i = 0; i < n; i++) {
      uint16_t h = to_half(sc.ptr<float>()[i]);
      static_cast<uint16_t*>(sh.data())[i] = h;
      sf.ptr<float>()[i] = to_f32(h);
    }
    test::OpRun r = test::op_run(rms_node(), {&xh, &sh}, nullptr, false, 1, true);
    REQUIRE(r[0].dtype() == t);
    Tensor want = test::op_run(rms_node(), {&xf, &sf}, nullptr, false, 1, true)[0];
    int worst = 0;
    for (int64_t i = 0; i < x.numel(); i++) {
      int got = static_cast<const uint16_t*>(r[0].data())[i];
      int exp = to_half(want.ptr<float>()[i]);  // f32 then half: at most one half-ulp apart
      if ((got ^ exp) & 0x8000) worst = std::max(worst, (got & 0x7fff) + (exp & 0x7fff));
      else worst = std::max(worst, std::abs(got - exp));
    }
    CHECK(worst <= 1);
  }
}
