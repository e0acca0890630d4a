// Tensor manipulation, part 2: index-driven ops (GatherElements, ScatterElements, ScatterND,
// OneHot) and Einsum. References are scalar loops; an index outside its dim is an Input error
// (negative indices count from the end, as in ONNX). Einsum's reference iterates over every
// combination of its labels (output labels, then the summed ones) and accumulates in double
// (floats) or wrapping int64 (ints). Part 1 of the family is ops_tensor.cpp.
#include <climits>

#include "ops/op_util.h"

namespace ember {
namespace {

bool is_index_dtype(DType t) { return t == DType::I64 || t == DType::I32; }

int64_t index_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::I64 ? t.ptr<const int64_t>()[i] : (int64_t)t.ptr<const int32_t>()[i];
}

// Normalises index v into [0, n); an Input error otherwise.
int64_t checked_index(const KernelCtx& ctx, int64_t v, int64_t n) {
  if (v < -n || v >= n)
    fail(ErrorKind::Input, "[", op_name(ctx.node.op), "] node '", ctx.node.name, "': index ", v,
         " is out of range for a dim of size ", n);
  return v < 0 ? v + n : v;
}

enum class Reduction { None, Add, Mul, Max, Min };

Reduction reduction_of(const Node& node, std::string* error) {
  std::string r = node.attrs.get_string("reduction", "none");
  if (r == "none") return Reduction::None;
  if (r == "add") return Reduction::Add;
  if (r == "mul") return Reduction::Mul;
  if (r == "max") return Reduction::Max;
  if (r == "min") return Reduction::Min;
  *error = str_cat("unknown reduction '", r, "'");
  return Reduction::None;
}

// dst[i] = reduce(dst[i], src[j]) in the element type (ints wrap like numpy).
template <class T>
void apply_reduction(Reduction r, T* dst, int64_t i, const T* src, int64_t j) {
  if (r == Reduction::None) {
    dst[i] = src[j];
    return;
  }
  if constexpr (std::is_same_v<T, bool>) {
    bool a = dst[i], b = src[j];
    dst[i] = (r == Reduction::Add || r == Reduction::Max) ? (a || b) : (a && b);
  } else if constexpr (is_float_v<T>) {
    compute_t<T> a = load(dst, i), b = load(src, j), v = a;
    switch (r) {
      case Reduction::Add: v = a + b; break;
      case Reduction::Mul: v = a * b; break;
      case Reduction::Max: v = (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b); break;
      case Reduction::Min: v = (std::isnan(a) || std::isnan(b)) ? NAN : std::min(a, b); break;
      default: break;
    }
    store(dst, i, v);
  } else {
    using U = std::make_unsigned_t<T>;
    T a = dst[i], b = src[j];
    switch (r) {
      case Reduction::Add: dst[i] = (T)(U)((U)a + (U)b); break;
      case Reduction::Mul: dst[i] = (T)(U)((uint64_t)(U)a * (uint64_t)(U)b); break;
      case Reduction::Max: dst[i] = std::max(a, b); break;
      case Reduction::Min: dst[i] = std::min(a, b); break;
      default: break;
    }
  }
}


// ---- GatherElements / ScatterElements ------------------------------------------------------

// Checks data/indices for the *Elements ops; returns the normalised axis.
int elements_check(const InferCtx& ctx, const Shape& idx_shape) {
  elem_size(ctx, 0);
  if (!is_index_dtype(ctx.in[1].dtype)) ctx.fail("indices must be int64 or int32, got ", dtype_name(ctx.in[1].dtype));
  const Shape& s = ctx.in[0].shape;
  int r = (int)s.size();
  if (r == 0) ctx.fail("data must have rank >= 1");
  if ((int)idx_shape.size() != r) ctx.fail("indices ", shape_str(idx_shape), " and data ", shape_str(s), " differ in rank");
  int axis = normalize_axis(ctx, ctx.node.attrs.get_int("axis", 0), r);
  for (int d = 0; d < r; d++)
    if (d != axis && idx_shape[d] > s[d])
      ctx.fail("indices ", shape_str(idx_shape), " exceed data ", shape_str(s), " on dim ", d);
  return axis;
}

std::vector<TensorType> infer_gather_elements(const InferCtx& ctx) {
  elements_check(ctx, ctx.in[1].shape);
  return one(ctx.in[0].dtype, ctx.in[1].shape);
}

void ref_gather_elements(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& ind = ctx.input(1);
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  size_t es = dtype_size(x.dtype());
  Shape xs = contiguous_strides(x.shape());
  int64_t o = 0;
  for_each_index(ind.shape(), [&](const std::vector<int64_t>& idx) {
    int64_t src = 0;
    for (int d = 0; d < x.rank(); d++)
      src += (d == axis ? checked_index(ctx, index_at(ind, o), x.dim(d)) : idx[d]) * xs[d];
    std::memcpy(y.ptr<char>() + o * es, x.ptr<const char>() + src * es, es);
    o++;
  });
}

std::vector<TensorType> infer_scatter_elements(const InferCtx& ctx) {
  elements_check(ctx, ctx.in[1].shape);
  if (ctx.in[2].dtype != ctx.in[0].dtype) ctx.fail("updates is ", dtype_name(ctx.in[2].dtype), ", data is ", dtype_name(ctx.in[0].dtype));
  if (ctx.in[2].shape != ctx.in[1].shape)
    ctx.fail("updates ", shape_str(ctx.in[2].shape), " and indices ", shape_str(ctx.in[1].shape), " differ in shape");
  std::string err;
  reduction_of(ctx.node, &err);
  if (!err.empty()) ctx.fail(err);
  return one(ctx.in[0].dtype, ctx.in[0].shape);
}

void ref_scatter_elements(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& ind = ctx.input(1);
  const Tensor& upd = ctx.input(2);
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  std::string err;
  Reduction red = reduction_of(ctx.node, &err);
  if (x.nbytes()) std::memcpy(y.data(), x.data(), x.nbytes());
  Shape xs = contiguous_strides(x.shape());
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    int64_t k = 0;
    for_each_index(ind.shape(), [&](const std::vector<int64_t>& idx) {
      int64_t dst = 0;
      for (int d = 0; d < x.rank(); d++)
        dst += (d == axis ? checked_index(ctx, index_at(ind, k), x.dim(d)) : idx[d]) * xs[d];
      apply_reduction<T>(red, y.ptr<T>(), dst, upd.ptr<const T>(), k);
      k++;
    });
  });
}

