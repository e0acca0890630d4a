// Memory planner and session-level behaviour that Python cannot see directly.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "ember/session.h"
#include "graph/memory_plan.h"

using namespace ember;

namespace {

bool overlaps(size_t a_off, size_t a_bytes, size_t b_off, size_t b_bytes) {
  return a_off < b_off + b_bytes && b_off < a_off + a_bytes;
}

}  // namespace

TEST_CASE("memory_plan: live buffers never share memory, dead ones are reused") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 50; trial++) {
    std::vector<BufferLife> bufs;
    int n = 1 + rng() % 40;
    for (int i = 0; i < n; i++) {
      int first = rng() % 30;
      bufs.push_back({(size_t)(1 + rng() % 5000), first, first + (int)(rng() % 6)});
    }
    MemoryPlan mp = memory_plan(bufs);
    size_t total = 0;
    for (size_t i = 0; i < bufs.size(); i++) {
      total += (bufs[i].bytes + 63) / 64 * 64;
      CHECK(mp.offsets[i] % 64 == 0);
      CHECK(mp.offsets[i] + bufs[i].bytes <= mp.peak_bytes);
      for (size_t j = 0; j < i; j++) {
        bool live_together = bufs[i].first <= bufs[j].last && bufs[j].first <= bufs[i].last;
        if (live_together)
          CHECK_FALSE(overlaps(mp.offsets[i], bufs[i].bytes, mp.offsets[j], bufs[j].bytes));
      }
    }
    CHECK(mp.peak_bytes <= total);
  }
}

TEST_CASE("memory_plan: a chain reuses two buffers") {
  // x0 -> x1 -> x2 -> x3: each lives from its producer to its one consumer.
  std::vector<BufferLife> bufs = {{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  MemoryPlan mp = memory_plan(bufs);
  CHECK(mp.peak_bytes == 2 * 1024);
}

namespace {

// y = ((x + c) * x + c) * x ... : a chain of `n` binary nodes over one input.
Graph chain_graph(int n, int64_t width) {
  Graph g;
  int x = g.add_value("x", DType::F32);
  g.values[x].has_shape = true;
  g.values[x].dims = {Dim{-1, "batch"}, Dim{width, ""}};
  g.inputs.push_back(x);
  int c = g.add_value("c", DType::F32);
  Tensor ct = Tensor::empty(DType::F32, {width});
  for (int64_t i = 0; i < width; i++) ct.ptr<float>()[i] = 0.5f + (float)i;
  g.constants[c] = ct;
  int prev = x;
  for (int i = 0; i < n; i++) {
    int v = g.add_value("v" + std::to_string(i));
    Node node;
    node.op = i % 2 ? OpType::Mul : OpType::Add;
    node.name = "n" + std::to_string(i);
    node.inputs = {prev, i % 2 ? x : c};
    node.outputs = {v};
    g.nodes.push_back(node);
    prev = v;
  }
  g.outputs.push_back(prev);
  return g;
}

}  // namespace

TEST_CASE("session: arena stays bounded on a long chain; outputs own their memory") {
  // The graph as written (fused, the elementwise run is one ElementwiseChain node): the
  // planner's liveness is what this tests.
  SessionOptions written;
  written.reference_kernels = true;
  Session s(chain_graph(20, 256), written);
  Tensor x = Tensor::empty(DType::F32, {4, 256});
  for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] = 0.01f * (float)(i % 97);
  PlanInfo info = s.plan_info({{"x", x}});
  // 19 intermediates of 4 KiB each; liveness lets the planner keep only two.
  CHECK(info.arena_bytes == 2 * 4 * 256 * 4);
  NamedTensors a = s.run({{"x", x}});
  NamedTensors b = s.run({{"x", x}});
  REQUIRE(a.size() == 1);
  CHECK(a[0].second.data() != b[0].second.data());
  CHECK(std::memcmp(a[0].second.data(), b[0].second.data(), a[0].second.nbytes()) == 0);
}

TEST_CASE("session: plan cache is an LRU bounded by plan_cache_size") {
  SessionOptions o;
  o.plan_cache_size = 3;
  Session s(chain_graph(3, 8), o);
  for (int b = 1; b <= 6; b++) s.run({{"x", Tensor::zeros(DType::F32, {b, 8})}});
  CHECK(s.plans_cached() == 3);
}

TEST_CASE("session: memory_limit refuses a plan before running it") {
  SessionOptions o;
  o.memory_limit = 10000;
  Session s(chain_graph(4, 64), o);
  s.run({{"x", Tensor::zeros(DType::F32, {2, 64})}});
  try {
    s.run({{"x", Tensor::zeros(DType::F32, {1000, 64})}});
    FAIL("expected an InputError");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Input);
    CHECK(std::string(e.what()).find("memory_limit") != std::string::npos);
  }
}

TEST_CASE("session: feed validation names the input, expected and actual") {
  Session s(chain_graph(2, 8), SessionOptions{});
  auto expect_input_error = [&](const NamedTensors& feeds, const char* needle) {
    try {
      s.run(feeds);
      FAIL("expected an InputError");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Input);
      CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    }
  };
  expect_input_error({}, "missing inputs: x");
  expect_input_error({{"y", Tensor::zeros(DType::F32, {1, 8})}}, "unknown input 'y'");
  expect_input_error({{"x", Tensor::zeros(DType::I64, {1, 8})}}, "expected dtype float32, got int64");
  expect_input_error({{"x", Tensor::zeros(DType::F32, {1, 9})}}, "expected shape [batch, 8], got [1, 9]");
}

