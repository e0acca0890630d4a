// AddNorm (cpp/src/ops/ops_add_norm.cpp): the reference gives the unfused Add then
// LayerNormalization / RMSNormalization references' bits, and the CPU registry's add_norm_cpu
// the bits of the CPU's own kernels for the pair (what a CPU engine computes unfused); the sum
// output is the Add's; r broadcasts like Add's operand; infer refuses what the pair refuses.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "ops/op_util.h"
#include "runtime/registry.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::test;

namespace {

Tensor random(const Shape& s, std::mt19937& gen, float scale = 2.0f) {
  std::normal_distribution<float> d(0.5f, scale);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = d(gen);
  return t;
}

Node add_norm_node(const std::string& kind, int outputs, double eps) {
  Node n = node(OpType::AddNorm, outputs);
  n.attrs.set("kind", kind);
  n.attrs.set("axis", int64_t(-1));
  n.attrs.set("epsilon", eps);
  return n;
}

Node norm_node(const std::string& kind, double eps) {
  Node n = node(kind == "layer" ? OpType::LayerNormalization : OpType::RMSNormalization);
  n.attrs.set("axis", int64_t(-1));
  n.attrs.set("epsilon", eps);
  return n;
}

// The kernel a CPU engine runs for this node at these inputs (the registry at cpu_isa()).
KernelFn cpu_choice(const Node& proto, const std::vector<const Tensor*>& in) {
  Node n = proto;
  std::vector<TensorType> types;
  for (size_t i = 0; i < in.size(); i++) {
    n.inputs.push_back((int)i);
    types.push_back({in[i]->dtype(), in[i]->shape()});
  }
  InferCtx ictx{n, types, {}};
  const KernelEntry* e = cpu_kernel_find(ictx, cpu_isa());
  return e ? e->fn : op_def(n.op).reference;
}

}  // namespace

TEST_CASE("AddNorm: reference and CPU kernel give the unfused pair's bits") {
  std::mt19937 gen(7);
  struct Case {
    const char* kind;
    Shape x, r;
    bool bias;
  };
  const Case cases[] = {
      {"layer", {3, 7, 33}, {3, 7, 33}, true},  {"layer", {2, 769}, {2, 769}, false},
      {"layer", {1, 1}, {1, 1}, true},          {"rms", {5, 64}, {5, 64}, false},
      {"rms", {2, 3, 5125}, {2, 3, 5125}, false},
      {"layer", {4, 9, 16}, {16}, true},  // r broadcasts, as Add's operand may
      {"rms", {0, 8}, {0, 8}, false},     // empty
  };
  for (const Case& c : cases) {
    for (int outputs : {1, 2}) {
      CAPTURE(c.kind);
      CAPTURE(outputs);
      const double eps = 1e-5;
      Tensor x = random(c.x, gen), r = random(c.r, gen);
      const int64_t d = c.x.back();
      Tensor scale = random({d}, gen, 1.0f), bias = random({d}, gen, 1.0f);
      std::vector<const Tensor*> in = {&x, &r, &scale};
      if (c.bias) in.push_back(&bias);
      std::vector<const Tensor*> norm_rest = {&scale};
      if (c.bias) norm_rest.push_back(&bias);
      for (bool fast : {false, true}) {
        CAPTURE(fast);
        Node an = add_norm_node(c.kind, outputs, eps);
        // Expected: the pair, each by the reference (fast: by the CPU engine's kernel).
        Node add = node(OpType::Add), norm = norm_node(c.kind, eps);
        OpRun sum = op_run(add, {&x, &r}, fast ? cpu_choice(add, {&x, &r}) : nullptr, false, 2, true);
        std::vector<const Tensor*> nin = {&sum[0]};
        nin.insert(nin.end(), norm_rest.begin(), norm_rest.end());
        OpRun want = op_run(norm, nin, fast ? cpu_choice(norm, nin) : nullptr, false, 2, true);
        OpRun got = op_run(an, in, fast ? add_norm_cpu : nullptr, false, 2, true);
        REQUIRE((int)got.out.size() == outputs);
        CHECK(same_bits(got[0], want[0]));
        if (outputs == 2) CHECK(same_bits(got[1], sum[0]));
      }
    }
  }
}

TEST_CASE("AddNorm: the CPU registry runs add_norm_cpu for float32") {
  Tensor x = Tensor::zeros(DType::F32, {2, 8}), r = Tensor::zeros(DType::F32, {2, 8});
  Tensor s = Tensor::zeros(DType::F32, {8});
  OpRun run = op_run(add_norm_node("rms", 1, 1e-6), {&x, &r, &s}, nullptr, false, 1, true);
  REQUIRE(run.fast != nullptr);
  CHECK(std::string(run.fast->name) == "add_norm_cpu");
}

TEST_CASE("AddNorm: infer refuses what the pair refuses, and its own attributes") {
  Tensor x = Tensor::zeros(DType::F32, {2, 8}), r = Tensor::zeros(DType::F32, {2, 8});
  Tensor r_bad = Tensor::zeros(DType::F32, {3, 8}), r_i64 = Tensor::zeros(DType::I64, {2, 8});
  Tensor s = Tensor::zeros(DType::F32, {8}), s_bad = Tensor::zeros(DType::F32, {5});
  auto run = [&](Node n, std::vector<const Tensor*> in) {
    return error_of([&] { op_run(n, in, nullptr, false, 1, true); });
  };
  CHECK(run(add_norm_node("layer", 1, 1e-5), {&x, &r, &s}) == std::nullopt);
  CHECK(run(add_norm_node("batch", 1, 1e-5), {&x, &r, &s}) == ErrorKind::Model);
  CHECK(run(add_norm_node("rms", 1, 1e-5), {&x, &r, &s, &s}) == ErrorKind::Model);  // bias
  CHECK(run(add_norm_node("layer", 1, 1e-5), {&x, &r_bad, &s}) == ErrorKind::Model);
  CHECK(run(add_norm_node("layer", 1, 1e-5), {&x, &r_i64, &s}) == ErrorKind::Model);
  CHECK(run(add_norm_node("layer", 1, 1e-5), {&x, &r, &s_bad}) == ErrorKind::Model);
  Node axis0 = add_norm_node("layer", 1, 1e-5);
  axis0.attrs.set("axis", int64_t(0));
  CHECK(run(axis0, {&x, &r, &s}) == ErrorKind::Model);
  Node no_kind = node(OpType::AddNorm);
  CHECK(run(no_kind, {&x, &r, &s}) == ErrorKind::Model);  // kind is required
}
