// CNN layers and activations (cpp/src/ops/ops_nn.cpp, ops_pool.cpp): integer Mod semantics
// and its division-by-zero error, Round's ties, inference-only BatchNormalization, both
// GroupNormalization affine forms, MaxPool indices, and hostile pooling attributes.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "op_test_util.h"

using namespace ember;
using ember::test::error_of;
using ember::test::op_run;
using ember::test::OpRun;

namespace {

template <class T>
Tensor make(DType dt, const Shape& s, const std::vector<T>& v) {
  Tensor t = Tensor::empty(dt, s);
  REQUIRE((int64_t)v.size() == t.numel());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(T));
  return t;
}

Tensor f32(const Shape& s, const std::vector<float>& v) { return make(DType::F32, s, v); }

Node nn_node(OpType op, int outputs = 1) { return ember::test::node(op, outputs); }

OpRun run(const Node& n, const std::vector<const Tensor*>& in) {
  return op_run(n, in, nullptr, false, 1, true);
}

}  // namespace

TEST_CASE("nn: integer Mod follows the divisor's sign unless fmod=1") {
  Tensor a = make<int32_t>(DType::I32, {6}, {7, -7, 7, -7, INT32_MIN, 0});
  Tensor b = make<int32_t>(DType::I32, {6}, {3, 3, -3, -3, -1, 5});
  Node n = nn_node(OpType::Mod);
  OpRun r = run(n, {&a, &b});
  std::vector<int32_t> want = {1, 2, -2, -1, 0, 0};
  for (int i = 0; i < 6; i++) CHECK(r[0].ptr<int32_t>()[i] == want[i]);
  n.attrs.set("fmod", int64_t(1));
  OpRun f = run(n, {&a, &b});
  std::vector<int32_t> want_f = {1, -1, 1, -1, 0, 0};
  for (int i = 0; i < 6; i++) CHECK(f[0].ptr<int32_t>()[i] == want_f[i]);
}

TEST_CASE("nn: integer Mod by zero is an input error") {
  Tensor a = make<int64_t>(DType::I64, {2}, {5, 6});
  Tensor b = make<int64_t>(DType::I64, {2}, {2, 0});
  CHECK(error_of([&] { run(nn_node(OpType::Mod), {&a, &b}); }) == ErrorKind::Input);
}

TEST_CASE("nn: float Mod with fmod=0 takes the divisor's sign") {
  Tensor a = f32({3}, {5.5f, -5.5f, 4.0f});
  Tensor b = f32({3}, {-2.0f, 2.0f, -2.0f});
  OpRun r = run(nn_node(OpType::Mod), {&a, &b});
  CHECK(r[0].ptr<float>()[0] == -0.5f);
  CHECK(r[0].ptr<float>()[1] == 0.5f);
  CHECK(r[0].ptr<float>()[2] == 0.0f);
  CHECK(std::signbit(r[0].ptr<float>()[2]));
}

TEST_CASE("nn: Round ties to even") {
  Tensor x = f32({6}, {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f});
  OpRun r = run(nn_node(OpType::Round), {&x});
  std::vector<float> want = {-2, -2, -0, 0, 2, 2};
  for (int i = 0; i < 6; i++) CHECK(r[0].ptr<float>()[i] == want[i]);
}

TEST_CASE("nn: PRelu slope must broadcast onto X without growing it") {
  Tensor x = f32({2, 3}, {-1, 2, -3, 4, -5, 6});
  Tensor s = f32({2, 1, 1}, {1, 1});
  CHECK(error_of([&] { run(nn_node(OpType::PRelu), {&x, &s}); }) == ErrorKind::Model);
  Tensor c = f32({3}, {0.5f, 1, 2});
  OpRun r = run(nn_node(OpType::PRelu), {&x, &c});
  std::vector<float> want = {-0.5f, 2, -6, 4, -5, 6};
  for (int i = 0; i < 6; i++) CHECK(r[0].ptr<float>()[i] == want[i]);
}

