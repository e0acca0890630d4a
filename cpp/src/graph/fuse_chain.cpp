// fuse_elementwise_chain: runs of elementwise nodes, each the single reader of the one before
// (Add -> Relu, Mul -> Sigmoid -> Mul, ...) -> ElementwiseChain (ops_chain.cpp), whose CPU kernel
// takes the value through every step block by block while it is in cache, instead of one pass
// over memory per node. Only attribute-free ops with elementwise CPU kernels are chained
// (chainable_unary / chainable_binary); a binary step's other operand may be anything.
#include "graph/fuse.h"
#include "graph/fuse_util.h"
#include "ops/op_util.h"

namespace ember {

using namespace fuse;

namespace {

bool chainable(const Node& n) {
  if (n.outputs.size() != 1 || n.outputs[0] < 0) return false;
  if (chainable_unary(n.op)) return n.inputs.size() == 1 && n.inputs[0] >= 0;
  return chainable_binary(n.op) && n.inputs.size() == 2 && n.inputs[0] >= 0 && n.inputs[1] >= 0;
}

}  // namespace

int fuse_elementwise_chain(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  std::vector<bool> taken(g.nodes.size(), false);
  for (size_t head = 0; head < g.nodes.size(); head++) {
    if (taken[head] || rw.drop[head] || !chainable(g.nodes[head])) continue;
    // The head's first input starts the chain; a binary head's second is its side operand.
    const Node& h = g.nodes[head];
    std::vector<int> nodes = {(int)head}, inputs = {h.inputs[0]};
    std::vector<int64_t> ops = {(int64_t)h.op}, sides, swap = {0};
    if (chainable_binary(h.op)) {
      inputs.push_back(h.inputs[1]);
      sides.push_back(1);
    } else {
      sides.push_back(-1);
    }
    int v = h.outputs[0];
    for (int r; (r = uses.single_reader(v)) >= 0 && !taken[r] && chainable(g.nodes[r]);) {
      const Node& n = g.nodes[r];
      if (chainable_binary(n.op)) {
        if (n.inputs[0] == n.inputs[1]) break;  // v op v: not a step on one value
        const bool right = n.inputs[1] == v;
        inputs.push_back(n.inputs[right ? 0 : 1]);
        sides.push_back((int64_t)inputs.size() - 1);
        swap.push_back(right ? 1 : 0);
      } else {
        sides.push_back(-1);
        swap.push_back(0);
      }
      ops.push_back((int64_t)n.op);
      nodes.push_back(r);
      v = n.outputs[0];
    }
    if (nodes.size() < 2 || !rw.free(nodes)) continue;
    for (int i : nodes) taken[i] = true;
    Node f;
    f.op = OpType::ElementwiseChain;
    f.name = g.nodes[nodes.back()].name;
    f.inputs = inputs;
    f.outputs = {v};
    f.attrs.set("ops", ops);
    f.attrs.set("sides", sides);
    f.attrs.set("swap", swap);
    // In the last node's place: every side operand is defined before the step that reads it.
    rw.replace(nodes, std::move(f));
  }
  return rw.finish();
}

}  // namespace ember
