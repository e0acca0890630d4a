// Fusion passes: pattern matching over single-use chains. A node is absorbed only when its
// output feeds exactly one node and is not a graph output, so nothing else sees the change.
#include "graph/fuse.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "graph/fold.h"
#include "graph/fuse_util.h"
#include "kernels/generic/gemm_bf16.h"
#include "kernels/generic/kernels_generic.h"

namespace ember {

using namespace fuse;

int fuse_gelu(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  const double inv_sqrt2 = 1.0 / std::sqrt(2.0);
  for (size_t e = 0; e < g.nodes.size(); e++) {
    if (g.nodes[e].op != OpType::Erf || rw.drop[e]) continue;
    // u = x / sqrt2 (or x * 1/sqrt2) -> erf -> + 1
    int u = g.nodes[e].inputs[0];
    int scale = uses.producer_of(u);
    if (scale < 0 || uses.single_reader(u) != (int)e) continue;
    const Node& sn = g.nodes[scale];
    int x = -1;
    if (sn.op == OpType::Div && sn.inputs.size() == 2 && is_scalar(g, sn.inputs[1], std::sqrt(2.0)))
      x = sn.inputs[0];
    if (sn.op == OpType::Mul && (is_scalar(g, sn.inputs[1], inv_sqrt2) || is_scalar(g, sn.inputs[0], inv_sqrt2)))
      x = is_scalar(g, sn.inputs[1], inv_sqrt2) ? sn.inputs[0] : sn.inputs[1];
    if (x < 0) continue;
    int erf_out = g.nodes[e].outputs[0];
    int add = uses.single_reader(erf_out);
    if (!binary_with_scalar(g, add, OpType::Add, erf_out, 1.0)) continue;
    int s = g.nodes[add].outputs[0];
    int m1 = uses.single_reader(s);
    if (m1 < 0 || g.nodes[m1].op != OpType::Mul) continue;
    int o = other_input(g.nodes[m1], s);
    std::vector<int> chain = {scale, (int)e, add, m1};
    int result = -1;
    if (o == x) {
      // x * (1 + erf) then * 0.5
      int m2 = uses.single_reader(g.nodes[m1].outputs[0]);
      if (!binary_with_scalar(g, m2, OpType::Mul, g.nodes[m1].outputs[0], 0.5)) continue;
      chain.push_back(m2);
      result = g.nodes[m2].outputs[0];
    } else {
      // (x * 0.5) * (1 + erf)
      int half = uses.producer_of(o);
      if (half < 0 || uses.single_reader(o) != m1 || !binary_with_scalar(g, half, OpType::Mul, x, 0.5))
        continue;
      chain.push_back(half);
      result = g.nodes[m1].outputs[0];
    }
    if (!rw.free(chain)) continue;
    Node gelu;
    gelu.op = OpType::Gelu;
    gelu.name = g.nodes[e].name + "/gelu";
    gelu.inputs = {x};
    gelu.outputs = {result};
    rw.replace(chain, std::move(gelu));
  }
  return rw.finish();
}

namespace {

// Gemm(A, B, C) that is A @ B (+ C): transA 0, alpha 1, beta 1 where C is given, B a 2-D f32
// constant (transB either way), C absent or a f32 constant of N elements ([N], [1, N]) or one
// (broadcast). Sets the bias constant (a new [N] value when C is not [N] already), or -1.
bool plain_gemm(Graph& g, const Node& n, int* bias) {
  const Attrs& at = n.attrs;
  if (at.get_int("transA", 0) != 0 || at.get_float("alpha", 1.0) != 1.0) return false;
  const Tensor* w = constant(g, n.inputs[1]);
  if (!w || w->dtype() != DType::F32 || w->rank() != 2) return false;
  const int64_t N = at.get_int("transB", 0) ? w->dim(0) : w->dim(1);
  *bias = -1;
  if (n.inputs.size() < 3 || n.inputs[2] < 0) return true;
  const Tensor* c = constant(g, n.inputs[2]);
  if (!c || c->dtype() != DType::F32 || at.get_float("beta", 1.0) != 1.0) return false;
  if (c->shape() == Shape{N}) {
    *bias = n.inputs[2];
  } else if (c->numel() == N && c->rank() == 2 && c->dim(0) == 1) {
    *bias = g.add_value(g.values[n.inputs[2]].name + "/row", DType::F32);
    g.constants[*bias] = Tensor::empty(DType::F32, {N});
    std::copy(c->ptr<float>(), c->ptr<float>() + N, g.constants[*bias].ptr<float>());
  } else if (c->numel() == 1 && c->rank() <= 2) {
    *bias = g.add_value(g.values[n.inputs[2]].name + "/row", DType::F32);
    g.constants[*bias] = Tensor::empty(DType::F32, {N});
    std::fill_n(g.constants[*bias].ptr<float>(), N, c->ptr<float>()[0]);
  } else {
    return false;
  }
  return true;
}

}  // namespace

int fuse_matmul(Graph& g, bool bf16) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t mi = 0; mi < g.nodes.size(); mi++) {
    if (rw.drop[mi]) continue;
    const OpType op = g.nodes[mi].op;
    int gemm_bias = -1;
    if (op != OpType::MatMul && !(op == OpType::Gemm && plain_gemm(g, g.nodes[mi], &gemm_bias)))
      continue;
    Node& mm = g.nodes[mi];  // after plain_gemm: it may add values, not nodes
    const Tensor* w = constant(g, mm.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->rank() != 2) continue;
    const bool tb = op == OpType::Gemm && mm.attrs.get_int("transB", 0) != 0;
    int64_t K = tb ? w->dim(1) : w->dim(0), N = tb ? w->dim(0) : w->dim(1);
    // A Gemm with C has its bias: only an activation may follow into the epilogue.
    Epilogue ep = absorb_epilogue(g, uses, mm.outputs[0], N, gemm_bias < 0);
    if (gemm_bias >= 0) ep.bias = gemm_bias;
    std::vector<int> absorbed = {(int)mi};
    absorbed.insert(absorbed.end(), ep.nodes.begin(), ep.nodes.end());
    Tensor packed;
    if (bf16) {
      packed = Tensor::empty(DType::BF16, cpu::bgemm_packed_b_shape(K, N));
      cpu::bgemm_pack_b(w->ptr<float>(), tb ? 1 : N, tb ? K : 1, K, N,
                        static_cast<uint16_t*>(packed.data()));
    } else {
      packed = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
      cpu::sgemm_pack_b(w->ptr<float>(), tb ? 1 : N, tb ? K : 1, K, N, packed.ptr<float>());
    }
    int wp = add_packed_weights(g, uses, mm.inputs[1], "/packed", packed);
    Node f;
    f.op = OpType::FusedMatMul;
    f.name = mm.name;
    f.inputs = {g.nodes[mi].inputs[0], wp};
    if (ep.bias >= 0) f.inputs.push_back(ep.bias);
    f.outputs = {ep.y};
    f.attrs.set("n", N);
    f.attrs.set("activation", ep.act);
    rw.replace(absorbed, std::move(f));
  }
  return rw.finish();
}

