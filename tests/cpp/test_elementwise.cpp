// Unary-ish elementwise ops (cpp/src/ops/ops_unary.cpp) and the fast f32 kernels
// (kernels/generic/elementwise_f32.cpp): every fast kernel against its OpDef reference on odd
// sizes and random data (the references evaluate transcendental functions in double, so the
// ulp bounds are accuracy bounds), exp-based kernels over the whole float range, binary
// broadcasting plans, Where/Clip broadcasting, Cast against a numpy-made table, error paths.
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"
#include "runtime/registry.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr float kNanF = std::numeric_limits<float>::quiet_NaN();
const int64_t kSizes[] = {1, 7, 769, 5125, 40000};  // 40000: several chunks on the pool

Tensor f32_tensor(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, s);
  REQUIRE((int64_t)v.size() == t.numel());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

Tensor random_f32(const Shape& s, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

Tensor random_bool(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(DType::Bool, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<bool>()[i] = rng() & 1;
  return t;
}

// Any double into element i of t (exact when representable).
void put(Tensor& t, int64_t i, double v) {
  dispatch_dtype(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) t.ptr<bool>()[i] = v != 0;
    else if constexpr (std::is_same_v<T, f16_t>) t.ptr<f16_t>()[i].bits = f32_to_f16((float)v);
    else if constexpr (std::is_same_v<T, bf16_t>) t.ptr<bf16_t>()[i].bits = f32_to_bf16((float)v);
    else t.ptr<T>()[i] = (T)v;
  });
}

Tensor make(DType dt, const Shape& s, const std::vector<double>& v) {
  Tensor t = Tensor::empty(dt, s);
  REQUIRE((int64_t)v.size() == t.numel());
  for (size_t i = 0; i < v.size(); i++) put(t, (int64_t)i, v[i]);
  return t;
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.numel(); i++) v.push_back(tensor_get_f64(t, i));
  return v;
}

using Run = test::OpRun;
using test::error_of;
using test::node;

// Runs the reference, or with `use_fast` the registry's kernel (which must exist).
Run run(Node n, const std::vector<const Tensor*>& in, bool use_fast = false, int threads = 4,
        bool values_known = true) {
  return test::op_run(std::move(n), in, nullptr, use_fast, threads, values_known);
}

// Distance in units in the last place; NaN == NaN, +0 == -0.
int64_t ulps(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  auto key = [](float f) {
    int32_t i = std::bit_cast<int32_t>(f);
    int64_t mag = i & 0x7fffffff;
    return i < 0 ? -mag : mag;
  };
  return std::llabs(key(a) - key(b));
}

// Max ulp distance between fast and reference outputs, and where it happens.
struct UlpReport {
  int64_t ulps = 0;
  std::string where;
};

UlpReport max_ulps(const Tensor& x, const Tensor& fast, const Tensor& ref) {
  UlpReport r;
  for (int64_t i = 0; i < ref.numel(); i++) {
    float f = fast.ptr<float>()[i], e = ref.ptr<float>()[i];
    int64_t d = ulps(f, e);
    if (d <= r.ulps) continue;
    r.ulps = d;
    char buf[128];
    std::snprintf(buf, sizeof buf, "x = %.9g: fast %.9g, reference %.9g", x.ptr<float>()[i], f, e);
    r.where = buf;
  }
  return r;
}

// Floats from every binade, both signs, plus the specials and the exp thresholds.
Tensor wide_range_f32(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v = {0.0f, -0.0f, kInfF, -kInfF, kNanF, 1e-45f, -1e-45f, 1e-40f, -1e-40f,
                          1.17549435e-38f, std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(), 88.7228394f, 88.7228317f,
                          88.72284f, -87.3365479f, -103.278931f, -103.972076f, -104.0f, 89.0f,
                          0.625f, -0.625f, 0.62499994f, 9.0f, -9.0f, 20.0f, -20.0f};
  while (v.size() < 200000) {
    float f = std::bit_cast<float>((uint32_t)rng());
    if (!std::isnan(f)) v.push_back(f);
  }
  std::uniform_real_distribution<float> u(-120.f, 120.f);  // dense where the functions bend
  for (int i = 0; i < 100000; i++) v.push_back(u(rng));
  return f32_tensor({(int64_t)v.size()}, v);
}

struct UnaryCase {
  OpType op;
  const char* approximate;  // Gelu only
  int64_t max_ulps;
};

