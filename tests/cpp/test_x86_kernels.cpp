// AVX2 elementwise and row kernels (kernels/x86/elementwise_avx2.cpp, drivers in
// elementwise_x86.cpp) against the OpDef references, which evaluate in double: odd sizes with
// tails, fresh random data (the seed is printed), every binade, special values; the drivers
// through the registry; max ulp / relative error are printed. Skipped without AVX2+FMA.
// `x86 avx2 bench` (EMBER_X86_BENCH=1) times generic vs AVX2; `x86 avx2 exhaustive`
// (EMBER_X86_EXHAUSTIVE=stride) sweeps every stride-th float.
// NOTE: x86 builds only; elsewhere kernels/x86 is not compiled (and Isa::Neon > Isa::Avx2).
#if defined(__x86_64__)
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/generic/kernels_generic.h"
#include "kernels/x86/kernels_x86.h"
#include "runtime/registry.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;

namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr float kNanF = std::numeric_limits<float>::quiet_NaN();
const int64_t kSizes[] = {0, 1, 7, 8, 9, 769, 5125};

bool have_avx2() {
  if (cpu_isa() >= Isa::Avx2) return true;
  MESSAGE("skipped: this CPU (or EMBER_CPU_ISA) has no AVX2+FMA");
  return false;
}

// One seed per test run, printed so that a failure can be replayed.
uint32_t run_seed() {
  static const uint32_t seed = [] {
    uint32_t s = std::random_device{}();
    if (const char* env = std::getenv("EMBER_TEST_SEED")) s = (uint32_t)std::strtoul(env, 0, 10);
    std::printf("test_x86_kernels: seed %u (EMBER_TEST_SEED replays it)\n", s);
    return s;
  }();
  return seed;
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

using test::node;

Tensor f32_tensor(const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, {(int64_t)v.size()});
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

const float kSpecials[] = {0.0f, -0.0f, kInfF, -kInfF, kNanF, 1e-45f, -1e-45f, 1e-40f, -1e-40f,
                           1.17549435e-38f, -1.17549435e-38f, 3.4028235e38f, -3.4028235e38f,
                           100.0f, -100.0f, 88.7228394f, 88.72284f, -87.3365479f, -103.972076f,
                           -104.0f, 89.0f, 0.625f, -0.625f, 0.62499994f, 0.875f, -0.875f,
                           0.87499994f, 4.0f, -4.0f, 3.9f, 14.5f, -14.5f, 14.499999f,
                           -14.499999f, -14.3f, -13.0f, 0.5f, 1.0f, 2.0f, 3.0f, 5.0f, 7.0f,
                           11.0f, 10.99999f, -10.99999f, 6.99999f, -0.49999997f};

// n values: uniform in [-w, w], with every 3rd value from any binade and specials sprinkled in.
std::vector<float> test_data(int64_t n, float w, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-w, w);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; i++) {
    if (i % 3 == 2) {
      float f = std::bit_cast<float>((uint32_t)rng());
      v[i] = std::isnan(f) ? u(rng) : f;
    } else {
      v[i] = u(rng);
    }
  }
  for (int64_t i = 0; i < n; i += 11) v[i] = kSpecials[rng() % std::size(kSpecials)];
  return v;
}

struct UnaryFn {
  const char* name;
  void (*fn)(const float*, float*, int64_t);
  OpType op;
  const char* approximate;  // Gelu only
  float width;              // where the random data is dense
  int64_t max_ulps;
};

// Bounds: the max over every third float (EMBER_X86_EXHAUSTIVE=3: exp, tanh, erf 1 ulp;
// sigmoid, tanh-Gelu 2; erf-Gelu 3, all <= 2.4e-7 relative) plus one ulp of slack.
const UnaryFn kUnary[] = {
    {"exp", cpu::exp_f32_array_avx2, OpType::Exp, nullptr, 90.0f, 2},
    {"tanh", cpu::tanh_f32_array_avx2, OpType::Tanh, nullptr, 12.0f, 2},
    {"sigmoid", cpu::sigmoid_f32_array_avx2, OpType::Sigmoid, nullptr, 20.0f, 3},
    {"erf", cpu::erf_f32_array_avx2, OpType::Erf, nullptr, 5.0f, 2},
    {"gelu_erf", cpu::gelu_erf_f32_array_avx2, OpType::Gelu, "none", 16.0f, 4},
    {"gelu_tanh", cpu::gelu_tanh_f32_array_avx2, OpType::Gelu, "tanh", 16.0f, 3},
};

