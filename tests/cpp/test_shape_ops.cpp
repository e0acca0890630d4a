// Shape and data-movement ops: shape inference and reference kernels on odd shapes (1, 7,
// zero-size dims), negative axes and every error path; Slice against a table made with numpy
// slicing; each fast kernel in kernels/generic/movement.cpp against its reference on random data.
#include <cstring>
#include <functional>
#include <optional>
#include <random>
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

constexpr int64_t kMax = INT64_MAX, kMin = INT64_MIN;

Tensor i64s(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty(DType::I64, {(int64_t)v.size()});
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 8);
  return t;
}

Tensor i64_scalar(int64_t v) {
  Tensor t = Tensor::empty(DType::I64, {});
  *t.ptr<int64_t>() = v;
  return t;
}

Tensor i32s(const std::vector<int32_t>& v, Shape s = {}) {
  if (s.empty()) s = {(int64_t)v.size()};
  Tensor t = Tensor::empty(DType::I32, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

// f32 tensor holding 0, 1, 2, ... so a copy's source positions can be read off its values.
Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = (float)i;
  return t;
}

// Random bytes for any dtype (bool stays 0/1, floats stay finite).
Tensor random_tensor(DType dt, const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(dt, s);
  auto* b = t.ptr<uint8_t>();
  if (dt == DType::F32) {
    std::uniform_real_distribution<float> u(-4.f, 4.f);
    for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  } else {
    for (size_t i = 0; i < t.nbytes(); i++) b[i] = (uint8_t)(dt == DType::Bool ? rng() & 1 : rng());
  }
  return t;
}

std::vector<float> f32s(const Tensor& t) { return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel()); }
std::vector<int64_t> ints(const Tensor& t) { return tensor_to_i64_vector(t); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

using Result = test::OpRun;
using test::error_of;
using test::node;

// Runs the reference kernel (or `fn`); see test::op_run.
Result run(Node n, const std::vector<const Tensor*>& in, KernelFn fn = nullptr, int threads = 2,
           bool values_known = true) {
  return test::op_run(std::move(n), in, fn, false, threads, values_known);
}

Shape out_shape(const Node& n, const std::vector<const Tensor*>& in) { return run(n, in).types[0].shape; }


}  // namespace

