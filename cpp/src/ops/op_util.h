// Helpers shared by the op families: dtype dispatch, element load/store through a compute
// type (f16/bf16 compute in float), broadcasting and axis normalisation.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ember/op.h"

namespace ember {

template <class T> struct ComputeOf { using type = T; };
template <> struct ComputeOf<f16_t> { using type = float; };
template <> struct ComputeOf<bf16_t> { using type = float; };
template <class T> using compute_t = typename ComputeOf<T>::type;

template <class T> inline compute_t<T> load(const T* p, int64_t i) { return p[i]; }
template <> inline float load(const f16_t* p, int64_t i) { return f16_to_f32(p[i].bits); }
template <> inline float load(const bf16_t* p, int64_t i) { return bf16_to_f32(p[i].bits); }
template <class T> inline void store(T* p, int64_t i, compute_t<T> v) { p[i] = v; }
template <> inline void store(f16_t* p, int64_t i, float v) { p[i].bits = f32_to_f16(v); }
template <> inline void store(bf16_t* p, int64_t i, float v) { p[i].bits = f32_to_bf16(v); }

template <class T> inline constexpr bool is_float_v =
    std::is_floating_point_v<T> || std::is_same_v<T, f16_t> || std::is_same_v<T, bf16_t>;

// Calls f(T{}) with T the storage type of `t`. Quantized dtypes are not element types.
template <class F>
void dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::F16: f(f16_t{}); break;
    case DType::BF16: f(bf16_t{}); break;
    case DType::F64: f(double{}); break;
    case DType::I8: f(int8_t{}); break;
    case DType::U8: f(uint8_t{}); break;
    case DType::I16: f(int16_t{}); break;
    case DType::I32: f(int32_t{}); break;
    case DType::I64: f(int64_t{}); break;
    case DType::Bool: f(bool{}); break;
    default: fail(ErrorKind::Internal, "[dispatch] no element type for ", dtype_name(t));
  }
}

template <class T> DType dtype_of();
template <> inline DType dtype_of<float>() { return DType::F32; }
template <> inline DType dtype_of<f16_t>() { return DType::F16; }
template <> inline DType dtype_of<bf16_t>() { return DType::BF16; }
template <> inline DType dtype_of<double>() { return DType::F64; }
template <> inline DType dtype_of<int8_t>() { return DType::I8; }
template <> inline DType dtype_of<uint8_t>() { return DType::U8; }
template <> inline DType dtype_of<int16_t>() { return DType::I16; }
template <> inline DType dtype_of<int32_t>() { return DType::I32; }
template <> inline DType dtype_of<int64_t>() { return DType::I64; }
template <> inline DType dtype_of<bool>() { return DType::Bool; }

// ceil(a / b) for a >= 0, b > 0 (block and panel counts).
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Normalises a possibly negative axis into [0, rank); fails via ctx otherwise.
inline int normalize_axis(const InferCtx& ctx, int64_t axis, int rank) {
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " out of range for rank ", rank);
  return (int)(axis < 0 ? axis + rank : axis);
}
inline int normalize_axis(int64_t axis, int rank) { return (int)(axis < 0 ? axis + rank : axis); }

// Bytes per element of input i; block-quantized dtypes have no elements to move.
inline size_t elem_size(const InferCtx& ctx, int i) {
  size_t es = dtype_size(ctx.in[i].dtype);
  if (es == 0) ctx.fail("input ", i, " has dtype ", dtype_name(ctx.in[i].dtype), ", which has no elements");
  return es;
}

// The dims a Reduce* node reduces (axes input, or the opset-11 attribute): `mask[d]` is true
// for each reduced dim; `noop` means identity; `error` is non-empty when the axes are invalid.
struct ReduceAxes {
  std::vector<bool> mask;
  bool noop = false;
  std::string error;
};
ReduceAxes reduce_axes(const Node& node, int rank, const Tensor* axes_in);
Shape reduced_shape(const Shape& s, const ReduceAxes& r, bool keepdims);
// Output offset strides of each input element of a reduction: reduced dims get stride 0
// (keepdims or not, the output shares the kept dims' layout).
Shape reduce_out_strides(const Shape& x, const ReduceAxes& r);
// Shape inference shared by every Reduce* op (dtype check, axes, keepdims).
std::vector<TensorType> infer_reduce(const InferCtx& ctx);

// Whether `p` broadcasts unidirectionally onto x (numpy rules, p never grows x).
inline bool broadcasts_onto(const Shape& p, const Shape& x) {
  if (p.size() > x.size()) return false;
  size_t off = x.size() - p.size();
  for (size_t i = 0; i < p.size(); i++)
    if (p[i] != 1 && p[i] != x[i + off]) return false;
  return true;
}