// The OpDef reference over x (computed in double, rounded once).
Tensor reference(const UnaryFn& f, const Tensor& x) {
  Node n = node(f.op);
  if (f.approximate) n.attrs.set("approximate", std::string(f.approximate));
  return test::op_run(n, {&x}, nullptr, false, 1, true).out[0];
}

struct ErrReport {
  int64_t max_ulps = 0;
  double max_rel = 0;  // |fast - ref| / |ref| over normal refs
  std::string where;   // the worst ulp case
  void add(float x, float fast, float ref) {
    int64_t d = ulps(fast, ref);
    if (std::fabs(ref) >= 1.17549435e-38f && std::isfinite(ref) && std::isfinite(fast))
      max_rel = std::max(max_rel, std::fabs((double)fast - ref) / std::fabs((double)ref));
    if (d <= max_ulps) return;
    max_ulps = d;
    char buf[160];
    std::snprintf(buf, sizeof buf, "x = %.9g (0x%08x): fast %.9g, reference %.9g", x,
                  std::bit_cast<uint32_t>(x), fast, ref);
    where = buf;
  }
};

std::string report(const UnaryFn& f, const ErrReport& r) {
  char buf[96];
  std::snprintf(buf, sizeof buf, ": max %lld ulp, max rel err %.3g; ", (long long)r.max_ulps,
                r.max_rel);
  return f.name + std::string(buf) + r.where;
}

// Runs f on x into a buffer with guard words either side; checks the guards survive.
std::vector<float> run_guarded(const UnaryFn& f, const std::vector<float>& x) {
  constexpr float kGuard = 12345.0f;
  std::vector<float> buf(x.size() + 32, kGuard);
  f.fn(x.data(), buf.data() + 16, (int64_t)x.size());
  for (int i = 0; i < 16; i++) {
    CHECK(buf[i] == kGuard);
    CHECK(buf[x.size() + 16 + i] == kGuard);
  }
  return std::vector<float>(buf.begin() + 16, buf.end() - 16);
}