// ---- ScatterND ----------------------------------------------------------------------------

std::vector<TensorType> infer_scatter_nd(const InferCtx& ctx) {
  elem_size(ctx, 0);
  if (ctx.in[1].dtype != DType::I64) ctx.fail("indices must be int64, got ", dtype_name(ctx.in[1].dtype));
  if (ctx.in[2].dtype != ctx.in[0].dtype) ctx.fail("updates is ", dtype_name(ctx.in[2].dtype), ", data is ", dtype_name(ctx.in[0].dtype));
  const Shape &s = ctx.in[0].shape, &is = ctx.in[1].shape, &us = ctx.in[2].shape;
  if (is.empty()) ctx.fail("indices must have rank >= 1");
  int64_t k = is.back();
  if (k < 1 || k > (int64_t)s.size()) ctx.fail("indices' last dim ", k, " must be in [1, ", s.size(), "]");
  Shape want(is.begin(), is.end() - 1);
  want.insert(want.end(), s.begin() + k, s.end());
  if (us != want) ctx.fail("updates has shape ", shape_str(us), ", expected ", shape_str(want));
  std::string err;
  reduction_of(ctx.node, &err);
  if (!err.empty()) ctx.fail(err);
  return one(ctx.in[0].dtype, s);
}

void ref_scatter_nd(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& ind = ctx.input(1);
  const Tensor& upd = ctx.input(2);
  Tensor& y = ctx.output(0);
  std::string err;
  Reduction red = reduction_of(ctx.node, &err);
  if (x.nbytes()) std::memcpy(y.data(), x.data(), x.nbytes());
  int k = (int)ind.dim(-1);
  int64_t n = k ? ind.numel() / k : 0;
  Shape xs = contiguous_strides(x.shape());
  int64_t slice = 1;
  for (int d = k; d < x.rank(); d++) slice *= x.dim(d);
  const int64_t* pi = ind.ptr<const int64_t>();
  dispatch_dtype(x.dtype(), [&](auto t) {
    using T = decltype(t);
    for (int64_t i = 0; i < n; i++) {
      int64_t dst = 0;
      for (int d = 0; d < k; d++) dst += checked_index(ctx, pi[i * k + d], x.dim(d)) * xs[d];
      for (int64_t j = 0; j < slice; j++) apply_reduction<T>(red, y.ptr<T>(), dst + j, upd.ptr<const T>(), i * slice + j);
    }
  });
}

