// Builds the OpType -> OpDef index from the family tables (no OpType may have two rows; a
// unit test checks that each has one). Also: attributes, arity validation, and the small ctx helpers.
#include <array>
#include <mutex>

#include "ember/thread_pool.h"
#include "ops/op_util.h"

namespace ember {
namespace {

struct OpIndex {
  std::array<const OpDef*, (size_t)OpType::Count> rows{};
  OpIndex() {
    for (auto table : {op_defs_elementwise(), op_defs_unary(), op_defs_linalg(), op_defs_reduce(),
                       op_defs_shape(), op_defs_index(), op_defs_scan(), op_defs_conv(),
                       op_defs_nn(), op_defs_pool(), op_defs_tensor(), op_defs_tensor_index(),
                       op_defs_rnn(), op_defs_resize(), op_defs_control(),
                       op_defs_quant(), op_defs_fused(), op_defs_qmatmul(),
                       op_defs_q4matmul(), op_defs_qconv(), op_defs_llm(),
                       op_defs_q8matmul(), op_defs_add_norm(), op_defs_chain(),
                       op_defs_winograd(), op_defs_fused_conv()}) {
      for (const OpDef& d : table) {
        EMBER_CHECK(rows[(size_t)d.op] == nullptr, Internal, "[ops] two rows for ", d.name);
        rows[(size_t)d.op] = &d;
      }
    }
  }
};

const OpIndex& op_index() {
  static const OpIndex index;
  return index;
}

const char* attr_kind_name(AttrKind k) {
  static const char* names[] = {"int", "float", "string", "ints", "floats", "tensor", "0 or 1",
                                "graph"};
  return names[(int)k];
}

// The AttrValue alternative that holds an attribute of this kind.
size_t attr_kind_index(AttrKind k) {
  switch (k) {
    case AttrKind::Bool: return 0;   // an int64_t
    case AttrKind::Graph: return 6;  // a shared_ptr<const Graph>
    default: return (size_t)k;
  }
}

}  // namespace

const OpDef& op_def(OpType op) {
  EMBER_CHECK((size_t)op < (size_t)OpType::Count, Internal, "[ops] invalid OpType ", (int)op);
  const OpDef* d = op_index().rows[(size_t)op];
  EMBER_CHECK(d != nullptr, Internal, "[ops] OpType ", (int)op, " has no OpDef row");
  return *d;
}

const char* op_name(OpType op) { return op_def(op).name; }

bool op_has_def(OpType op) {
  return (size_t)op < (size_t)OpType::Count && op_index().rows[(size_t)op] != nullptr;
}

bool op_from_name(const std::string& name, OpType* out) {
  for (const OpDef* d : op_index().rows) {
    if (d && name == d->name) {
      *out = d->op;
      return true;
    }
  }
  return false;
}

void op_validate(const Node& node) {
  const OpDef& def = op_def(node.op);
  int nin = (int)node.inputs.size(), nout = (int)node.outputs.size();
  EMBER_CHECK(nin >= def.min_inputs && (def.max_inputs < 0 || nin <= def.max_inputs), Model, "[",
              def.name, "] node '", node.name, "' has ", nin, " inputs, expected ",
              def.min_inputs, "..", def.max_inputs);
  EMBER_CHECK(nout >= def.min_outputs && nout <= def.max_outputs, Model, "[", def.name, "] node '",
              node.name, "' has ", nout, " outputs, expected ", def.min_outputs, "..",
              def.max_outputs);
  for (int i = 0; i < std::min(nin, std::max(def.min_inputs, 0)); i++)
    EMBER_CHECK(node.inputs[i] >= 0, Model, "[", def.name, "] node '", node.name,
                "': required input ", i, " is missing");
  for (const auto& [name, value] : node.attrs.items()) {
    const AttrSpec* spec = nullptr;
    for (const AttrSpec& s : def.attrs) if (name == s.name) spec = &s;
    EMBER_CHECK(spec, Model, "[", def.name, "] node '", node.name, "': unknown attribute '", name, "'");
    bool flag = spec->kind == AttrKind::Bool;
    bool ok = value.index() == attr_kind_index(spec->kind);
    if (ok && spec->kind == AttrKind::Graph) ok = std::get<6>(value) != nullptr;
    if (ok && flag) ok = std::get<int64_t>(value) == 0 || std::get<int64_t>(value) == 1;
    EMBER_CHECK(ok, Model, "[", def.name, "] node '", node.name, "': attribute '", name,
                "' must be ", attr_kind_name(spec->kind));
  }
  for (const AttrSpec& s : def.attrs)
    EMBER_CHECK(!s.required || node.attrs.has(s.name), Model, "[", def.name, "] node '", node.name,
                "': missing required attribute '", s.name, "'");
}

// ---- inferred types ----

int64_t tensor_bytes_checked(const TensorType& t, ErrorKind kind, const std::string& where) {
  const Shape& s = t.shape;
  if (s.size() > (size_t)kMaxRank)
    fail(kind, where, ": ", s.size(), " dims, over the limit of ", kMaxRank);
  int64_t nonzero = std::max<int64_t>((int64_t)dtype_size(t.dtype), 1);  // bytes, zero dims as 1
  bool empty = false;
  for (int64_t d : s) {
    if (d < 0) fail(kind, where, ": negative dim in shape ", shape_str(s));
    if (d == 0) {
      empty = true;
      continue;
    }
    if (nonzero > kMaxTensorBytes / d) fail(kind, where, ": shape ", shape_str(s), " needs over 2^40 bytes");
    nonzero *= d;
  }
  return empty ? 0 : nonzero;
}

std::vector<TensorType> op_infer(const InferCtx& ctx) {
  const OpDef& def = op_def(ctx.node.op);
  std::vector<TensorType> types = def.infer(ctx);
  if (def.flags & kOpDynamic) return types;  // inputs checked; outputs come from running
  EMBER_CHECK(types.size() >= ctx.node.outputs.size(), Internal, "[", def.name, "] inferred ",
              types.size(), " outputs, node '", ctx.node.name, "' has ", ctx.node.outputs.size());
  for (size_t k = 0; k < types.size(); k++) {
    tensor_bytes_checked(types[k], ctx.error_kind,
                         str_cat("[", def.name, "] node '", ctx.node.name, "': output ", k));
  }
  return types;
}

// ---- Attrs ----

void Attrs::set(const std::string& name, AttrValue v) {
  for (auto& [n, val] : items_) {
    if (n == name) {
      val = std::move(v);
      return;
    }
  }
  items_.emplace_back(name, std::move(v));
}

const AttrValue* Attrs::find(const std::string& name) const {
  for (const auto& [n, v] : items_) if (n == name) return &v;
  return nullptr;
}

int64_t Attrs::get_int(const std::string& name, int64_t def) const {
  const AttrValue* v = find(name);
  if (!v) return def;
  if (auto p = std::get_if<int64_t>(v)) return *p;
  fail(ErrorKind::Model, "[attrs] attribute '", name, "' is not an int");
}

double Attrs::get_float(const std::string& name, double def) const {
  const AttrValue* v = find(name);
  if (!v) return def;
  if (auto p = std::get_if<double>(v)) return *p;
  if (auto p = std::get_if<int64_t>(v)) return (double)*p;
  fail(ErrorKind::Model, "[attrs] attribute '", name, "' is not a float");
}

std::string Attrs::get_string(const std::string& name, const std::string& def) const {
  const AttrValue* v = find(name);
  if (!v) return def;
  if (auto p = std::get_if<std::string>(v)) return *p;
  fail(ErrorKind::Model, "[attrs] attribute '", name, "' is not a string");
}

std::vector<int64_t> Attrs::get_ints(const std::string& name) const {
  const AttrValue* v = find(name);
  if (!v) return {};
  if (auto p = std::get_if<std::vector<int64_t>>(v)) return *p;
  fail(ErrorKind::Model, "[attrs] attribute '", name, "' is not a list of ints");
}

std::vector<double> Attrs::get_floats(const std::string& name) const {
  const AttrValue* v = find(name);
  if (!v) return {};
  if (auto p = std::get_if<std::vector<double>>(v)) return *p;
  fail(ErrorKind::Model, "[attrs] attribute '", name, "' is not a list of floats");
}

const Tensor* Attrs::get_tensor(const std::string& name) const {
  const AttrValue* v = find(name);
  return v ? std::get_if<Tensor>(v) : nullptr;
}

const Graph* Attrs::get_graph(const std::string& name) const {
  const AttrValue* v = find(name);
  auto p = v ? std::get_if<std::shared_ptr<const Graph>>(v) : nullptr;
  return p ? p->get() : nullptr;
}

// ---- contexts ----

const Tensor& InferCtx::require_value(int i, const char* what) const {
  const Tensor* v = value(i);
  if (!v) value_missing = true;
  if (!v) fail(what, " (input ", i, ") is data-dependent; it must be a constant or computed from shapes");
  return *v;
}

std::vector<int64_t> int_values(const InferCtx& ctx, int i, const char* what, bool allow_i32) {
  const Tensor& t = ctx.require_value(i, what);
  if (t.dtype() != DType::I64 && !(allow_i32 && t.dtype() == DType::I32))
    ctx.fail(what, " must be int64", allow_i32 ? " or int32" : "", ", got ", dtype_name(t.dtype()));
  if (t.rank() > 1) ctx.fail(what, " must be 1-D, got shape ", shape_str(t.shape()));
  return tensor_to_i64_vector(t.contiguous());
}

Shape reduce_out_strides(const Shape& x, const ReduceAxes& r) {
  Shape kept;
  for (size_t d = 0; d < x.size(); d++) kept.push_back(r.mask[d] ? 1 : x[d]);
  return broadcast_strides(kept, x);
}

int64_t shape_prod(const Shape& s, int begin, int end) {
  int64_t n = 1;
  for (int i = begin; i < end; i++) n *= s[i];
  return n;
}

void KernelCtx::parallel_for(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) const {
  ::ember::parallel_for(n, grain, max_threads, fn);
}

// ---- broadcasting ----

Shape broadcast_shapes(const InferCtx& ctx, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; i++) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Shape& in, const Shape& out) {
  Shape st(out.size(), 0);
  Shape cs = contiguous_strides(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); i++) st[i + off] = in[i] == 1 ? 0 : cs[i];
  return st;
}

}  // namespace ember

