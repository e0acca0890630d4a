// Quantization passes. They run before constant folding, which would turn DequantizeLinear of a
// constant weight into float weights and lose the integers. Three int8 forms become QMatMul
// (W8A8, ops_qmatmul.cpp) and MatMulNBits becomes Q4MatMul (W4A16i, ops_q4matmul.cpp), weights
// packed for the kernels at load:
//   token:  ember.quantize's dynamic int8 (per-token scales written out in standard ops)
//   tensor: onnxruntime's quantize_dynamic (DynamicQuantizeLinear + MatMulInteger)
//   static: QDQ (QuantizeLinear -> DequantizeLinear on the activation, DequantizeLinear on a
//           constant weight) feeding MatMul or Gemm
#include <cfloat>
#include <optional>

#include "graph/fold.h"
#include "graph/fuse.h"
#include "graph/fuse_util.h"
#include "kernels/generic/gemm_i8.h"
#include "kernels/generic/gemm_q4.h"

namespace ember {

using namespace fuse;

namespace {

constexpr int64_t kOnnxFloat = 1, kOnnxInt8 = 3;  // TensorProto.DataType codes (Cast "to")

bool is_op(const Graph& g, int i, OpType op) { return i >= 0 && g.nodes[i].op == op; }

// Input `k` of node `i` when it is present, else -1.
int input(const Graph& g, int i, size_t k) {
  const Node& n = g.nodes[i];
  return k < n.inputs.size() ? n.inputs[k] : -1;
}

// Integer weights as QMatMul wants them: Wq[k, n] = w - zero point, int8, and one scale per
// column.
struct QWeights {
  int64_t K = 0, N = 0;
  std::vector<int8_t> wq;  // [K, N]
  Tensor scale;            // f32 [N]
};

// An integer value of a uint8 / int8 tensor.
int int_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::U8 ? (int)t.ptr<uint8_t>()[i] : (int)t.ptr<int8_t>()[i];
}

// w: constant int8/uint8 [K, N] ([N, K] when trans); zp: null, a scalar or [N] of w's type;
// scale: f32 scalar or [N]. nullopt when a shape does not fit or w - zp leaves int8's range.
std::optional<QWeights> q_weights(const Tensor* w, const Tensor* zp, const Tensor* scale,
                                  bool trans) {
  if (!w || w->rank() != 2 || (w->dtype() != DType::I8 && w->dtype() != DType::U8)) return {};
  QWeights q;
  q.K = w->dim(trans ? 1 : 0);
  q.N = w->dim(trans ? 0 : 1);
  auto per_n = [&](const Tensor* t) { return t->numel() == 1 || t->shape() == Shape{q.N}; };
  if (!scale || scale->dtype() != DType::F32 || !per_n(scale)) return {};
  if (zp && (zp->dtype() != w->dtype() || !per_n(zp))) return {};
  if (q.K < 1 || q.K > 65536) return {};
  q.wq.resize(q.K * q.N);
  for (int64_t k = 0; k < q.K; k++) {
    for (int64_t n = 0; n < q.N; n++) {
      int v = int_at(*w, trans ? n * q.K + k : k * q.N + n);
      if (zp) v -= int_at(*zp, zp->numel() == 1 ? 0 : n);
      if (v < -128 || v > 127) return {};
      q.wq[k * q.N + n] = (int8_t)v;
    }
  }
  q.scale = Tensor::empty(DType::F32, {q.N});
  for (int64_t n = 0; n < q.N; n++)
    q.scale.ptr<float>()[n] = scale->ptr<float>()[scale->numel() == 1 ? 0 : n];
  return q;
}

// The weights packed for the int8 GEMM, as a new constant.
int pack_weights(Graph& g, const std::string& name, const QWeights& qw) {
  Tensor packed = Tensor::empty(DType::I8, {(qw.N + 15) / 16, (qw.K + 1) / 2, 16, 2});
  cpu::qgemm_i8_pack_b(qw.wq.data(), qw.N, 1, qw.K, qw.N, packed.ptr<int8_t>());
  int id = g.add_value(name + "/w_packed", DType::I8);
  g.constants[id] = std::move(packed);
  return id;
}

int scale_of(Graph& g, const std::string& name, const QWeights& qw) {
  int id = g.add_value(name + "/w_scale", DType::F32);
  g.constants[id] = qw.scale;
  return id;
}

// The epilogue of a fused node: the Add / activation chain after `y`, or with a bias input of
// its own (Gemm's C, Conv's B, MatMulNBits' bias) only the activation.
Epilogue epilogue(Rewriter& rw, int y, int64_t n, int bias) {
  Epilogue ep = absorb_epilogue(rw.g, rw.uses, y, n, bias < 0);
  if (bias >= 0) ep.bias = bias;
  return ep;
}

// QMatMul reading x, with the weights packed and the epilogue (see `epilogue`) folded in;
// replaces `nodes` (the last of them writes the matmul's result).
void emit_qmatmul(Rewriter& rw, std::vector<int> nodes, const std::string& name, int x,
                  const QWeights& qw, const char* mode, int a_scale, int a_zero, int bias = -1) {
  Graph& g = rw.g;
  Epilogue ep = epilogue(rw, g.nodes[nodes.back()].outputs[0], qw.N, bias);
  nodes.insert(nodes.end(), ep.nodes.begin(), ep.nodes.end());
  if (!rw.free(nodes)) return;
  Node f;
  f.op = OpType::QMatMul;
  f.name = name;
  f.inputs = {x, pack_weights(g, name, qw), scale_of(g, name, qw), ep.bias};
  if (a_scale >= 0) f.inputs.insert(f.inputs.end(), {a_scale, a_zero});
  while (f.inputs.back() < 0) f.inputs.pop_back();
  f.outputs = {ep.y};
  f.attrs.set("n", qw.N);
  f.attrs.set("activation", ep.act);
  f.attrs.set("a_mode", std::string(mode));
  rw.replace(nodes, std::move(f));
}

// The single reader of `id` when it is Cast(to = FLOAT); -1 otherwise.
int cast_to_float(const Graph& g, const Uses& uses, int id) {
  int c = uses.single_reader(id);
  return is_op(g, c, OpType::Cast) && g.nodes[c].attrs.get_int("to", 0) == kOnnxFloat ? c : -1;
}

// The single reader of `id` when it is Mul(id, other) with `other` satisfying `ok`; -1 otherwise.
template <typename Pred>
int mul_by(const Graph& g, const Uses& uses, int id, Pred ok) {
  int m = uses.single_reader(id);
  if (!is_op(g, m, OpType::Mul)) return -1;
  int o = other_input(g.nodes[m], id);
  return o >= 0 && ok(o) ? m : -1;
}

// ember.quantize's per-token activation quantization ending in `xq`:
//   s = Max(Div(ReduceMax(Abs(X), axes [-1], keepdims 1), 127), FLT_MIN)
//   xq = Cast(Clip(Round(Div(X, s)), -127, 127), to INT8)
// -> {X, s}, or {-1, -1}.
std::pair<int, int> match_token_quant(const Graph& g, const Uses& uses, int xq) {
  int cast = uses.producer_of(xq);
  if (!is_op(g, cast, OpType::Cast) || g.nodes[cast].attrs.get_int("to", 0) != kOnnxInt8) return {-1, -1};
  int clip = uses.producer_of(g.nodes[cast].inputs[0]);
  if (!is_op(g, clip, OpType::Clip) || !is_scalar(g, input(g, clip, 1), -127.0) ||
      !is_scalar(g, input(g, clip, 2), 127.0))
    return {-1, -1};
  int round = uses.producer_of(g.nodes[clip].inputs[0]);
  if (!is_op(g, round, OpType::Round)) return {-1, -1};
  int div = uses.producer_of(g.nodes[round].inputs[0]);
  if (!is_op(g, div, OpType::Div)) return {-1, -1};
  int x = g.nodes[div].inputs[0], s = g.nodes[div].inputs[1];
  int mx = uses.producer_of(s);
  if (!is_op(g, mx, OpType::Max) || g.nodes[mx].inputs.size() != 2) return {-1, -1};
  int s0 = -1;
  for (int side = 0; side < 2; side++)
    if (is_scalar(g, g.nodes[mx].inputs[1 - side], FLT_MIN)) s0 = g.nodes[mx].inputs[side];
  int d127 = uses.producer_of(s0);
  if (!is_op(g, d127, OpType::Div) || !is_scalar(g, input(g, d127, 1), 127.0)) return {-1, -1};
  int rmax = uses.producer_of(g.nodes[d127].inputs[0]);
  if (!is_op(g, rmax, OpType::ReduceMax) || g.nodes[rmax].attrs.get_int("keepdims", 1) != 1) return {-1, -1};
  const Tensor* axes = constant(g, input(g, rmax, 1));
  if (!axes || axes->dtype() != DType::I64 || axes->numel() != 1 || axes->ptr<int64_t>()[0] != -1)
    return {-1, -1};
  int abs = uses.producer_of(g.nodes[rmax].inputs[0]);
  if (!is_op(g, abs, OpType::Abs) || g.nodes[abs].inputs[0] != x) return {-1, -1};
  return {x, s};
}

// MatMulInteger(xq, Wq) -> Cast(FLOAT) -> Mul(., s) -> Mul(., w_scale) with xq from
// match_token_quant.
void fuse_token(Rewriter& rw, int mi) {
  const Graph& g = rw.g;
  const Uses& uses = rw.uses;
  const Node& mm = g.nodes[mi];
  if (input(g, mi, 2) >= 0 || input(g, mi, 3) >= 0) return;
  auto [x, s] = match_token_quant(g, uses, mm.inputs[0]);
  if (x < 0) return;
  int cast = cast_to_float(g, uses, mm.outputs[0]);
  if (cast < 0) return;
  int m1 = mul_by(g, uses, g.nodes[cast].outputs[0], [&](int o) { return o == s; });
  if (m1 < 0) return;
  const Tensor* w_scale = nullptr;
  int m2 = mul_by(g, uses, g.nodes[m1].outputs[0], [&](int o) { return (w_scale = constant(g, o)); });
  if (m2 < 0) return;
  auto qw = q_weights(constant(g, mm.inputs[1]), nullptr, w_scale, false);
  if (!qw) return;
  emit_qmatmul(rw, {mi, cast, m1, m2}, mm.name, x, *qw, "token", -1, -1);
}

// DynamicQuantizeLinear(X) -> MatMulInteger(xq, Wq, x_zp, w_zp) -> Cast(FLOAT) ->
// Mul(., Mul(x_scale, w_scale)), as onnxruntime.quantization.quantize_dynamic writes it.
void fuse_tensor(Rewriter& rw, int mi) {
  const Graph& g = rw.g;
  const Uses& uses = rw.uses;
  const Node& mm = g.nodes[mi];
  int dq = uses.producer_of(mm.inputs[0]);
  if (!is_op(g, dq, OpType::DynamicQuantizeLinear) || g.nodes[dq].outputs.size() != 3) return;
  const Node& d = g.nodes[dq];
  if (input(g, mi, 2) != d.outputs[2]) return;
  int cast = cast_to_float(g, uses, mm.outputs[0]);
  if (cast < 0) return;
  const Tensor* w_scale = nullptr;
  int m = mul_by(g, uses, g.nodes[cast].outputs[0], [&](int o) {
    int p = uses.producer_of(o);
    if (!is_op(g, p, OpType::Mul)) return false;
    int ws = other_input(g.nodes[p], d.outputs[1]);
    return ws >= 0 && (w_scale = constant(g, ws));
  });
  if (m < 0) return;
  int w_zp = input(g, mi, 3);
  auto qw = q_weights(constant(g, mm.inputs[1]), w_zp >= 0 ? constant(g, w_zp) : nullptr, w_scale, false);
  if (!qw || (w_zp >= 0 && !constant(g, w_zp))) return;
  emit_qmatmul(rw, {mi, cast, m}, mm.name, d.inputs[0], *qw, "tensor_u8", -1, -1);
}

// DequantizeLinear(QuantizeLinear(X, s, zp), s, zp) with s and zp scalar constants of equal
// values -> {X, s, zp}, or X = -1.
struct ActQdq { int x = -1, scale = -1, zero = -1; };
ActQdq match_act_qdq(const Graph& g, const Uses& uses, int a) {
  int dq = uses.producer_of(a);
  if (!is_op(g, dq, OpType::DequantizeLinear)) return {};
  int q = uses.producer_of(g.nodes[dq].inputs[0]);
  if (!is_op(g, q, OpType::QuantizeLinear)) return {};
  const Tensor* s1 = scalar_constant(g, input(g, q, 1));
  const Tensor* s2 = scalar_constant(g, input(g, dq, 1));
  if (!s1 || !s2 || s1->ptr<float>()[0] != s2->ptr<float>()[0] || !(s1->ptr<float>()[0] > 0)) return {};
  const Tensor* z1 = constant(g, input(g, q, 2));
  const Tensor* z2 = constant(g, input(g, dq, 2));
  if (!z1 || !z2 || z1->numel() != 1 || z2->numel() != 1 || z1->dtype() != z2->dtype() ||
      (z1->dtype() != DType::U8 && z1->dtype() != DType::I8) || int_at(*z1, 0) != int_at(*z2, 0))
    return {};
  return {g.nodes[q].inputs[0], input(g, q, 1), input(g, q, 2)};
}

// MatMul(DQ(Q(X)), DQ(Wq)) or Gemm(DQ(Q(X)), DQ(Wq), C) (transA 0, alpha = beta = 1): the
// weight's DequantizeLinear is per column (axis of N) or per tensor.
void fuse_static(Rewriter& rw, int mi) {
  const Graph& g = rw.g;
  const Uses& uses = rw.uses;
  const Node& mm = g.nodes[mi];
  bool gemm = mm.op == OpType::Gemm;
  bool trans = gemm && mm.attrs.get_int("transB", 0) == 1;
  if (gemm && (mm.attrs.get_int("transA", 0) != 0 || mm.attrs.get_float("alpha", 1.0) != 1.0 ||
               mm.attrs.get_float("beta", 1.0) != 1.0))
    return;
  ActQdq act = match_act_qdq(g, uses, mm.inputs[0]);
  if (act.x < 0) return;
  int wdq = uses.producer_of(mm.inputs[1]);
  if (!is_op(g, wdq, OpType::DequantizeLinear) || uses.single_reader(mm.inputs[1]) != mi) return;
  const Node& wd = g.nodes[wdq];
  const Tensor* w = constant(g, wd.inputs[0]);
  const Tensor* scale = constant(g, input(g, wdq, 1));
  int zp_id = input(g, wdq, 2);
  const Tensor* zp = zp_id >= 0 ? constant(g, zp_id) : nullptr;
  if (!w || !scale || (zp_id >= 0 && !zp) || wd.attrs.has("block_size")) return;
  int64_t axis = wd.attrs.get_int("axis", 1);
  if (scale->numel() > 1 && axis != (trans ? 0 : 1) && axis != (trans ? -2 : -1)) return;
  auto qw = q_weights(w, zp, scale, trans);
  if (!qw) return;
  int bias = gemm ? input(g, mi, 2) : -1;
  const Tensor* bt = bias >= 0 ? constant(g, bias) : nullptr;
  if (bias >= 0 && (!bt || bt->dtype() != DType::F32 || bt->shape() != Shape{qw->N})) return;
  emit_qmatmul(rw, {wdq, mi}, mm.name, act.x, *qw, "static", act.scale, act.zero, bias);
}

// Conv(DQ(Q(X)), DQ(Wq), B), group 1, the weight's DequantizeLinear per output channel (axis 0)
// or per tensor -> QConv.
void fuse_conv(Rewriter& rw, int ci) {
  Graph& g = rw.g;
  const Uses& uses = rw.uses;
  const Node& conv = g.nodes[ci];
  if (conv.attrs.get_int("group", 1) != 1) return;
  ActQdq act = match_act_qdq(g, uses, conv.inputs[0]);
  if (act.x < 0) return;
  int wdq = uses.producer_of(conv.inputs[1]);
  if (!is_op(g, wdq, OpType::DequantizeLinear) || uses.single_reader(conv.inputs[1]) != ci) return;
  const Node& wd = g.nodes[wdq];
  const Tensor* w = constant(g, wd.inputs[0]);
  const Tensor* scale = constant(g, input(g, wdq, 1));
  int zp_id = input(g, wdq, 2);
  const Tensor* zp = zp_id >= 0 ? constant(g, zp_id) : nullptr;
  if (!w || w->rank() < 3 || !scale || (zp_id >= 0 && !zp) || wd.attrs.has("block_size")) return;
  if (scale->numel() > 1 && wd.attrs.get_int("axis", 1) != 0) return;
  int64_t m = w->dim(0);
  Tensor w2 = w->reshaped({m, w->numel() / std::max<int64_t>(m, 1)});
  auto qw = q_weights(&w2, zp, scale, true);
  int bias = input(g, ci, 2);
  const Tensor* bt = bias >= 0 ? constant(g, bias) : nullptr;
  if (!qw || (bias >= 0 && (!bt || bt->dtype() != DType::F32 || bt->shape() != Shape{m}))) return;
  // Never an Add after the Conv: a [M] bias would broadcast over its last axis, not M.
  Epilogue ep = absorb_epilogue(g, uses, conv.outputs[0], m, false);
  ep.bias = bias;
  std::vector<int> nodes = {wdq, ci};
  nodes.insert(nodes.end(), ep.nodes.begin(), ep.nodes.end());
  if (!rw.free(nodes)) return;
  Node f = conv;  // keeps the Conv attributes
  f.op = OpType::QConv;
  f.inputs = {act.x, pack_weights(g, conv.name, *qw), scale_of(g, conv.name, *qw), ep.bias,
              act.scale, act.zero};
  f.outputs = {ep.y};
  f.attrs.set("w_shape", std::vector<int64_t>(w->shape().begin(), w->shape().end()));
  f.attrs.set("activation", ep.act);
  rw.replace(nodes, std::move(f));
}

// onnxruntime's QDQ writes biases as DequantizeLinear(int32 constant): computed once here (as
// folding would, but folding runs after these passes), so the patterns see a float bias.
int fold_bias_dequantize(Graph& g) {
  int folded = 0;
  std::vector<Node> kept;
  for (Node& node : g.nodes) {
    bool bias = node.op == OpType::DequantizeLinear && node.outputs.size() == 1 &&
                constant(g, node.inputs[0]) && constant(g, node.inputs[0])->dtype() == DType::I32;
    std::vector<const Tensor*> in;
    for (int id : node.inputs) {
      in.push_back(id >= 0 ? constant(g, id) : nullptr);
      bias = bias && (id < 0 || in.back());
    }
    if (!bias) {
      kept.push_back(std::move(node));
      continue;
    }
    g.constants[node.outputs[0]] = evaluate_node(node, in, ErrorKind::Model)[0];
    folded++;
  }
  g.nodes = std::move(kept);
  return folded;
}

// A uint8 / int8 scalar constant (a zero point).
const Tensor* q8_scalar(const Graph& g, int id) {
  const Tensor* t = constant(g, id);
  return t && t->numel() == 1 && t->rank() <= 1 && (t->dtype() == DType::U8 || t->dtype() == DType::I8)
             ? t
             : nullptr;
}

// QLinearMatMul / QLinearConv (onnxruntime's QOperator format) with constant weights, scalar
// activation and output scales: the nodes that stand in for it, in order —
// DequantizeLinear(a) -> QMatMul | QConv (static, requantizing a to the same codes exactly)
// -> QuantizeLinear(y, y_scale, y_zp) — or none when it does not fit.
std::vector<Node> expand_qlinear(Graph& g, const Node& n) {
  bool conv = n.op == OpType::QLinearConv;
  int a = n.inputs[0], sa = n.inputs[1], za = n.inputs[2], sy = n.inputs[6], zy = n.inputs[7];
  if (!scalar_constant(g, sa) || !q8_scalar(g, za) || !scalar_constant(g, sy) || !q8_scalar(g, zy) ||
      !(scalar_constant(g, sa)->ptr<float>()[0] > 0))
    return {};
  const Tensor* w = constant(g, n.inputs[3]);
  const Tensor* ws = constant(g, n.inputs[4]);
  const Tensor* wz = constant(g, n.inputs[5]);
  if (!w || !ws || !wz || (conv && (w->rank() < 3 || n.attrs.get_int("group", 1) != 1))) return {};
  int64_t m = conv ? w->dim(0) : 0;
  Tensor w2 = conv ? w->reshaped({m, w->numel() / std::max<int64_t>(m, 1)}) : *w;
  auto qw = q_weights(&w2, wz, ws, conv);
  if (!qw) return {};
  int bias = -1;
  if (conv && n.inputs.size() > 8 && n.inputs[8] >= 0) {
    // int32 B at scale x_scale * w_scale[m]: a float bias with the same value.
    const Tensor* b = constant(g, n.inputs[8]);
    if (!b || b->dtype() != DType::I32 || b->shape() != Shape{m}) return {};
    Tensor bf = Tensor::empty(DType::F32, {m});
    float xs = scalar_constant(g, sa)->ptr<float>()[0];
    for (int64_t i = 0; i < m; i++)
      bf.ptr<float>()[i] = (float)b->ptr<int32_t>()[i] * (xs * qw->scale.ptr<float>()[i]);
    bias = g.add_value(n.name + "/bias", DType::F32);
    g.constants[bias] = std::move(bf);
  }
  Node dq;
  dq.op = OpType::DequantizeLinear;
  dq.name = n.name + "/dequantize";
  dq.inputs = {a, sa, za};
  dq.outputs = {g.add_value(n.name + "/a", DType::F32)};
  Node mm;
  mm.name = n.name;
  mm.inputs = {dq.outputs[0], pack_weights(g, n.name, *qw), scale_of(g, n.name, *qw), bias, sa, za};
  mm.outputs = {g.add_value(n.name + "/y", DType::F32)};
  mm.attrs.set("activation", std::string("none"));
  if (conv) {
    mm = Node{n.op, n.name, mm.inputs, mm.outputs, n.attrs};
    mm.op = OpType::QConv;
    mm.attrs.set("w_shape", std::vector<int64_t>(w->shape().begin(), w->shape().end()));
    mm.attrs.set("activation", std::string("none"));
  } else {
    mm.op = OpType::QMatMul;
    mm.attrs.set("n", qw->N);
    mm.attrs.set("a_mode", std::string("static"));
  }
  Node q;
  q.op = OpType::QuantizeLinear;
  q.name = n.name + "/quantize";
  q.inputs = {mm.outputs[0], sy, zy};
  q.outputs = n.outputs;
  return {std::move(dq), std::move(mm), std::move(q)};
}

}  // namespace