// ---- OneHot -------------------------------------------------------------------------------

std::vector<TensorType> infer_one_hot(const InferCtx& ctx) {
  for (int i = 0; i < 3; i++)
    if (dtype_size(ctx.in[i].dtype) == 0 || ctx.in[i].dtype == DType::Bool)
      ctx.fail("input ", i, " has unsupported dtype ", dtype_name(ctx.in[i].dtype));
  if (shape_numel(ctx.in[2].shape) != 2 || ctx.in[2].shape.size() != 1)
    ctx.fail("values must hold [off_value, on_value], got shape ", shape_str(ctx.in[2].shape));
  const Tensor& dt = ctx.require_value(1, "depth");
  if (dt.numel() != 1) ctx.fail("depth must hold one element, got shape ", shape_str(dt.shape()));
  double dv = tensor_get_f64(dt.contiguous(), 0);
  if (!(dv >= 1 && dv <= (double)INT64_MAX / 2) || dv != std::floor(dv))
    ctx.fail("depth must be a positive integer, got ", dv);
  Shape s = ctx.in[0].shape;
  int r = (int)s.size();
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (axis < -r - 1 || axis > r) ctx.fail("axis ", axis, " out of range for an output of rank ", r + 1);
  if (axis < 0) axis += r + 1;
  s.insert(s.begin() + axis, (int64_t)dv);
  return one(ctx.in[2].dtype, s);
}

void ref_one_hot(const KernelCtx& ctx) {
  const Tensor& ind = ctx.input(0);
  const Tensor& vals = ctx.input(2);
  Tensor& y = ctx.output(0);
  int r = ind.rank();
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (axis < 0) axis += r + 1;
  int64_t depth = y.dim((int)axis);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; d++) outer *= ind.dim(d);
  for (int d = (int)axis; d < r; d++) inner *= ind.dim(d);
  size_t es = dtype_size(vals.dtype());
  const char* off = vals.ptr<const char>();
  const char* on = off + es;
  char* py = y.ptr<char>();
  for (int64_t i = 0; i < y.numel(); i++) std::memcpy(py + i * es, off, es);
  bool is_int = ind.dtype() == DType::I64 || ind.dtype() == DType::I32 || ind.dtype() == DType::I16 ||
                ind.dtype() == DType::I8 || ind.dtype() == DType::U8;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t at = o * inner + i, v;
      if (is_int) {
        v = tensor_get_i64(ind, at);
      } else {
        double f = tensor_get_f64(ind, at);
        if (!(f == std::floor(f)) || std::fabs(f) > (double)depth) continue;  // matches no class
        v = (int64_t)f;
      }
      if (v < 0 && v >= -depth) v += depth;
      if (v < 0 || v >= depth) continue;  // out of range: an all-off row, as ONNX says
      std::memcpy(py + ((o * depth + v) * inner + i) * es, on, es);
    }
}

// ---- Einsum -------------------------------------------------------------------------------
// Labels: 'A'..'Z' are 0..25, 'a'..'z' 26..51 (ASCII order, numpy's implicit output order);
// ellipsis dims are 52 + e, right-aligned across inputs and broadcast like numpy.

struct EinsumSpec {
  std::vector<std::vector<int>> in_labels;  // per input, the label of each dim
  std::vector<int> out_labels;
  std::vector<int64_t> size;  // per label; -1 when unused
  std::string error;
};