int fuse_matmul_epilogue(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t mi = 0; mi < g.nodes.size(); mi++) {
    if (rw.drop[mi] || g.nodes[mi].op != OpType::MatMul) continue;
    const Node& mm = g.nodes[mi];
    const Tensor* w = constant(g, mm.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->rank() != 2) continue;
    const int64_t N = w->dim(1);
    Epilogue ep = absorb_epilogue(g, uses, mm.outputs[0], N);
    if (ep.nodes.empty()) continue;  // nothing to absorb: MatMul as it is
    std::vector<int> absorbed = {(int)mi};
    absorbed.insert(absorbed.end(), ep.nodes.begin(), ep.nodes.end());
    Node f;
    f.op = OpType::FusedMatMul;
    f.name = mm.name;
    f.inputs = {mm.inputs[0], mm.inputs[1]};
    if (ep.bias >= 0) f.inputs.push_back(ep.bias);
    f.outputs = {ep.y};
    f.attrs.set("n", N);
    f.attrs.set("activation", ep.act);
    f.attrs.set("packed", int64_t(0));
    rw.replace(absorbed, std::move(f));
  }
  return rw.finish();
}

int fuse_conv_batch_norm(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t ci = 0; ci < g.nodes.size(); ci++) {
    const Node& conv = g.nodes[ci];
    if (conv.op != OpType::Conv || conv.inputs.size() < 2) continue;
    const Tensor* w = constant(g, conv.inputs[1]);
    const Tensor* b = conv.inputs.size() > 2 && conv.inputs[2] >= 0 ? constant(g, conv.inputs[2]) : nullptr;
    if (!w || w->dtype() != DType::F32 || w->rank() < 3) continue;
    if (conv.inputs.size() > 2 && conv.inputs[2] >= 0 && (!b || b->dtype() != DType::F32)) continue;
    int bi = uses.single_reader(conv.outputs[0]);
    if (bi < 0 || g.nodes[bi].op != OpType::BatchNormalization) continue;
    const Node& bn = g.nodes[bi];
    if (bn.inputs.size() != 5 || bn.inputs[0] != conv.outputs[0] || bn.outputs.size() != 1 ||
        bn.attrs.get_int("training_mode", 0) != 0)
      continue;
    int64_t m = w->dim(0);
    const Tensor* p[4];  // scale, bias, mean, var
    bool ok = true;
    for (int k = 0; k < 4; k++) {
      p[k] = constant(g, bn.inputs[1 + k]);
      ok = ok && p[k] && p[k]->dtype() == DType::F32 && p[k]->shape() == Shape{m};
    }
    if (!ok || (b && b->shape() != Shape{m})) continue;
    // y = (conv(x) + b - mean) * s + beta, s = scale / sqrt(var + eps): scale W's output
    // channel m by s[m], bias b' = (b - mean) * s + beta. In double, rounded once.
    double eps = bn.attrs.get_float("epsilon", 1e-5);
    int64_t per = w->numel() / std::max<int64_t>(m, 1);
    Tensor w2 = Tensor::empty(DType::F32, w->shape()), b2 = Tensor::empty(DType::F32, {m});
    for (int64_t o = 0; o < m; o++) {
      double sc = p[0]->ptr<float>()[o] / std::sqrt((double)p[3]->ptr<float>()[o] + eps);
      for (int64_t j = 0; j < per; j++)
        w2.ptr<float>()[o * per + j] = (float)(w->ptr<float>()[o * per + j] * sc);
      double bias = b ? b->ptr<float>()[o] : 0.0;
      b2.ptr<float>()[o] = (float)((bias - p[2]->ptr<float>()[o]) * sc + p[1]->ptr<float>()[o]);
    }
    int wid = g.add_value(g.values[conv.inputs[1]].name + "/bn", DType::F32);
    int bid = g.add_value(bn.name + "/bias", DType::F32);
    g.constants[wid] = w2;
    g.constants[bid] = b2;
    Node f = conv;
    f.inputs = {conv.inputs[0], wid, bid};
    f.outputs = bn.outputs;
    rw.replace({(int)ci, bi}, std::move(f));
  }
  return rw.finish();
}