// Calls fn(idx) over every multi-index of `shape` in row-major order.
template <class F>
inline void for_each_index(const Shape& shape, F&& fn) {
  int64_t n = shape_numel(shape);
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t k = 0; k < n; k++) {
    fn(idx);
    for (int d = (int)shape.size() - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

// numpy broadcasting of two shapes; fails via ctx when incompatible.
Shape broadcast_shapes(const InferCtx& ctx, const Shape& a, const Shape& b);

// Strides (in elements) to read `in` as if broadcast to `out` (0 on broadcast dims).
Shape broadcast_strides(const Shape& in, const Shape& out);

// Iterates a multi-index over `shape`, keeping one offset per operand in step.
// Usage: for (BroadcastIter it(shape, {sa, sb}); !it.done(); it.next()) use(it.off[0], ...)
struct BroadcastIter {
  Shape shape;
  std::vector<Shape> strides;
  std::vector<int64_t> idx;
  std::vector<int64_t> off;
  int64_t remaining;

  BroadcastIter(const Shape& s, std::vector<Shape> st)
      : shape(s), strides(std::move(st)), idx(s.size(), 0), off(strides.size(), 0),
        remaining(shape_numel(s)) {}
  bool done() const { return remaining <= 0; }
  void next() {
    remaining--;
    for (int d = (int)shape.size() - 1; d >= 0; d--) {
      for (size_t k = 0; k < off.size(); k++) off[k] += strides[k][d];
      if (++idx[d] < shape[d]) return;
      for (size_t k = 0; k < off.size(); k++) off[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
};

// Values of a 1-D integer input that shape inference needs (shapes, axes, pads, repeats):
// int64, or int32 too when allow_i32; fails via ctx (value_missing when only running knows it).
std::vector<int64_t> int_values(const InferCtx& ctx, int i, const char* what, bool allow_i32 = true);
// Product of s[begin:end] (1 when empty).
int64_t shape_prod(const Shape& s, int begin, int end);

// One output with this dtype and shape.
inline std::vector<TensorType> one(DType t, Shape s) { return {TensorType{t, std::move(s)}}; }

// Family tables, concatenated into the op table by op_table.cpp.
std::span<const OpDef> op_defs_elementwise();
std::span<const OpDef> op_defs_unary();
std::span<const OpDef> op_defs_linalg();
std::span<const OpDef> op_defs_reduce();
std::span<const OpDef> op_defs_shape();
std::span<const OpDef> op_defs_index();
std::span<const OpDef> op_defs_scan();
std::span<const OpDef> op_defs_conv();
std::span<const OpDef> op_defs_nn();
std::span<const OpDef> op_defs_pool();
std::span<const OpDef> op_defs_tensor();
std::span<const OpDef> op_defs_tensor_index();
std::span<const OpDef> op_defs_rnn();
std::span<const OpDef> op_defs_resize();
std::span<const OpDef> op_defs_control();
std::span<const OpDef> op_defs_fused();
std::span<const OpDef> op_defs_quant();
std::span<const OpDef> op_defs_qmatmul();
std::span<const OpDef> op_defs_q4matmul();
std::span<const OpDef> op_defs_qconv();
std::span<const OpDef> op_defs_llm();
std::span<const OpDef> op_defs_q8matmul();
std::span<const OpDef> op_defs_add_norm();
std::span<const OpDef> op_defs_chain();
std::span<const OpDef> op_defs_winograd();
std::span<const OpDef> op_defs_fused_conv();
// AddNorm run by the CPU's best kernel for each of its parts, Add then the norm (ops_add_norm.cpp;
// the CPU registry's row): what the unfused pair gives on the CPU, bit for bit.
void add_norm_cpu(const KernelCtx& ctx);
// ElementwiseChain run by the CPU's best kernel for each step, block by block where every step
// keeps the chain's shape (ops_chain.cpp; the CPU registry's row): the unfused chain's bits.
void elementwise_chain_cpu(const KernelCtx& ctx);
// The ops fuse_elementwise_chain may put in a chain (attribute-free, elementwise, f32 kernels).
bool chainable_unary(OpType op);
bool chainable_binary(OpType op);

// Scalar activations in double, shared by the Sigmoid/Gelu references and fused ops
// (ops_unary.cpp).
double sigmoid_d(double x);
double gelu_erf_d(double x);   // 0.5 x (1 + erf(x / sqrt 2))
double gelu_tanh_d(double x);  // 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))

// The epilogue activation of the fused matmul-like ops (FusedMatMul, QMatMul, Q4MatMul, QConv;
// defined in ops_fused.cpp): attr "activation" = "none" | "relu" | "gelu" | "gelu_tanh".
// fused_activation fails through ctx on anything else (without ctx: a Model error naming the
// node); fused_activate_d applies it in double, like the Relu / Gelu references.
enum class FusedAct { None, Relu, Gelu, GeluTanh };
FusedAct fused_activation(const InferCtx* ctx, const Node& node);
double fused_activate_d(FusedAct act, double v);
// FusedMatMul's W layout (attr "packed", default 1): sgemm panels, or plain [K, N] (0).
inline bool fused_matmul_packed(const Node& node) { return node.attrs.get_int("packed", 1) != 0; }

// Slice's start, step and length per data dim after ONNX's clamping (ops_index.cpp), shared
// by the reference and the fast kernel. Returns an error message, empty on success.
struct SliceSpec {
  Shape out;
  std::vector<int64_t> start, step;
};
std::string slice_resolve(const Shape& dims, const std::vector<int64_t>& starts,
                          const std::vector<int64_t>& ends, const std::vector<int64_t>* axes,
                          const std::vector<int64_t>* steps, SliceSpec* spec);
// The same from a Slice kernel's inputs; throws InputError.
SliceSpec slice_resolve(const KernelCtx& ctx);

}  // namespace ember
