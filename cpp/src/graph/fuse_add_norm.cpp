// fuse_add_norm: the residual Add before a LayerNormalization / RMSNormalization -> AddNorm
// (ops_add_norm.cpp), so a device reads x and r once and writes the norm (and the sum, where it
// is read again) in one kernel. BERT's post-LN blocks read only the norm; pre-LN and LLaMA
// blocks read the sum again as the next residual: output 1.
#include "graph/fuse.h"
#include "graph/fuse_util.h"

namespace ember {

using namespace fuse;

namespace {

// Declared types say the Add broadcasts (ranks or fixed sizes differ, or one side's size is a
// fixed 1 the other's is not) or is not float32. Undeclared values say nothing: AddNorm
// broadcasts like Add, so a guess that misses costs speed (a CPU fallback), never a wrong answer.
bool declared_apart(const Graph& g, int a, int b) {
  const ValueInfo &va = g.values[a], &vb = g.values[b];
  for (const ValueInfo* v : {&va, &vb})
    if (v->dtype != DType::Count && v->dtype != DType::F32) return true;
  if (!va.has_shape || !vb.has_shape) return false;
  if (va.dims.size() != vb.dims.size()) return true;
  for (size_t d = 0; d < va.dims.size(); d++) {
    int64_t x = va.dims[d].value, y = vb.dims[d].value;
    if (x >= 0 && y >= 0 && x != y) return true;
    if ((x == 1) != (y == 1)) return true;
  }
  return false;
}

// Outputs of `node` past Y that anything reads (LayerNormalization's Mean / InvStdDev).
bool reads_stats(const Node& node, const Uses& uses) {
  for (size_t k = 1; k < node.outputs.size(); k++) {
    int id = node.outputs[k];
    if (id >= 0 && (uses.is_output[id] || uses.readers.count(id))) return true;
  }
  return false;
}

bool f32_constant(const Graph& g, int id) {
  const Tensor* t = constant(g, id);
  return t && t->dtype() == DType::F32;
}

}  // namespace

int fuse_add_norm(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t ni = 0; ni < g.nodes.size(); ni++) {
    const Node& norm = g.nodes[ni];
    const bool layer = norm.op == OpType::LayerNormalization;
    if (!layer && norm.op != OpType::RMSNormalization) continue;
    if (norm.inputs.size() < 2 || norm.attrs.get_int("axis", -1) != -1 ||
        norm.attrs.get_int("stash_type", 1) != 1 || reads_stats(norm, uses))
      continue;
    // Constant float32 weights: the norm's dtype is then float32 too (infer requires one type).
    const bool bias = layer && norm.inputs.size() > 2 && norm.inputs[2] >= 0;
    if (!f32_constant(g, norm.inputs[1]) || (bias && !f32_constant(g, norm.inputs[2]))) continue;
    int s = norm.inputs[0], ai = uses.producer_of(s);
    if (ai < 0 || g.nodes[ai].op != OpType::Add || g.nodes[ai].inputs.size() != 2) continue;
    const Node& add = g.nodes[ai];
    int a = add.inputs[0], b = add.inputs[1];
    // A constant operand is a bias (broadcast [D]), not a residual.
    if (constant(g, a) || constant(g, b) || declared_apart(g, a, b) || !rw.free({ai, (int)ni}))
      continue;
    // Does anything but this norm read the sum?
    bool sum_read = uses.is_output[s];
    for (int r : uses.readers.at(s)) sum_read = sum_read || r != (int)ni;
    Node f;
    f.op = OpType::AddNorm;
    f.name = norm.name;
    f.inputs = {a, b, norm.inputs[1]};
    if (bias) f.inputs.push_back(norm.inputs[2]);
    f.outputs = {norm.outputs[0]};
    if (sum_read) f.outputs.push_back(s);
    f.attrs.set("kind", std::string(layer ? "layer" : "rms"));
    f.attrs.set("axis", int64_t(-1));
    f.attrs.set("epsilon", norm.attrs.get_float("epsilon", 1e-5));
    // In the Add's place, not the norm's: readers of the sum between the two still follow
    // its producer, and every input (a, b, constants) is defined before the Add.
    rw.drop[ni] = true;
    g.nodes[ai] = std::move(f);
    rw.fused++;
  }
  return rw.finish();
}

}  // namespace ember
