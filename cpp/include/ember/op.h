// The op set. `OpType` is the only list of ops; each has exactly one OpDef row (name,
// attribute schema, shape inference, scalar reference kernel) in a family table under
// cpp/src/ops/. Fast kernels live in the per-backend registry (cpp/src/runtime/registry.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ember/error.h"
#include "ember/tensor.h"

namespace ember {

struct Graph;
class Device;
struct DeviceOptions;

enum class OpType : uint16_t {
  // elementwise binary (numpy broadcasting)
  Add, Sub, Mul, Div, Pow, Min, Max, Sum, Mean, Equal, Less, Greater, LessOrEqual,
  GreaterOrEqual, And, Or, Xor,
  // elementwise classification
  IsNaN, IsInf,
  // elementwise unary
  Sqrt, Exp, Log, Neg, Abs, Reciprocal, Erf, Tanh, Sigmoid, Relu, Gelu, Softplus, Sin, Cos,
  Not, Identity, Dropout, Clip, Where, Cast, CastLike,
  // linear algebra and normalisation
  MatMul, Gemm, LayerNormalization, RMSNormalization, Softmax, LogSoftmax,
  // reductions and scans
  ReduceMean, ReduceSum, ReduceMax, CumSum,
  // shape and data movement
  Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Gather, GatherND, Expand,
  Shape, Size, Range, Trilu, ConstantOfShape,
  // convolution (ops_conv.cpp)
  Conv, ConvTranspose,
  // CNN layers and activations (ops_nn.cpp)
  MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, BatchNormalization,
  InstanceNormalization, GroupNormalization, LeakyRelu, PRelu, Elu, Selu, HardSigmoid, HardSwish,
  Floor, Ceil, Round, Sign, Mod,
  // tensor manipulation (ops_tensor.cpp)
  ReduceMin, ReduceProd, ReduceL2, GatherElements, ScatterND, ScatterElements, Tile, Pad, ArgMax,
  ArgMin, DepthToSpace, SpaceToDepth, OneHot, Einsum,
  // recurrent, resampling, selection (ops_rnn.cpp)
  LSTM, GRU, Resize, TopK,
  // control flow and data-dependent shapes (ops_control.cpp)
  If, Loop, NonZero,
  // quantization (ops_quant.cpp; MatMulNBits is com.microsoft's)
  QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul,
  ConvInteger, QLinearConv, MatMulNBits,
  // fused ops made by graph passes (ops_fused.cpp, ops_qmatmul.cpp, ops_q4matmul.cpp,
  // ops_qconv.cpp; each names what it replaces)
  FusedMatMul, Attention, QMatMul, Q4MatMul, QConv,
  // LLM ops emitted by the model builders (python/ember/llm): rotary embedding, attention over
  // the paged KV cache (stateful: it writes the cache), GGUF Q8_0 matmul and embedding rows
  // (ops_llm.cpp, ops_q8matmul.cpp)
  Rope, PagedAttention, Q8MatMul, Q8Gather, SwiGLU,
  // residual Add + LayerNormalization / RMSNormalization, made by fuse_add_norm for device
  // sessions (ops_add_norm.cpp)
  AddNorm,
  // a chain of elementwise ops run block by block, made by fuse_elementwise_chain for CPU
  // sessions (ops_chain.cpp)
  ElementwiseChain,
  // 3x3 stride-1 Conv in Winograd F(2x2, 3x3) form, made by fuse_conv_winograd for CPU
  // sessions (ops_winograd.cpp)
  WinogradConv,
  // 2-D group-1 Conv [-> Relu] with weights packed for the CPU's swapped-role GEMM, made by
  // fuse_conv_packed for CPU sessions (ops_fused_conv.cpp)
  FusedConv,
  Count
};

// ---- attributes ---------------------------------------------------------------------------

// Bool is an Int that must be 0 or 1 (a flag such as keepdims: engines read other values
// differently, so they are refused). Graph: a subgraph (If branches, Loop bodies).
enum class AttrKind : uint8_t { Int, Float, String, Ints, Floats, Tensor, Bool, Graph };
using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, Tensor, std::shared_ptr<const Graph>>;

struct AttrSpec {
  const char* name;
  AttrKind kind;
  bool required = false;
};

class Attrs {
 public:
  void set(const std::string& name, AttrValue v);
  bool has(const std::string& name) const { return find(name) != nullptr; }
  const AttrValue* find(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t def) const;
  double get_float(const std::string& name, double def) const;
  std::string get_string(const std::string& name, const std::string& def) const;
  std::vector<int64_t> get_ints(const std::string& name) const;  // empty when absent
  std::vector<double> get_floats(const std::string& name) const;
  const Tensor* get_tensor(const std::string& name) const;
  const Graph* get_graph(const std::string& name) const;  // nullptr when absent
  const std::vector<std::pair<std::string, AttrValue>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, AttrValue>> items_;
};

// ---- nodes ----------------------------------------------------------------------------------

struct Node {
  OpType op = OpType::Count;
  std::string name;
  std::vector<int> inputs;   // value ids; -1 marks an absent optional input
  std::vector<int> outputs;  // value ids; -1 marks an unused optional output
  Attrs attrs;
};

struct TensorType {
  DType dtype = DType::Count;
  Shape shape;
};

// Shape inference input: the types of the node's inputs and, where known at plan time
// (constants and shape sub-graphs), their values.
struct InferCtx {
  const Node& node;
  std::vector<TensorType> in;          // dtype Count for absent inputs
  std::vector<const Tensor*> values;   // nullptr where not known
  ErrorKind error_kind = ErrorKind::Model;
  mutable uint64_t values_read = 0;    // bit i: infer read input i's value (plan keys use it)
  mutable bool value_missing = false;  // require_value failed: the value is only known by running