int fuse_attention(Graph& g, bool bf16) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t si = 0; si < g.nodes.size(); si++) {
    const Node& sm = g.nodes[si];
    if (sm.op != OpType::Softmax || sm.attrs.has("legacy_axis_2d") || sm.attrs.get_int("axis", -1) != -1)
      continue;
    // probs -> MatMul(probs, V)
    int pv = uses.single_reader(sm.outputs[0]);
    if (pv < 0 || g.nodes[pv].op != OpType::MatMul || g.nodes[pv].inputs[0] != sm.outputs[0]) continue;
    // [Add(scaled, mask)] before the softmax
    int x = sm.inputs[0], add = -1, mask = -1;
    int prod = uses.producer_of(x);
    if (prod >= 0 && g.nodes[prod].op == OpType::Add && uses.single_reader(x) == (int)si) {
      const Node& an = g.nodes[prod];
      for (int side = 0; side < 2 && add < 0; side++) {
        int sp = uses.producer_of(an.inputs[side]);
        if (sp >= 0 && (g.nodes[sp].op == OpType::Mul || g.nodes[sp].op == OpType::Div)) {
          add = prod;
          mask = an.inputs[1 - side];
          x = an.inputs[side];
        }
      }
    }
    // Mul(scores, c) or Div(scores, c), c a float32 scalar constant
    int sc = uses.producer_of(x);
    if (sc < 0 || uses.single_reader(x) != (add >= 0 ? add : (int)si)) continue;
    const Node& sn = g.nodes[sc];
    int scores = -1;
    const Tensor* c = nullptr;
    if (sn.op == OpType::Div || sn.op == OpType::Mul) {
      for (int side = 0; side < 2 && !c; side++) {
        if (sn.op == OpType::Div && side == 0) continue;  // the divisor must be input 1
        const Tensor* t = scalar_constant(g, sn.inputs[side]);
        if (t) {
          c = t;
          scores = sn.inputs[1 - side];
        }
      }
    }
    if (!c) continue;
    int qk = uses.producer_of(scores);
    if (qk < 0 || g.nodes[qk].op != OpType::MatMul || uses.single_reader(scores) != sc) continue;
    Node f;
    f.op = OpType::Attention;
    f.name = g.nodes[pv].name;
    f.inputs = {g.nodes[qk].inputs[0], g.nodes[qk].inputs[1], g.nodes[pv].inputs[1]};
    if (mask >= 0) f.inputs.push_back(mask);
    f.outputs = g.nodes[pv].outputs;
    f.attrs.set("scale", (double)c->ptr<float>()[0]);
    f.attrs.set("scale_op", std::string(sn.op == OpType::Div ? "div" : "mul"));
    if (bf16) f.attrs.set("precision", std::string("bf16"));
    rw.replace({qk, sc, add, (int)si, pv}, std::move(f));
  }
  return rw.finish();
}

