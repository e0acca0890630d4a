// Hostile shapes and values that once crashed or exhausted memory (tests/e2e/test_hostile_models.py
// fuzzes the same from Python): the shared size check, folding budgets, integer edge cases.
#include <doctest/doctest.h>

#include <climits>

#include "ember/session.h"
#include "graph/fold.h"
#include "op_test_util.h"

using namespace ember;

namespace {

Tensor i64_tensor(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty(DType::I64, {(int64_t)v.size()});
  for (size_t i = 0; i < v.size(); i++) t.ptr<int64_t>()[i] = v[i];
  return t;
}

// ConstantOfShape(shape) -> ReduceSum: every input a constant, so a candidate for folding.
Graph fill_and_sum(const std::vector<int64_t>& shape) {
  Graph g;
  int s = g.add_value("s"), c = g.add_value("c"), y = g.add_value("y");
  g.constants[s] = i64_tensor(shape);
  Node fill;
  fill.op = OpType::ConstantOfShape;
  fill.name = "fill";
  fill.inputs = {s};
  fill.outputs = {c};
  Node sum;
  sum.op = OpType::ReduceSum;
  sum.name = "sum";
  sum.inputs = {c};
  sum.outputs = {y};
  sum.attrs.set("keepdims", int64_t(0));
  g.nodes = {fill, sum};
  g.outputs = {y};
  return g;
}

std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("tensor_bytes_checked: rank, negative dims, and bytes past 2^40 even when empty") {
  auto bytes = [](DType t, Shape s) { return tensor_bytes_checked({t, s}, ErrorKind::Input, "[t]"); };
  CHECK(bytes(DType::F32, {}) == 4);
  CHECK(bytes(DType::F32, {1 << 18, 1 << 20}) == (int64_t(1) << 40));
  CHECK(bytes(DType::F32, {0, 3}) == 0);
  CHECK(bytes(DType::F32, Shape(64, 1)) == 4);
  CHECK_THROWS_WITH(bytes(DType::F32, {1 << 19, 1 << 20}), doctest::Contains("2^40"));
  // numel 0 used to hide these: numpy cannot hold [0, 2^62], and its views overflow int64.
  CHECK_THROWS_WITH(bytes(DType::F32, {0, int64_t(1) << 62}), doctest::Contains("2^40"));
  CHECK_THROWS_WITH(bytes(DType::I8, {INT64_MAX, INT64_MAX, 0}), doctest::Contains("2^40"));
  CHECK_THROWS_WITH(bytes(DType::F32, {2, -1}), doctest::Contains("negative"));
  // Over numpy's 64 dims an output came back as a rank-0 array (or aborted in nanobind).
  CHECK_THROWS_WITH(bytes(DType::F32, Shape(65, 1)), doctest::Contains("65 dims"));
}

TEST_CASE("op_infer: checks every inferred output before anything is allocated") {
  Node n = test::node(OpType::ConstantOfShape);
  n.inputs = {0};
  for (const auto& [shape, needle] : std::vector<std::pair<std::vector<int64_t>, std::string>>{
           {std::vector<int64_t>(65, 1), "65 dims"},
           {{0, int64_t(1) << 62}, "2^40"},
           {{1 << 28, 1 << 28}, "2^40"}}) {
    Tensor s = i64_tensor(shape);
    InferCtx ictx{n, {{DType::I64, s.shape()}}, {&s}, ErrorKind::Input};
    std::string msg = error_text([&] { op_infer(ictx); });
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    CHECK(msg.find("node 'n'") != std::string::npos);
  }
}

TEST_CASE("fold_constants: a few bytes of model cannot fold into gigabytes") {
  Graph small = fill_and_sum({1000});
  fold_constants(small);
  CHECK(small.nodes.empty());  // within budget: folded to one scalar
  // 512 MiB from an 8-byte initializer: past the budget, so the node stays and runs from the
  // arena at run time, where memory_limit applies before anything is allocated.
  Graph big = fill_and_sum({int64_t(1) << 27});
  fold_constants(big);
  REQUIRE(big.nodes.size() == 2);
  CHECK(big.nodes[0].op == OpType::ConstantOfShape);
  SessionOptions o;
  o.memory_limit = 64 << 20;
  Session s(fill_and_sum({int64_t(1) << 27}), o);
  CHECK(error_text([&] { s.run({}); }).find("memory_limit") != std::string::npos);
  // Over 2^40 bytes is refused at load, by the same check as the planner's.
  CHECK(error_text([] { Session(fill_and_sum({int64_t(1) << 39}), SessionOptions{}); })
            .find("2^40") != std::string::npos);
}

TEST_CASE("Div: INT_MIN / -1 wraps like numpy instead of trapping (SIGFPE)") {
  for (DType t : {DType::I64, DType::I32}) {
    Tensor a = Tensor::empty(t, {2}), b = Tensor::empty(t, {2});
    if (t == DType::I64) {
      a.ptr<int64_t>()[0] = INT64_MIN, a.ptr<int64_t>()[1] = 7;
      b.ptr<int64_t>()[0] = -1, b.ptr<int64_t>()[1] = -2;
    } else {
      a.ptr<int32_t>()[0] = INT32_MIN, a.ptr<int32_t>()[1] = 7;
      b.ptr<int32_t>()[0] = -1, b.ptr<int32_t>()[1] = -2;
    }
    test::OpRun r = test::op_run(test::node(OpType::Div), {&a, &b}, nullptr, false, 1, true);
    CHECK(tensor_get_i64(r[0], 0) == (t == DType::I64 ? INT64_MIN : INT32_MIN));
    CHECK(tensor_get_i64(r[0], 1) == -3);
  }
}

TEST_CASE("CumSum: integer sums wrap (two's complement) instead of overflowing") {
  Tensor x = i64_tensor({INT64_MAX, 1, 1});
  Tensor axis = i64_tensor({0});
  test::OpRun r = test::op_run(test::node(OpType::CumSum), {&x, &axis}, nullptr, false, 1, true);
  CHECK(r[0].ptr<int64_t>()[1] == INT64_MIN);
  CHECK(r[0].ptr<int64_t>()[2] == INT64_MIN + 1);
}