  int num_inputs() const { return (int)in.size(); }
  bool has(int i) const { return i < (int)in.size() && in[i].dtype != DType::Count; }
  const Tensor* value(int i) const {
    if (i >= (int)values.size() || !values[i]) return nullptr;
    if (i < 64) values_read |= 1ull << i;
    return values[i];
  }
  // Value of an input needed for shape inference (e.g. Reshape's shape); fails when the
  // value is data-dependent.
  const Tensor& require_value(int i, const char* what) const;
  template <class... Args>
  [[noreturn]] void fail(const Args&... args) const;
};

using InferFn = std::vector<TensorType> (*)(const InferCtx&);

// Runs a node's subgraph (If branches, Loop bodies) with these feeds, in the graph's input
// order; returns its outputs. The session compiles each subgraph once and caches its plans.
class SubgraphRunner {
 public:
  virtual ~SubgraphRunner() = default;
  virtual std::vector<Tensor> run_subgraph(const Graph& graph, const std::vector<Tensor>& feeds) = 0;
};

// Kernel input: contiguous tensors (nullptr for absent inputs), outputs preallocated with
// the inferred shapes (kOpDynamic ops: undefined, the kernel assigns them), and a thread
// budget for this call.
struct KernelCtx {
  const Node& node;
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  int max_threads = 1;
  SubgraphRunner* subgraphs = nullptr;  // set where the node is run eagerly by a session
  // Set for steps placed on a device (ember/device.h): the tensors hold its memory.
  Device* device = nullptr;
  const DeviceOptions* device_options = nullptr;
  // Device steps: per input, its host original where the input is a constant or a feed
  // (copied to the device for this step), else nullptr. Exactly the inputs whose value the
  // device's find_kernel saw at plan time: attribute-like inputs (axes, starts, shapes).
  std::vector<const Tensor*> host_in{};

  const Tensor& input(int i) const { return *in[i]; }
  bool has_input(int i) const { return i < (int)in.size() && in[i] != nullptr; }
  Tensor& output(int i) const { return *out[i]; }
  bool has_output(int i) const { return i < (int)out.size() && out[i] != nullptr; }
  // Runs fn(begin, end) over [0, n) in chunks of at least `grain` on the shared pool.
  void parallel_for(int64_t n, int64_t grain,
                    const std::function<void(int64_t, int64_t)>& fn) const;
};

using KernelFn = void (*)(const KernelCtx&);

enum OpFlags : uint32_t {
  kOpStateful = 1u << 0,   // side effects (KV-cache writes): never folded or removed
  kOpShapeOnly = 1u << 1,  // output depends only on input shapes (Shape, Size)
  // Output shapes are known only by running (NonZero, If, Loop): never folded; the planner
  // ends a plan before the node, the executor runs it eagerly and its kernel allocates the
  // outputs. infer checks the inputs and returns no output types.
  kOpDynamic = 1u << 2,
  kOpFused = 1u << 3,      // ember-internal: made by graph passes or the LLM builders, never imported
};

struct OpDef {
  OpType op;
  const char* name;
  int min_inputs, max_inputs;    // max -1: variadic
  int min_outputs, max_outputs;
  uint32_t flags;
  std::vector<AttrSpec> attrs;
  InferFn infer;
  KernelFn reference;
  // kOpStateful ops: bit i set when input i is written in place (PagedAttention's KV caches);
  // 0 means any feed input may be (runtime/plan.cpp places the node where they are bound).
  uint32_t writes_inputs = 0;
};

// Limits on every tensor ember plans, folds or allocates: numpy's most dims, and a byte size
// far past any real model that keeps every product of dims (and its bytes) inside int64.
constexpr int kMaxRank = 64;
constexpr int64_t kMaxTensorBytes = int64_t(1) << 40;

// Byte size of a tensor of type `t`; fails with `kind` ("<where>: ...") on more than kMaxRank
// dims, a negative dim, or over kMaxTensorBytes. The product skips zero dims, so an empty
// [0, 2^62] fails too: numpy cannot hold it, and any view of it would overflow.
int64_t tensor_bytes_checked(const TensorType& t, ErrorKind kind, const std::string& where);

// def.infer for the node, then every output type checked as above (untrusted shape values
// and attributes never reach an allocation unchecked). Use this, not def.infer, outside ops.
std::vector<TensorType> op_infer(const InferCtx& ctx);

const OpDef& op_def(OpType op);
const char* op_name(OpType op);
bool op_has_def(OpType op);
// Returns false where no op has that name.
bool op_from_name(const std::string& name, OpType* out);
// Checks arity and attributes of a node against its OpDef; throws ModelError.
void op_validate(const Node& node);

template <class... Args>
[[noreturn]] void InferCtx::fail(const Args&... args) const {
  ::ember::fail(error_kind, "[", op_name(node.op), "] node '", node.name, "': ", args...);
}

}  // namespace ember