// Fast vs reference ulp bounds: exp-based kernels are approximations (an exhaustive run over
// all 2^32 floats on x86-64 found exp 1, tanh 1, sigmoid 2, both Gelus 2 ulp; one ulp of slack
// for other compilers and FMA contraction), the others compute what the reference computes.
const UnaryCase kUnaryCases[] = {
    {OpType::Exp, nullptr, 2},        {OpType::Tanh, nullptr, 2},
    {OpType::Sigmoid, nullptr, 3},    {OpType::Gelu, "tanh", 3},
    {OpType::Gelu, "none", 3},        {OpType::Erf, nullptr, 0},
    {OpType::Relu, nullptr, 0},       {OpType::Sqrt, nullptr, 0},
    {OpType::Neg, nullptr, 0},        {OpType::Abs, nullptr, 0},
    {OpType::Reciprocal, nullptr, 0},
};

Node unary_node(const UnaryCase& c) {
  Node n = node(c.op);
  if (c.approximate) n.attrs.set("approximate", std::string(c.approximate));
  return n;
}

}  // namespace

TEST_CASE("elementwise: fast unary kernels match the references (odd sizes, random data)") {
  uint32_t seed = 1;
  for (const UnaryCase& c : kUnaryCases) {
    for (int64_t n : kSizes) {
      Node nd = unary_node(c);
      CAPTURE(std::string(op_name(c.op)));
      CAPTURE(n);
      float lo = c.op == OpType::Exp ? -90.f : -12.f, hi = c.op == OpType::Exp ? 90.f : 12.f;
      Tensor x = random_f32({n}, seed++, lo, hi);
      Run ref = run(nd, {&x});
      for (int threads : {1, 4}) {
        Run fast = run(nd, {&x}, true, threads);
        UlpReport r = max_ulps(x, fast.out[0], ref.out[0]);
        INFO(r.where);
        CHECK(r.ulps <= c.max_ulps);
      }
    }
  }
}

TEST_CASE("elementwise: fast unary kernels over the whole float range") {
  Tensor x = wide_range_f32(7);
  for (const UnaryCase& c : kUnaryCases) {
    Node nd = unary_node(c);
    CAPTURE(std::string(op_name(c.op)));
    CAPTURE(std::string(c.approximate ? c.approximate : ""));
    Run ref = run(nd, {&x});
    Run fast = run(nd, {&x}, true);
    UlpReport r = max_ulps(x, fast.out[0], ref.out[0]);
    INFO(r.where);
    CHECK(r.ulps <= c.max_ulps);
  }
  // exp_f32_array in place, as other kernels use it.
  Tensor y = x.clone();
  cpu::exp_f32_array(y.ptr<float>(), y.ptr<float>(), y.numel());
  Run ref = run(node(OpType::Exp), {&x});
  CHECK(max_ulps(x, y, ref.out[0]).ulps <= 2);
}

TEST_CASE("elementwise: exp and friends on special values") {
  Tensor x = f32_tensor({8}, {0.f, -0.f, kInfF, -kInfF, kNanF, 1e-45f, -200.f, 200.f});
  Run e = run(node(OpType::Exp), {&x}, true);
  std::vector<double> ev = values(e.out[0]);
  CHECK(ev[0] == 1.0);
  CHECK(ev[1] == 1.0);
  CHECK(ev[2] == kInf);
  CHECK(ev[3] == 0.0);
  CHECK(std::isnan(ev[4]));
  CHECK(ev[5] == 1.0);
  CHECK(ev[6] == 0.0);
  CHECK(ev[7] == kInf);
  Run t = run(node(OpType::Tanh), {&x}, true);
  std::vector<double> tv = values(t.out[0]);
  CHECK(tv[2] == 1.0);
  CHECK(tv[3] == -1.0);
  CHECK(std::isnan(tv[4]));
  CHECK(tv[5] == (double)1e-45f);
  CHECK(std::signbit(tv[1]));
  Run s = run(node(OpType::Sigmoid), {&x}, true);
  std::vector<double> sv = values(s.out[0]);
  CHECK(sv[0] == 0.5);
  CHECK(sv[2] == 1.0);
  CHECK(sv[3] == 0.0);
  CHECK(std::isnan(sv[4]));
}