int fuse_qlinear(Graph& g) {
  int fused = 0;
  std::vector<Node> nodes;
  for (Node& n : g.nodes) {
    std::vector<Node> parts;
    if (n.op == OpType::QLinearMatMul || n.op == OpType::QLinearConv) parts = expand_qlinear(g, n);
    if (parts.empty()) {
      nodes.push_back(std::move(n));
      continue;
    }
    for (Node& p : parts) nodes.push_back(std::move(p));
    fused++;
  }
  g.nodes = std::move(nodes);
  return fused;
}

int fuse_qmatmul(Graph& g) {
  Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); i++) {
    if (rw.drop[i]) continue;
    OpType op = g.nodes[i].op;
    if (op == OpType::MatMulInteger) {
      fuse_token(rw, (int)i);
      if (!rw.drop[i]) fuse_tensor(rw, (int)i);
    } else if (op == OpType::MatMul || op == OpType::Gemm) {
      fuse_static(rw, (int)i);
    } else if (op == OpType::Conv) {
      fuse_conv(rw, (int)i);
    }
  }
  return rw.finish();
}

int fuse_matmul_nbits(Graph& g) {
  Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); i++) {
    const Node& mm = g.nodes[i];
    if (mm.op != OpType::MatMulNBits || rw.drop[i]) continue;
    int64_t K = mm.attrs.get_int("K", 0), N = mm.attrs.get_int("N", 0);
    int64_t group = mm.attrs.get_int("block_size", 0);
    const Tensor* b = constant(g, input(g, (int)i, 1));
    const Tensor* scales = constant(g, input(g, (int)i, 2));
    int zp_id = input(g, (int)i, 3);
    const Tensor* zp = zp_id >= 0 ? constant(g, zp_id) : nullptr;
    if (!b || !scales || (zp_id >= 0 && !zp) || input(g, (int)i, 4) >= 0) continue;
    if (K < 1 || N < 1 || group < 32 || group % 32 != 0) continue;
    int64_t groups = q4g_groups(K, group);
    // MatMulNBits' B [N, blocks, group / 2] is Q4G's q byte for byte; the importer checked sizes.
    if (b->dtype() != DType::U8 || b->numel() != N * q4g_row_bytes(K, group) ||
        scales->dtype() != DType::F32 || scales->numel() != N * groups ||
        (zp && (zp->dtype() != DType::U8 || zp->numel() != N * q4g_zp_row_bytes(K, group))))
      continue;
    int64_t nb = (K + 31) / 32;
    Tensor codes = Tensor::empty(DType::U8, {N, nb, 16});
    Tensor sc = Tensor::empty(DType::F32, {N, groups}), off = Tensor::empty(DType::F32, {N, groups});
    cpu::q4_pack_from_q4g(b->ptr<uint8_t>(), scales->ptr<float>(), zp ? zp->ptr<uint8_t>() : nullptr,
                          N, K, group, codes.ptr<uint8_t>(), sc.ptr<float>(), off.ptr<float>());
    Epilogue ep = epilogue(rw, mm.outputs[0], N, input(g, (int)i, 5));
    std::vector<int> nodes = {(int)i};
    nodes.insert(nodes.end(), ep.nodes.begin(), ep.nodes.end());
    if (!rw.free(nodes)) continue;
    std::string name = mm.name;
    int ci = g.add_value(name + "/codes", DType::U8), si = g.add_value(name + "/scales", DType::F32);
    int oi = g.add_value(name + "/offsets", DType::F32);
    g.constants[ci] = std::move(codes);
    g.constants[si] = std::move(sc);
    g.constants[oi] = std::move(off);
    Node f;
    f.op = OpType::Q4MatMul;
    f.name = name;
    f.inputs = {g.nodes[i].inputs[0], ci, si, oi};
    if (ep.bias >= 0) f.inputs.push_back(ep.bias);
    f.outputs = {ep.y};
    f.attrs.set("n", N);
    f.attrs.set("k", K);
    f.attrs.set("group", group);
    f.attrs.set("activation", ep.act);
    rw.replace(nodes, std::move(f));
  }
  return rw.finish();
}

