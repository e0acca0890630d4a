// Cost model (runtime/cost.h): flops and bytes of a node from its types, as the profiler
// reports them next to measured times.
#include <doctest/doctest.h>

#include "ember/session.h"
#include "runtime/cost.h"

using namespace ember;

namespace {

TensorType f32(Shape s) { return {DType::F32, std::move(s)}; }

Node node(OpType op) {
  Node n;
  n.op = op;
  n.name = op_name(op);
  return n;
}

}  // namespace

TEST_CASE("cost: MatMul is 2*M*N*K per batch, broadcast batches included") {
  Node n = node(OpType::MatMul);
  NodeCost c = node_cost(n, {f32({3, 5, 7, 11}), f32({11, 13})}, {f32({3, 5, 7, 13})});
  CHECK(c.flops == 2.0 * 3 * 5 * 7 * 13 * 11);
  CHECK(c.bytes == 4.0 * (3 * 5 * 7 * 11 + 11 * 13 + 3 * 5 * 7 * 13));
  // [B, M, K] x [B, K, N]; and a vector times a matrix (M = 1).
  CHECK(node_cost(n, {f32({4, 2, 3}), f32({4, 3, 6})}, {f32({4, 2, 6})}).flops == 2.0 * 4 * 2 * 6 * 3);
  CHECK(node_cost(n, {f32({9}), f32({9, 5})}, {f32({5})}).flops == 2.0 * 5 * 9);
  // FusedMatMul: A [3, 10], W packed [ceil(7 / 16), 10, 16], bias [7] -> [3, 7].
  Node f = node(OpType::FusedMatMul);
  f.attrs.set("n", int64_t(7));
  CHECK(node_cost(f, {f32({3, 10}), f32({1, 10, 16}), f32({7})}, {f32({3, 7})}).flops == 2.0 * 3 * 7 * 10);
  // Attention: Q [2, 4, 5, 8], Kt [2, 4, 8, 9], V [2, 4, 9, 6] -> [2, 4, 5, 6]: 2 S T (D + Dv)
  // + 7 per score, per batch matrix.
  Node a = node(OpType::Attention);
  double scores = 2.0 * 4 * 5 * 9;
  CHECK(node_cost(a, {f32({2, 4, 5, 8}), f32({2, 4, 8, 9}), f32({2, 4, 9, 6})}, {f32({2, 4, 5, 6})}).flops ==
        scores * (2 * 8 + 2 * 6 + 7));
}

TEST_CASE("cost: Gemm is 2*M*N*K with transA read for K; the C add is not counted") {
  Node n = node(OpType::Gemm);
  NodeCost plain = node_cost(n, {f32({6, 10}), f32({10, 4}), f32({4})}, {f32({6, 4})});
  CHECK(plain.flops == 2.0 * 6 * 4 * 10);
  CHECK(plain.bytes == 4.0 * (60 + 40 + 4 + 24));
  n.attrs.set("transA", int64_t(1));
  n.attrs.set("transB", int64_t(1));
  CHECK(node_cost(n, {f32({10, 6}), f32({4, 10})}, {f32({6, 4})}).flops == 2.0 * 6 * 4 * 10);
}

TEST_CASE("cost: Conv is 2 * out * (C_in / group) * prod(kernel); ConvTranspose scatters") {
  Node n = node(OpType::Conv);
  n.attrs.set("group", int64_t(4));
  // X [2, 8, 9, 9], W [16, 8/4, 3, 3], Y [2, 16, 7, 7]
  NodeCost c = node_cost(n, {f32({2, 8, 9, 9}), f32({16, 2, 3, 3}), f32({16})}, {f32({2, 16, 7, 7})});
  CHECK(c.flops == 2.0 * (2 * 16 * 7 * 7) * 2 * 3 * 3);
  CHECK(c.bytes == 4.0 * (2 * 8 * 81 + 16 * 2 * 9 + 16 + 2 * 16 * 49));
  // Depthwise 1-D: group = C.
  n.attrs.set("group", int64_t(6));
  CHECK(node_cost(n, {f32({1, 6, 20}), f32({6, 1, 5})}, {f32({1, 6, 16})}).flops == 2.0 * 6 * 16 * 5);
  // ConvTranspose X [1, 4, 5, 5], W [4, 3, 2, 2] (group 1): each input feeds 3 * 2 * 2 outputs.
  Node t = node(OpType::ConvTranspose);
  CHECK(node_cost(t, {f32({1, 4, 5, 5}), f32({4, 3, 2, 2})}, {f32({1, 3, 6, 6})}).flops ==
        2.0 * 100 * 3 * 4);
}