namespace {

// Node i is ReduceMean over the last axis only, keeping dims (axes input [-1]).
bool is_mean_last(const Graph& g, int i) {
  if (i < 0 || g.nodes[i].op != OpType::ReduceMean || g.nodes[i].inputs.size() != 2) return false;
  const Tensor* axes = constant(g, g.nodes[i].inputs[1]);
  return axes && axes->dtype() == DType::I64 && axes->numel() == 1 && axes->ptr<int64_t>()[0] == -1 &&
         g.nodes[i].attrs.get_int("keepdims", 1) == 1;
}

}  // namespace

int fuse_layer_norm(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t si = 0; si < g.nodes.size(); si++) {
    // d = x - mean(x)
    const Node& sub = g.nodes[si];
    if (sub.op != OpType::Sub || sub.inputs.size() != 2) continue;
    int x = sub.inputs[0], m = uses.producer_of(sub.inputs[1]);
    if (!is_mean_last(g, m) || g.nodes[m].inputs[0] != x || uses.single_reader(sub.inputs[1]) != (int)si)
      continue;
    int d = sub.outputs[0];
    auto rd = uses.readers.find(d);
    if (uses.is_output[d] || rd == uses.readers.end()) continue;
    std::vector<int> d_readers = rd->second;  // Mul(d, d) reads it twice: count nodes
    d_readers.erase(std::unique(d_readers.begin(), d_readers.end()), d_readers.end());
    if (d_readers.size() != 2) continue;
    // var = mean(d^2) (Pow(d, 2) or Mul(d, d)); n = d / sqrt(var + eps)
    int sq = -1, div = -1;
    for (int r : d_readers) {
      const Node& rn = g.nodes[r];
      if ((rn.op == OpType::Pow && rn.inputs[0] == d && is_scalar(g, rn.inputs[1], 2.0)) ||
          (rn.op == OpType::Mul && rn.inputs[0] == d && rn.inputs[1] == d))
        sq = r;
      if (rn.op == OpType::Div && rn.inputs[0] == d) div = r;
    }
    if (sq < 0 || div < 0) continue;
    int var = uses.single_reader(g.nodes[sq].outputs[0]);
    if (!is_mean_last(g, var)) continue;
    int add = uses.single_reader(g.nodes[var].outputs[0]);
    if (add < 0 || g.nodes[add].op != OpType::Add) continue;
    const Tensor* eps = scalar_constant(g, other_input(g.nodes[add], g.nodes[var].outputs[0]));
    int sqrt = uses.single_reader(g.nodes[add].outputs[0]);
    if (!eps || sqrt < 0 || g.nodes[sqrt].op != OpType::Sqrt ||
        uses.single_reader(g.nodes[sqrt].outputs[0]) != div || g.nodes[div].inputs[1] != g.nodes[sqrt].outputs[0])
      continue;
    // Optional affine: * gamma [C], + beta [C] (constants).
    std::vector<int> chain = {m, (int)si, sq, var, add, sqrt, div};
    int y = g.nodes[div].outputs[0], gamma = -1, beta = -1;
    int mul = uses.single_reader(y);
    if (mul >= 0 && g.nodes[mul].op == OpType::Mul) {
      int gm = other_input(g.nodes[mul], y);
      const Tensor* gt = constant(g, gm);
      if (gt && gt->dtype() == DType::F32 && gt->rank() == 1 && gt->numel() > 1) {
        gamma = gm;
        chain.push_back(mul);
        y = g.nodes[mul].outputs[0];
        int ab = uses.single_reader(y);
        if (ab >= 0 && g.nodes[ab].op == OpType::Add) {
          int bm = other_input(g.nodes[ab], y);
          const Tensor* bt = constant(g, bm);
          if (bt && bt->dtype() == DType::F32 && bt->shape() == gt->shape()) {
            beta = bm;
            chain.push_back(ab);
            y = g.nodes[ab].outputs[0];
          }
        }
      }
    }
    if (!rw.free(chain) || gamma < 0) continue;  // without a scale the [C] shape is unknown here
    Node ln;
    ln.op = OpType::LayerNormalization;
    ln.name = sub.name + "/layer_norm";
    ln.inputs = {x, gamma};
    if (beta >= 0) ln.inputs.push_back(beta);
    ln.outputs = {y};
    ln.attrs.set("axis", int64_t(-1));
    ln.attrs.set("epsilon", (double)eps->ptr<float>()[0]);
    rw.replace(chain, std::move(ln));
  }
  return rw.finish();
}