int fuse_quant_activation(Graph& g) {
  Rewriter rw(g);
  for (size_t i = 0; i < g.nodes.size(); i++) {
    const Node& q = g.nodes[i];
    bool quant = q.op == OpType::QMatMul || q.op == OpType::Q4MatMul || q.op == OpType::QConv;
    if (!quant || rw.drop[i] || q.attrs.get_string("activation", "none") != "none") continue;
    // N only matters to an Add, which take_add = false never absorbs.
    Epilogue ep = absorb_epilogue(g, rw.uses, q.outputs[0], 0, false);
    if (ep.nodes.empty()) continue;
    std::vector<int> nodes = {(int)i, ep.nodes[0]};
    if (!rw.free(nodes)) continue;
    Node f = q;
    f.outputs = {ep.y};
    f.attrs.set("activation", ep.act);
    rw.replace(nodes, std::move(f));
  }
  return rw.finish();
}

int fuse_quant(Graph& g) {
  int n = fold_bias_dequantize(g);
  n += fuse_qmatmul(g) + fuse_matmul_nbits(g) + fuse_qlinear(g);
  if (n) eliminate_dead_nodes(g);
  return n;
}

std::vector<const Node*> quant_leftovers(const Graph& g) {
  static const OpType kQuantOps[] = {OpType::QuantizeLinear, OpType::DequantizeLinear,
                                     OpType::DynamicQuantizeLinear, OpType::MatMulInteger,
                                     OpType::QLinearMatMul, OpType::ConvInteger,
                                     OpType::QLinearConv, OpType::MatMulNBits};
  static const OpType kMatmuls[] = {OpType::MatMul, OpType::Gemm, OpType::Conv, OpType::ConvTranspose};
  auto is_any = [](OpType op, const auto& ops) {
    return std::find(std::begin(ops), std::end(ops), op) != std::end(ops);
  };
  Uses uses(g);
  std::vector<const Node*> out;
  for (const Node& n : g.nodes) {
    if (!is_any(n.op, kQuantOps)) continue;
    // Quantize / dequantize elsewhere is elementwise (a fast kernel; a DequantizeLinear of
    // constants folds): only one whose result a float matmul reads means a slow path.
    if (n.op == OpType::QuantizeLinear) continue;
    if (n.op == OpType::DequantizeLinear) {
      auto it = uses.readers.find(n.outputs[0]);
      bool feeds_matmul = false;
      if (it != uses.readers.end())
        for (int r : it->second) feeds_matmul = feeds_matmul || is_any(g.nodes[r].op, kMatmuls);
      if (!feeds_matmul) continue;
    }
    out.push_back(&n);
  }
  return out;
}

}  // namespace ember
