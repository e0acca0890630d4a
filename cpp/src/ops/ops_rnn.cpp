// Recurrent and selection ops: LSTM, GRU (ONNX 14+ forms, layout 0/1), TopK.
// LSTM/GRU references loop over time with matrix-vector products per batch row, computing in
// float (double for f64). Activations: the ONNX defaults (f Sigmoid, g/h Tanh) or, from the
// `activations` attribute (names joined by commas, f,g[,h] per direction), any of the
// parameter-free ones: Sigmoid, Tanh, Relu, Softsign, Softplus. TopK sorts each lane stably
// (ties: lower index first).
#include <numeric>

#include "ops/op_util.h"

namespace ember {
namespace {

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

// ---- TopK -----------------------------------------------------------------------------------

int64_t topk_k(const InferCtx& ctx) {
  const Tensor& k = ctx.require_value(1, "K");
  if (k.dtype() != DType::I64) ctx.fail("K must be int64, got ", dtype_name(k.dtype()));
  if (k.numel() != 1 || k.rank() > 1) ctx.fail("K must have one element, got shape ", shape_str(k.shape()));
  return tensor_get_i64(k.contiguous(), 0);
}

std::vector<TensorType> infer_topk(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (t == DType::Bool || dtype_size(t) == 0) ctx.fail("unsupported dtype ", dtype_name(t));
  elem_size(ctx, 0);
  const Shape& s = ctx.in[0].shape;
  if (s.empty()) ctx.fail("X must have rank >= 1");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", -1), (int)s.size());
  int64_t largest = ctx.node.attrs.get_int("largest", 1);
  int64_t sorted = ctx.node.attrs.get_int("sorted", 1);
  if (largest != 0 && largest != 1) ctx.fail("largest must be 0 or 1, got ", largest);
  if (sorted != 0 && sorted != 1) ctx.fail("sorted must be 0 or 1, got ", sorted);
  int64_t k = topk_k(ctx);
  if (k < 0 || k > s[axis])
    ctx.fail("K = ", k, " is out of range for axis ", axis, " of size ", s[axis]);
  Shape out = s;
  out[axis] = k;
  return {TensorType{t, out}, TensorType{DType::I64, out}};
}

void ref_topk(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", -1), x.rank());
  bool largest = ctx.node.attrs.get_int("largest", 1) != 0;
  const Shape& s = x.shape();
  int64_t outer = shape_prod(s, 0, axis), n = s[axis], inner = shape_prod(s, axis + 1, x.rank());
  int64_t k = ctx.has_output(0) ? ctx.output(0).dim(axis) : ctx.output(1).dim(axis);
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      fail(ErrorKind::Model, "[TopK] unsupported dtype bool");
    } else {
      using C = compute_t<T>;
      const T* px = x.ptr<T>();
      T* pv = ctx.has_output(0) ? ctx.output(0).ptr<T>() : nullptr;
      int64_t* pi = ctx.has_output(1) ? ctx.output(1).ptr<int64_t>() : nullptr;
      std::vector<int64_t> idx((size_t)n);
      std::vector<C> v((size_t)n);
      for (int64_t o = 0; o < outer; o++) {
        for (int64_t in = 0; in < inner; in++) {
          for (int64_t j = 0; j < n; j++) v[j] = load(px, (o * n + j) * inner + in);
          std::iota(idx.begin(), idx.end(), 0);
          // NaN ranks above every number when largest (numpy's order), below when smallest.
          auto before = [&](int64_t a, int64_t b) {
            C va = v[a], vb = v[b];
            if constexpr (is_float_v<T>) {
              bool na = std::isnan((double)va), nb = std::isnan((double)vb);
              if (na || nb) return largest ? (na && !nb) : (!na && nb);
            }
            return largest ? va > vb : va < vb;
          };
          std::stable_sort(idx.begin(), idx.end(), before);
          for (int64_t j = 0; j < k; j++) {
            int64_t off = (o * k + j) * inner + in;
            if (pv) store(pv, off, v[idx[j]]);
            if (pi) pi[off] = idx[j];
          }
        }
      }
    }
  });
}

// ---- LSTM / GRU -----------------------------------------------------------------------------

enum class Act : uint8_t { Sigmoid, Tanh, Relu, Softsign, Softplus };