TEST_CASE("nn: BatchNormalization refuses training mode") {
  Tensor x = f32({1, 2, 2}, {1, 2, 3, 4});
  Tensor p = f32({2}, {1, 1});
  Node n = nn_node(OpType::BatchNormalization);
  n.attrs.set("training_mode", int64_t(1));
  CHECK(error_of([&] { run(n, {&x, &p, &p, &p, &p}); }) == ErrorKind::Model);
  Tensor bad = f32({3}, {1, 1, 1});
  CHECK(error_of([&] { run(nn_node(OpType::BatchNormalization), {&x, &p, &p, &p, &bad}); }) ==
        ErrorKind::Model);
}

TEST_CASE("nn: GroupNormalization per-channel and legacy per-group affine agree") {
  Tensor x = f32({1, 4, 2}, {1, 2, 3, 4, -1, 0, 5, 9});
  Tensor sc_c = f32({4}, {2, 2, 3, 3});
  Tensor b_c = f32({4}, {1, 1, -1, -1});
  Tensor sc_g = f32({2}, {2, 3});
  Tensor b_g = f32({2}, {1, -1});
  Node n = nn_node(OpType::GroupNormalization);
  n.attrs.set("num_groups", int64_t(2));
  OpRun a = run(n, {&x, &sc_c, &b_c});
  CHECK(error_of([&] { run(n, {&x, &sc_g, &b_g}); }) == ErrorKind::Model);
  n.attrs.set("legacy_group_affine", int64_t(1));
  OpRun b = run(n, {&x, &sc_g, &b_g});
  for (int i = 0; i < 8; i++) CHECK(a[0].ptr<float>()[i] == b[0].ptr<float>()[i]);
  // group 0 holds {1, 2, 3, 4}: mean 2.5, var 1.25
  CHECK(a[0].ptr<float>()[0] == doctest::Approx(2 * (1 - 2.5) / std::sqrt(1.25 + 1e-5) + 1));
  n.attrs.set("num_groups", int64_t(3));
  CHECK(error_of([&] { run(n, {&x, &sc_g, &b_g}); }) == ErrorKind::Model);
}

TEST_CASE("nn: MaxPool indices, row- and column-major") {
  // [1, 1, 2, 3]; 2x2 window, stride 1 -> [1, 1, 1, 2]
  Tensor x = f32({1, 1, 2, 3}, {1, 5, 2, 4, 3, 6});
  Node n = nn_node(OpType::MaxPool, 2);
  n.attrs.set("kernel_shape", std::vector<int64_t>{2, 2});
  OpRun r = run(n, {&x});
  REQUIRE(r[0].shape() == Shape{1, 1, 1, 2});
  CHECK(r[0].ptr<float>()[0] == 5);
  CHECK(r[0].ptr<float>()[1] == 6);
  CHECK(r[1].ptr<int64_t>()[0] == 1);
  CHECK(r[1].ptr<int64_t>()[1] == 5);
  n.attrs.set("storage_order", int64_t(1));
  OpRun c = run(n, {&x});
  CHECK(c[1].ptr<int64_t>()[0] == 2);  // (h 0, w 1) column-major over [2, 3]
  CHECK(c[1].ptr<int64_t>()[1] == 5);  // (h 1, w 2)
}

TEST_CASE("nn: AveragePool count_include_pad") {
  Tensor x = f32({1, 1, 3}, {3, 6, 9});
  Node n = nn_node(OpType::AveragePool);
  n.attrs.set("kernel_shape", std::vector<int64_t>{2});
  n.attrs.set("pads", std::vector<int64_t>{1, 1});
  n.attrs.set("strides", std::vector<int64_t>{2});
  OpRun r = run(n, {&x});
  REQUIRE(r[0].shape() == Shape{1, 1, 2});
  CHECK(r[0].ptr<float>()[0] == 3);
  CHECK(r[0].ptr<float>()[1] == 7.5f);
  n.attrs.set("count_include_pad", int64_t(1));
  OpRun c = run(n, {&x});
  CHECK(c[0].ptr<float>()[0] == 1.5f);
  CHECK(c[0].ptr<float>()[1] == 7.5f);
}