int fuse_rms_norm(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t mi = 0; mi < g.nodes.size(); mi++) {
    // ms = mean(x^2) over the last axis: Pow(x, 2) or Mul(x, x), read only by the mean
    if (!is_mean_last(g, (int)mi)) continue;
    int sq_out = g.nodes[mi].inputs[0], sq = uses.producer_of(sq_out);
    if (sq < 0 || uses.single_reader(sq_out) != (int)mi) continue;
    const Node& sn = g.nodes[sq];
    int x = sn.inputs.empty() ? -1 : sn.inputs[0];
    bool square = sn.inputs.size() == 2 &&
                  ((sn.op == OpType::Pow && is_scalar(g, sn.inputs[1], 2.0)) ||
                   (sn.op == OpType::Mul && sn.inputs[1] == x));
    if (!square) continue;
    // rms = Sqrt(ms + eps), eps a float32 scalar constant on either side (so x is float32)
    int ms = g.nodes[mi].outputs[0];
    int add = uses.single_reader(ms);
    if (add < 0 || g.nodes[add].op != OpType::Add) continue;
    const Tensor* eps = scalar_constant(g, other_input(g.nodes[add], ms));
    int sqrt = uses.single_reader(g.nodes[add].outputs[0]);
    if (!eps || sqrt < 0 || g.nodes[sqrt].op != OpType::Sqrt) continue;
    // n = Div(x, rms), or Mul(x, r) with r = Reciprocal(rms) or Div(1, rms), either order
    int rms = g.nodes[sqrt].outputs[0];
    int dn = uses.single_reader(rms);
    if (dn < 0) continue;
    std::vector<int> chain = {sq, (int)mi, add, sqrt, dn};
    const Node& d = g.nodes[dn];
    int n = -1;
    if (d.op == OpType::Div && d.inputs.size() == 2 && d.inputs[0] == x && d.inputs[1] == rms) {
      n = d.outputs[0];
    } else if (d.op == OpType::Reciprocal ||
               (d.op == OpType::Div && d.inputs.size() == 2 && d.inputs[1] == rms &&
                is_scalar(g, d.inputs[0], 1.0))) {
      int r = d.outputs[0], mul = uses.single_reader(r);
      if (mul < 0 || g.nodes[mul].op != OpType::Mul || other_input(g.nodes[mul], r) != x) continue;
      chain.push_back(mul);
      n = g.nodes[mul].outputs[0];
    }
    if (n < 0) continue;
    // A Cast to float of the float n is a no-op (torch's `.to(input_dtype)` in f32 exports).
    int y = n, w = -1;
    int cast = uses.single_reader(n);
    if (cast >= 0 && g.nodes[cast].op == OpType::Cast &&
        g.nodes[cast].attrs.get_int("to", 0) == 1) {  // ONNX FLOAT
      chain.push_back(cast);
      y = g.nodes[cast].outputs[0];
    }
    // Optional: * w, w a float32 constant [D] or scalar, either order.
    int wm = uses.single_reader(y);
    if (wm >= 0 && g.nodes[wm].op == OpType::Mul) {
      int wv = other_input(g.nodes[wm], y);
      const Tensor* wt = constant(g, wv);
      // A [D] weight must not widen x (last dim 1 broadcast to D): skip where x says so.
      const ValueInfo& xi = g.values[x];
      bool widens = wt && wt->rank() == 1 && wt->numel() > 1 && xi.has_shape &&
                    !xi.dims.empty() && xi.dims.back().value == 1;
      if (wt && wt->dtype() == DType::F32 && wt->rank() <= 1 && wt->numel() >= 1 && !widens &&
          wv != x) {
        w = wv;
        chain.push_back(wm);
        y = g.nodes[wm].outputs[0];
      }
    }
    if (!rw.free(chain)) continue;
    if (w < 0) {  // no weight: ones, one element (broadcast over X[axis:])
      w = g.add_value(g.values[y].name + "/rms_norm_ones", DType::F32);
      Tensor one = Tensor::empty(DType::F32, {1});
      one.ptr<float>()[0] = 1.0f;
      g.constants[w] = one;
    }
    Node f;
    f.op = OpType::RMSNormalization;
    f.name = g.nodes[mi].name + "/rms_norm";
    f.inputs = {x, w};
    f.outputs = {y};
    f.attrs.set("axis", int64_t(-1));
    f.attrs.set("epsilon", (double)eps->ptr<float>()[0]);
    rw.replace(chain, std::move(f));
  }
  return rw.finish();
}