TEST_CASE("cost: RNN gate GEMMs, Einsum, per-element rates and data movement") {
  // LSTM X [seq 7, batch 2, 5], W [2 dirs, 4*3, 5], R [2, 12, 3].
  Node lstm = node(OpType::LSTM);
  CHECK(node_cost(lstm, {f32({7, 2, 5}), f32({2, 12, 5}), f32({2, 12, 3})}, {f32({7, 2, 2, 3})}).flops ==
        2.0 * 7 * 2 * (2 * 12 * 5 + 2 * 12 * 3));
  Node ein = node(OpType::Einsum);
  ein.attrs.set("equation", std::string("bij,bjk->bik"));
  CHECK(node_cost(ein, {f32({3, 4, 5}), f32({3, 5, 6})}, {f32({3, 4, 6})}).flops == 2.0 * 3 * 4 * 6 * 5);
  ein.attrs.set("equation", std::string("...ij,jk"));  // implicit output: ...ik
  CHECK(node_cost(ein, {f32({2, 4, 5}), f32({5, 6})}, {f32({2, 4, 6})}).flops == 2.0 * 2 * 4 * 6 * 5);
  CHECK(node_cost(node(OpType::Add), {f32({4, 8}), f32({8})}, {f32({4, 8})}).flops == 32);
  CHECK(node_cost(node(OpType::Softmax), {f32({4, 8})}, {f32({4, 8})}).flops == 5 * 32);
  CHECK(node_cost(node(OpType::ReduceSum), {f32({4, 8}), {DType::I64, {1}}}, {f32({4})}).flops == 32);
  NodeCost mv = node_cost(node(OpType::Transpose), {f32({4, 8})}, {f32({8, 4})});
  CHECK(mv.flops == 0);
  CHECK(mv.bytes == 2 * 4 * 32);
  // A gather reads the rows it returns, not the whole table: [30000, 16] table, 5 indices.
  NodeCost g = node_cost(node(OpType::Gather), {f32({30000, 16}), {DType::I64, {5}}}, {f32({5, 16})});
  CHECK(g.bytes == 4 * 80 + 8 * 5 + 4 * 80);
  // Absent optional inputs and outputs count nothing.
  CHECK(node_cost(node(OpType::Relu), {TensorType{}, f32({2})}, {TensorType{}}).bytes == 8);
}

TEST_CASE("session: a timed run has one span per node, in order, with its cost") {
  // y = relu(x @ w), both fed (fed weights are never fused): [3, 5] x [5, 4].
  Graph g;
  int x = g.add_value("x", DType::F32), w = g.add_value("w", DType::F32);
  int h = g.add_value("h"), y = g.add_value("y");
  g.inputs = {x, w};
  Node mm = node(OpType::MatMul), relu = node(OpType::Relu);
  mm.name = "mm";
  mm.inputs = {x, w};
  mm.outputs = {h};
  relu.name = "relu";
  relu.inputs = {h};
  relu.outputs = {y};
  g.nodes = {mm, relu};
  g.outputs = {y};
  Session s(std::move(g), SessionOptions{});
  NamedTensors feeds = {{"x", Tensor::zeros(DType::F32, {3, 5})}, {"w", Tensor::zeros(DType::F32, {5, 4})}};
  RunTiming t;
  NamedTensors out = s.run(feeds, {}, &t);
  REQUIRE(out.size() == 1);
  REQUIRE(t.nodes.size() == 2);
  CHECK(t.nodes[0].name == "mm");
  CHECK(t.nodes[0].op == "MatMul");
  CHECK(t.nodes[0].flops == 2.0 * 3 * 4 * 5);
  CHECK(t.nodes[0].bytes == 4.0 * (15 + 20 + 12));
  CHECK(t.nodes[1].name == "relu");
  CHECK(t.nodes[1].flops == 12);
  CHECK(!t.nodes[0].kernel.empty());
  CHECK(0 <= t.nodes[0].start_ns);
  CHECK(t.nodes[0].start_ns <= t.nodes[0].end_ns);
  CHECK(t.nodes[0].end_ns <= t.nodes[1].start_ns);
  CHECK(t.nodes[1].end_ns <= t.total_ns);
  // The plain overload still runs, and a second timed run replaces the spans.
  s.run(feeds);
  s.run(feeds, {}, &t);
  CHECK(t.nodes.size() == 2);
}
