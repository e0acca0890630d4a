// AVX2 MaxPool (kernels/x86/pool_avx2.cpp, driver pool_x86.cpp) against the OpDef reference
// (cpp/src/ops/ops_pool.cpp), bit for bit: odd plane sizes, pads, strides 1 / 2 / gathered,
// dilations, ceil_mode, auto_pad, all-padding windows; random data, and data drawn from a few
// values with NaN, +-0 and +-inf so that ties and NaN placement decide the bits. 1 and 4
// threads give the same bits. Skipped without AVX2+FMA. NOTE: x86 builds only.
#if defined(__x86_64__)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "kernels/x86/kernels_x86.h"
#include "runtime/registry.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;

namespace {

struct PoolCase {
  const char* label;
  std::vector<int64_t> k, s, d, pads;  // empty: attribute absent
  int64_t ceil_mode;
  const char* auto_pad;  // nullptr: absent
};

const PoolCase kPoolCases[] = {
    {"3x3 s2 p1 (ResNet stem)", {3, 3}, {2, 2}, {}, {1, 1, 1, 1}, 0, nullptr},
    {"3x3 s2 p1 ceil", {3, 3}, {2, 2}, {}, {1, 1, 1, 1}, 1, nullptr},
    {"2x2 s2", {2, 2}, {2, 2}, {}, {}, 0, nullptr},
    {"2x2 s2 ceil", {2, 2}, {2, 2}, {}, {}, 1, nullptr},
    {"3x3 s1 p1", {3, 3}, {}, {}, {1, 1, 1, 1}, 0, nullptr},
    {"3x2 s(2,1) asymmetric pads ceil", {3, 2}, {2, 1}, {}, {0, 1, 2, 0}, 1, nullptr},
    {"3x3 s2 dilation 2", {3, 3}, {2, 2}, {2, 2}, {2, 1, 0, 2}, 0, nullptr},
    {"2x3 s1 dilation (1,3)", {2, 3}, {1, 1}, {1, 3}, {1, 1, 0, 3}, 0, nullptr},
    {"5x5 s3 p2 ceil (gather)", {5, 5}, {3, 3}, {}, {2, 2, 2, 2}, 1, nullptr},
    {"1x4 s(1,4) (gather)", {1, 4}, {1, 4}, {}, {}, 0, nullptr},
    {"1x1", {1, 1}, {}, {}, {}, 0, nullptr},
    {"2x2 pads 3 (all-padding windows)", {2, 2}, {1, 1}, {}, {3, 3, 3, 3}, 0, nullptr},
    {"3x3 s2 SAME_UPPER", {3, 3}, {2, 2}, {}, {}, 0, "SAME_UPPER"},
    {"4x4 s2 SAME_LOWER", {4, 4}, {2, 2}, {}, {}, 0, "SAME_LOWER"},
    {"3x3 s2 VALID", {3, 3}, {2, 2}, {}, {}, 0, "VALID"},
};

const Shape kShapes[] = {{1, 1, 5, 5},   {1, 3, 7, 9},    {2, 5, 17, 23}, {1, 2, 9, 40},
                         {1, 4, 33, 61}, {3, 2, 20, 113}, {1, 1, 6, 100}};

Node pool_node(const PoolCase& c) {
  Node n = test::node(OpType::MaxPool);
  n.attrs.set("kernel_shape", c.k);
  if (!c.s.empty()) n.attrs.set("strides", c.s);
  if (!c.d.empty()) n.attrs.set("dilations", c.d);
  if (!c.pads.empty()) n.attrs.set("pads", c.pads);
  if (c.ceil_mode) n.attrs.set("ceil_mode", c.ceil_mode);
  if (c.auto_pad) n.attrs.set("auto_pad", std::string(c.auto_pad));
  return n;
}

uint32_t pool_seed() {
  static const uint32_t seed = [] {
    uint32_t s = std::random_device{}();
    if (const char* env = std::getenv("EMBER_TEST_SEED")) s = (uint32_t)std::strtoul(env, 0, 10);
    std::printf("test_pool_x86: seed %u (EMBER_TEST_SEED replays it)\n", s);
    return s;
  }();
  return seed;
}

}  // namespace

