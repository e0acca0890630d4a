// Launchers of the elementwise family (elementwise.cu): broadcasting binary ops, unary maths
// and activations, Clip, Where, Cast, SwiGLU, reductions, softmax and the row norms. Plain
// C++17 (no CUDA headers): the host adapters (cuda/src/ops_elementwise.cpp) include it. All
// pointers are device pointers to contiguous row-major data; every launcher only enqueues work
// on `stream` (a cudaStream_t) and returns.
#pragma once
#include <cstdint>

namespace ember::cuda {

constexpr int kEwMaxRank = 8;

// An elementwise op's iteration space after collapsing dims (elementwise_plan.h): the output
// dims and, for up to three operands, strides in elements (0 where the operand broadcasts).
// rank >= 1 whenever numel > 0.
struct EwGeom {
  int rank = 0;
  int64_t numel = 0;
  int64_t dims[kEwMaxRank] = {};
  int64_t strides[3][kEwMaxRank] = {};
};

enum class EwBinary : int {
  Add, Sub, Mul, Div, Pow, Min, Max,                       // out has the input type
  Equal, Less, Greater, LessOrEqual, GreaterOrEqual,       // out is bool
  And, Or, Xor                                             // bool in, bool out
};
inline bool ew_binary_is_compare(EwBinary op) { return op >= EwBinary::Equal; }

// out = a (op) b broadcast by g (operand 0: a, 1: b). out is float / int64_t, or bool for the
// comparisons. i64 supports Add, Sub, Mul and the comparisons; bool supports And, Or, Xor.
void elementwise_binary_f32(EwBinary op, const float* a, const float* b, void* out,
                            const EwGeom& g, void* stream);
void elementwise_binary_i64(EwBinary op, const int64_t* a, const int64_t* b, void* out,
                            const EwGeom& g, void* stream);
void elementwise_binary_bool(EwBinary op, const bool* a, const bool* b, bool* out,
                             const EwGeom& g, void* stream);

enum class EwUnary : int {
  Sqrt, Exp, Log, Neg, Abs, Reciprocal, Erf, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Softplus,
  Sin, Cos, LeakyRelu, HardSigmoid, HardSwish, Elu
};
// y = op(x) over n elements; alpha / beta are LeakyRelu / Elu / HardSigmoid's attributes.
void elementwise_unary_f32(EwUnary op, const float* x,  // [n]
                           float* y,                     // [n]
                           int64_t n, float alpha, float beta, void* stream);

// y = min(max(x, *lo), *hi); lo / hi are device scalars, nullptr when absent.
void elementwise_clip_f32(const float* x,  // [n]
                          const float* lo,  // [1] or nullptr
                          const float* hi,  // [1] or nullptr
                          float* y,         // [n]
                          int64_t n, void* stream);

// out = cond ? x : y broadcast by g (operand 0: cond, 1: x, 2: y); elem_size 1, 2, 4 or 8.
void elementwise_where(const bool* cond, const void* x, const void* y, void* out, int elem_size,
                       const EwGeom& g, void* stream);

enum class EwType : int { F32, F16, BF16, I64, I32, Bool };
// y = (dst) x with the reference's rules (cpp/src/ops/ops_unary.cpp, cast_store); src != dst.
void elementwise_cast(EwType src, EwType dst, const void* x,  // [n]
                      void* y,                                 // [n]
                      int64_t n, void* stream);

// Device-to-device copy (Identity, Dropout, a no-op reduction).
void elementwise_copy(void* dst, const void* src, int64_t bytes, void* stream);

// y[r, i] = (g * sigmoid(g)) * u with g = x[r, i], u = x[r, f + i].
void elementwise_swiglu_f32(const float* x,  // [rows, 2f]
                            float* y,        // [rows, f]
                            int64_t rows, int64_t f, void* stream);

// ---- reductions ----

enum class EwReduce : int { Sum, Mean, Max };
enum class EwReduceMode : int {
  BlockPerOutput,   // a block reduces one output's elements (long or strided reductions)
  ThreadPerOutput,  // a thread loops over one output's elements (many short reductions)
};
// A reduction after collapsing: the outputs enumerate the kept dims (row-major) and each
// output reduces over the reduced dims; strides are the input's, in elements.
struct ReduceGeom {
  int kept_rank = 0, red_rank = 0;
  int64_t kept_dims[kEwMaxRank] = {}, kept_strides[kEwMaxRank] = {};
  int64_t red_dims[kEwMaxRank] = {}, red_strides[kEwMaxRank] = {};
  int64_t n_out = 0, n_red = 0;
  EwReduceMode mode = EwReduceMode::ThreadPerOutput;
  int threads = 256;  // block size
};
void elementwise_reduce_f32(EwReduce op, const float* x, float* y,  // [n_out]
                            const ReduceGeom& g, void* stream);

// ---- softmax and norms: one row = the elements normalised together ----

// Block size of the row kernels for rows of n elements: 32 means a warp per row (8 rows per
// 256-thread block), else one block per row.
inline int ew_row_threads(int64_t n) { return n <= 1024 ? 32 : n <= 4096 ? 256 : 512; }

// x viewed as [outer, n, inner]; softmax (or log-softmax) over n.
void elementwise_softmax_f32(const float* x,  // [outer, n, inner]
                             float* y,        // [outer, n, inner]
                             int64_t outer, int64_t n, int64_t inner, bool log, void* stream);

// y = (x - mean) / sqrt(var + eps) * scale + bias per row; scale / bias are [cols] or, when
// their *_scalar flag is set, [1]; bias may be nullptr.
void elementwise_layer_norm_f32(const float* x,      // [rows, cols]
                                const float* scale,  // [cols] or [1]
                                const float* bias,   // [cols] or [1] or nullptr
                                float* y,            // [rows, cols]
                                int64_t rows, int64_t cols, bool scale_scalar, bool bias_scalar,
                                double eps, void* stream);
// y = x / sqrt(mean(x^2) + eps) * scale per row.
void elementwise_rms_norm_f32(const float* x,      // [rows, cols]
                              const float* scale,  // [cols] or [1]
                              float* y,            // [rows, cols]
                              int64_t rows, int64_t cols, bool scale_scalar, double eps,
                              void* stream);

}  // namespace ember::cuda
