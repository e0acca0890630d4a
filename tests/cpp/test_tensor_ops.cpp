// Tensor-manipulation ops (ops_tensor.cpp, ops_tensor_index.cpp): what the Python case table
// cannot reach through onnx.reference (Pad cropping, hostile shapes and attributes, runtime
// index errors, Einsum equation errors) and a few hand-computed results.
#include <cstring>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "ops/op_util.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using ember::test::error_of;
using ember::test::node;

namespace {

Tensor i64s(const std::vector<int64_t>& v, Shape s = {}) {
  if (s.empty() && v.size() != 1) s = {(int64_t)v.size()};
  if (v.empty()) s = {0};
  Tensor t = Tensor::empty(DType::I64, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 8);
  return t;
}

Tensor f32s(const std::vector<float>& v, Shape s) {
  Tensor t = Tensor::empty(DType::F32, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = (float)i;
  return t;
}

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel());
}

test::OpRun run(Node n, const std::vector<const Tensor*>& in, bool values_known = true) {
  return test::op_run(std::move(n), in, nullptr, false, 1, values_known);
}

Node with(Node n, const char* k, AttrValue v) {
  n.attrs.set(k, std::move(v));
  return n;
}

}  // namespace

TEST_CASE("tensor ops: Pad crops with negative pads in every mode") {
  Tensor x = iota({3, 4}), pads = i64s({-1, 1, 0, -2});  // rows 1..2, one column of padding left
  for (const char* mode : {"constant", "edge", "reflect", "wrap"}) {
    auto r = run(with(node(OpType::Pad), "mode", std::string(mode)), {&x, &pads});
    REQUIRE(r[0].shape() == Shape{2, 3});
    std::vector<float> v = values(r[0]);
    CHECK(v[1] == 4.f);  // x[1, 0]
    CHECK(v[2] == 5.f);
    CHECK(v[4] == 8.f);
    float left = v[0];  // the padded column at row 1
    if (std::string(mode) == "constant") CHECK(left == 0.f);
    if (std::string(mode) == "edge") CHECK(left == 4.f);
    if (std::string(mode) == "reflect") CHECK(left == 5.f);
    if (std::string(mode) == "wrap") CHECK(left == 7.f);
  }
}

TEST_CASE("tensor ops: Pad reflect and wrap past the dim repeat periodically") {
  Tensor x = iota({3}), pads = i64s({5, 4});
  auto r = run(with(node(OpType::Pad), "mode", std::string("reflect")), {&x, &pads});
  CHECK(values(r[0]) == std::vector<float>{1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2});
  auto w = run(with(node(OpType::Pad), "mode", std::string("wrap")), {&x, &pads});
  CHECK(values(w[0]) == std::vector<float>{1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0});
}