TEST_CASE("x86 avx2 MaxPool matches the reference bit for bit") {
  if (cpu_isa() < Isa::Avx2) {
    MESSAGE("skipped: this CPU (or EMBER_CPU_ISA) has no AVX2+FMA");
    return;
  }
  std::mt19937 rng(pool_seed());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Few distinct values: ties everywhere, so the first-tap / strictly-greater rule shows.
  const float few[] = {0.0f, -0.0f, 1.0f, -1.0f, nan, -inf, inf, 0.0f, -0.0f, -1.0f};
  int checked = 0;
  for (const PoolCase& c : kPoolCases) {
    for (const Shape& shape : kShapes) {
      for (int data = 0; data < 3; data++) {
        CAPTURE(std::string(c.label));
        CAPTURE(shape_str(shape));
        CAPTURE(data);
        Node n = pool_node(c);
        Tensor x = Tensor::empty(DType::F32, shape);
        float* px = x.ptr<float>();
        for (int64_t i = 0; i < x.numel(); i++) {
          if (data == 0) px[i] = normal(rng);
          else if (data == 1) px[i] = rng() % 50 == 0 ? nan : normal(rng);  // sparse NaN
          else px[i] = few[rng() % 10];
        }
        std::vector<TensorType> types = {{DType::F32, shape}};
        n.inputs = {0};
        bool fits = true;
        try {
          op_def(OpType::MaxPool).infer(InferCtx{n, types, {&x}});
        } catch (const Error&) {
          fits = false;  // window larger than this (small) padded input
        }
        if (!fits) continue;
        const KernelEntry* e = cpu_kernel_find(InferCtx{n, types, {&x}}, cpu_isa());
        REQUIRE(e != nullptr);
        CHECK(std::string(e->name) == "max_pool_f32_avx2");
        test::OpRun ref = test::op_run(n, {&x}, nullptr, false, 1, true);
        test::OpRun one = test::op_run(n, {&x}, e->fn, false, 1, true);
        test::OpRun four = test::op_run(n, {&x}, e->fn, false, 4, true);
        const Tensor &r = ref[0], &f1 = one[0], &f4 = four[0];
        REQUIRE(r.shape() == f1.shape());
        int64_t bad = 0, first_bad = -1;
        for (int64_t i = 0; i < r.numel(); i++) {
          if (std::memcmp(r.ptr<float>() + i, f1.ptr<float>() + i, 4) != 0) {
            if (first_bad < 0) first_bad = i;
            bad++;
          }
        }
        CAPTURE(first_bad);
        CHECK(bad == 0);
        CHECK(std::memcmp(f1.data(), f4.data(), f1.numel() * 4) == 0);
        checked++;
      }
    }
  }
  CHECK(checked > 250);
}

TEST_CASE("x86 avx2 MaxPool: hand-computed NaN, +-0 and all-padding outputs") {
  if (cpu_isa() < Isa::Avx2) {
    MESSAGE("skipped: this CPU (or EMBER_CPU_ISA) has no AVX2+FMA");
    return;
  }
  // One row of 18 values, 2x1 windows stride (1, 2) over two rows: row 0 decides lane by lane.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::empty(DType::F32, {1, 1, 2, 18});
  float* p = x.ptr<float>();
  for (int i = 0; i < 36; i++) p[i] = -5.0f;
  p[0] = nan;          // first tap NaN: output NaN although row 1 holds -5
  p[18 + 2] = nan;     // a later NaN is passed over: output -5
  p[4] = -0.0f;        // -0 first, +0 later: -0 stays
  p[18 + 4] = 0.0f;
  p[6] = 0.0f;         // +0 first, -0 later: +0 stays
  p[18 + 6] = -0.0f;
  Node n = test::node(OpType::MaxPool);
  n.attrs.set("kernel_shape", std::vector<int64_t>{2, 1});
  n.attrs.set("strides", std::vector<int64_t>{1, 2});
  test::OpRun r = test::op_run(n, {&x}, cpu::max_pool_f32_avx2, false, 1, true);
  REQUIRE(r[0].shape() == Shape{1, 1, 1, 9});
  const float* y = r[0].ptr<float>();
  CHECK(std::isnan(y[0]));
  CHECK(y[1] == -5.0f);
  CHECK((y[2] == 0.0f && std::signbit(y[2])));
  CHECK((y[3] == 0.0f && !std::signbit(y[3])));
  CHECK(y[8] == -5.0f);
  // pads 2 around a 1x1 input with a 2x2 window: the corner windows see only padding -> 0.
  Tensor one = Tensor::empty(DType::F32, {1, 1, 1, 1});
  one.ptr<float>()[0] = -3.0f;
  Node m = test::node(OpType::MaxPool);
  m.attrs.set("kernel_shape", std::vector<int64_t>{2, 2});
  m.attrs.set("pads", std::vector<int64_t>{2, 2, 2, 2});
  test::OpRun q = test::op_run(m, {&one}, cpu::max_pool_f32_avx2, false, 1, true);
  REQUIRE(q[0].shape() == Shape{1, 1, 4, 4});
  CHECK(q[0].ptr<float>()[0] == 0.0f);
  CHECK(q[0].ptr<float>()[1 * 4 + 1] == -3.0f);
  // Huge windows, pads and strides: only the taps inside the input are walked (as the
  // reference), no int64 overflow.
  const int64_t big = int64_t(1) << 31;
  Tensor x4 = Tensor::empty(DType::F32, {1, 2, 4, 9});
  for (int i = 0; i < 72; i++) x4.ptr<float>()[i] = (float)((i * 37) % 19) - 9.0f;
  Node h = test::node(OpType::MaxPool);
  h.attrs.set("kernel_shape", std::vector<int64_t>{big, 2});
  h.attrs.set("pads", std::vector<int64_t>{big, big, big, big});
  h.attrs.set("strides", std::vector<int64_t>{big, big - 3});
  h.attrs.set("dilations", std::vector<int64_t>{1, big});
  test::OpRun hr = test::op_run(h, {&x4}, nullptr, false, 1, true);
  test::OpRun hf = test::op_run(h, {&x4}, cpu::max_pool_f32_avx2, false, 4, true);
  REQUIRE(hr[0].shape() == hf[0].shape());
  CHECK(hf[0].numel() > 0);
  CHECK(std::memcmp(hr[0].data(), hf[0].data(), hr[0].numel() * 4) == 0);
}
#endif