TEST_CASE("elementwise: unary references on other dtypes") {
  // Integer Neg / Abs wrap like numpy; Relu keeps NaN.
  Tensor i8 = make(DType::I8, {5}, {-128, -3, 0, 5, 127});
  CHECK(values(run(node(OpType::Neg), {&i8}).out[0]) == std::vector<double>{-128, 3, 0, -5, -127});
  CHECK(values(run(node(OpType::Abs), {&i8}).out[0]) == std::vector<double>{-128, 3, 0, 5, 127});
  CHECK(values(run(node(OpType::Relu), {&i8}).out[0]) == std::vector<double>{0, 0, 0, 5, 127});
  Tensor i64 = make(DType::I64, {2}, {-0x1p63, -7});
  CHECK(values(run(node(OpType::Neg), {&i64}).out[0]) == std::vector<double>{-0x1p63, 7});
  Tensor u8 = make(DType::U8, {2}, {0, 255});
  CHECK(values(run(node(OpType::Abs), {&u8}).out[0]) == std::vector<double>{0, 255});
  Tensor b = make(DType::Bool, {3}, {1, 0, 1});
  CHECK(values(run(node(OpType::Not), {&b}).out[0]) == std::vector<double>{0, 1, 0});
  Tensor nan = f32_tensor({2}, {kNanF, -1.f});
  CHECK(std::isnan(values(run(node(OpType::Relu), {&nan}).out[0])[0]));
  // f16 / bf16 / f64 compute and round once.
  std::vector<double> xs = {-2.5, -0.75, 0.1, 1.5, 3.0};
  for (DType dt : {DType::F16, DType::BF16, DType::F64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Tensor x = make(dt, {5}, xs);
    std::vector<double> xv = values(x);
    struct { OpType op; double (*f)(double); } fns[] = {
        {OpType::Exp, [](double v) { return std::exp(v); }},
        {OpType::Sin, [](double v) { return std::sin(v); }},
        {OpType::Cos, [](double v) { return std::cos(v); }},
        {OpType::Tanh, [](double v) { return std::tanh(v); }},
        {OpType::Erf, [](double v) { return std::erf(v); }},
        {OpType::Softplus, [](double v) { return std::log1p(std::exp(v)); }},
        {OpType::Sigmoid, [](double v) { return 1 / (1 + std::exp(-v)); }},
        {OpType::Gelu, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }},
        {OpType::Abs, [](double v) { return std::fabs(v); }},
        {OpType::Reciprocal, [](double v) { return 1 / v; }},
    };
    for (auto& f : fns) {
      CAPTURE(std::string(op_name(f.op)));
      Run r = run(node(f.op), {&x});
      CHECK(r.out[0].dtype() == dt);
      // Within one rounding of the type (the references use other, equivalent formulas).
      double tol = dt == DType::F16 ? 1e-3 : dt == DType::BF16 ? 8e-3 : 1e-14;
      std::vector<double> got = values(r.out[0]);
      for (int i = 0; i < 5; i++) {
        double expect = f.f(xv[i]);
        CHECK(std::fabs(got[i] - expect) <= tol * std::fabs(expect));
      }
    }
  }
  // Log / Sqrt of negatives: NaN; Softplus of big x: x.
  Tensor neg = f32_tensor({3}, {-1.f, 0.f, 100.f});
  std::vector<double> lv = values(run(node(OpType::Log), {&neg}).out[0]);
  CHECK(std::isnan(lv[0]));
  CHECK(lv[1] == -kInf);
  CHECK(std::isnan(values(run(node(OpType::Sqrt), {&neg}).out[0])[0]));
  CHECK(values(run(node(OpType::Softplus), {&neg}).out[0])[2] == 100.0);
}