TEST_CASE("nn: hostile pooling attributes fail cleanly") {
  Tensor x = f32({1, 1, 4, 4}, std::vector<float>(16, 1.0f));
  const int64_t big = std::numeric_limits<int64_t>::max();
  struct Bad {
    const char* attr;
    std::vector<int64_t> v;
  };
  std::vector<Bad> bad = {
      {"kernel_shape", {big, big}}, {"kernel_shape", {0, 2}}, {"kernel_shape", {2}},
      {"strides", {0, 1}}, {"strides", {-1, 1}}, {"dilations", {big, 1}},
      {"pads", {big, 0, 0, big}}, {"pads", {-1, 0, 0, 0}}, {"kernel_shape", {5, 5}},
      {"pads", {1, 1}},
  };
  for (OpType op : {OpType::MaxPool, OpType::AveragePool}) {
    for (const Bad& b : bad) {
      Node n = nn_node(op);
      n.attrs.set("kernel_shape", std::vector<int64_t>{2, 2});
      n.attrs.set(b.attr, b.v);
      CAPTURE(b.attr);
      CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
    }
    Node n = nn_node(op);
    n.attrs.set("kernel_shape", std::vector<int64_t>{2, 2});
    n.attrs.set("auto_pad", std::string("BOGUS"));
    CHECK(error_of([&] { run(n, {&x}); }) == ErrorKind::Model);
  }
  Tensor x1 = f32({1, 4}, {1, 2, 3, 4});
  Node n = nn_node(OpType::MaxPool);
  n.attrs.set("kernel_shape", std::vector<int64_t>{2});
  CHECK(error_of([&] { run(n, {&x1}); }) == ErrorKind::Model);
}

TEST_CASE("nn: a huge pooling window runs over its taps inside the input only") {
  Tensor x = f32({1, 1, 4}, {1, 2, 3, 4});
  const int64_t k = int64_t(1) << 31;
  Node n = nn_node(OpType::AveragePool);
  n.attrs.set("kernel_shape", std::vector<int64_t>{k});
  n.attrs.set("pads", std::vector<int64_t>{k, k});
  n.attrs.set("strides", std::vector<int64_t>{k});
  n.attrs.set("count_include_pad", int64_t(1));
  OpRun r = run(n, {&x});
  REQUIRE(r[0].shape() == Shape{1, 1, 2});
  CHECK(r[0].ptr<float>()[0] == 0.0f);
  CHECK(r[0].ptr<float>()[1] == doctest::Approx(10.0 / (double)k));
  Node m = n;
  m.op = OpType::MaxPool;
  m.attrs = Attrs();
  m.attrs.set("kernel_shape", std::vector<int64_t>{k});
  m.attrs.set("pads", std::vector<int64_t>{k, k});
  m.attrs.set("strides", std::vector<int64_t>{k});
  OpRun mr = run(m, {&x});
  CHECK(mr[0].ptr<float>()[1] == 4.0f);
}

TEST_CASE("nn: empty inputs and a huge group count do not loop") {
  Tensor x = Tensor::empty(DType::F32, {3, 0, 5});
  Tensor p = Tensor::empty(DType::F32, {0});
  Node n = nn_node(OpType::GroupNormalization);
  n.attrs.set("num_groups", int64_t(1) << 62);
  OpRun r = run(n, {&x, &p, &p});
  CHECK(r[0].numel() == 0);
  Tensor y = Tensor::empty(DType::F32, {2, 3, 0});
  OpRun g = run(nn_node(OpType::GlobalAveragePool), {&y});
  REQUIRE(g[0].shape() == Shape{2, 3, 1});
  CHECK(std::isnan(g[0].ptr<float>()[0]));
}