EinsumSpec einsum_parse(const std::string& equation, const std::vector<Shape>& shapes) {
  EinsumSpec sp;
  std::string eq;
  for (char c : equation)
    if (c != ' ') eq += c;
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow), rhs = arrow == std::string::npos ? "" : eq.substr(arrow + 2);
  // Splits a term into labels, -1 marking the ellipsis; false on bad syntax.
  auto parse_term = [&](const std::string& t, std::vector<int>* out) {
    bool ell = false;
    for (size_t i = 0; i < t.size(); i++) {
      char c = t[i];
      if (c >= 'A' && c <= 'Z') out->push_back(c - 'A');
      else if (c >= 'a' && c <= 'z') out->push_back(26 + c - 'a');
      else if (c == '.' && !ell && t.compare(i, 3, "...") == 0) {
        out->push_back(-1);
        ell = true;
        i += 2;
      } else {
        return false;
      }
    }
    return true;
  };
  std::vector<std::vector<int>> terms;
  size_t start = 0;
  for (;;) {
    size_t comma = lhs.find(',', start);
    std::vector<int> t;
    if (!parse_term(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start), &t)) {
      sp.error = str_cat("bad equation '", equation, "'");
      return sp;
    }
    terms.push_back(t);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != shapes.size()) {
    sp.error = str_cat("equation '", equation, "' has ", terms.size(), " operands, the node has ", shapes.size(), " inputs");
    return sp;
  }
  int E = 0;  // broadcast ellipsis rank
  std::vector<int> ell_rank(terms.size(), 0);
  for (size_t k = 0; k < terms.size(); k++) {
    int letters = 0;
    bool ell = false;
    for (int l : terms[k]) {
      if (l < 0) ell = true;
      else letters++;
    }
    int64_t rank = (int64_t)shapes[k].size();
    if (rank < letters || (!ell && rank != letters)) {
      sp.error = str_cat("operand ", k, " has rank ", rank, ", equation '", equation, "' gives it ", letters, " labels");
      return sp;
    }
    ell_rank[k] = (int)(rank - letters);
    E = std::max(E, ell_rank[k]);
  }
  sp.size.assign(52 + E, -1);
  std::vector<int> count(52 + E, 0);
  for (size_t k = 0; k < terms.size(); k++) {
    std::vector<int> labels;
    for (int l : terms[k]) {
      if (l >= 0) labels.push_back(l);
      else for (int j = 0; j < ell_rank[k]; j++) labels.push_back(52 + E - ell_rank[k] + j);
    }
    for (size_t d = 0; d < labels.size(); d++) {
      int l = labels[d];
      int64_t n = shapes[k][d], &have = sp.size[l];
      count[l]++;
      if (have < 0 || have == 1) have = n;  // size-1 dims broadcast, as in numpy
      else if (n != have && n != 1) {
        sp.error = str_cat("operand ", k, " dim ", d, " has size ", n, ", another use of its label has ", have);
        return sp;
      }
    }
    sp.in_labels.push_back(labels);
  }
  if (arrow != std::string::npos) {
    std::vector<int> t;
    if (!parse_term(rhs, &t)) {
      sp.error = str_cat("bad output in equation '", equation, "'");
      return sp;
    }
    std::vector<bool> seen(52, false);
    for (int l : t) {
      if (l < 0) {
        for (int j = 0; j < E; j++) sp.out_labels.push_back(52 + j);
      } else {
        if (count[l] == 0 || seen[l]) {
          sp.error = str_cat("output label '", (char)(l < 26 ? 'A' + l : 'a' + l - 26), "' is unknown or repeated");
          return sp;
        }
        seen[l] = true;
        sp.out_labels.push_back(l);
      }
    }
  } else {
    for (int j = 0; j < E; j++) sp.out_labels.push_back(52 + j);
    for (int l = 0; l < 52; l++)
      if (count[l] == 1) sp.out_labels.push_back(l);
  }
  return sp;
}

std::vector<TensorType> infer_einsum(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (t == DType::Bool || dtype_size(t) == 0) ctx.fail("unsupported dtype ", dtype_name(t));
  std::vector<Shape> shapes;
  for (int i = 0; i < ctx.num_inputs(); i++) {
    if (!ctx.has(i) || ctx.in[i].dtype != t) ctx.fail("input ", i, " is missing or not ", dtype_name(t));
    shapes.push_back(ctx.in[i].shape);
  }
  EinsumSpec sp = einsum_parse(ctx.node.attrs.get_string("equation", ""), shapes);
  if (!sp.error.empty()) ctx.fail(sp.error);
  Shape out;
  for (int l : sp.out_labels) out.push_back(sp.size[l]);
  return one(t, out);
}