TEST_CASE("elementwise: unary dtype and attribute errors") {
  Tensor i32 = make(DType::I32, {2}, {1, 2});
  Tensor f = f32_tensor({2}, {1.f, 2.f});
  for (OpType op : {OpType::Sqrt, OpType::Exp, OpType::Sigmoid, OpType::Not, OpType::Gelu})
    CHECK(error_of([&] { run(node(op), {&i32}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(node(OpType::Not), {&f}); }) == ErrorKind::Model);
  Node g = node(OpType::Gelu);
  g.attrs.set("approximate", std::string("fast"));
  CHECK(error_of([&] { run(g, {&f}); }) == ErrorKind::Model);
  Node bad = node(OpType::Relu);
  bad.attrs.set("alpha", 0.5);
  CHECK(error_of([&] { run(bad, {&f}); }) == ErrorKind::Model);
}

TEST_CASE("elementwise: Identity and Dropout (inference)") {
  Tensor i64 = make(DType::I64, {2, 2}, {1, -2, 3, -4});
  CHECK(values(run(node(OpType::Identity), {&i64}).out[0]) == values(i64));
  Tensor x = random_f32({3, 7}, 11, -3.f, 3.f);
  Tensor ratio = f32_tensor({}, {0.3f});
  Tensor off = make(DType::Bool, {}, {0});
  Tensor on = make(DType::Bool, {}, {1});
  Run r = run(node(OpType::Dropout, 2), {&x, &ratio, &off});
  REQUIRE(r.out.size() == 2);
  CHECK(values(r.out[0]) == values(x));
  CHECK(r.out[1].dtype() == DType::Bool);
  CHECK(values(r.out[1]) == std::vector<double>(21, 1.0));
  Run one_out = run(node(OpType::Dropout, 1), {&x});
  CHECK(one_out.out.size() == 1);
  CHECK(values(one_out.out[0]) == values(x));
  Node seeded = node(OpType::Dropout);
  seeded.attrs.set("seed", int64_t{5});
  CHECK(values(run(seeded, {&x, &ratio}).out[0]) == values(x));
  // training_mode true: a ModelError when known at plan time, an InputError when fed.
  CHECK(error_of([&] { run(node(OpType::Dropout), {&x, &ratio, &on}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(node(OpType::Dropout), {&x, &ratio, &on}, false, 1, false); }) ==
        ErrorKind::Input);
  CHECK(error_of([&] { run(node(OpType::Dropout), {&i64}); }) == ErrorKind::Model);
}

// ---- binary fast paths ----------------------------------------------------------------------

TEST_CASE("elementwise: fast Add/Sub/Mul/Div match the reference on every fast layout") {
  struct Layout { Shape a, b; };
  std::vector<Layout> layouts;
  for (int64_t n : kSizes) {
    layouts.push_back({{n}, {n}});          // same shape
    layouts.push_back({{n}, {1}});          // scalar b
    layouts.push_back({{}, {n}});           // scalar a
    layouts.push_back({{3, n}, {n}});       // row b (bias add)
    layouts.push_back({{n}, {5, n}});       // row a
    layouts.push_back({{2, 3, n}, {1, 1, n}});
  }
  layouts.push_back({{1, 4, 5}, {4, 5}});   // same layout, different ranks
  layouts.push_back({{4, 7, 5}, {7, 5}});
  layouts.push_back({{2, 0, 3}, {3}});      // empty
  uint32_t seed = 100;
  for (OpType op : {OpType::Add, OpType::Sub, OpType::Mul, OpType::Div}) {
    for (const Layout& l : layouts) {
      CAPTURE(std::string(op_name(op)));
      CAPTURE(shape_str(l.a));
      CAPTURE(shape_str(l.b));
      Tensor a = random_f32(l.a, seed++, -5.f, 5.f);
      Tensor b = random_f32(l.b, seed++, -5.f, 5.f);
      Run ref = run(node(op), {&a, &b});
      REQUIRE(ref.fast != nullptr);
      Run fast = run(node(op), {&a, &b}, true);
      CHECK(max_ulps(a, fast.out[0], ref.out[0]).ulps == 0);
    }
  }
}

TEST_CASE("elementwise: binary fast path declines other broadcasts and dtypes") {
  auto fast_for = [](OpType op, DType da, Shape a, DType db, Shape b) {
    Node n = node(op);
    n.inputs = {0, 1};
    InferCtx ctx{n, {TensorType{da, a}, TensorType{db, b}}, {nullptr, nullptr}};
    return cpu_kernel_find(ctx, Isa::Generic);
  };
  CHECK(fast_for(OpType::Add, DType::F32, {3, 1}, DType::F32, {1, 4}) == nullptr);
  // A column ([.., S, 1] on [.., S, H]) is taken, on either side; a middle broadcast is not.
  CHECK(fast_for(OpType::Mul, DType::F32, {3, 4}, DType::F32, {3, 1}) != nullptr);
  CHECK(fast_for(OpType::Mul, DType::F32, {1, 3, 1}, DType::F32, {1, 3, 4}) != nullptr);
  CHECK(fast_for(OpType::Mul, DType::F32, {2, 3, 4}, DType::F32, {2, 1, 4}) == nullptr);
  CHECK(fast_for(OpType::Add, DType::F32, {2, 3, 4}, DType::F32, {3, 1}) == nullptr);
  CHECK(fast_for(OpType::Add, DType::F64, {4}, DType::F64, {4}) == nullptr);
  CHECK(fast_for(OpType::Add, DType::F32, {2, 4}, DType::F32, {4}) != nullptr);
  CHECK(fast_for(OpType::Div, DType::F32, {1}, DType::F32, {2, 4}) != nullptr);
  CHECK(fast_for(OpType::Pow, DType::F32, {2, 4}, DType::F32, {4}) == nullptr);
  CHECK(fast_for(OpType::Pow, DType::F32, {2, 4}, DType::I64, {}) != nullptr);
  CHECK(fast_for(OpType::Pow, DType::F32, {1}, DType::F32, {2, 4}) == nullptr);
  // The reference handles what the fast path declines.
  Tensor a = random_f32({3, 1}, 1, -2.f, 2.f), b = random_f32({1, 4}, 2, -2.f, 2.f);
  Run r = run(node(OpType::Sub), {&a, &b});
  CHECK(r.out[0].shape() == Shape{3, 4});
  CHECK(r.out[0].ptr<float>()[6] == a.ptr<float>()[1] - b.ptr<float>()[2]);
}

TEST_CASE("elementwise: fast Pow with a scalar exponent is bit exact") {
  for (double e : {2.0, 3.0, 0.5, -1.0, 1.0, 0.0, 1.7, -2.5}) {
    for (DType edt : {DType::F32, DType::I64, DType::F64}) {
      if (edt == DType::I64 && e != std::floor(e)) continue;
      CAPTURE(e);
      CAPTURE(std::string(dtype_name(edt)));
      Tensor x = random_f32({769}, (uint32_t)(e * 10 + 50), -6.f, 6.f);
      x.ptr<float>()[0] = -0.0f;
      x.ptr<float>()[1] = -kInfF;
      x.ptr<float>()[2] = kNanF;
      x.ptr<float>()[3] = 0.0f;
      Tensor ex = make(edt, {}, {e});
      Run ref = run(node(OpType::Pow), {&x, &ex});
      Run fast = run(node(OpType::Pow), {&x, &ex}, true);
      UlpReport r = max_ulps(x, fast.out[0], ref.out[0]);
      INFO(r.where);
      CHECK(r.ulps == 0);
      CHECK(std::signbit(fast.out[0].ptr<float>()[0]) == std::signbit(ref.out[0].ptr<float>()[0]));
    }
  }
}

// ---- Where, Clip ----------------------------------------------------------------------------

TEST_CASE("elementwise: Where broadcasts three ways; fast path on equal shapes") {
  Tensor c = make(DType::Bool, {2, 1, 3}, {1, 0, 1, 0, 1, 1});
  Tensor x = make(DType::F32, {1, 4, 1}, {10, 20, 30, 40});
  Tensor y = make(DType::F32, {3}, {-1, -2, -3});
  Run r = run(node(OpType::Where), {&c, &x, &y});
  CHECK(r.out[0].shape() == Shape{2, 4, 3});
  std::vector<double> v = values(r.out[0]);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 3; k++) {
        bool cond = values(c)[i * 3 + k] != 0;
        CHECK(v[(i * 4 + j) * 3 + k] == (cond ? 10.0 * (j + 1) : -(k + 1.0)));
      }
  CHECK(r.fast == nullptr);
  Tensor xi = make(DType::I64, {3}, {1, 2, 3}), yi = make(DType::I64, {1}, {-9});
  Tensor ci = make(DType::Bool, {3}, {0, 1, 0});
  CHECK(values(run(node(OpType::Where), {&ci, &xi, &yi}).out[0]) == std::vector<double>{-9, 2, -9});
  CHECK(error_of([&] { run(node(OpType::Where), {&ci, &xi, &y}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(node(OpType::Where), {&xi, &xi, &yi}); }) == ErrorKind::Model);
  for (int64_t n : kSizes) {
    CAPTURE(n);
    Tensor cn = random_bool({n}, (uint32_t)n), xn = random_f32({n}, 1, -3.f, 3.f);
    Tensor yn = random_f32({n}, 2, -3.f, 3.f);
    Run ref = run(node(OpType::Where), {&cn, &xn, &yn});
    Run fast = run(node(OpType::Where), {&cn, &xn, &yn}, true);
    CHECK(values(fast.out[0]) == values(ref.out[0]));
  }
}

TEST_CASE("elementwise: Clip with scalar, absent and broadcast bounds") {
  Tensor x = f32_tensor({2, 3}, {-3.f, -0.5f, 0.f, 0.5f, 2.f, kNanF});
  Tensor lo = f32_tensor({}, {-1.f}), hi = f32_tensor({1}, {1.f});
  std::vector<double> v = values(run(node(OpType::Clip), {&x, &lo, &hi}).out[0]);
  CHECK(std::vector<double>(v.begin(), v.begin() + 5) == std::vector<double>{-1, -0.5, 0, 0.5, 1});
  CHECK(std::isnan(v[5]));
  v = values(run(node(OpType::Clip), {&x, nullptr, &hi}).out[0]);
  CHECK(v[0] == -3.0);
  CHECK(v[4] == 1.0);
  v = values(run(node(OpType::Clip), {&x, &lo}).out[0]);
  CHECK(v[0] == -1.0);
  CHECK(v[4] == 2.0);
  v = values(run(node(OpType::Clip), {&x}).out[0]);
  CHECK(v[0] == -3.0);
  // min > max: everything becomes max (np.clip); a NaN bound gives NaN.
  Tensor big = f32_tensor({}, {5.f}), nanb = f32_tensor({}, {kNanF});
  v = values(run(node(OpType::Clip), {&x, &big, &hi}).out[0]);
  CHECK(v[0] == 1.0);
  CHECK(v[3] == 1.0);
  CHECK(std::isnan(values(run(node(OpType::Clip), {&x, &nanb}).out[0])[1]));
  // Per-column bounds that broadcast to the input.
  Tensor lo3 = f32_tensor({3}, {0.f, -1.f, 1.f});
  v = values(run(node(OpType::Clip), {&x, &lo3}).out[0]);
  CHECK(std::vector<double>(v.begin(), v.begin() + 5) == std::vector<double>{0, -0.5, 1, 0.5, 2});
  // Integers.
  Tensor xi = make(DType::I32, {4}, {-7, 0, 3, 100}), loi = make(DType::I32, {}, {-2});
  Tensor hii = make(DType::I32, {}, {50});
  CHECK(values(run(node(OpType::Clip), {&xi, &loi, &hii}).out[0]) ==
        std::vector<double>{-2, 0, 3, 50});
  Tensor u8 = make(DType::U8, {3}, {0, 128, 255}), hu = make(DType::U8, {}, {200});
  CHECK(values(run(node(OpType::Clip), {&u8, nullptr, &hu}).out[0]) ==
        std::vector<double>{0, 128, 200});
  // Errors: bounds of another dtype, bounds that would grow the output, bool input.
  CHECK(error_of([&] { run(node(OpType::Clip), {&x, &loi}); }) == ErrorKind::Model);
  Tensor lo23 = f32_tensor({4, 1, 1}, {0, 0, 0, 0});
  CHECK(error_of([&] { run(node(OpType::Clip), {&x, &lo23}); }) == ErrorKind::Model);
  Tensor bb = make(DType::Bool, {2}, {0, 1});
  CHECK(error_of([&] { run(node(OpType::Clip), {&bb}); }) == ErrorKind::Model);
}

// ---- Cast, CastLike -------------------------------------------------------------------------

namespace {

struct CastRow {
  DType src, dst;
  std::vector<double> v;
};

int64_t onnx_code(DType t) {
  switch (t) {
    case DType::F32: return 1;
    case DType::U8: return 2;
    case DType::I8: return 3;
    case DType::I16: return 5;
    case DType::I32: return 6;
    case DType::I64: return 7;
    case DType::Bool: return 9;
    case DType::F16: return 10;
    case DType::F64: return 11;
    case DType::BF16: return 16;
    default: return 0;
  }
}

Node cast_node(int64_t to) {
  Node n = node(OpType::Cast);
  n.attrs.set("to", to);
  return n;
}

// Made with numpy 2.4 / ml_dtypes 0.6 on x86-64: src = values.astype(S), dst = src.astype(D), for
// values = [-3.99, -2.5, -1, -0.5, 0, 0.7, 1, 3.99, 300, 70000, 1 + 2^-11 + 2^-40].
const CastRow kCastSrc[] = {
    {DType::F32, DType::F32, {-3.990000009536743, -2.5, -1, -0.5, 0, 0.699999988079071, 1, 3.990000009536743, 300, 70000, 1.00048828125}},
    {DType::F16, DType::F16, {-3.990234375, -2.5, -1, -0.5, 0, 0.7001953125, 1, 3.990234375, 300, kInf, 1.0009765625}},
    {DType::BF16, DType::BF16, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, 70144, 1}},
    {DType::F64, DType::F64, {-3.99, -2.5, -1, -0.5, 0, 0.7, 1, 3.99, 300, 70000, 1.0004882812509095}},
    {DType::I8, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I16, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I32, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I64, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::Bool, DType::Bool, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
};
const CastRow kCastDst[] = {
    {DType::F32, DType::F16, {-3.990234375, -2.5, -1, -0.5, 0, 0.7001953125, 1, 3.990234375, 300, kInf, 1}},
    {DType::F32, DType::BF16, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, 70144, 1}},
    {DType::F32, DType::F64, {-3.990000009536743, -2.5, -1, -0.5, 0, 0.699999988079071, 1, 3.990000009536743, 300, 70000, 1.00048828125}},
    {DType::F32, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::F32, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::F32, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::F32, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::F32, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::F32, DType::Bool, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::F16, DType::F32, {-3.990234375, -2.5, -1, -0.5, 0, 0.7001953125, 1, 3.990234375, 300, kInf, 1.0009765625}},
    {DType::F16, DType::BF16, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, kInf, 1}},
    {DType::F16, DType::F64, {-3.990234375, -2.5, -1, -0.5, 0, 0.7001953125, 1, 3.990234375, 300, kInf, 1.0009765625}},
    {DType::F16, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 0, 1}},
    {DType::F16, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 0, 1}},
    {DType::F16, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 0, 1}},
    {DType::F16, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, -2147483648, 1}},
    {DType::F16, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, -0x1p63, 1}},
    {DType::F16, DType::Bool, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::BF16, DType::F32, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, 70144, 1}},
    {DType::BF16, DType::F16, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, kInf, 1}},
    {DType::BF16, DType::F64, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, 70144, 1}},
    {DType::BF16, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 0, 1}},
    {DType::BF16, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 0, 1}},
    {DType::BF16, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4608, 1}},
    {DType::BF16, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70144, 1}},
    {DType::BF16, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70144, 1}},
    {DType::BF16, DType::Bool, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::F64, DType::F32, {-3.990000009536743, -2.5, -1, -0.5, 0, 0.699999988079071, 1, 3.990000009536743, 300, 70000, 1.00048828125}},
    {DType::F64, DType::F16, {-3.990234375, -2.5, -1, -0.5, 0, 0.7001953125, 1, 3.990234375, 300, kInf, 1.0009765625}},
    {DType::F64, DType::BF16, {-3.984375, -2.5, -1, -0.5, 0, 0.69921875, 1, 3.984375, 300, 70144, 1}},
    {DType::F64, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::F64, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::F64, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::F64, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::F64, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::F64, DType::Bool, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::I8, DType::F32, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::F16, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::BF16, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::F64, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I8, DType::Bool, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}},
    {DType::U8, DType::F32, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::F16, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::BF16, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::F64, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::I16, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::I32, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::I64, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::U8, DType::Bool, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}},
    {DType::I16, DType::F32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I16, DType::F16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I16, DType::BF16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4480, 1}},
    {DType::I16, DType::F64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I16, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I16, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I16, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I16, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I16, DType::Bool, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}},
    {DType::I32, DType::F32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I32, DType::F16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, kInf, 1}},
    {DType::I32, DType::BF16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70144, 1}},
    {DType::I32, DType::F64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I32, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I32, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I32, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I32, DType::I64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I32, DType::Bool, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}},
    {DType::I64, DType::F32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I64, DType::F16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, kInf, 1}},
    {DType::I64, DType::BF16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70144, 1}},
    {DType::I64, DType::F64, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I64, DType::I8, {-3, -2, -1, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I64, DType::U8, {253, 254, 255, 0, 0, 0, 1, 3, 44, 112, 1}},
    {DType::I64, DType::I16, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 4464, 1}},
    {DType::I64, DType::I32, {-3, -2, -1, 0, 0, 0, 1, 3, 300, 70000, 1}},
    {DType::I64, DType::Bool, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::F32, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::F16, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::BF16, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::F64, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::I8, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::U8, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::I16, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::I32, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
    {DType::Bool, DType::I64, {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1}},
};

}  // namespace