// A row op's node over [rows, n]: Softmax / LogSoftmax on the last axis, LayerNorm over it.
Node row_node(OpType op) {
  Node n = node(op, op == OpType::LayerNormalization ? 3 : 1);
  if (op == OpType::LayerNormalization) n.attrs.set("epsilon", 1e-5);
  return n;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` runs of fn, in ns per element.
template <class F>
double best_ns(int64_t elems, int reps, F fn) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    fn();
    best = std::min(best, now_s() - t0);
  }
  return best * 1e9 / (double)elems;
}

}  // namespace

TEST_CASE("x86 avx2 unary maps match the references (odd sizes, random data, specials)") {
  if (!have_avx2()) return;
  std::mt19937 rng(run_seed());
  for (const UnaryFn& f : kUnary) {
    CAPTURE(std::string(f.name));
    ErrReport rep;
    for (int64_t n : kSizes) {
      CAPTURE(n);
      std::vector<float> x = test_data(n, f.width, rng);
      Tensor ref = reference(f, f32_tensor(x));
      std::vector<float> y = run_guarded(f, x);
      for (int64_t i = 0; i < n; i++) rep.add(x[i], y[i], ref.ptr<float>()[i]);
      // In place (x == y) gives the same bits.
      std::vector<float> z = x;
      f.fn(z.data(), z.data(), n);
      CHECK((n == 0 || std::memcmp(z.data(), y.data(), n * 4) == 0));  // no memcmp of null
    }
    // Every special value at every lane position.
    std::vector<float> sp(std::begin(kSpecials), std::end(kSpecials));
    for (int shift = 0; shift < 8; shift++) {
      std::vector<float> x(shift, 0.5f);
      x.insert(x.end(), sp.begin(), sp.end());
      Tensor ref = reference(f, f32_tensor(x));
      std::vector<float> y = run_guarded(f, x);
      for (size_t i = 0; i < x.size(); i++) rep.add(x[i], y[i], ref.ptr<float>()[i]);
    }
    MESSAGE(report(f, rep));
    CHECK(rep.max_ulps <= f.max_ulps);
  }
}

TEST_CASE("x86 avx2 unary maps over every binade") {
  if (!have_avx2()) return;
  std::mt19937 rng(run_seed() + 1);
  std::vector<float> x;
  for (int i = 0; i < 400000; i++) {
    float f = std::bit_cast<float>((uint32_t)rng());
    if (!std::isnan(f)) x.push_back(f);
  }
  std::uniform_real_distribution<float> u(-16.0f, 16.0f);  // where erf and Gelu bend
  for (int i = 0; i < 400000; i++) x.push_back(u(rng));
  Tensor tx = f32_tensor(x);
  for (const UnaryFn& f : kUnary) {
    CAPTURE(std::string(f.name));
    Tensor ref = reference(f, tx);
    std::vector<float> y(x.size());
    f.fn(x.data(), y.data(), (int64_t)x.size());
    ErrReport rep;
    for (size_t i = 0; i < x.size(); i++) rep.add(x[i], y[i], ref.ptr<float>()[i]);
    MESSAGE(report(f, rep));
    CHECK(rep.max_ulps <= f.max_ulps);
  }
}

TEST_CASE("x86 avx2 erf-Gelu: dense sweep of |x| <= 16 and exact tails") {
  if (!have_avx2()) return;
  // Every 1009th float of [0, 16] and its negation: where the float-only evaluation bends.
  const UnaryFn& f = kUnary[4];
  REQUIRE(std::string(f.name) == "gelu_erf");
  std::vector<float> x;
  for (uint32_t b = 0; b <= 0x41800000u; b += 1009) {
    x.push_back(std::bit_cast<float>(b));
    x.push_back(-std::bit_cast<float>(b));
  }
  Tensor ref = reference(f, f32_tensor(x));
  std::vector<float> y = run_guarded(f, x);
  ErrReport rep;
  for (size_t i = 0; i < x.size(); i++) rep.add(x[i], y[i], ref.ptr<float>()[i]);
  MESSAGE("dense sweep ", report(f, rep));
  CHECK(rep.max_ulps <= f.max_ulps);
  // Bit-exact where the reference is exact: signed zeros, infinities, NaN, beyond the clamp.
  const std::vector<float> sp = {0.0f, -0.0f, kInfF, -kInfF, kNanF, 14.500001f, -14.500001f,
                                 1e30f, -1e30f, 3.4028235e38f, -3.4028235e38f, -1e-45f};
  Tensor sref = reference(f, f32_tensor(sp));
  std::vector<float> sy = run_guarded(f, sp);
  for (size_t i = 0; i < sp.size(); i++) {
    CAPTURE(sp[i]);
    float e = sref.ptr<float>()[i];
    if (std::isnan(e)) {
      CHECK(std::isnan(sy[i]));
    } else {
      CHECK(std::bit_cast<uint32_t>(sy[i]) == std::bit_cast<uint32_t>(e));
    }
  }
}

TEST_CASE("x86 avx2 softmax, log-softmax and layer-norm rows match the references") {
  if (!have_avx2()) return;
  std::mt19937 rng(run_seed() + 2);
  constexpr int64_t kRows = 3;
  for (OpType op : {OpType::Softmax, OpType::LogSoftmax, OpType::LayerNormalization}) {
    CAPTURE(std::string(op_name(op)));
    bool ln = op == OpType::LayerNormalization;
    int64_t max_ulps = 0;
    double max_err = 0;  // layer norm: |fast - ref| / (1 + |ref|)
    for (int64_t n : kSizes) {
      if (n == 0) continue;  // the drivers never pass an empty row
      for (float w : {1.0f, 20.0f, 100.0f}) {
        CAPTURE(n);
        CAPTURE(w);
        // Rows in [-w, w]; w = 100 is shifted to [0, 200] (layer norm's mean far from 0).
        std::uniform_real_distribution<float> u(-w, w);
        float shift = w == 100.0f ? 100.0f : 0.0f;
        Tensor x = Tensor::empty(DType::F32, {kRows, n});
        for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] = u(rng) + shift;
        Tensor sc = Tensor::empty(DType::F32, {n}), b = Tensor::empty(DType::F32, {n});
        for (int64_t i = 0; i < n; i++) {
          sc.ptr<float>()[i] = u(rng) / w;
          b.ptr<float>()[i] = u(rng) / w;
        }
        std::vector<const Tensor*> in = {&x};
        if (ln) in = {&x, &sc, &b};
        test::OpRun ref = test::op_run(row_node(op), in, nullptr, false, 1, true);
        std::vector<float> y(kRows * n), mean(kRows), inv(kRows);
        for (int64_t r = 0; r < kRows; r++) {
          const float* xr = x.ptr<float>() + r * n;
          float* yr = y.data() + r * n;
          if (op == OpType::Softmax) cpu::softmax_f32_row_avx2(xr, yr, n);
          if (op == OpType::LogSoftmax) cpu::log_softmax_f32_row_avx2(xr, yr, n);
          if (ln)  // row 1 without bias
            cpu::layer_norm_f32_row_avx2(xr, sc.ptr<float>(), r == 1 ? nullptr : b.ptr<float>(),
                                         yr, n, 1e-5f, &mean[r], &inv[r]);
        }
        for (int64_t r = 0; r < kRows; r++)
          for (int64_t j = 0; j < n; j++) {
            float e = ref[0].ptr<float>()[r * n + j], f = y[r * n + j];
            // Log-softmax near 0 is -log(1 + tiny): there both sides carry the double sum's
            // rounding (~1e-16 absolute), so only the absolute error means anything.
            if (op == OpType::LogSoftmax && std::fabs(e) < 1e-3f) {
              CHECK(std::fabs(f - e) <= 1e-9);
              continue;
            }
            if (!ln) {
              max_ulps = std::max(max_ulps, ulps(f, e));
              continue;
            }
            double ed = (double)e - (r == 1 ? b.ptr<float>()[j] : 0.0f);
            max_err = std::max(max_err, std::fabs(f - ed) / (1.0 + std::fabs(ed)));
          }
        if (ln)
          for (int64_t r = 0; r < kRows; r++) {
            CHECK(mean[r] == doctest::Approx(ref[1].ptr<float>()[r]).epsilon(1e-6));
            CHECK(inv[r] == doctest::Approx(ref[2].ptr<float>()[r]).epsilon(1e-6));
          }
      }
    }
    if (ln) {
      MESSAGE("layer_norm: max |err| / (1 + |ref|) ", max_err);
      CHECK(max_err <= 1e-6);
    } else {
      MESSAGE(std::string(op_name(op)), ": max ", max_ulps, " ulp");
      CHECK(max_ulps <= 4);
    }
  }
  // Special rows: a NaN or +inf makes the row NaN (as the reference), -inf gives 0, +-100.
  const std::vector<std::vector<float>> rows = {
      {1.0f, kNanF, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f},
      {1.0f, 2.0f, kInfF, 3.0f},
      {-kInfF, 1.0f, 2.0f, -kInfF, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, -kInfF},
      {100.0f, -100.0f, 100.0f, 0.0f, -0.0f, 50.0f, -50.0f},
      {kNanF, kNanF},
      {-kInfF, -kInfF, -kInfF},
  };
  for (const std::vector<float>& row : rows)
    for (OpType op : {OpType::Softmax, OpType::LogSoftmax}) {
      CAPTURE(row.size());
      Tensor x = f32_tensor(row);
      test::OpRun ref = test::op_run(row_node(op), {&x}, nullptr, false, 1, true);
      std::vector<float> y(row.size());
      (op == OpType::Softmax ? cpu::softmax_f32_row_avx2 : cpu::log_softmax_f32_row_avx2)(
          row.data(), y.data(), (int64_t)row.size());
      for (size_t j = 0; j < row.size(); j++) CHECK(ulps(y[j], ref[0].ptr<float>()[j]) <= 4);
    }
}

TEST_CASE("x86 avx2 drivers: registry picks them, threads and shapes match the reference") {
  if (!have_avx2()) return;
  std::mt19937 rng(run_seed() + 3);
  struct Case {
    OpType op;
    const char* approximate;
    Shape shape;
    const char* kernel;
  };
  const Case cases[] = {
      {OpType::Exp, nullptr, {40000}, "exp_f32_avx2"},
      {OpType::Tanh, nullptr, {7, 769}, "tanh_f32_avx2"},
      {OpType::Sigmoid, nullptr, {5125}, "sigmoid_f32_avx2"},
      {OpType::Erf, nullptr, {3, 5125}, "erf_f32_avx2"},
      {OpType::Gelu, "none", {129, 385}, "gelu_f32_avx2"},
      {OpType::Gelu, "tanh", {129, 385}, "gelu_f32_avx2"},
      {OpType::Softmax, nullptr, {65, 769}, "softmax_f32_avx2"},
      {OpType::LogSoftmax, nullptr, {3, 5, 384}, "log_softmax_f32_avx2"},
      {OpType::LayerNormalization, nullptr, {2, 33, 385}, "layer_norm_f32_avx2"},
  };
  std::uniform_real_distribution<float> u(-6.0f, 6.0f);
  for (const Case& c : cases) {
    CAPTURE(std::string(op_name(c.op)));
    Tensor x = Tensor::empty(DType::F32, c.shape);
    for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] = u(rng);
    int64_t cols = c.shape.back();
    Tensor sc = Tensor::empty(DType::F32, {cols}), b = Tensor::empty(DType::F32, {cols});
    for (int64_t i = 0; i < cols; i++) sc.ptr<float>()[i] = u(rng), b.ptr<float>()[i] = u(rng);
    std::vector<const Tensor*> in = {&x};
    if (c.op == OpType::LayerNormalization) in = {&x, &sc, &b};
    Node n = row_node(c.op);
    if (c.approximate) n.attrs.set("approximate", std::string(c.approximate));
    // The registry's choice at this CPU's ISA.
    n.inputs.clear();
    std::vector<TensorType> types;
    for (size_t i = 0; i < in.size(); i++) {
      n.inputs.push_back((int)i);
      types.push_back({in[i]->dtype(), in[i]->shape()});
    }
    const KernelEntry* e = cpu_kernel_find(InferCtx{n, types, in}, cpu_isa());
    REQUIRE(e != nullptr);
    CHECK(std::string(e->name) == c.kernel);
    test::OpRun ref = test::op_run(n, in, nullptr, false, 1, true);
    test::OpRun one = test::op_run(n, in, e->fn, false, 1, true);
    test::OpRun four = test::op_run(n, in, e->fn, false, 4, true);
    for (size_t o = 0; o < ref.out.size(); o++) {
      const Tensor &r = ref.out[o], &f1 = one.out[o], &f4 = four.out[o];
      CHECK(std::memcmp(f1.data(), f4.data(), f1.numel() * 4) == 0);  // thread count: same bits
      int64_t bad = 0;
      for (int64_t i = 0; i < r.numel(); i++) {
        double a = f1.ptr<float>()[i], b2 = r.ptr<float>()[i];
        if (!(std::fabs(a - b2) <= 2e-5 * std::fabs(b2) + 2e-6)) bad++;
      }
      CHECK(bad == 0);
    }
  }
  // An empty tensor and a zero-width row do nothing.
  for (const Shape& s : {Shape{0, 7}, Shape{7, 0}}) {
    Tensor x = Tensor::empty(DType::F32, s);
    test::OpRun r =
        test::op_run(row_node(OpType::Softmax), {&x}, cpu::softmax_f32_avx2, false, 4, true);
    CHECK(r.out[0].numel() == 0);
  }
}

TEST_CASE("x86 avx2 exhaustive" * doctest::skip(std::getenv("EMBER_X86_EXHAUSTIVE") == nullptr)) {
  if (!have_avx2()) return;
  // Every stride-th float (1: all 2^32), in slices that the reference can take.
  uint32_t stride = (uint32_t)std::max(1L, std::atol(std::getenv("EMBER_X86_EXHAUSTIVE")));
  for (const UnaryFn& f : kUnary) {
    ErrReport rep;
    constexpr int64_t kSlice = 1 << 22;
    std::vector<float> x, y(kSlice);
    for (uint64_t b = 0; b < (1ull << 32); b += stride) {
      x.push_back(std::bit_cast<float>((uint32_t)b));
      if ((int64_t)x.size() < kSlice && b + stride < (1ull << 32)) continue;
      Tensor ref = reference(f, f32_tensor(x));
      f.fn(x.data(), y.data(), (int64_t)x.size());
      for (size_t i = 0; i < x.size(); i++) rep.add(x[i], y[i], ref.ptr<float>()[i]);
      x.clear();
    }
    MESSAGE("stride ", stride, ": ", report(f, rep));
    CHECK(rep.max_ulps <= f.max_ulps);
  }
}

TEST_CASE("x86 avx2 bench" * doctest::skip(std::getenv("EMBER_X86_BENCH") == nullptr)) {
  if (!have_avx2()) return;
  // One thread: generic driver vs AVX2 driver on the same node, ns per element.
  std::mt19937 rng(run_seed() + 4);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  struct B {
    const char* name;
    OpType op;
    const char* approximate;
    Shape shape;
    KernelFn generic, avx2;
  };
  const B benches[] = {
      {"exp 1M", OpType::Exp, nullptr, {1 << 20}, cpu::exp_f32, cpu::exp_f32_avx2},
      {"tanh 1M", OpType::Tanh, nullptr, {1 << 20}, cpu::tanh_f32, cpu::tanh_f32_avx2},
      {"sigmoid 1M", OpType::Sigmoid, nullptr, {1 << 20}, cpu::sigmoid_f32, cpu::sigmoid_f32_avx2},
      {"erf 1M", OpType::Erf, nullptr, {1 << 20}, cpu::erf_f32, cpu::erf_f32_avx2},
      {"gelu erf 1M", OpType::Gelu, "none", {1 << 20}, cpu::gelu_f32, cpu::gelu_f32_avx2},
      {"gelu tanh 1M", OpType::Gelu, "tanh", {1 << 20}, cpu::gelu_f32, cpu::gelu_f32_avx2},
      {"softmax 4096x128", OpType::Softmax, nullptr, {4096, 128}, cpu::softmax_f32,
       cpu::softmax_f32_avx2},
      {"softmax 2048x384", OpType::Softmax, nullptr, {2048, 384}, cpu::softmax_f32,
       cpu::softmax_f32_avx2},
      {"log_softmax 2048x384", OpType::LogSoftmax, nullptr, {2048, 384}, cpu::log_softmax_f32,
       cpu::log_softmax_f32_avx2},
      {"layer_norm 4096x128", OpType::LayerNormalization, nullptr, {4096, 128}, cpu::layer_norm_f32,
       cpu::layer_norm_f32_avx2},
      {"layer_norm 2048x384", OpType::LayerNormalization, nullptr, {2048, 384}, cpu::layer_norm_f32,
       cpu::layer_norm_f32_avx2},
  };
  for (const B& b : benches) {
    Tensor x = Tensor::empty(DType::F32, b.shape);
    for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] = nd(rng);
    int64_t cols = b.shape.back();
    Tensor sc = Tensor::empty(DType::F32, {cols}), bias = Tensor::empty(DType::F32, {cols});
    for (int64_t i = 0; i < cols; i++) sc.ptr<float>()[i] = nd(rng), bias.ptr<float>()[i] = nd(rng);
    std::vector<const Tensor*> in = {&x};
    if (b.op == OpType::LayerNormalization) in = {&x, &sc, &bias};
    Node n = node(b.op);
    if (b.approximate) n.attrs.set("approximate", std::string(b.approximate));
    for (size_t i = 0; i < in.size(); i++) n.inputs.push_back((int)i);
    Tensor y = Tensor::empty(DType::F32, b.shape);
    KernelCtx ctx{n, in, {&y}, 1};
    double g = best_ns(x.numel(), 7, [&] { b.generic(ctx); });
    double a = best_ns(x.numel(), 7, [&] { b.avx2(ctx); });
    std::printf("%-22s generic %6.2f ns/elem   avx2 %6.2f ns/elem   x%.1f\n", b.name, g, a, g / a);
  }
}
#endif  // defined(__x86_64__)
