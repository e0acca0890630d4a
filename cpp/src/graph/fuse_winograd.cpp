// fuse_conv_winograd: Conv (2-D, 3x3, stride 1, dilation 1, group 1, constant f32 weights
// and bias) [-> Add(., R)] [-> Relu] -> WinogradConv (ops_winograd.cpp) with the filters
// transformed at load (winograd_weights_f32): 4 multiplies per output and input channel
// instead of 9; a residual Add (ResNet's blocks) and the Relu in its output transform.
// Not for wide layers on small planes (ResNet-18's last stage): there U, 16/9 the size of the
// weights, streams from memory for few outputs, and the direct kernel (FusedConv) is as fast
// or faster; the plane's size comes from the shapes known at load (static_shapes).
#include <unordered_map>

#include "ember/error.h"
#include "graph/fuse.h"
#include "graph/fuse_util.h"
#include "kernels/generic/winograd_f32.h"
#include "ops/op_util.h"

namespace ember {

using namespace fuse;

namespace {

// Below this many input or output channels the tile transforms cost more than the
// multiplies they save (a first layer on RGB, say).
constexpr int64_t kMinChannels = 16;

// From this many input and output channels, on output planes of at most kDirectPlane
// positions, the direct kernel is used. ResNet-18's 512-channel 7 x 7 layers, 2 threads, in the
// model (A/B in one process): quiet 0.61 ms direct vs 0.60 Winograd per layer (run 8.33 vs
// 8.34 ms); with the host busy the run 10.5 vs 10.8 ms (3 pairs, all favouring direct).
constexpr int64_t kDirectChannels = 512;
constexpr int64_t kDirectPlane = 64;

// Output types as far as load time knows them: the graph inputs' declared dims with a
// symbolic leading (batch) dim taken as 1, the constants; a node whose inputs are not all
// known, or whose inference fails, leaves its outputs unknown. The choice above reads only
// a conv's output plane, which the batch does not change.
std::unordered_map<int, TensorType> static_shapes(const Graph& g) {
  std::unordered_map<int, TensorType> known;
  for (int id : g.inputs) {
    const ValueInfo& v = g.values[id];
    if (!v.has_shape || v.dtype == DType::Count) continue;
    Shape s;
    bool ok = true;
    for (size_t d = 0; d < v.dims.size() && ok; d++) {
      ok = v.dims[d].value >= 0 || d == 0;
      s.push_back(v.dims[d].value >= 0 ? v.dims[d].value : 1);
    }
    if (ok) known[id] = {v.dtype, s};
  }
  for (const auto& [id, t] : g.constants) known[id] = {t.dtype(), t.shape()};
  for (const Node& n : g.nodes) {
    InferCtx ctx{n, {}, {}};
    bool ok = true;
    for (size_t i = 0; i < n.inputs.size() && ok; i++) {
      const int id = n.inputs[i];
      auto it = known.find(id);
      ok = id < 0 || it != known.end();
      ctx.in.push_back(id < 0 || !ok ? TensorType{} : it->second);
      ctx.values.push_back(id < 0 ? nullptr : constant(g, id));
    }
    if (!ok) continue;
    try {
      std::vector<TensorType> out = op_infer(ctx);
      for (size_t k = 0; k < out.size() && k < n.outputs.size(); k++)
        if (n.outputs[k] >= 0) known[n.outputs[k]] = out[k];
    } catch (const Error&) {
      // Unknown until run time (a data-dependent shape, a subgraph): the default choice.
    }
  }
  return known;
}

// The [top, left, bottom, right] pads of a 3x3 stride-1 Conv, or false where the node's
// attributes are not of that form.
bool winograd_pads(const Attrs& at, std::vector<int64_t>* pads) {
  std::string auto_pad = at.get_string("auto_pad", "NOTSET");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    *pads = {1, 1, 1, 1};  // out = in: two rows and columns of padding, one each side
    return true;
  }
  if (auto_pad == "VALID") {
    *pads = {0, 0, 0, 0};
    return true;
  }
  if (auto_pad != "NOTSET") return false;
  *pads = at.has("pads") ? at.get_ints("pads") : std::vector<int64_t>(4, 0);
  if (pads->size() != 4) return false;
  for (int64_t p : *pads)
    if (p < 0 || p > 2) return false;
  return true;
}

}  // namespace

int fuse_conv_winograd(Graph& g) {
  const std::unordered_map<int, TensorType> shapes = static_shapes(g);
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t ci = 0; ci < g.nodes.size(); ci++) {
    const Node& conv = g.nodes[ci];
    if (conv.op != OpType::Conv || conv.inputs.size() < 2 || conv.outputs.size() != 1) continue;
    const Tensor* w = constant(g, conv.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->shape().size() != 4 || w->dim(2) != 3 ||
        w->dim(3) != 3)
      continue;
    const int64_t M = w->dim(0), C = w->dim(1);
    if (M < kMinChannels || C < kMinChannels) continue;
    if (M >= kDirectChannels && C >= kDirectChannels) {
      auto it = shapes.find(conv.outputs[0]);
      const Shape* y = it == shapes.end() ? nullptr : &it->second.shape;
      if (y && y->size() == 4 && (*y)[2] * (*y)[3] <= kDirectPlane) continue;  // FusedConv's
    }
    const Attrs& at = conv.attrs;
    std::vector<int64_t> pads;
    if (at.get_int("group", 1) != 1 || !all_equal(at, "strides", 1) || !all_equal(at, "dilations", 1) ||
        !winograd_pads(at, &pads))
      continue;
    const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] >= 0;
    if (has_bias && !f32_vector_constant(g, conv.inputs[2], M)) continue;
    std::vector<int> absorbed = {(int)ci};
    int y = conv.outputs[0];
    std::string act = "none";
    int r = uses.single_reader(y), residual = -1;
    if (r >= 0 && g.nodes[r].op == OpType::Add && g.nodes[r].inputs.size() == 2 &&
        g.nodes[r].outputs.size() == 1 && rw.free({r})) {
      const Node& add = g.nodes[r];
      residual = add.inputs[0] == y ? add.inputs[1] : add.inputs[0];
      // A constant (a bias written as an Add) would broadcast: the fused kernel's slow path.
      if (residual == y || residual < 0 || constant(g, residual)) {
        residual = -1;
      } else {
        absorbed.push_back(r);
        y = add.outputs[0];
        r = uses.single_reader(y);
      }
    }
    if (r >= 0 && g.nodes[r].op == OpType::Relu && rw.free({r})) {
      absorbed.push_back(r);
      y = g.nodes[r].outputs[0];
      act = "relu";
    }
    Tensor u = Tensor::empty(DType::F32, {16, M, C});
    cpu::winograd_weights_f32(w->ptr<float>(), M, C, u.ptr<float>());
    int uid = add_packed_weights(g, uses, conv.inputs[1], "/winograd", std::move(u));
    Node f;
    f.op = OpType::WinogradConv;
    f.name = g.nodes[ci].name;
    f.inputs = {g.nodes[ci].inputs[0], uid};
    if (has_bias || residual >= 0) f.inputs.push_back(has_bias ? g.nodes[ci].inputs[2] : -1);
    if (residual >= 0) f.inputs.push_back(residual);
    f.outputs = {y};
    f.attrs.set("pads", pads);
    f.attrs.set("activation", act);
    rw.replace(absorbed, std::move(f));
  }
  return rw.finish();
}

}  // namespace ember