TEST_CASE("elementwise: Cast between every dtype pair matches numpy") {
  for (const CastRow& d : kCastDst) {
    const CastRow* s = nullptr;
    for (const CastRow& r : kCastSrc) if (r.src == d.src) s = &r;
    REQUIRE(s);
    CAPTURE(std::string(dtype_name(d.src)));
    CAPTURE(std::string(dtype_name(d.dst)));
    Tensor x = make(d.src, {(int64_t)s->v.size()}, s->v);
    REQUIRE(values(x) == s->v);
    Run r = run(cast_node(onnx_code(d.dst)), {&x});
    REQUIRE(r.out[0].dtype() == d.dst);
    std::vector<double> got = values(r.out[0]);
    for (size_t i = 0; i < got.size(); i++) {
      // Non-finite -> integer is undefined in ONNX (numpy's answer is the x86 one).
      if (!std::isfinite(s->v[i]) && !dtype_info(d.dst).is_float && d.dst != DType::Bool) continue;
      CAPTURE(s->v[i]);
      CHECK(got[i] == d.v[i]);
    }
    // Round trip back to the source type, and CastLike agrees with Cast.
    Run back = run(cast_node(onnx_code(d.src)), {&r.out[0]});
    CHECK(back.out[0].dtype() == d.src);
    Tensor like = Tensor::zeros(d.dst, {2});
    Run cl = run(node(OpType::CastLike), {&x, &like});
    CHECK(cl.out[0].dtype() == d.dst);
    CHECK(std::memcmp(cl.out[0].data(), r.out[0].data(), r.out[0].nbytes()) == 0);
  }
}