TEST_CASE("tensor ops: hostile shapes and attributes are Model errors, not crashes") {
  Tensor x = iota({3, 4});
  Tensor huge = i64s({INT64_MAX / 2, 3}), neg = i64s({-1, 2});
  CHECK(error_of([&] { run(node(OpType::Tile), {&x, &huge}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(node(OpType::Tile), {&x, &neg}); }) == ErrorKind::Model);
  Tensor short_reps = i64s({2});
  CHECK(error_of([&] { run(node(OpType::Tile), {&x, &short_reps}); }) == ErrorKind::Model);
  Tensor big_pads = i64s({INT64_MAX, 0, INT64_MAX, 0}), crop = i64s({-2, 0, -2, 0});
  CHECK(error_of([&] { run(node(OpType::Pad), {&x, &big_pads}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(node(OpType::Pad), {&x, &crop}); }) == ErrorKind::Model);
  Tensor pads = i64s({1, 1, 1, 1});
  CHECK(error_of([&] { run(with(node(OpType::Pad), "mode", std::string("mirror")), {&x, &pads}); }) ==
        ErrorKind::Model);
  Tensor empty = Tensor::empty(DType::F32, {0, 2});
  CHECK(error_of([&] { run(with(node(OpType::Pad), "mode", std::string("edge")), {&empty, &pads}); }) ==
        ErrorKind::Model);
  Tensor x4 = iota({1, 8, 2, 2});
  CHECK(error_of([&] { run(with(node(OpType::DepthToSpace), "blocksize", int64_t(1) << 40), {&x4}); }) ==
        ErrorKind::Model);
  CHECK(error_of([&] { run(with(node(OpType::DepthToSpace), "blocksize", int64_t(0)), {&x4}); }) ==
        ErrorKind::Model);
  CHECK(error_of([&] { run(with(node(OpType::SpaceToDepth), "blocksize", int64_t(3)), {&x4}); }) ==
        ErrorKind::Model);
  CHECK(error_of([&] { run(with(node(OpType::ArgMax), "axis", int64_t(2)), {&x}); }) == ErrorKind::Model);
  Tensor axes = i64s({0, 0});
  CHECK(error_of([&] { run(node(OpType::ReduceMin), {&x, &axes}); }) == ErrorKind::Model);
  // Values needed at plan time but unknown.
  CHECK(error_of([&] { run(node(OpType::Tile), {&x, &short_reps}, false); }).has_value());
}

TEST_CASE("tensor ops: out-of-range indices are Input errors at run time") {
  Tensor x = iota({3, 4});
  Tensor bad = i64s({0, 4, 1, 2}, {1, 4}), ok_neg = i64s({-4, 3, 0, -1}, {1, 4});
  CHECK(error_of([&] { run(with(node(OpType::GatherElements), "axis", int64_t(1)), {&x, &bad}); }) ==
        ErrorKind::Input);
  auto g = run(with(node(OpType::GatherElements), "axis", int64_t(1)), {&x, &ok_neg});
  CHECK(values(g[0]) == std::vector<float>{0, 3, 0, 3});
  Tensor upd = f32s({9, 9, 9, 9}, {1, 4});
  CHECK(error_of([&] { run(with(node(OpType::ScatterElements), "axis", int64_t(1)), {&x, &bad, &upd}); }) ==
        ErrorKind::Input);
  Tensor nd_bad = i64s({3}, {1, 1}), nd_upd = f32s({1, 2, 3, 4}, {1, 4});
  CHECK(error_of([&] { run(node(OpType::ScatterND), {&x, &nd_bad, &nd_upd}); }) == ErrorKind::Input);
  Tensor nd_neg = i64s({-1}, {1, 1});
  auto s = run(with(node(OpType::ScatterND), "reduction", std::string("add")), {&x, &nd_neg, &nd_upd});
  CHECK(values(s[0])[8] == 9.f);
  CHECK(values(s[0])[11] == 15.f);
}

TEST_CASE("tensor ops: OneHot wraps negatives and leaves out-of-range rows off") {
  Tensor ind = i64s({0, -1, 3, -4}, {4}), depth = i64s({3}), vals = f32s({0.5f, 2.f}, {2});
  auto r = run(node(OpType::OneHot), {&ind, &depth, &vals});
  REQUIRE(r[0].shape() == Shape{4, 3});
  CHECK(values(r[0]) == std::vector<float>{2, .5f, .5f, .5f, .5f, 2, .5f, .5f, .5f, .5f, .5f, .5f});
  Tensor zero = i64s({0});
  CHECK(error_of([&] { run(node(OpType::OneHot), {&ind, &zero, &vals}); }) == ErrorKind::Model);
  CHECK(error_of([&] { run(with(node(OpType::OneHot), "axis", int64_t(3)), {&ind, &depth, &vals}); }) ==
        ErrorKind::Model);
}

TEST_CASE("tensor ops: Einsum diagonals, implicit output and bad equations") {
  Tensor m = iota({3, 3});
  auto tr = run(with(node(OpType::Einsum), "equation", std::string("ii")), {&m});
  CHECK(tr[0].rank() == 0);
  CHECK(values(tr[0])[0] == 12.f);
  Tensor a = iota({2, 3}), b = iota({3, 2});
  auto mm = run(with(node(OpType::Einsum), "equation", std::string("ij,jk")), {&a, &b});
  CHECK(values(mm[0]) == std::vector<float>{10, 13, 28, 40});
  for (const char* eq : {"ij,jk->ix", "ij->ii", "i.j", "ijk", "ij,jk,k", "i..j", "ij->i->j"})
    CHECK(error_of([&] { run(with(node(OpType::Einsum), "equation", std::string(eq)), {&a, &b}); }) ==
          ErrorKind::Model);
  Tensor c = iota({4, 2});
  CHECK(error_of([&] { run(with(node(OpType::Einsum), "equation", std::string("ij,jk")), {&a, &c}); }) ==
        ErrorKind::Model);
}

TEST_CASE("tensor ops: reductions over an empty set and ArgMax ties") {
  Tensor e = Tensor::empty(DType::F32, {0, 2}), ax = i64s({0});
  auto mn = run(node(OpType::ReduceMin), {&e, &ax});
  CHECK(std::isinf(values(mn[0])[0]));
  auto pr = run(node(OpType::ReduceProd), {&e, &ax});
  CHECK(values(pr[0]) == std::vector<float>{1, 1});
  auto l2 = run(node(OpType::ReduceL2), {&e, &ax});
  CHECK(values(l2[0]) == std::vector<float>{0, 0});
  Tensor t = f32s({1, 3, 3, 2}, {4});
  auto first = run(node(OpType::ArgMax), {&t});
  CHECK(first[0].ptr<int64_t>()[0] == 1);
  auto last = run(with(node(OpType::ArgMax), "select_last_index", int64_t(1)), {&t});
  CHECK(last[0].ptr<int64_t>()[0] == 2);
}