template <class T>
void einsum_typed(const KernelCtx& ctx, const EinsumSpec& sp) {
  // Iteration slots: the output labels, then every other used label (summed over).
  std::vector<int> slots = sp.out_labels;
  for (int l = 0; l < (int)sp.size.size(); l++)
    if (sp.size[l] >= 0 && std::find(slots.begin(), slots.end(), l) == slots.end()) slots.push_back(l);
  size_t S = slots.size(), n_in = ctx.in.size();
  std::vector<int64_t> sz(S);
  for (size_t s = 0; s < S; s++) sz[s] = sp.size[slots[s]];
  // strides[k][s]: input k's element stride for slot s (repeated labels add: a diagonal).
  std::vector<std::vector<int64_t>> strides(n_in + 1, std::vector<int64_t>(S, 0));
  for (size_t k = 0; k < n_in; k++) {
    const Tensor& x = ctx.input((int)k);
    Shape cs = contiguous_strides(x.shape());
    for (int d = 0; d < x.rank(); d++) {
      size_t s = std::find(slots.begin(), slots.end(), sp.in_labels[k][d]) - slots.begin();
      if (x.dim(d) != 1) strides[k][s] += cs[d];
    }
  }
  Tensor& y = ctx.output(0);
  Shape ys = contiguous_strides(y.shape());
  for (size_t s = 0; s < sp.out_labels.size(); s++) strides[n_in][s] = ys[s];
  using A = std::conditional_t<is_float_v<T>, double, uint64_t>;
  std::vector<A> acc(y.numel(), A(0));
  bool empty = false;
  for (int64_t n : sz) empty |= n == 0;
  std::vector<int64_t> idx(S, 0);
  while (!empty) {
    A p = A(1);
    for (size_t k = 0; k < n_in; k++) {
      int64_t off = 0;
      for (size_t s = 0; s < S; s++) off += idx[s] * strides[k][s];
      p = p * (A)load(ctx.input((int)k).template ptr<const T>(), off);
    }
    int64_t off = 0;
    for (size_t s = 0; s < sp.out_labels.size(); s++) off += idx[s] * strides[n_in][s];
    acc[off] += p;
    int s = (int)S - 1;
    for (; s >= 0; s--) {
      if (++idx[s] < sz[s]) break;
      idx[s] = 0;
    }
    if (s < 0) break;
  }
  for (int64_t i = 0; i < y.numel(); i++) store(y.ptr<T>(), i, (compute_t<T>)acc[i]);  // ints wrap
}

void ref_einsum(const KernelCtx& ctx) {
  std::vector<Shape> shapes;
  for (const Tensor* t : ctx.in) shapes.push_back(t->shape());
  EinsumSpec sp = einsum_parse(ctx.node.attrs.get_string("equation", ""), shapes);
  if (!sp.error.empty()) fail(ErrorKind::Input, "[Einsum] node '", ctx.node.name, "': ", sp.error);
  dispatch_dtype(ctx.input(0).dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, bool>) fail(ErrorKind::Model, "[Einsum] unsupported dtype bool");
    else einsum_typed<T>(ctx, sp);
  });
}

}  // namespace

static const OpDef kOps[] = {
    {OpType::GatherElements, "GatherElements", 2, 2, 1, 1, 0, {{"axis", AttrKind::Int}},
     infer_gather_elements, ref_gather_elements},
    {OpType::ScatterElements, "ScatterElements", 3, 3, 1, 1, 0,
     {{"axis", AttrKind::Int}, {"reduction", AttrKind::String}}, infer_scatter_elements,
     ref_scatter_elements},
    {OpType::ScatterND, "ScatterND", 3, 3, 1, 1, 0, {{"reduction", AttrKind::String}},
     infer_scatter_nd, ref_scatter_nd},
    {OpType::OneHot, "OneHot", 3, 3, 1, 1, 0, {{"axis", AttrKind::Int}}, infer_one_hot, ref_one_hot},
    {OpType::Einsum, "Einsum", 1, -1, 1, 1, 0, {{"equation", AttrKind::String, true}}, infer_einsum,
     ref_einsum},
};

std::span<const OpDef> op_defs_tensor_index() { return kOps; }

}  // namespace ember