// The activations attribute: per direction f, g (and h for LSTM); empty means the defaults.
template <class Fail>
std::vector<Act> rnn_activations(const Node& n, int per_dir, int dirs, const Fail& bad) {
  std::vector<Act> acts;
  if (!n.attrs.has("activations")) {
    for (int d = 0; d < dirs; d++)
      for (int k = 0; k < per_dir; k++) acts.push_back(k == 0 ? Act::Sigmoid : Act::Tanh);
    return acts;
  }
  std::string list = n.attrs.get_string("activations", ""), name;
  for (size_t i = 0; i <= list.size(); i++) {
    if (i < list.size() && list[i] != ',') {
      name += list[i];
      continue;
    }
    if (name == "Sigmoid") acts.push_back(Act::Sigmoid);
    else if (name == "Tanh") acts.push_back(Act::Tanh);
    else if (name == "Relu") acts.push_back(Act::Relu);
    else if (name == "Softsign") acts.push_back(Act::Softsign);
    else if (name == "Softplus") acts.push_back(Act::Softplus);
    else bad("activation '" + name + "' is not supported (ember has Sigmoid, Tanh, Relu, Softsign, Softplus)");
    name.clear();
  }
  if ((int)acts.size() != per_dir * dirs)
    bad("activations lists " + std::to_string(acts.size()) + " functions, expected " +
        std::to_string(per_dir * dirs));
  return acts;
}

template <class C>
C act_apply(Act a, C x) {
  switch (a) {
    case Act::Sigmoid: return C(1) / (C(1) + std::exp(-x));
    case Act::Tanh: return std::tanh(x);
    case Act::Relu: return x > 0 ? x : C(0);
    case Act::Softsign: return x / (C(1) + std::fabs(x));
    case Act::Softplus: return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
  }
  return x;
}

// Sizes shared by LSTM and GRU. gates: 4 (LSTM, iofc) or 3 (GRU, zrh).
struct RnnDims {
  int64_t seq = 0, batch = 0, input = 0, hidden = 0, dirs = 1;
  int gates = 4;
  bool layout1 = false;
  int direction = 0;  // 0 forward, 1 reverse, 2 bidirectional
};

int rnn_direction(const Node& n, const std::function<void(const std::string&)>& bad) {
  std::string d = n.attrs.get_string("direction", "forward");
  if (d == "forward") return 0;
  if (d == "reverse") return 1;
  if (d == "bidirectional") return 2;
  bad(d);
  return 0;
}