TEST_CASE("shape ops: Reshape") {
  Tensor x = iota({2, 3, 4});
  Node n = node(OpType::Reshape);
  Tensor s1 = i64s({0, -1}), s2 = i64s({4, 0, 2}), s3 = i64s({-1}), s4 = i64s({2, 1, 3, 1, 4});
  CHECK(out_shape(n, {&x, &s1}) == Shape{2, 12});
  CHECK(out_shape(n, {&x, &s2}) == Shape{4, 3, 2});
  Result r = run(n, {&x, &s3});
  CHECK(r.types[0].shape == Shape{24});
  CHECK(f32s(r[0]) == f32s(x));
  CHECK(out_shape(n, {&x, &s4}) == Shape{2, 1, 3, 1, 4});

  // Zero-size: 0 copies the input dim; with allowzero it is a literal 0.
  Tensor z = iota({0, 3});
  Tensor sz = i64s({-1, 3}), s0 = i64s({3, 0});
  CHECK(out_shape(n, {&z, &sz}) == Shape{0, 3});
  Node nz = node(OpType::Reshape);
  nz.attrs.set("allowzero", int64_t(1));
  CHECK(out_shape(nz, {&z, &s0}) == Shape{3, 0});
  CHECK(error_of([&] { run(n, {&z, &s0}); }) == ErrorKind::Model);  // 0 -> 3: [3, 3] has 9

  Tensor one = iota({1, 1}), empty = i64s({});
  CHECK(out_shape(n, {&one, &empty}) == Shape{});

  Tensor two_neg = i64s({-1, -1}), bad = i64s({5, -1}), neg = i64s({-2, 12}), far = i64s({0, 0, 0, 0});
  CHECK(error_of([&] { run(n, {&x, &two_neg}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &bad}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &neg}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &far}); }) == ErrorKind::Model);
  Tensor zm = i64s({0, -1});
  CHECK(error_of([&] { run(nz, {&x, &zm}); }) == ErrorKind::Model);  // allowzero with 0 and -1
  // Huge dims must fail cleanly, not overflow.
  Tensor huge = i64s({kMax, kMax, 0});
  CHECK(error_of([&] { run(nz, {&z, &huge}); }) == ErrorKind::Model);
  // The shape must be known at plan time.
  CHECK(error_of([&] { run(n, {&x, &s1}, nullptr, 2, false); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Flatten") {
  Tensor x = iota({2, 3, 4});
  Node n = node(OpType::Flatten);
  CHECK(out_shape(n, {&x}) == Shape{2, 12});
  for (auto [axis, want] : std::vector<std::pair<int64_t, Shape>>{
           {0, {1, 24}}, {3, {24, 1}}, {-1, {6, 4}}, {-3, {1, 24}}}) {
    n.attrs.set("axis", axis);
    Result r = run(n, {&x});
    CHECK(r.types[0].shape == want);
    CHECK(f32s(r[0]) == f32s(x));
  }
  n.attrs.set("axis", int64_t(4));
  CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
  n.attrs.set("axis", int64_t(-4));
  CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Transpose") {
  Tensor x = iota({2, 3});
  Node n = node(OpType::Transpose);
  Result r = run(n, {&x});  // default: reversed dims
  CHECK(r.types[0].shape == Shape{3, 2});
  CHECK(f32s(r[0]) == std::vector<float>{0, 3, 1, 4, 2, 5});

  Tensor y = iota({2, 1, 3, 7});
  n.attrs.set("perm", std::vector<int64_t>{2, 0, 3, 1});
  r = run(n, {&y});
  CHECK(r.types[0].shape == Shape{3, 2, 7, 1});
  // out[c, a, d, b] = y[a, b, c, d] = a*21 + b*21 + c*7 + d
  CHECK(r[0].ptr<float>()[1 * 14 + 1 * 7 + 5] == 1 * 21 + 1 * 7 + 5);

  for (auto perm : std::vector<std::vector<int64_t>>{{0, 1, 2}, {0, 0, 1, 2}, {0, 1, 2, 4}, {-1, 0, 1, 2}}) {
    n.attrs.set("perm", perm);
    CHECK(error_of([&] { run(n, {&y}); }) == ErrorKind::Model);
  }
  Tensor z = iota({0, 5});
  n.attrs.set("perm", std::vector<int64_t>{1, 0});
  CHECK(out_shape(n, {&z}) == Shape{5, 0});
}

TEST_CASE("shape ops: Squeeze and Unsqueeze") {
  Tensor x = iota({1, 3, 1, 7});
  Node sq = node(OpType::Squeeze);
  CHECK(out_shape(sq, {&x}) == Shape{3, 7});
  Tensor a1 = i64s({-2}), a2 = i64s({0, 2}), bad = i64s({1}), dup = i64s({0, -4}), far = i64s({4}), none = i64s({});
  CHECK(out_shape(sq, {&x, &a1}) == Shape{1, 3, 7});
  Result r = run(sq, {&x, &a2});
  CHECK(r.types[0].shape == Shape{3, 7});
  CHECK(f32s(r[0]) == f32s(x));
  CHECK(out_shape(sq, {&x, &none}) == Shape{1, 3, 1, 7});  // empty axes: nothing (onnx reference)
  CHECK(error_of([&] { run(sq, {&x, &bad}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(sq, {&x, &dup}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(sq, {&x, &far}); }) == ErrorKind::Model);
  Node sq11 = node(OpType::Squeeze);
  sq11.attrs.set("axes", std::vector<int64_t>{2});
  CHECK(out_shape(sq11, {&x}) == Shape{1, 3, 7});

  Tensor y = iota({3, 4});
  Node un = node(OpType::Unsqueeze);
  Tensor u1 = i64s({-1, 0}), u2 = i64s({1, 3}), udup = i64s({1, -3}), ufar = i64s({3});
  r = run(un, {&y, &u1});
  CHECK(r.types[0].shape == Shape{1, 3, 4, 1});
  CHECK(f32s(r[0]) == f32s(y));
  CHECK(out_shape(un, {&y, &u2}) == Shape{3, 1, 4, 1});
  Tensor s = i64_scalar(0);
  CHECK(out_shape(un, {&y, &s}) == Shape{1, 3, 4});
  CHECK(error_of([&] { run(un, {&y, &udup}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(un, {&y, &ufar}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(un, {&y}); }) == ErrorKind::Model);  // axes required
  Tensor sc = iota({});
  CHECK(out_shape(un, {&sc, &u1}) == Shape{1, 1});
}

TEST_CASE("shape ops: Concat") {
  Tensor a = iota({2, 1, 3}), b = iota({2, 4, 3}), e = iota({2, 0, 3});
  Node n = node(OpType::Concat);
  n.attrs.set("axis", int64_t(-2));
  Result r = run(n, {&a, &e, &b});
  CHECK(r.types[0].shape == Shape{2, 5, 3});
  const float* y = r[0].ptr<float>();
  CHECK(y[0] == 0);               // a[0, 0, 0]
  CHECK(y[4] == 1);               // b[0, 0, 1]
  CHECK(y[15 + 2] == 5);          // a[1, 0, 2]
  CHECK(y[15 + 3 + 12 - 1] == 23);  // b[1, 3, 2]
  Tensor c = iota({2, 4, 2}), i = i64s({1, 2});
  CHECK(error_of([&] { run(n, {&a, &c}); }) == ErrorKind::Model);
  n.attrs.set("axis", int64_t(3));
  CHECK(error_of([&] { run(n, {&a, &b}); }) == ErrorKind::Model);
  n.attrs.set("axis", int64_t(0));
  CHECK(error_of([&] { run(n, {&i, &a}); }) == ErrorKind::Model);
  Node no_axis = node(OpType::Concat);
  CHECK(error_of([&] { run(no_axis, {&a, &b}); }) == ErrorKind::Model);
  Tensor e1 = iota({0}), e2 = iota({0});
  CHECK(out_shape(n, {&e1, &e2}) == Shape{0});
}

TEST_CASE("shape ops: Split") {
  Tensor x = iota({2, 7});
  Node n = node(OpType::Split, 3);
  n.attrs.set("axis", int64_t(-1));
  n.attrs.set("num_outputs", int64_t(3));
  Result r = run(n, {&x});
  CHECK(r.types[0].shape == Shape{2, 3});
  CHECK(r.types[2].shape == Shape{2, 1});
  CHECK(f32s(r[1]) == std::vector<float>{3, 4, 5, 10, 11, 12});
  CHECK(f32s(r[2]) == std::vector<float>{6, 13});

  Node m = node(OpType::Split, 3);
  m.attrs.set("axis", int64_t(1));
  Tensor sizes = i64s({2, 0, 5});
  r = run(m, {&x, &sizes});
  CHECK(r.types[1].shape == Shape{2, 0});
  CHECK(f32s(r[2]) == std::vector<float>{2, 3, 4, 5, 6, 9, 10, 11, 12, 13});
  Tensor wrong_sum = i64s({2, 2, 2}), wrong_len = i64s({7}), negative = i64s({8, -1, 0});
  CHECK(error_of([&] { run(m, {&x, &wrong_sum}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(m, {&x, &wrong_len}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(m, {&x, &negative}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &sizes}); }) == ErrorKind::Model);  // both given

  // Opset 18's uneven rule: 4 into 3 -> [2, 2, 0]; 5 into 4 would need a negative chunk.
  Tensor y = iota({4}), z = iota({5});
  Node k = node(OpType::Split, 3);
  r = run(k, {&y});
  CHECK(r.types[2].shape == Shape{0});
  Node k4 = node(OpType::Split, 4);
  CHECK(error_of([&] { run(k4, {&z}); }) == ErrorKind::Model);
  n.attrs.set("num_outputs", int64_t(2));  // disagrees with the 3 outputs
  CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Slice clamping matches numpy") {
  // {dim, start, end, step, count, first index, index step}: from numpy's arange(dim)[s:e:st].
  const int64_t cases[][7] = {
      {0, 0, kMax, 1, 0, -1, 0},   {0, -1, kMin, -1, 0, -1, 0}, {0, kMax, kMin, -3, 0, -1, 0},
      {0, 6, 0, kMin, 0, -1, 0},   {1, 0, kMax, 1, 1, 0, 0},    {1, kMin, kMax, 1, 1, 0, 0},
      {1, 2, 5, 1, 0, -1, 0},      {1, -3, -1, 1, 0, -1, 0},    {1, 5, 2, 1, 0, -1, 0},
      {1, 1, kMax, 2, 0, -1, 0},   {1, -1, kMin, -1, 1, 0, 0},  {1, kMax, kMin, -1, 1, 0, 0},
      {1, kMax, kMin, -3, 1, 0, 0}, {1, 6, 2, -2, 0, -1, 0},    {1, -2, -9, -1, 0, -1, 0},
      {1, 3, -1, -1, 0, -1, 0},    {1, -100, 100, 5, 1, 0, 0},  {1, 100, -100, -4, 1, 0, 0},
      {1, 0, 1, kMax, 1, 0, 0},    {1, 6, 0, kMin, 0, -1, 0},   {1, kMin, kMax, kMax, 1, 0, 0},
      {1, 4, kMin, kMin, 1, 0, 0}, {7, 0, kMax, 1, 7, 0, 1},    {7, kMin, kMax, 1, 7, 0, 1},
      {7, 2, 5, 1, 3, 2, 1},       {7, -3, -1, 1, 2, 4, 1},     {7, 5, 2, 1, 0, -1, 0},
      {7, 1, kMax, 2, 3, 1, 2},    {7, 1, kMax, 3, 2, 1, 3},    {7, -1, kMin, -1, 7, 6, -1},
      {7, kMax, kMin, -1, 7, 6, -1}, {7, kMax, kMin, -3, 3, 6, -3}, {7, 6, 2, -2, 2, 6, -2},
      {7, -2, -9, -1, 6, 5, -1},   {7, 3, 3, 1, 0, -1, 0},      {7, 3, -1, -1, 0, -1, 0},
      {7, -100, 100, 5, 2, 0, 5},  {7, 100, -100, -4, 2, 6, -4}, {7, 0, 1, kMax, 1, 0, 0},
      {7, 6, 0, kMin, 1, 6, 0},    {7, kMin, kMax, kMax, 1, 0, 0}, {7, 4, kMin, kMin, 1, 4, 0},
  };
  Node n = node(OpType::Slice);
  for (const auto& c : cases) {
    CAPTURE(c[0]); CAPTURE(c[1]); CAPTURE(c[2]); CAPTURE(c[3]);
    Tensor x = iota({2, c[0]});
    Tensor st = i64s({c[1]}), en = i64s({c[2]}), ax = i64s({-1}), sp = i64s({c[3]});
    for (KernelFn fn : {KernelFn(nullptr), KernelFn(cpu::slice_blocks)}) {
      Result r = run(n, {&x, &st, &en, &ax, &sp}, fn);
      REQUIRE(r.types[0].shape == Shape{2, c[4]});
      for (int64_t i = 0; i < c[4]; i++) {
        CHECK(r[0].ptr<float>()[i] == (float)(c[5] + i * c[6]));
        CHECK(r[0].ptr<float>()[c[4] + i] == (float)(c[0] + c[5] + i * c[6]));
      }
    }
  }
}

TEST_CASE("shape ops: Slice axes, defaults and errors") {
  Tensor x = iota({3, 4, 5});
  Node n = node(OpType::Slice);
  Tensor st = i64s({1, -1}), en = i64s({3, -6});
  Tensor ax = i64s({0, 2}), sp = i64s({1, -2});
  Result r = run(n, {&x, &st, &en, &ax, &sp});
  CHECK(r.types[0].shape == Shape{2, 4, 3});
  CHECK(r[0].ptr<float>()[0] == 20 + 4);   // x[1, 0, 4]
  CHECK(r[0].ptr<float>()[2] == 20 + 0);   // x[1, 0, 0]
  // Absent axes mean 0, 1, ...; absent steps mean 1 (int32 inputs too).
  Tensor st32 = i32s({1, 1}), en32 = i32s({2, 3});
  r = run(n, {&x, &st32, &en32});
  CHECK(r.types[0].shape == Shape{1, 2, 5});
  CHECK(r[0].ptr<float>()[0] == 25);
  Tensor zero = i64s({1, 0}), dup = i64s({0, -3}), far = i64s({0, 3}), len1 = i64s({0});
  CHECK(error_of([&] { run(n, {&x, &st, &en, &ax, &zero}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &st, &en, &dup}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &st, &en, &far}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &st, &len1}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &st, &en, nullptr, &len1}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Gather") {
  Tensor x = iota({5, 3});
  Node n = node(OpType::Gather);
  Tensor idx = i64s({4, 0, -1, 2});
  Result r = run(n, {&x, &idx});
  CHECK(r.types[0].shape == Shape{4, 3});
  CHECK(f32s(r[0]) == std::vector<float>{12, 13, 14, 0, 1, 2, 12, 13, 14, 6, 7, 8});

  n.attrs.set("axis", int64_t(-1));
  Tensor idx2 = i32s({2, 0, 1, 1}, {2, 2});
  r = run(n, {&x, &idx2});
  CHECK(r.types[0].shape == Shape{5, 2, 2});
  CHECK(f32s(r[0])[4] == 5);  // x[1, 2]
  Tensor s = i64_scalar(-3);
  CHECK(out_shape(n, {&x, &s}) == Shape{5});
  CHECK(f32s(run(n, {&x, &s})[0]) == std::vector<float>{0, 3, 6, 9, 12});

  Tensor e = i64s({});
  CHECK(out_shape(n, {&x, &e}) == Shape{5, 0});

  // An out-of-range index is the feed's fault: InputError naming the value and the dim.
  Node g = node(OpType::Gather);
  for (int64_t bad : {5L, -6L, kMax, kMin}) {
    Tensor bi = i64s({0, bad});
    for (KernelFn fn : {KernelFn(nullptr), KernelFn(cpu::gather_rows)}) {
      try {
        run(g, {&x, &bi}, fn, 2, false);
        FAIL("no error for index " << bad);
      } catch (const Error& err) {
        CHECK(err.kind() == ErrorKind::Input);
        CHECK(std::string(err.what()).find(std::to_string(bad)) != std::string::npos);
        CHECK(std::string(err.what()).find("size 5") != std::string::npos);
      }
    }
  }
  g.attrs.set("axis", int64_t(2));
  CHECK(error_of([&] { run(g, {&x, &idx}); }) == ErrorKind::Model);
  Tensor fidx = iota({2});
  g.attrs.set("axis", int64_t(0));
  CHECK(error_of([&] { run(g, {&x, &fidx}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Expand") {
  Tensor x = iota({3, 1});
  Node n = node(OpType::Expand);
  Tensor s1 = i64s({2, 1, 4}), s2 = i64s({1}), s3 = i64s({3, 0}), bad = i64s({2, 2}), neg = i64s({-1});
  Result r = run(n, {&x, &s1});
  CHECK(r.types[0].shape == Shape{2, 3, 4});
  std::vector<float> want;
  for (int a = 0; a < 2; a++) for (int b = 0; b < 3; b++) for (int c = 0; c < 4; c++) want.push_back((float)b);
  CHECK(f32s(r[0]) == want);
  CHECK(out_shape(n, {&x, &s2}) == Shape{3, 1});  // bidirectional: a smaller shape keeps input dims
  CHECK(out_shape(n, {&x, &s3}) == Shape{3, 0});
  CHECK(error_of([&] { run(n, {&x, &bad}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(n, {&x, &neg}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Shape and Size") {
  CHECK((op_def(OpType::Shape).flags & kOpShapeOnly) != 0);
  CHECK((op_def(OpType::Size).flags & kOpShapeOnly) != 0);
  Tensor x = Tensor::zeros(DType::F16, {2, 3, 4});
  Node n = node(OpType::Shape);
  Result r = run(n, {&x});
  CHECK(r.types[0].dtype == DType::I64);
  CHECK(ints(r[0]) == std::vector<int64_t>{2, 3, 4});
  // {start, end} -> dims, clamped to [0, rank] after adding rank to negatives.
  struct C { std::optional<int64_t> start, end; std::vector<int64_t> want; };
  for (const C& c : std::vector<C>{{-1, {}, {4}}, {{}, -1, {2, 3}}, {1, 2, {3}}, {-10, 10, {2, 3, 4}},
                                   {2, 1, {}}, {3, {}, {}}, {kMin, kMax, {2, 3, 4}}}) {
    Node m = node(OpType::Shape);
    if (c.start) m.attrs.set("start", *c.start);
    if (c.end) m.attrs.set("end", *c.end);
    r = run(m, {&x});
    CHECK(ints(r[0]) == c.want);
  }
  Node s = node(OpType::Size);
  r = run(s, {&x});
  CHECK(r.types[0].shape == Shape{});
  CHECK(ints(r[0]) == std::vector<int64_t>{24});
  Tensor e = iota({3, 0});
  CHECK(ints(run(s, {&e})[0]) == std::vector<int64_t>{0});
}

TEST_CASE("shape ops: Range") {
  Node n = node(OpType::Range);
  auto range_i64 = [&](int64_t a, int64_t b, int64_t d) {
    Tensor ta = i64_scalar(a), tb = i64_scalar(b), td = i64_scalar(d);
    return ints(run(n, {&ta, &tb, &td})[0]);
  };
  CHECK(range_i64(3, 9, 3) == std::vector<int64_t>{3, 6});
  CHECK(range_i64(10, 4, -2) == std::vector<int64_t>{10, 8, 6});
  CHECK(range_i64(0, 7, 1).size() == 7);
  CHECK(range_i64(5, 5, 1).empty());
  CHECK(range_i64(5, 1, 1).empty());
  CHECK(range_i64(kMin, kMax, int64_t(1) << 62) ==
            std::vector<int64_t>{kMin, kMin / 2, 0, int64_t(1) << 62});
  CHECK(error_of([&] { range_i64(0, 5, 0); }) == ErrorKind::Model);
  CHECK(error_of([&] { range_i64(0, kMax, 1); }) == ErrorKind::Model);  // absurd length

  auto f32_scalar = [](float v) {
    Tensor t = Tensor::empty(DType::F32, {});
    *t.ptr<float>() = v;
    return t;
  };
  Tensor a = f32_scalar(1.0f), b = f32_scalar(2.0f), d = f32_scalar(0.3f);
  Result r = run(n, {&a, &b, &d});
  CHECK(r.types[0].shape == Shape{4});  // ceil(1 / 0.3) = 4 in double, as numpy
  CHECK(r[0].ptr<float>()[3] == (float)(1.0 + 3 * (double)0.3f));
  Tensor nd = f32_scalar(-0.5f), z = f32_scalar(0.0f);
  r = run(n, {&b, &a, &nd});
  CHECK(f32s(r[0]) == std::vector<float>{2.0f, 1.5f});
  CHECK(error_of([&] { run(n, {&a, &b, &z}); }) == ErrorKind::Model);
  Tensor i = i64_scalar(1);
  CHECK(error_of([&] { run(n, {&a, &i, &d}); }) == ErrorKind::Model);  // mixed dtypes

  Tensor s16 = Tensor::empty(DType::I16, {}), l16 = Tensor::empty(DType::I16, {}), d16 = Tensor::empty(DType::I16, {});
  *s16.ptr<int16_t>() = -3;
  *l16.ptr<int16_t>() = 4;
  *d16.ptr<int16_t>() = 3;
  CHECK(ints(run(n, {&s16, &l16, &d16})[0]) == std::vector<int64_t>{-3, 0, 3});
  // Limits must be known at plan time.
  CHECK(error_of([&] { run(n, {&s16, &l16, &d16}, nullptr, 2, false); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: Trilu") {
  Tensor x = iota({2, 3, 4});
  for (int upper : {0, 1}) {
    for (int64_t k : {0L, 1L, -1L, 3L, -5L, kMax, kMin}) {
      Node n = node(OpType::Trilu);
      n.attrs.set("upper", int64_t(upper));
      Tensor tk = i64_scalar(k);
      Result r = run(n, {&x, &tk});
      for (int64_t b = 0; b < 2; b++)
        for (int64_t i = 0; i < 3; i++)
          for (int64_t j = 0; j < 4; j++) {
            int64_t at = b * 12 + i * 4 + j;
            bool keep = upper ? (j - i >= k) : (j - i <= k);
            CHECK(r[0].ptr<float>()[at] == (keep ? (float)at : 0.f));
          }
    }
  }
  Node n = node(OpType::Trilu);
  Result r = run(n, {&x});  // upper, k = 0
  CHECK(r[0].ptr<float>()[4] == 0);
  CHECK(r[0].ptr<float>()[5] == 5);
  Tensor v = iota({4});
  CHECK(error_of([&] { run(n, {&v}); }) == ErrorKind::Model);
  Tensor e = iota({2, 0, 3});
  CHECK(out_shape(n, {&e}) == Shape{2, 0, 3});
  Tensor kk = i64s({1, 2});
  CHECK(error_of([&] { run(n, {&x, &kk}); }) == ErrorKind::Model);
}

TEST_CASE("shape ops: ConstantOfShape") {
  Node n = node(OpType::ConstantOfShape);
  Tensor s = i64s({2, 3});
  Result r = run(n, {&s});
  CHECK(r.types[0].dtype == DType::F32);
  CHECK(f32s(r[0]) == std::vector<float>(6, 0.f));
  Tensor v = i64s({7});
  n.attrs.set("value", v);
  r = run(n, {&s});
  CHECK(r.types[0].dtype == DType::I64);
  CHECK(ints(r[0]) == std::vector<int64_t>(6, 7));
  Tensor scalar_shape = i64s({}), zero = i64s({4, 0});
  CHECK(ints(run(n, {&scalar_shape})[0]) == std::vector<int64_t>{7});
  CHECK(out_shape(n, {&zero}) == Shape{4, 0});
  Tensor two = i64s({1, 2}), neg = i64s({-1});
  n.attrs.set("value", two);
  CHECK(error_of([&] { run(n, {&s}); }) == ErrorKind::Model);
  n.attrs.set("value", v);
  CHECK(error_of([&] { run(n, {&neg}); }) == ErrorKind::Model);
}

// ---- fast kernels against the references --------------------------------------------------

TEST_CASE("shape kernels: registry picks the movement kernels") {
  Node n = node(OpType::Gather);
  InferCtx ictx{n, {TensorType{DType::F32, {5, 3}}, TensorType{DType::I64, {4}}}, {nullptr, nullptr}};
  const KernelEntry* e = cpu_kernel_find(ictx, Isa::Generic);
  REQUIRE(e != nullptr);
  CHECK(std::string(e->name) == "gather_rows_f32");
}

TEST_CASE("shape kernels: Gather matches the reference") {
  uint32_t seed = 1;
  for (DType dt : {DType::F32, DType::F16, DType::I64, DType::U8}) {
    for (Shape s : std::vector<Shape>{{7}, {1, 5}, {7, 33}, {3, 1, 129}, {2, 0, 3}, {500, 64}}) {
      for (int axis = -(int)s.size(); axis < (int)s.size(); axis++) {
        int64_t dim = s[axis < 0 ? axis + s.size() : axis];
        if (dim == 0) continue;
        std::mt19937 rng(seed++);
        std::vector<int64_t> iv(s.size() == 2 && s[0] == 500 ? 300 : 7);
        for (auto& v : iv) v = (int64_t)(rng() % (2 * dim)) - dim;
        Tensor x = random_tensor(dt, s, seed++), idx = i64s(iv);
        Node n = node(OpType::Gather);
        n.attrs.set("axis", int64_t(axis));
        Result want = run(n, {&x, &idx});
        for (int threads : {1, 3, 8}) CHECK(same_bytes(run(n, {&x, &idx}, cpu::gather_rows, threads)[0], want[0]));
      }
    }
  }
}

TEST_CASE("shape kernels: Transpose matches the reference") {
  uint32_t seed = 7;
  std::vector<Shape> shapes = {{2, 7, 3, 5}, {1, 7, 1, 9}, {3, 1, 4, 1}, {2, 33, 4, 40}, {1, 1, 1, 1}, {2, 0, 3, 1}};
  std::vector<int64_t> perm = {0, 1, 2, 3};
  for (DType dt : {DType::F32, DType::BF16, DType::U8, DType::F64}) {
    for (const Shape& s : shapes) {
      std::sort(perm.begin(), perm.end());
      do {
        Tensor x = random_tensor(dt, s, seed++);
        Node n = node(OpType::Transpose);
        n.attrs.set("perm", perm);
        Result want = run(n, {&x});
        CAPTURE(shape_str(s));
        CAPTURE(shape_str(perm));
        CHECK(same_bytes(run(n, {&x}, cpu::transpose_blocked, 3)[0], want[0]));
      } while (std::next_permutation(perm.begin(), perm.end()));
    }
  }
  // 2-D, odd sizes past one tile, and the BERT head split / key transpose.
  for (auto [s, p] : std::vector<std::pair<Shape, std::vector<int64_t>>>{
           {{67, 129}, {1, 0}}, {{1, 1000}, {1, 0}}, {{2, 77, 12, 32}, {0, 2, 1, 3}},
           {{2, 77, 12, 32}, {0, 2, 3, 1}}, {{5}, {0}}, {{}, {}}, {{3, 5, 7, 2, 3}, {4, 2, 0, 3, 1}}}) {
    Tensor x = random_tensor(DType::F32, s, seed++);
    Node n = node(OpType::Transpose);
    n.attrs.set("perm", p);
    Result want = run(n, {&x});
    for (int threads : {1, 4}) CHECK(same_bytes(run(n, {&x}, cpu::transpose_blocked, threads)[0], want[0]));
  }
}

TEST_CASE("shape kernels: Concat matches the reference") {
  uint32_t seed = 11;
  for (DType dt : {DType::F32, DType::F16, DType::Bool}) {
    for (int axis = -3; axis < 3; axis++) {
      for (int64_t outer_big : {2L, 700L}) {
        Shape a = {outer_big, 7, 3}, b = a, c = a;
        int ax = axis < 0 ? axis + 3 : axis;
        b[ax] = 1;
        c[ax] = 0;
        Tensor ta = random_tensor(dt, a, seed++), tb = random_tensor(dt, b, seed++), tc = random_tensor(dt, c, seed++);
        Node n = node(OpType::Concat);
        n.attrs.set("axis", int64_t(axis));
        Result want = run(n, {&ta, &tb, &tc, &ta});
        for (int threads : {1, 4})
          CHECK(same_bytes(run(n, {&ta, &tb, &tc, &ta}, cpu::concat_blocks, threads)[0], want[0]));
      }
    }
  }
  // One outer row with large blocks (the piece-splitting path).
  Tensor big = random_tensor(DType::F32, {1, 100000}, 2), small = random_tensor(DType::F32, {1, 7}, 3);
  Node n = node(OpType::Concat);
  n.attrs.set("axis", int64_t(1));
  Result want = run(n, {&big, &small, &big});
  CHECK(same_bytes(run(n, {&big, &small, &big}, cpu::concat_blocks, 4)[0], want[0]));
}

TEST_CASE("shape kernels: Slice matches the reference") {
  std::mt19937 rng(5);
  Shape s = {3, 7, 1, 10};
  for (DType dt : {DType::F32, DType::F16, DType::I64}) {
    Tensor x = random_tensor(dt, s, 17);
    for (int trial = 0; trial < 300; trial++) {
      std::vector<int64_t> axes, starts, ends, steps;
      for (int a = 0; a < 4; a++) {
        if (rng() % 2) continue;
        axes.push_back(rng() % 2 ? a : a - 4);
        starts.push_back((int64_t)(rng() % 25) - 12);
        ends.push_back(rng() % 5 == 0 ? (rng() % 2 ? kMax : kMin) : (int64_t)(rng() % 25) - 12);
        int64_t st = (int64_t)(rng() % 7) - 3;
        steps.push_back(st == 0 ? 1 : st);
      }
      Tensor ts = i64s(starts), te = i64s(ends), ta = i64s(axes), tp = i64s(steps);
      Node n = node(OpType::Slice);
      Result want = run(n, {&x, &ts, &te, &ta, &tp});
      CHECK(same_bytes(run(n, {&x, &ts, &te, &ta, &tp}, cpu::slice_blocks, 1 + trial % 4)[0], want[0]));
    }
  }
}