TEST_CASE("elementwise: Cast of non-finite and out-of-range floats does not crash") {
  Tensor x = f32_tensor({6}, {kNanF, kInfF, -kInfF, 3e9f, -1e20f, 1e38f});
  for (DType d : {DType::I8, DType::U8, DType::I16, DType::I32, DType::I64, DType::Bool,
                  DType::F16, DType::BF16, DType::F64}) {
    CAPTURE(std::string(dtype_name(d)));
    Run r = run(cast_node(onnx_code(d)), {&x});
    CHECK(r.out[0].dtype() == d);
  }
  std::vector<double> b = values(run(cast_node(9), {&x}).out[0]);
  CHECK(b == std::vector<double>(6, 1.0));  // NaN -> true, like numpy
  std::vector<double> h = values(run(cast_node(10), {&x}).out[0]);
  CHECK(std::isnan(h[0]));
  CHECK(h[1] == kInf);
  CHECK(h[5] == kInf);
  // f32 -> f16 / bf16 round to nearest even.
  Tensor t = f32_tensor({2}, {1.0f + 0x1p-11f, 1.0f + 0x1p-8f});
  CHECK(values(run(cast_node(10), {&t}).out[0])[0] == 1.0);
  CHECK(values(run(cast_node(16), {&t}).out[0])[1] == 1.0);
}

TEST_CASE("elementwise: Cast attributes and unsupported types") {
  Tensor x = f32_tensor({2}, {1.5f, -2.5f});
  auto err = [&](int64_t to) -> std::string {
    try {
      run(cast_node(to), {&x});
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Model);
      return e.what();
    }
    return "";
  };
  CHECK(err(12).find("UINT32") != std::string::npos);
  CHECK(err(8).find("STRING") != std::string::npos);
  CHECK(err(17).find("FLOAT8E4M3FN") != std::string::npos);
  CHECK(err(99).find("99") != std::string::npos);
  CHECK(err(0) != "");
  Node n = cast_node(7);
  n.attrs.set("saturate", int64_t{0});
  n.attrs.set("round_mode", std::string("nearest"));
  CHECK(values(run(n, {&x}).out[0]) == std::vector<double>{1, -2});
  n.attrs.set("round_mode", std::string("sideways"));
  CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
  Node missing = node(OpType::Cast);
  CHECK(error_of([&] { run(missing, {&x}); }) == ErrorKind::Model);
}
