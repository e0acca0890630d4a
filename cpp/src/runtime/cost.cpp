// Cost model (conventions in cost.h): a table of per-element rates, and a function for the
// ops whose work is not proportional to one tensor (GEMMs, convolutions, RNNs, Einsum, pools).
#include "runtime/cost.h"

#include <algorithm>
#include <array>
#include <string>

#include "kernels/common/quant.h"

namespace ember {
namespace {

using Types = std::vector<TensorType>;
using CostFn = double (*)(const Node&, const Types& in, const Types& out);

double numel(const TensorType& t) {
  if (t.dtype == DType::Count) return 0;
  double n = 1;
  for (int64_t d : t.shape) n *= (double)d;
  return n;
}

const TensorType& at(const Types& v, size_t i) {
  static const TensorType none;
  return i < v.size() ? v[i] : none;
}

double cost_matmul(const Node&, const Types& in, const Types& out) {
  const Shape& a = at(in, 0).shape;
  return a.empty() ? 0 : 2 * numel(at(out, 0)) * (double)a.back();
}

double cost_gemm(const Node& n, const Types& in, const Types& out) {
  const Shape& a = at(in, 0).shape;
  if (a.size() != 2) return 0;
  double k = (double)a[n.attrs.get_int("transA", 0) ? 0 : 1];
  return 2 * numel(at(out, 0)) * k;
}

// Q [..., S, D] Kt [..., D, T] -> Y [..., S, Dv]: scores 2 S T D, P V 2 S T Dv, and ~7 per
// score for scale, mask and softmax.
double cost_attention(const Node&, const Types& in, const Types& out) {
  const Shape& q = at(in, 0).shape;
  const Shape& k = at(in, 1).shape;
  const Shape& y = at(out, 0).shape;
  if (q.size() < 2 || k.empty() || y.empty() || y.back() == 0) return 0;
  double scores = numel(at(out, 0)) / (double)y.back() * (double)k.back();  // batch * S * T
  return scores * (2.0 * (double)q.back() + 2.0 * (double)y.back() + 7.0);
}

// W [M, C/group, k...]: numel(W) / M = (C / group) * prod(k), the MACs per output element.
double cost_conv(const Node&, const Types& in, const Types& out) {
  const TensorType& w = at(in, 1);
  if (w.shape.empty() || w.shape[0] == 0) return 0;
  return 2 * numel(at(out, 0)) * numel(w) / (double)w.shape[0];
}

// FusedConv: W as Conv's, or Wp [panels, C kh kw, 32] (dim 1: the MACs per output element).
double cost_fused_conv(const Node& n, const Types& in, const Types& out) {
  const Shape& w = at(in, 1).shape;
  return w.size() == 3 ? 2 * numel(at(out, 0)) * (double)w[1] : cost_conv(n, in, out);
}

// WinogradConv: the 16 GEMMs U[xi] [M, C] @ V[xi] [C, tiles], 2 x 2 outputs per tile; the
// additions of the tile transforms are not counted. (A direct Conv of the same shape counts
// 2.25x more: 9 MACs per output and input channel, not 4.)
double cost_winograd(const Node&, const Types& in, const Types& out) {
  const Shape& u = at(in, 1).shape;
  const Shape& y = at(out, 0).shape;
  if (u.size() != 3 || y.size() != 4) return 0;
  double tiles = (double)y[0] * (double)((y[2] + 1) / 2) * (double)((y[3] + 1) / 2);
  return 2 * 16 * (double)u[1] * (double)u[2] * tiles;
}

// QLinearConv: W is input 3 (after x, x_scale, x_zero_point).
double cost_qlinear_conv(const Node&, const Types& in, const Types& out) {
  const TensorType& w = at(in, 3);
  if (w.shape.empty() || w.shape[0] == 0) return 0;
  return 2 * numel(at(out, 0)) * numel(w) / (double)w.shape[0];
}

// QConv: W's shape is the attribute w_shape [M, C, k...] (its input is packed).
double cost_qconv(const Node& n, const Types&, const Types& out) {
  std::vector<int64_t> w = n.attrs.get_ints("w_shape");
  if (w.empty() || w[0] == 0) return 0;
  double per = 1;
  for (size_t i = 1; i < w.size(); i++) per *= (double)w[i];
  return 2 * numel(at(out, 0)) * per;
}

// W [C, M/group, k...]: each input element scatters onto (M / group) * prod(k) outputs.
double cost_conv_transpose(const Node&, const Types& in, const Types&) {
  const TensorType& w = at(in, 1);
  if (w.shape.empty() || w.shape[0] == 0) return 0;
  return 2 * numel(at(in, 0)) * numel(w) / (double)w.shape[0];
}

// X [seq, batch, I] (either layout), W [dirs, gates*H, I], R [dirs, gates*H, H]: per time
// step and batch row, every direction multiplies by W and R.
double cost_rnn(const Node&, const Types& in, const Types&) {
  const Shape& x = at(in, 0).shape;
  if (x.empty() || x.back() == 0) return 0;
  double rows = numel(at(in, 0)) / (double)x.back();
  return 2 * rows * (numel(at(in, 1)) + numel(at(in, 2)));
}

// Labels summed out (in an input, not in the output) multiply the output's terms; each
// term takes one multiply per extra operand and one add when anything is summed.
double cost_einsum(const Node& n, const Types& in, const Types& out) {
  std::string eq;
  for (char c : n.attrs.get_string("equation", "")) if (c != ' ') eq += c;
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow);
  std::array<double, 128> size{};
  std::array<int, 128> count{};
  size_t term = 0, start = 0;
  while (start <= lhs.size()) {
    size_t comma = lhs.find(',', start);
    std::string labels = lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const Shape& s = at(in, term).shape;
    size_t ell = labels.find("...");
    size_t nlab = labels.size() - (ell == std::string::npos ? 0 : 3);
    if (nlab <= s.size()) {
      for (size_t i = 0, d = 0; i < labels.size(); i++) {
        if (i == ell) {
          i += 2;
          d += s.size() - nlab;
          continue;
        }
        unsigned char c = labels[i];
        if (c < 128) {
          size[c] = (double)s[d];
          count[c]++;
        }
        d++;
      }
    }
    term++;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  std::array<bool, 128> kept{};
  if (arrow != std::string::npos) {
    for (unsigned char c : eq.substr(arrow + 2)) if (c < 128) kept[c] = true;
  } else {
    for (int c = 0; c < 128; c++) kept[c] = count[c] == 1;  // implicit: labels seen once
  }
  double summed = 1;
  bool any = false;
  for (int c = 0; c < 128; c++) {
    if (!count[c] || kept[c] || c == '.') continue;
    summed *= size[c];
    any = true;
  }
  return numel(at(out, 0)) * summed * ((double)in.size() - 1 + (any ? 1 : 0));
}

// Sum and Mean: one add per extra input (Mean: and a divide).
double cost_sum(const Node& n, const Types& in, const Types& out) {
  double per = (double)in.size() - 1 + (n.op == OpType::Mean ? 1 : 0);
  return per * numel(at(out, 0));
}

double cost_pool(const Node& n, const Types&, const Types& out) {
  double k = 1;
  for (int64_t d : n.attrs.get_ints("kernel_shape")) k *= (double)d;
  return k * numel(at(out, 0));
}

double cost_resize(const Node& n, const Types& in, const Types& out) {
  std::string mode = n.attrs.get_string("mode", "nearest");
  if (mode == "nearest") return 0;
  double taps = 1;
  const Shape &x = at(in, 0).shape, &y = at(out, 0).shape;
  for (size_t d = 0; d < x.size() && d < y.size(); d++)
    if (x[d] != y[d]) taps *= mode == "cubic" ? 4 : 2;
  return 2 * taps * numel(at(out, 0));
}

// One flop per step and output element (the steps are elementwise; Sigmoid, Exp or Erf count
// one like Add).
double cost_chain(const Node& n, const Types&, const Types& out) {
  return (double)n.attrs.get_ints("ops").size() * numel(at(out, 0));
}

enum class Basis : uint8_t { Output, Input };

struct CostRow {
  OpType op;
  Basis basis;      // which tensor's elements the rate applies to (output 0 / input 0)
  double rate;      // flops per element
  CostFn fn;        // instead of the rate, where set
  bool gathers = false;  // reads only output 0's worth of input 0 (not the whole table)
};

constexpr Basis O = Basis::Output, I = Basis::Input;

// Ops absent from this table are data movement or control flow: 0 flops.
const CostRow kCosts[] = {
    {OpType::MatMul, O, 0, cost_matmul},
    {OpType::FusedMatMul, O, 0, cost_matmul},  // bias and activation not counted
    {OpType::Attention, O, 0, cost_attention},
    {OpType::Gemm, O, 0, cost_gemm},
    {OpType::Conv, O, 0, cost_conv},
    {OpType::WinogradConv, O, 0, cost_winograd},
    {OpType::FusedConv, O, 0, cost_fused_conv},
    {OpType::ConvTranspose, O, 0, cost_conv_transpose},
    {OpType::MatMulInteger, O, 0, cost_matmul},
    {OpType::QLinearMatMul, O, 0, cost_matmul},  // requantization not counted
    {OpType::MatMulNBits, O, 0, cost_matmul},    // A [..., K]: dequantization not counted
    {OpType::QMatMul, O, 0, cost_matmul},        // integer ops; activation quantization not counted
    {OpType::Q4MatMul, O, 0, cost_matmul},
    {OpType::Q8MatMul, O, 0, cost_matmul},
    {OpType::ElementwiseChain, O, 0, cost_chain},
    {OpType::Q8Gather, O, 1, nullptr, true},  // one multiply per element; reads only its rows' codes
    {OpType::SwiGLU, O, 4, nullptr},          // sigmoid (~1), two multiplies; per output element
    {OpType::Rope, O, 3, nullptr},            // a rotation: 4 mul + 2 add per pair
    {OpType::QConv, O, 0, cost_qconv},
    {OpType::ConvInteger, O, 0, cost_conv},
    {OpType::QLinearConv, O, 0, cost_qlinear_conv},
    {OpType::QuantizeLinear, O, 2, nullptr},
    {OpType::DequantizeLinear, O, 2, nullptr},
    {OpType::DynamicQuantizeLinear, I, 4, nullptr},  // min/max pass, then divide and round
    {OpType::LSTM, O, 0, cost_rnn},
    {OpType::GRU, O, 0, cost_rnn},
    {OpType::Einsum, O, 0, cost_einsum},
    {OpType::Sum, O, 0, cost_sum},
    {OpType::Mean, O, 0, cost_sum},
    {OpType::MaxPool, O, 0, cost_pool},
    {OpType::AveragePool, O, 0, cost_pool},
    {OpType::Resize, O, 0, cost_resize},
    {OpType::Softmax, O, 5, nullptr},
    {OpType::LogSoftmax, O, 5, nullptr},
    {OpType::LayerNormalization, O, 8, nullptr},
    {OpType::RMSNormalization, O, 4, nullptr},  // square-add, scale by 1/rms and by scale
    {OpType::AddNorm, O, 9, nullptr},           // the add, then LayerNorm's work at most
    {OpType::InstanceNormalization, O, 8, nullptr},
    {OpType::GroupNormalization, O, 8, nullptr},
    {OpType::BatchNormalization, O, 2, nullptr},
    {OpType::ReduceMean, I, 1, nullptr},
    {OpType::ReduceSum, I, 1, nullptr},
    {OpType::ReduceMax, I, 1, nullptr},
    {OpType::ReduceMin, I, 1, nullptr},
    {OpType::ReduceProd, I, 1, nullptr},
    {OpType::ReduceL2, I, 2, nullptr},
    {OpType::ArgMax, I, 1, nullptr},
    {OpType::ArgMin, I, 1, nullptr},
    {OpType::CumSum, I, 1, nullptr},
    {OpType::TopK, I, 1, nullptr},
    {OpType::GlobalAveragePool, I, 1, nullptr},
    {OpType::GlobalMaxPool, I, 1, nullptr},
    {OpType::Add, O, 1, nullptr},
    {OpType::Sub, O, 1, nullptr},
    {OpType::Mul, O, 1, nullptr},
    {OpType::Div, O, 1, nullptr},
    {OpType::Pow, O, 1, nullptr},
    {OpType::Min, O, 1, nullptr},
    {OpType::Max, O, 1, nullptr},
    {OpType::Mod, O, 1, nullptr},
    {OpType::Equal, O, 1, nullptr},
    {OpType::Less, O, 1, nullptr},
    {OpType::Greater, O, 1, nullptr},
    {OpType::LessOrEqual, O, 1, nullptr},
    {OpType::GreaterOrEqual, O, 1, nullptr},
    {OpType::And, O, 1, nullptr},
    {OpType::Or, O, 1, nullptr},
    {OpType::Xor, O, 1, nullptr},
    {OpType::Not, O, 1, nullptr},
    {OpType::IsNaN, O, 1, nullptr},
    {OpType::IsInf, O, 1, nullptr},
    {OpType::Sqrt, O, 1, nullptr},
    {OpType::Exp, O, 1, nullptr},
    {OpType::Log, O, 1, nullptr},
    {OpType::Neg, O, 1, nullptr},
    {OpType::Abs, O, 1, nullptr},
    {OpType::Reciprocal, O, 1, nullptr},
    {OpType::Erf, O, 1, nullptr},
    {OpType::Tanh, O, 1, nullptr},
    {OpType::Sigmoid, O, 1, nullptr},
    {OpType::Relu, O, 1, nullptr},
    {OpType::Gelu, O, 1, nullptr},
    {OpType::Softplus, O, 1, nullptr},
    {OpType::Sin, O, 1, nullptr},
    {OpType::Cos, O, 1, nullptr},
    {OpType::Clip, O, 1, nullptr},
    {OpType::LeakyRelu, O, 1, nullptr},
    {OpType::PRelu, O, 1, nullptr},
    {OpType::Elu, O, 1, nullptr},
    {OpType::Selu, O, 1, nullptr},
    {OpType::HardSigmoid, O, 1, nullptr},
    {OpType::HardSwish, O, 1, nullptr},
    {OpType::Floor, O, 1, nullptr},
    {OpType::Ceil, O, 1, nullptr},
    {OpType::Round, O, 1, nullptr},
    {OpType::Sign, O, 1, nullptr},
    {OpType::Gather, O, 0, nullptr, true},
    {OpType::GatherElements, O, 0, nullptr, true},
    {OpType::GatherND, O, 0, nullptr, true},
    {OpType::Slice, O, 0, nullptr, true},
};

const CostRow* cost_row(OpType op) {
  static const auto rows = [] {
    std::array<const CostRow*, (size_t)OpType::Count> r{};
    for (const CostRow& row : kCosts) r[(size_t)row.op] = &row;
    return r;
  }();
  return (size_t)op < rows.size() ? rows[(size_t)op] : nullptr;
}

}  // namespace

double type_bytes(const TensorType& t) {
  if (t.dtype == DType::Count) return 0;
  const DTypeInfo& info = dtype_info(t.dtype);
  if (!info.is_quant) return numel(t) * (double)info.size;
  const QuantTraits& q = quant_traits(t.dtype);
  if (q.block_size > 0) return numel(t) / (double)q.block_size * (double)q.block_bytes;
  return numel(t) / 2;  // Q4G: the 4-bit codes (group scales and zero points not counted)
}

NodeCost node_cost(const Node& node, const Types& in, const Types& out) {
  NodeCost c;
  const CostRow* row = cost_row(node.op);
  for (size_t i = 0; i < in.size(); i++) {
    bool gathered = i == 0 && row && row->gathers && in[0].dtype != DType::Count;
    c.bytes += gathered ? type_bytes({in[0].dtype, at(out, 0).shape}) : type_bytes(in[i]);
  }
  for (const TensorType& t : out) c.bytes += type_bytes(t);
  if (row && row->fn) c.flops = row->fn(node, in, out);
  else if (row) c.flops = row->rate * numel(at(row->basis == Basis::Input ? in : out, 0));
  return c;
}

namespace {

// PagedAttention's work depends on the values of query_start and seq_lens: query token i of a
// sequence of L tokens whose last q arrive in this step attends to L - q + i + 1 keys. Flops:
// per head and key, 2 D for the score, 2 D for the weighted V, 5 for the softmax. Bytes: q, the
// new k and v, the output and the indices, plus each sequence's K and V rows read once per KV
// head (every row of its context) and the new rows written.
NodeCost paged_attention_cost(const KernelCtx& ctx) {
  const Node& n = ctx.node;
  const double heads = (double)n.attrs.get_int("num_heads", 0);
  const double d = (double)n.attrs.get_int("head_dim", 0);
  const double row = (double)n.attrs.get_int("num_kv_heads", 0) * d;
  const Tensor& qs = ctx.input(6);
  const Tensor& lens = ctx.input(7);
  double keys = 0, context = 0;
  for (int64_t s = 0; s + 1 < qs.numel() && s < lens.numel(); s++) {
    const double q = std::max(0, qs.ptr<int32_t>()[s + 1] - qs.ptr<int32_t>()[s]);
    const double len = std::max(q, (double)lens.ptr<int32_t>()[s]);
    keys += q * (len - q) + q * (q + 1) / 2;
    context += len;
  }
  const double kv_size = (double)dtype_size(ctx.input(3).dtype());
  NodeCost c;
  c.flops = heads * keys * (4.0 * d + 5.0);
  for (int i : {0, 1, 2, 5, 6, 7, 8}) c.bytes += (double)ctx.input(i).nbytes();
  c.bytes += (double)ctx.output(0).nbytes();
  c.bytes += 2 * row * kv_size * (context + (double)ctx.input(1).shape()[0]);
  return c;
}

}  // namespace

NodeCost node_cost(const KernelCtx& ctx) {
  // Host steps only: a device step's index tensors are in device memory.
  if (ctx.node.op == OpType::PagedAttention && !ctx.device && ctx.in.size() == 9 &&
      std::none_of(ctx.in.begin(), ctx.in.end(), [](const Tensor* t) { return !t; }) &&
      ctx.has_output(0))
    return paged_attention_cost(ctx);
  Types in, out;
  for (const Tensor* t : ctx.in) in.push_back(t ? TensorType{t->dtype(), t->shape()} : TensorType{});
  for (const Tensor* t : ctx.out)
    out.push_back(t && t->defined() ? TensorType{t->dtype(), t->shape()} : TensorType{});
  return node_cost(ctx.node, in, out);
}

}  // namespace ember