TEST_CASE("session: constant sub-graphs are folded at load") {
  Graph g;
  int x = g.add_value("x", DType::F32);
  g.inputs.push_back(x);
  int a = g.add_value("a"), b = g.add_value("b"), ab = g.add_value("ab"), y = g.add_value("y");
  g.constants[a] = Tensor::zeros(DType::F32, {4});
  g.constants[b] = Tensor::zeros(DType::F32, {4});
  g.nodes.push_back(Node{OpType::Add, "fold_me", {a, b}, {ab}, {}});
  g.nodes.push_back(Node{OpType::Add, "keep", {x, ab}, {y}, {}});
  g.outputs.push_back(y);
  Session s(std::move(g), SessionOptions{});
  CHECK(s.graph().nodes.size() == 1);
  CHECK(s.graph().nodes[0].name == "keep");
}

TEST_CASE("eager boundary: values made before a NonZero stay intact for the nodes after it") {
  // r = Relu(x); nz = NonZero(x); m = Mul(r, r); y = Add(m, r); n = Shape-free use of nz.
  // r crosses the boundary in the first part's arena; the continuation's arena is its own.
  Graph g;
  int x = g.add_value("x", DType::F32);
  int r = g.add_value("r"), nz = g.add_value("nz"), m = g.add_value("m"), y = g.add_value("y");
  g.inputs = {x};
  auto node = [&](OpType op, std::vector<int> in, std::vector<int> out) {
    Node n;
    n.op = op;
    n.name = op_name(op) + std::to_string(g.nodes.size());
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    g.nodes.push_back(std::move(n));
  };
  node(OpType::Relu, {x}, {r});
  node(OpType::NonZero, {x}, {nz});
  node(OpType::Mul, {r, r}, {m});
  node(OpType::Add, {m, r}, {y});
  g.outputs = {y, nz};
  Session s(std::move(g), {});
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> dist;
  for (int64_t n : {5, 64, 1, 300}) {
    Tensor in = Tensor::empty(DType::F32, {n});
    float* p = in.ptr<float>();
    for (int64_t i = 0; i < n; i++) p[i] = dist(rng) * (i % 3 == 0 ? 0.0f : 1.0f);
    NamedTensors out = s.run({{"x", in}});
    const float* got = out[0].second.ptr<float>();
    std::vector<int64_t> want_nz;
    for (int64_t i = 0; i < n; i++) {
      float rv = std::max(p[i], 0.0f);
      // Mul and Add round separately: volatile stops g++ fusing them (FMADD on aarch64).
      volatile float m = rv * rv;
      CHECK(got[i] == m + rv);
      if (p[i] != 0.0f) want_nz.push_back(i);
    }
    const Tensor& nzt = out[1].second;
    REQUIRE(nzt.shape() == Shape{1, (int64_t)want_nz.size()});
    for (size_t i = 0; i < want_nz.size(); i++) CHECK(nzt.ptr<int64_t>()[i] == want_nz[i]);
  }
  PlanInfo info = s.plan_info({{"x", Tensor::zeros(DType::F32, {4})}});
  // Mul(r, r) -> Add(m, r) run as one ElementwiseChain, after the boundary.
  REQUIRE(info.nodes.size() == 3);
  CHECK(info.nodes[1].kernel == "eager");
  CHECK(info.nodes[2].kernel == "after eager");
  CHECK(info.nodes[2].op == "ElementwiseChain");
}

TEST_CASE("bind_constant_captures: constants an If branch reads move into the branch") {
  // y = If(c) then (x + w) else (x - w), w a constant of the main graph.
  auto branch = [](OpType op) {
    auto b = std::make_shared<Graph>();
    int x = b->add_value("x"), w = b->add_value("w"), out = b->add_value("out");
    b->inputs = {x, w};
    Node n;
    n.op = op;
    n.name = "arith";
    n.inputs = {x, w};
    n.outputs = {out};
    b->nodes.push_back(n);
    b->outputs = {out};
    return std::shared_ptr<const Graph>(b);
  };
  Graph g;
  int c = g.add_value("c", DType::Bool), x = g.add_value("x", DType::F32);
  int w = g.add_value("w"), y = g.add_value("y");
  g.inputs = {c, x};
  Tensor wt = Tensor::empty(DType::F32, {3});
  for (int i = 0; i < 3; i++) wt.ptr<float>()[i] = 10.0f * (i + 1);
  g.constants[w] = wt;
  Node n;
  n.op = OpType::If;
  n.name = "if";
  n.inputs = {c, x, w};
  n.outputs = {y};
  n.attrs.set("then_branch", branch(OpType::Add));
  n.attrs.set("else_branch", branch(OpType::Sub));
  g.nodes.push_back(n);
  g.outputs = {y};
  Session s(std::move(g), {});
  const Node& kept = s.graph().nodes.at(0);
  CHECK(kept.inputs == std::vector<int>{c, x});
  CHECK(kept.attrs.get_graph("then_branch")->inputs.size() == 1);
  CHECK(kept.attrs.get_graph("else_branch")->constants.size() == 1);
  Tensor xt = Tensor::zeros(DType::F32, {3});
  for (bool take : {true, false}) {
    Tensor ct = Tensor::empty(DType::Bool, {});
    ct.ptr<bool>()[0] = take;
    NamedTensors out = s.run({{"c", ct}, {"x", xt}});
    for (int i = 0; i < 3; i++) CHECK(out[0].second.ptr<float>()[i] == (take ? 1 : -1) * 10.0f * (i + 1));
  }
}