RnnDims rnn_dims(const InferCtx& ctx, int gates) {
  RnnDims d;
  d.gates = gates;
  DType t = ctx.in[0].dtype;
  if (!is_float_dtype(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  int last = gates == 4 ? 7 : 5;
  for (int i = 1; i <= last; i++) {
    if (!ctx.has(i)) continue;
    DType want = i == 4 ? DType::I32 : t;
    if (ctx.in[i].dtype != want)
      ctx.fail("input ", i, " is ", dtype_name(ctx.in[i].dtype), ", expected ", dtype_name(want));
  }
  d.direction = rnn_direction(ctx.node, [&](const std::string& s) {
    ctx.fail("direction must be forward, reverse or bidirectional, got '", s, "'");
  });
  d.dirs = d.direction == 2 ? 2 : 1;
  rnn_activations(ctx.node, gates == 4 ? 3 : 2, (int)d.dirs,
                  [&](const std::string& m) { ctx.fail(m); });
  int64_t layout = ctx.node.attrs.get_int("layout", 0);
  if (layout != 0 && layout != 1) ctx.fail("layout must be 0 or 1, got ", layout);
  d.layout1 = layout == 1;
  if (gates == 3) {
    int64_t lbr = ctx.node.attrs.get_int("linear_before_reset", 0);
    if (lbr != 0 && lbr != 1) ctx.fail("linear_before_reset must be 0 or 1, got ", lbr);
  } else {
    int64_t inf = ctx.node.attrs.get_int("input_forget", 0);
    if (inf != 0 && inf != 1) ctx.fail("input_forget must be 0 or 1, got ", inf);
  }
  if (ctx.node.attrs.has("clip") && !(ctx.node.attrs.get_float("clip", 0) > 0))
    ctx.fail("clip must be positive, got ", ctx.node.attrs.get_float("clip", 0));
  const Shape& x = ctx.in[0].shape;
  const Shape& w = ctx.in[1].shape;
  const Shape& r = ctx.in[2].shape;
  if (x.size() != 3) ctx.fail("X must be 3-D, got ", shape_str(x));
  d.seq = d.layout1 ? x[1] : x[0];
  d.batch = d.layout1 ? x[0] : x[1];
  d.input = x[2];
  if (r.size() != 3 || r[0] != d.dirs || r[1] % gates != 0 || r[1] / gates != r[2])
    ctx.fail("R must be [", d.dirs, ", ", gates, "*hidden, hidden], got ", shape_str(r));
  d.hidden = r[2];
  if (ctx.node.attrs.has("hidden_size") && ctx.node.attrs.get_int("hidden_size", 0) != d.hidden)
    ctx.fail("hidden_size ", ctx.node.attrs.get_int("hidden_size", 0), " does not match R ",
             shape_str(r));
  int64_t gh = gates * d.hidden;
  auto expect = [&](int i, const Shape& want, const char* what) {
    if (ctx.has(i) && ctx.in[i].shape != want)
      ctx.fail(what, " must be ", shape_str(want), ", got ", shape_str(ctx.in[i].shape));
  };
  expect(1, Shape{d.dirs, gh, d.input}, "W");
  expect(3, Shape{d.dirs, 2 * gh}, "B");
  expect(4, Shape{d.batch}, "sequence_lens");
  Shape hs = d.layout1 ? Shape{d.batch, d.dirs, d.hidden} : Shape{d.dirs, d.batch, d.hidden};
  expect(5, hs, "initial_h");
  if (gates == 4) {
    expect(6, hs, "initial_c");
    expect(7, Shape{d.dirs, 3 * d.hidden}, "P");
  }
  (void)w;
  return d;
}

std::vector<TensorType> infer_rnn(const InferCtx& ctx, int gates) {
  RnnDims d = rnn_dims(ctx, gates);
  DType t = ctx.in[0].dtype;
  Shape y = d.layout1 ? Shape{d.batch, d.seq, d.dirs, d.hidden}
                      : Shape{d.seq, d.dirs, d.batch, d.hidden};
  Shape h = d.layout1 ? Shape{d.batch, d.dirs, d.hidden} : Shape{d.dirs, d.batch, d.hidden};
  std::vector<TensorType> out{TensorType{t, y}, TensorType{t, h}};
  if (gates == 4) out.push_back(TensorType{t, h});
  return out;
}

std::vector<TensorType> infer_lstm(const InferCtx& ctx) { return infer_rnn(ctx, 4); }
std::vector<TensorType> infer_gru(const InferCtx& ctx) { return infer_rnn(ctx, 3); }


template <class T>
void rnn_ref_typed(const KernelCtx& ctx, const RnnDims& d) {
  using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const Node& n = ctx.node;
  bool lstm = d.gates == 4;
  bool input_forget = lstm && n.attrs.get_int("input_forget", 0) != 0;
  bool lbr = !lstm && n.attrs.get_int("linear_before_reset", 0) != 0;
  bool has_clip = n.attrs.has("clip");
  C clip = (C)n.attrs.get_float("clip", 0);
  auto cl = [&](C v) { return has_clip ? std::min(std::max(v, -clip), clip) : v; };
  const int64_t S = d.seq, Bn = d.batch, I = d.input, H = d.hidden, G = d.gates;
  const T* X = ctx.input(0).ptr<T>();  // [S, B, I] or [B, S, I]
  const T* W = ctx.input(1).ptr<T>();  // [dirs, G*H, I]
  const T* R = ctx.input(2).ptr<T>();  // [dirs, G*H, H]
  const T* Bi = ctx.has_input(3) ? ctx.input(3).ptr<T>() : nullptr;  // [dirs, 2*G*H]
  const int32_t* L = ctx.has_input(4) ? ctx.input(4).ptr<int32_t>() : nullptr;  // [B]
  const T* H0 = ctx.has_input(5) ? ctx.input(5).ptr<T>() : nullptr;
  const T* C0 = lstm && ctx.has_input(6) ? ctx.input(6).ptr<T>() : nullptr;
  const T* P = lstm && ctx.has_input(7) ? ctx.input(7).ptr<T>() : nullptr;  // [dirs, 3*H]
  T* Y = ctx.has_output(0) ? ctx.output(0).ptr<T>() : nullptr;
  T* YH = ctx.has_output(1) ? ctx.output(1).ptr<T>() : nullptr;
  T* YC = lstm && ctx.has_output(2) ? ctx.output(2).ptr<T>() : nullptr;
  std::vector<int64_t> len((size_t)Bn, S);
  if (L)
    for (int64_t b = 0; b < Bn; b++) {
      if (L[b] < 0 || L[b] > S)
        fail(ErrorKind::Input, "[", op_name(n.op), "] node '", n.name, "': sequence_lens[", b,
             "] = ", L[b], " is outside [0, ", S, "]");
      len[b] = L[b];
    }
  auto x_at = [&](int64_t t, int64_t b) { return d.layout1 ? (b * S + t) * I : (t * Bn + b) * I; };
  auto y_at = [&](int64_t t, int64_t dir, int64_t b) {
    return d.layout1 ? ((b * S + t) * d.dirs + dir) * H : ((t * d.dirs + dir) * Bn + b) * H;
  };
  auto h_at = [&](int64_t dir, int64_t b) {
    return d.layout1 ? (b * d.dirs + dir) * H : (dir * Bn + b) * H;
  };
  if (Y)
    for (int64_t i = 0; i < ctx.output(0).numel(); i++) store(Y, i, compute_t<T>(0));
  std::vector<C> h(H), c(H), g(G * H), hr(H);
  int per_dir = lstm ? 3 : 2;
  std::vector<Act> acts = rnn_activations(n, per_dir, (int)d.dirs, [&](const std::string& m) {
    fail(ErrorKind::Model, "[", op_name(n.op), "] node '", n.name, "': ", m);
  });
  for (int64_t dir = 0; dir < d.dirs; dir++) {
    bool reverse = d.direction == 1 || dir == 1;
    const T* Wd = W + dir * G * H * I;
    const T* Rd = R + dir * G * H * H;
    const T* Wb = Bi ? Bi + dir * 2 * G * H : nullptr;
    const T* Rb = Bi ? Wb + G * H : nullptr;
    const T* Pd = P ? P + dir * 3 * H : nullptr;
    Act fa = acts[dir * per_dir], ga = acts[dir * per_dir + 1];
    Act ha = lstm ? acts[dir * per_dir + 2] : Act::Tanh;
    auto f = [&](C v) { return act_apply(fa, v); };
    auto gf = [&](C v) { return act_apply(ga, v); };
    auto hf = [&](C v) { return act_apply(ha, v); };
    for (int64_t b = 0; b < Bn; b++) {
      for (int64_t j = 0; j < H; j++) {
        h[j] = H0 ? (C)load(H0, h_at(dir, b) + j) : C(0);
        c[j] = C0 ? (C)load(C0, h_at(dir, b) + j) : C(0);
      }
      for (int64_t step = 0; step < len[b]; step++) {
        int64_t t = reverse ? len[b] - 1 - step : step;
        const T* xt = X + x_at(t, b);
        // g = W x + Wb (+ R h + Rb except for GRU's h gate, which needs r first)
        for (int64_t q = 0; q < G * H; q++) {
          C s = Wb ? (C)load(Wb, q) : C(0);
          for (int64_t i = 0; i < I; i++) s += (C)load(Wd, q * I + i) * (C)load(xt, i);
          bool gru_h = !lstm && q >= 2 * H;
          if (!gru_h) {
            if (Rb) s += (C)load(Rb, q);
            for (int64_t i = 0; i < H; i++) s += (C)load(Rd, q * H + i) * h[i];
          }
          g[q] = s;
        }
        if (lstm) {  // gate order i, o, f, c
          for (int64_t j = 0; j < H; j++) {
            C pi = Pd ? (C)load(Pd, j) : C(0), po = Pd ? (C)load(Pd, H + j) : C(0),
              pf = Pd ? (C)load(Pd, 2 * H + j) : C(0);
            C it = f(cl(g[j] + pi * c[j]));
            C ft = input_forget ? C(1) - it : f(cl(g[2 * H + j] + pf * c[j]));
            C ct = gf(cl(g[3 * H + j]));
            c[j] = ft * c[j] + it * ct;
            C ot = f(cl(g[H + j] + po * c[j]));
            h[j] = ot * hf(c[j]);
          }
        } else {  // gate order z, r, h
          std::vector<C>& rh = hr;
          for (int64_t j = 0; j < H; j++) g[j] = f(cl(g[j]));
          for (int64_t j = 0; j < H; j++) g[H + j] = f(cl(g[H + j]));
          for (int64_t j = 0; j < H; j++) {
            int64_t q = 2 * H + j;
            C s = 0;
            if (lbr) {
              for (int64_t i = 0; i < H; i++) s += (C)load(Rd, q * H + i) * h[i];
              if (Rb) s += (C)load(Rb, q);
              s *= g[H + j];
            } else {
              for (int64_t i = 0; i < H; i++) s += (C)load(Rd, q * H + i) * (g[H + i] * h[i]);
              if (Rb) s += (C)load(Rb, q);
            }
            rh[j] = gf(cl(g[q] + s));
          }
          for (int64_t j = 0; j < H; j++) h[j] = (C(1) - g[j]) * rh[j] + g[j] * h[j];
        }
        if (Y)
          for (int64_t j = 0; j < H; j++) store(Y, y_at(t, dir, b) + j, (compute_t<T>)h[j]);
      }
      for (int64_t j = 0; j < H; j++) {
        if (YH) store(YH, h_at(dir, b) + j, (compute_t<T>)h[j]);
        if (YC) store(YC, h_at(dir, b) + j, (compute_t<T>)c[j]);
      }
    }
  }
}

void ref_rnn(const KernelCtx& ctx, int gates) {
  std::vector<TensorType> types;
  for (int i = 0; i < (int)ctx.in.size(); i++)
    types.push_back(ctx.has_input(i) ? TensorType{ctx.in[i]->dtype(), ctx.in[i]->shape()}
                                     : TensorType{});
  InferCtx ic{ctx.node, types, {}};
  RnnDims d = rnn_dims(ic, gates);
  switch (ctx.input(0).dtype()) {
    case DType::F32: rnn_ref_typed<float>(ctx, d); break;
    case DType::F16: rnn_ref_typed<f16_t>(ctx, d); break;
    case DType::BF16: rnn_ref_typed<bf16_t>(ctx, d); break;
    case DType::F64: rnn_ref_typed<double>(ctx, d); break;
    default: fail(ErrorKind::Model, "[", op_name(ctx.node.op), "] unsupported dtype");
  }
}

void ref_lstm(const KernelCtx& ctx) { ref_rnn(ctx, 4); }
void ref_gru(const KernelCtx& ctx) { ref_rnn(ctx, 3); }

}  // namespace

static const OpDef kOps[] = {
    {OpType::TopK, "TopK", 2, 2, 1, 2, 0,
     {{"axis", AttrKind::Int}, {"largest", AttrKind::Int}, {"sorted", AttrKind::Int}},
     infer_topk, ref_topk},
    // inputs X, W, R, B, sequence_lens, initial_h, initial_c, P; outputs Y, Y_h, Y_c
    {OpType::LSTM, "LSTM", 3, 8, 0, 3, 0,
     {{"activations", AttrKind::String}, {"clip", AttrKind::Float},
      {"direction", AttrKind::String}, {"hidden_size", AttrKind::Int},
      {"input_forget", AttrKind::Int}, {"layout", AttrKind::Int}},
     infer_lstm, ref_lstm},
    // inputs X, W, R, B, sequence_lens, initial_h; outputs Y, Y_h
    {OpType::GRU, "GRU", 3, 6, 0, 2, 0,
     {{"activations", AttrKind::String}, {"clip", AttrKind::Float},
      {"direction", AttrKind::String}, {"hidden_size", AttrKind::Int},
      {"linear_before_reset", AttrKind::Int}, {"layout", AttrKind::Int}},
     infer_gru, ref_gru},
};

std::span<const OpDef> op_defs_rnn() { return kOps; }

}  // namespace ember