namespace {

// Node i is a Transpose with this permutation.
bool is_transpose(const Graph& g, int i, std::initializer_list<int64_t> perm) {
  return i >= 0 && g.nodes[i].op == OpType::Transpose &&
         g.nodes[i].attrs.get_ints("perm") == std::vector<int64_t>(perm);
}

}  // namespace

int fuse_attention_heads(Graph& g) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t ai = 0; ai < g.nodes.size(); ai++) {
    Node& at = g.nodes[ai];
    if (at.op != OpType::Attention || at.attrs.get_string("layout", "bhsd") != "bhsd") continue;
    // Q = Transpose(q, 0 2 1 3), Kt = Transpose(k, 0 2 3 1), V = Transpose(v, 0 2 1 3), each
    // read only here; Y read only by Transpose(., 0 2 1 3).
    int tq = uses.producer_of(at.inputs[0]), tk = uses.producer_of(at.inputs[1]);
    int tv = uses.producer_of(at.inputs[2]), ty = uses.single_reader(at.outputs[0]);
    if (!is_transpose(g, tq, {0, 2, 1, 3}) || !is_transpose(g, tk, {0, 2, 3, 1}) ||
        !is_transpose(g, tv, {0, 2, 1, 3}) || !is_transpose(g, ty, {0, 2, 1, 3}))
      continue;
    bool single = true;
    for (int i = 0; i < 3; i++) single = single && uses.single_reader(at.inputs[i]) == (int)ai;
    if (!single || tq == tk || tq == tv || tk == tv) continue;
    Node f = at;
    f.inputs[0] = g.nodes[tq].inputs[0];
    f.inputs[1] = g.nodes[tk].inputs[0];
    f.inputs[2] = g.nodes[tv].inputs[0];
    f.outputs = g.nodes[ty].outputs;
    f.attrs.set("layout", std::string("bshd"));
    rw.replace({tq, tk, tv, (int)ai, ty}, std::move(f));
  }
  return rw.finish();
}

int mark_conv_bf16(Graph& g) {
  int marked = 0;
  for (Node& n : g.nodes) {
    if (n.op != OpType::Conv || n.inputs.size() < 2 || n.attrs.has("precision")) continue;
    const Tensor* w = constant(g, n.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->rank() < 3) continue;
    if (w->dim(1) == 1 && n.attrs.get_int("group", 1) == w->dim(0)) continue;  // depthwise
    n.attrs.set("precision", std::string("bf16"));
    marked++;
  }
  return marked;
}

int fuse_graph(Graph& graph, const FuseOptions& options) {
  int n = fuse_conv_batch_norm(graph) + fuse_layer_norm(graph) + fuse_rms_norm(graph) +
          fuse_gelu(graph) + fuse_quant_activation(graph) +
          (options.pack_cpu_weights ? fuse_matmul(graph, options.bf16)
                                    : fuse_matmul_epilogue(graph)) +
          fuse_attention(graph, options.bf16 && options.pack_cpu_weights);
  if (options.pack_cpu_weights && options.winograd) n += fuse_conv_winograd(graph);  // after BN
  if (options.pack_cpu_weights && options.bf16) n += mark_conv_bf16(graph);  // after Winograd
  // Takes what those two left.
  if (options.pack_cpu_weights && options.fused_conv)
    n += fuse_conv_packed(graph, options.conv_gathers);
  n += fuse_attention_heads(graph);  // needs fuse_attention's nodes in place
  if (options.fuse_add_norm) n += fuse_add_norm(graph);  // after the norms written out fused
  if (options.fuse_add_norm) n += fuse_norm_quant(graph);  // the AddNorms just made
  // Last: what the other passes leave of elementwise runs (CPU only: no device kernel).
  if (options.pack_cpu_weights) n += fuse_elementwise_chain(graph);
  if (n) eliminate_dead_nodes(graph);
  return n;
}

}  // namespace ember
