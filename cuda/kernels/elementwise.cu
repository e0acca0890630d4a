// Elementwise family on CUDA. Bandwidth-bound kernels with grid-stride loops.
// - Binary ops and Where read operands through an EwGeom (collapsed dims, 0 strides where an
//   operand broadcasts): a flat path when rank <= 1 (same shape, or scalar operands) with
//   4-wide vector loads when aligned, else a strided path (32-bit index maths below 2^31).
// - Unary, Clip, Cast, SwiGLU: flat, one element per thread per step (unary: 4-wide).
// - Reductions: a block per output (long or strided rows) or a thread per output (many short
//   ones); sums accumulate in double like the reference, max propagates NaN.
// - Softmax / norms: a warp per row up to 1024 elements, else a block per row; rows with
//   inner > 1 (softmax over a middle axis) get a thread per column.
// References: cpp/src/ops/ops_elementwise.cpp, ops_unary.cpp, ops_nn.cpp, ops_reduce.cpp,
// ops_linalg.cpp, ops_llm.cpp; the adapters choosing what runs here: ops_elementwise.cpp.
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/row_group.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace ember::cuda {
namespace {

constexpr int kThreads = 256;

// Enough blocks to keep every SM busy for a couple of waves; grid-stride loops do the rest.
int grid_for(int64_t work, int threads) {
  static std::atomic<int> sms[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) dev = 0;
  int n = sms[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
      n = 132;
    sms[dev].store(n, std::memory_order_relaxed);
  }
  int64_t want = (work + threads - 1) / threads;
  int64_t cap = (int64_t)n * (2048 / threads) * 2;
  return (int)std::max<int64_t>(1, std::min(want, cap));
}

bool aligned(const void* p, size_t bytes) { return ((uintptr_t)p % bytes) == 0; }

template <class T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

__device__ __forceinline__ bool isnan_(float v) { return v != v; }

// ---- binary ------------------------------------------------------------------------------

// Ops on the compute type; comparisons go through double like the reference (cmp_apply).
// Integers wrap as numpy's do (and the CPU reference's, ops_elementwise.cpp): uint64 maths.
template <class T>
__device__ __forceinline__ auto wrapping(T v) {
  if constexpr (std::is_integral_v<T>)
    return (uint64_t)v;
  else
    return v;
}
struct OpAdd {
  template <class T>
  __device__ T operator()(T a, T b) const { return (T)(wrapping(a) + wrapping(b)); }
};
struct OpSub {
  template <class T>
  __device__ T operator()(T a, T b) const { return (T)(wrapping(a) - wrapping(b)); }
};
struct OpMul {
  template <class T>
  __device__ T operator()(T a, T b) const { return (T)(wrapping(a) * wrapping(b)); }
};
struct OpDiv { __device__ float operator()(float a, float b) const { return a / b; } };
struct OpPow { __device__ float operator()(float a, float b) const { return powf(a, b); } };
struct OpMin {
  __device__ float operator()(float a, float b) const {
    return isnan_(a) || isnan_(b) ? __int_as_float(0x7fc00000) : (a < b ? a : b);
  }
};
struct OpMax {
  __device__ float operator()(float a, float b) const {
    return isnan_(a) || isnan_(b) ? __int_as_float(0x7fc00000) : (a > b ? a : b);
  }
};
struct OpEq { template <class T> __device__ bool operator()(T a, T b) const { return (double)a == (double)b; } };
struct OpLt { template <class T> __device__ bool operator()(T a, T b) const { return (double)a < (double)b; } };
struct OpGt { template <class T> __device__ bool operator()(T a, T b) const { return (double)a > (double)b; } };
struct OpLe { template <class T> __device__ bool operator()(T a, T b) const { return (double)a <= (double)b; } };
struct OpGe { template <class T> __device__ bool operator()(T a, T b) const { return (double)a >= (double)b; } };
struct OpAnd { __device__ bool operator()(bool a, bool b) const { return a && b; } };
struct OpOr { __device__ bool operator()(bool a, bool b) const { return a || b; } };
struct OpXor { __device__ bool operator()(bool a, bool b) const { return a != b; } };

// Offsets of element i in each of K operands; dims are stored outermost first.
template <int K, class Idx>
__device__ __forceinline__ void ew_offsets(const EwGeom& g, Idx i, Idx (&off)[K]) {
#pragma unroll
  for (int k = 0; k < K; k++) off[k] = 0;
#pragma unroll
  for (int d = kEwMaxRank - 1; d >= 0; d--) {
    if (d < g.rank) {
      Idx r = i;
      if (d > 0) {  // the outermost dim needs no division: i < dims[0] by then
        Idx dim = (Idx)g.dims[d];
        Idx q = i / dim;
        r = i - q * dim;
        i = q;
      }
#pragma unroll
      for (int k = 0; k < K; k++) off[k] += r * (Idx)g.strides[k][d];
    }
  }
}

// AS / BS: a / b is a scalar (stride 0). VEC: 4 elements per step (pointers aligned).
template <class T, class O, class Op, bool AS, bool BS, bool VEC>
__global__ void binary_flat(Op op, const T* __restrict__ a,  // [n] or [1]
                            const T* __restrict__ b,         // [n] or [1]
                            O* __restrict__ out,             // [n]
                            int64_t n) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const T sa = AS ? a[0] : T(), sb = BS ? b[0] : T();
  int64_t done = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += step) {
      Vec4<T> va, vb;
      if (!AS) va = reinterpret_cast<const Vec4<T>*>(a)[i];
      if (!BS) vb = reinterpret_cast<const Vec4<T>*>(b)[i];
      Vec4<O> vo;
#pragma unroll
      for (int k = 0; k < 4; k++) vo.v[k] = op(AS ? sa : va.v[k], BS ? sb : vb.v[k]);
      reinterpret_cast<Vec4<O>*>(out)[i] = vo;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += step) out[i] = op(AS ? sa : a[i], BS ? sb : b[i]);
}

template <class T, class O, class Op, class Idx>
__global__ void binary_strided(Op op, const T* __restrict__ a, const T* __restrict__ b,
                               O* __restrict__ out,  // [numel]
                               EwGeom g) {
  const Idx n = (Idx)g.numel, step = (Idx)gridDim.x * blockDim.x;
  for (Idx i = (Idx)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    Idx off[2];
    ew_offsets<2, Idx>(g, i, off);
    out[i] = op(a[off[0]], b[off[1]]);
  }
}

template <class T, class O, class Op>
void launch_binary(Op op, const T* a, const T* b, O* out, const EwGeom& g, cudaStream_t s) {
  if (g.numel <= 0) return;
  const int grid = grid_for(g.numel, kThreads);
  if (g.rank > 1) {
    auto* narrow = binary_strided<T, O, Op, uint32_t>;
    auto* wide = binary_strided<T, O, Op, int64_t>;
    if (g.numel < (int64_t(1) << 31)) EMBER_LAUNCH(narrow, grid, kThreads, 0, s)(op, a, b, out, g);
    else EMBER_LAUNCH(wide, grid, kThreads, 0, s)(op, a, b, out, g);
    return;
  }
  const bool as = g.strides[0][0] == 0, bs = g.strides[1][0] == 0;
  const size_t vb = 4 * sizeof(T);
  const bool vec = g.numel >= 4 && aligned(out, 4 * sizeof(O)) && (as || aligned(a, vb)) &&
                   (bs || aligned(b, vb));
  const int64_t n = g.numel;
  const int vgrid = grid_for(vec ? (n + 3) / 4 : n, kThreads);
#define EMBER_EW_FLAT(AS, BS)                                             \
  do {                                                                    \
    auto* vec4 = binary_flat<T, O, Op, AS, BS, true>;                     \
    auto* scalar = binary_flat<T, O, Op, AS, BS, false>;                  \
    if (vec) EMBER_LAUNCH(vec4, vgrid, kThreads, 0, s)(op, a, b, out, n); \
    else EMBER_LAUNCH(scalar, vgrid, kThreads, 0, s)(op, a, b, out, n);   \
  } while (0)
  if (as && bs) EMBER_EW_FLAT(true, true);
  else if (as) EMBER_EW_FLAT(true, false);
  else if (bs) EMBER_EW_FLAT(false, true);
  else EMBER_EW_FLAT(false, false);
#undef EMBER_EW_FLAT
}

// ---- unary -------------------------------------------------------------------------------

// Sigmoid without overflow or cancellation on either side (the reference's sigmoid_d).
__device__ __forceinline__ float sigmoid_f(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  float e = expf(x);
  return e / (1.f + e);
}

__device__ __forceinline__ float unary_apply(EwUnary op, float v, float alpha, float beta) {
  switch (op) {
    case EwUnary::Sqrt: return sqrtf(v);
    case EwUnary::Exp: return expf(v);
    case EwUnary::Log: return logf(v);
    case EwUnary::Neg: return -v;
    case EwUnary::Abs: return fabsf(v);
    case EwUnary::Reciprocal: return 1.f / v;
    case EwUnary::Erf: return erff(v);
    case EwUnary::Tanh: return tanhf(v);
    case EwUnary::Sigmoid: return sigmoid_f(v);
    case EwUnary::Relu: return v < 0.f ? 0.f : v;  // NaN stays NaN
    // 0.5 x erfc(-x / sqrt2): no cancellation for x << 0 (gelu_erf_d).
    case EwUnary::Gelu: return 0.5f * v * erfcf(-v * 0.70710678118654752f);
    case EwUnary::GeluTanh: {
      const float k = 0.79788456080286536f;  // sqrt(2 / pi)
      return v * sigmoid_f(2.f * k * (v + 0.044715f * v * v * v));
    }
    case EwUnary::Softplus: return fmaxf(v, 0.f) + log1pf(expf(-fabsf(v)));
    case EwUnary::Sin: return sinf(v);
    case EwUnary::Cos: return cosf(v);
    case EwUnary::LeakyRelu: return v < 0.f ? alpha * v : v;
    case EwUnary::HardSigmoid: {
      float y = alpha * v + beta;
      return isnan_(y) ? y : fminf(1.f, fmaxf(0.f, y));
    }
    case EwUnary::HardSwish: {
      float y = v * (1.f / 6.f) + 0.5f;
      return isnan_(y) ? y : v * fminf(1.f, fmaxf(0.f, y));
    }
    case EwUnary::Elu: return v < 0.f ? alpha * expm1f(v) : v;
  }
  return v;
}

// OP is a template argument so each kernel is a straight-line loop.
template <EwUnary OP, bool VEC>
__global__ void unary_flat(const float* __restrict__ x,  // [n]
                           float* __restrict__ y,        // [n]
                           int64_t n, float alpha, float beta) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += step) {
      float4 v = reinterpret_cast<const float4*>(x)[i];
      v.x = unary_apply(OP, v.x, alpha, beta);
      v.y = unary_apply(OP, v.y, alpha, beta);
      v.z = unary_apply(OP, v.z, alpha, beta);
      v.w = unary_apply(OP, v.w, alpha, beta);
      reinterpret_cast<float4*>(y)[i] = v;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += step) y[i] = unary_apply(OP, x[i], alpha, beta);
}

template <EwUnary OP>
void launch_unary(const float* x, float* y, int64_t n, float alpha, float beta, cudaStream_t s) {
  const bool vec = n >= 4 && aligned(x, 16) && aligned(y, 16);
  const int grid = grid_for(vec ? (n + 3) / 4 : n, kThreads);
  auto* vec4 = unary_flat<OP, true>;
  auto* scalar = unary_flat<OP, false>;
  if (vec) EMBER_LAUNCH(vec4, grid, kThreads, 0, s)(x, y, n, alpha, beta);
  else EMBER_LAUNCH(scalar, grid, kThreads, 0, s)(x, y, n, alpha, beta);
}

__global__ void clip_flat(const float* __restrict__ x,  // [n]
                          const float* lo,              // [1] or nullptr
                          const float* hi,              // [1] or nullptr
                          float* __restrict__ y,        // [n]
                          int64_t n) {
  const float l = lo ? *lo : 0.f, h = hi ? *hi : 0.f;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = x[i];
    // NaN propagates from any operand, like np.clip (ref_clip).
    if (lo) {
      if (isnan_(l)) v = l;
      v = v < l ? l : v;
    }
    if (hi) {
      if (isnan_(h)) v = h;
      v = h < v ? h : v;
    }
    y[i] = v;
  }
}

// ---- Where -------------------------------------------------------------------------------

template <class E, class Idx>
__global__ void where_strided(const bool* __restrict__ c, const E* __restrict__ x,
                              const E* __restrict__ y, E* __restrict__ out,  // [numel]
                              EwGeom g) {
  const Idx n = (Idx)g.numel, step = (Idx)gridDim.x * blockDim.x;
  for (Idx i = (Idx)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    Idx off[3];
    ew_offsets<3, Idx>(g, i, off);
    out[i] = c[off[0]] ? x[off[1]] : y[off[2]];
  }
}

template <class E>
void launch_where(const bool* c, const void* x, const void* y, void* out, const EwGeom& g,
                  cudaStream_t s) {
  const int grid = grid_for(g.numel, kThreads);
  auto px = static_cast<const E*>(x), py = static_cast<const E*>(y);
  auto po = static_cast<E*>(out);
  auto* narrow = where_strided<E, uint32_t>;
  auto* wide = where_strided<E, int64_t>;
  if (g.numel < (int64_t(1) << 31)) EMBER_LAUNCH(narrow, grid, kThreads, 0, s)(c, px, py, po, g);
  else EMBER_LAUNCH(wide, grid, kThreads, 0, s)(c, px, py, po, g);
}

// ---- Cast --------------------------------------------------------------------------------

struct H16 { uint16_t bits; };
struct B16 { uint16_t bits; };

// Load to the compute type: float for floats, int64 for integers and bool (0 / 1).
__device__ __forceinline__ float cast_load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float cast_load(const H16* p, int64_t i) {
  return __half2float(__ushort_as_half(p[i].bits));
}
__device__ __forceinline__ float cast_load(const B16* p, int64_t i) {
  return __uint_as_float((uint32_t)p[i].bits << 16);
}
__device__ __forceinline__ int64_t cast_load(const int64_t* p, int64_t i) { return p[i]; }
__device__ __forceinline__ int64_t cast_load(const int32_t* p, int64_t i) { return p[i]; }
__device__ __forceinline__ int64_t cast_load(const bool* p, int64_t i) { return p[i] ? 1 : 0; }

// f32 -> bf16 rounding to nearest even, NaN quietened: bit-exact with f32_to_bf16 (dtype.h).
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

// float -> integer as the reference (float_to_int): truncate through int64 (64-bit targets)
// or int32, out of range and NaN give the minimum, then wrap.
template <class D>
__device__ __forceinline__ D float_to_int(float f) {
  double v = (double)f;
  if (sizeof(D) == 8) {
    bool ok = v >= -9223372036854775808.0 && v < 9223372036854775808.0;
    return (D)(ok ? (long long)v : (long long)INT64_MIN);
  } else {
    bool ok = v > -2147483649.0 && v < 2147483648.0;
    return (D)(ok ? (int32_t)v : INT32_MIN);
  }
}

template <class V> __device__ __forceinline__ void cast_store(float* p, int64_t i, V v) { p[i] = (float)v; }
template <class V> __device__ __forceinline__ void cast_store(H16* p, int64_t i, V v) {
  p[i].bits = __half_as_ushort(__float2half_rn((float)v));  // ints through float, as the reference
}
template <class V> __device__ __forceinline__ void cast_store(B16* p, int64_t i, V v) {
  p[i].bits = f32_to_bf16_bits((float)v);
}
template <class V> __device__ __forceinline__ void cast_store(bool* p, int64_t i, V v) { p[i] = v != 0; }
__device__ __forceinline__ void cast_store(int64_t* p, int64_t i, float v) { p[i] = float_to_int<int64_t>(v); }
__device__ __forceinline__ void cast_store(int64_t* p, int64_t i, int64_t v) { p[i] = v; }
__device__ __forceinline__ void cast_store(int32_t* p, int64_t i, float v) { p[i] = float_to_int<int32_t>(v); }
__device__ __forceinline__ void cast_store(int32_t* p, int64_t i, int64_t v) { p[i] = (int32_t)v; }

template <class S, class D>
__global__ void cast_flat(const S* __restrict__ x,  // [n]
                          D* __restrict__ y,        // [n]
                          int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    cast_store(y, i, cast_load(x, i));
}

template <class S, class D>
void launch_cast(const S* x, D* y, int64_t n, int grid, cudaStream_t s) {
  auto* kernel = cast_flat<S, D>;
  EMBER_LAUNCH(kernel, grid, kThreads, 0, s)(x, y, n);
}

template <class S>
void launch_cast_from(EwType dst, const S* x, void* y, int64_t n, cudaStream_t s) {
  const int grid = grid_for(n, kThreads);
  switch (dst) {
    case EwType::F32: launch_cast(x, (float*)y, n, grid, s); break;
    case EwType::F16: launch_cast(x, (H16*)y, n, grid, s); break;
    case EwType::BF16: launch_cast(x, (B16*)y, n, grid, s); break;
    case EwType::I64: launch_cast(x, (int64_t*)y, n, grid, s); break;
    case EwType::I32: launch_cast(x, (int32_t*)y, n, grid, s); break;
    case EwType::Bool: launch_cast(x, (bool*)y, n, grid, s); break;
  }
}

// ---- SwiGLU ------------------------------------------------------------------------------

template <class Idx>
__global__ void swiglu_flat(const float* __restrict__ x,  // [rows, 2f]
                            float* __restrict__ y,        // [rows, f]
                            Idx n, Idx f) {
  for (Idx i = (Idx)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (Idx)gridDim.x * blockDim.x) {
    Idx r = i / f, c = i - r * f;
    const float g = x[r * 2 * f + c], u = x[r * 2 * f + f + c];
    y[i] = (g * sigmoid_f(g)) * u;
  }
}

// ---- reductions within a warp / block ----------------------------------------------------

// max with NaN propagating (the reference keeps the first NaN it meets).
struct MaxOp {
  __device__ float operator()(float a, float b) const {
    return isnan_(a) ? a : (isnan_(b) || b > a ? b : a);
  }
};


// Offsets of output o's first element and of reduced element j (ReduceGeom dims outermost first).
__device__ __forceinline__ int64_t kept_offset(const ReduceGeom& g, int64_t o) {
  int64_t off = 0;
  for (int d = g.kept_rank - 1; d >= 0; d--) {
    int64_t r = o;
    if (d > 0) {
      int64_t q = o / g.kept_dims[d];
      r = o - q * g.kept_dims[d];
      o = q;
    }
    off += r * g.kept_strides[d];
  }
  return off;
}
__device__ __forceinline__ int64_t red_offset(const ReduceGeom& g, int64_t j) {
  int64_t off = 0;
  for (int d = g.red_rank - 1; d >= 0; d--) {
    int64_t r = j;
    if (d > 0) {
      int64_t q = j / g.red_dims[d];
      r = j - q * g.red_dims[d];
      j = q;
    }
    off += r * g.red_strides[d];
  }
  return off;
}

template <EwReduce OP>
__device__ __forceinline__ float reduce_finish(double sum, float mx, int64_t count) {
  if (OP == EwReduce::Max) return mx;
  if (OP == EwReduce::Mean) return (float)(sum / (double)count);  // empty: 0 / 0 = NaN
  return (float)sum;
}

template <EwReduce OP>
__global__ void reduce_block(const float* __restrict__ x, float* __restrict__ y,  // [n_out]
                             ReduceGeom g) {
  __shared__ double sh_sum[32];
  __shared__ float sh_max[32];
  for (int64_t o = blockIdx.x; o < g.n_out; o += gridDim.x) {
    const float* xb = x + kept_offset(g, o);
    double sum = 0;
    float mx = -INFINITY;
    const bool unit = g.red_rank == 1 && g.red_strides[0] == 1;
    for (int64_t j = threadIdx.x; j < g.n_red; j += blockDim.x) {
      const float v = xb[unit ? j : red_offset(g, j)];
      if (OP == EwReduce::Max) mx = MaxOp()(mx, v);
      else sum += (double)v;
    }
    if (OP == EwReduce::Max) mx = block_reduce(mx, MaxOp(), sh_max);
    else sum = block_reduce(sum, SumOp(), sh_sum);
    if (threadIdx.x == 0) y[o] = reduce_finish<OP>(sum, mx, g.n_red);
  }
}

template <EwReduce OP>
__global__ void reduce_thread(const float* __restrict__ x, float* __restrict__ y,  // [n_out]
                              ReduceGeom g) {
  for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < g.n_out;
       o += (int64_t)gridDim.x * blockDim.x) {
    const float* xb = x + kept_offset(g, o);
    double sum = 0;
    float mx = -INFINITY;
    for (int64_t j = 0; j < g.n_red; j++) {
      const float v = xb[red_offset(g, j)];
      if (OP == EwReduce::Max) mx = MaxOp()(mx, v);
      else sum += (double)v;
    }
    y[o] = reduce_finish<OP>(sum, mx, g.n_red);
  }
}

template <EwReduce OP>
void launch_reduce(const float* x, float* y, const ReduceGeom& g, cudaStream_t s) {
  if (g.mode == EwReduceMode::BlockPerOutput) {
    const int grid = (int)std::min<int64_t>(g.n_out, 1 << 30);
    EMBER_LAUNCH(reduce_block<OP>, grid, g.threads, 0, s)(x, y, g);
  } else {
    EMBER_LAUNCH(reduce_thread<OP>, grid_for(g.n_out, g.threads), g.threads, 0, s)(x, y, g);
  }
}

// ---- softmax and norms: a group (a warp, or the block) per row ---------------------------


template <bool WARP>
__global__ void softmax_rows(const float* __restrict__ x,  // [rows, n]
                             float* __restrict__ y,        // [rows, n]
                             int64_t rows, int64_t n, bool log) {
  __shared__ float sh[32];
  __shared__ double sh_sum[32];
  const RowGroup<WARP> grp;
  for (int64_t r = grp.first; r < rows; r += grp.step) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float mx = -INFINITY;
    for (int64_t j = grp.lane; j < n; j += grp.size) mx = MaxOp()(mx, xr[j]);
    mx = grp.reduce(mx, MaxOp(), sh);
    // The sum in double: 32000-long rows keep the reference's accuracy.
    double sum = 0;
    for (int64_t j = grp.lane; j < n; j += grp.size) sum += (double)expf(xr[j] - mx);
    sum = grp.reduce(sum, SumOp(), sh_sum);
    if (log) {
      const float lse = (float)::log(sum);
      for (int64_t j = grp.lane; j < n; j += grp.size) yr[j] = (xr[j] - mx) - lse;
    } else {
      const float inv = (float)(1.0 / sum);
      for (int64_t j = grp.lane; j < n; j += grp.size) yr[j] = expf(xr[j] - mx) * inv;
    }
  }
}

// Softmax over the middle axis of [outer, n, inner]: a thread per (outer, inner) column;
// neighbouring threads read neighbouring columns.
__global__ void softmax_cols(const float* __restrict__ x,  // [outer, n, inner]
                             float* __restrict__ y,        // [outer, n, inner]
                             int64_t outer, int64_t n, int64_t inner, bool log) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < outer * inner;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = t / inner, base = o * n * inner + (t - o * inner);
    float mx = -INFINITY;
    double sum = 0;
    for (int64_t j = 0; j < n; j++) mx = MaxOp()(mx, x[base + j * inner]);
    for (int64_t j = 0; j < n; j++) sum += (double)expf(x[base + j * inner] - mx);
    const float lse = (float)::log(sum), inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) {
      const float v = x[base + j * inner] - mx;
      y[base + j * inner] = log ? v - lse : expf(v) * inv;
    }
  }
}

// Statistics in double like the reference (no float overflow of x^2 past 1.8e19).
template <bool WARP>
__global__ void layer_norm_rows(const float* __restrict__ x,      // [rows, cols]
                                const float* __restrict__ scale,  // [cols] or [1]
                                const float* __restrict__ bias,   // [cols] or [1] or nullptr
                                float* __restrict__ y,            // [rows, cols]
                                int64_t rows, int64_t cols, bool scale_scalar, bool bias_scalar,
                                double eps) {
  __shared__ double sh[32];
  const RowGroup<WARP> grp;
  for (int64_t r = grp.first; r < rows; r += grp.step) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    double s = 0;
    for (int64_t j = grp.lane; j < cols; j += grp.size) s += (double)xr[j];
    const double mean = grp.reduce(s, SumOp(), sh) / (double)cols;
    double v = 0;
    for (int64_t j = grp.lane; j < cols; j += grp.size) {
      const double d = (double)xr[j] - mean;
      v += d * d;
    }
    const double var = grp.reduce(v, SumOp(), sh) / (double)cols;
    const double inv = 1.0 / sqrt(var + eps);
    for (int64_t j = grp.lane; j < cols; j += grp.size) {
      double o = ((double)xr[j] - mean) * inv * (double)scale[scale_scalar ? 0 : j];
      if (bias) o += (double)bias[bias_scalar ? 0 : j];
      yr[j] = (float)o;
    }
  }
}

template <bool WARP>
__global__ void rms_norm_rows(const float* __restrict__ x,      // [rows, cols]
                              const float* __restrict__ scale,  // [cols] or [1]
                              float* __restrict__ y,            // [rows, cols]
                              int64_t rows, int64_t cols, bool scale_scalar, double eps) {
  __shared__ double sh[32];
  const RowGroup<WARP> grp;
  for (int64_t r = grp.first; r < rows; r += grp.step) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    double sq = 0;
    for (int64_t j = grp.lane; j < cols; j += grp.size) sq += (double)xr[j] * (double)xr[j];
    const double inv = 1.0 / sqrt(grp.reduce(sq, SumOp(), sh) / (double)cols + eps);
    for (int64_t j = grp.lane; j < cols; j += grp.size)
      yr[j] = (float)((double)xr[j] * inv * (double)scale[scale_scalar ? 0 : j]);
  }
}

// Grid of a row kernel: rows per block is blockDim / 32 in warp mode.
int row_grid(int64_t rows, int threads) {
  const int64_t per_block = threads == 32 ? kThreads / 32 : 1;
  return (int)std::max<int64_t>(1, std::min<int64_t>((rows + per_block - 1) / per_block, 1 << 30));
}

}  // namespace

// ---- launchers -----------------------------------------------------------------------------

void elementwise_binary_f32(EwBinary op, const float* a, const float* b, void* out,
                            const EwGeom& g, void* stream) {
  auto s = (cudaStream_t)stream;
  float* of = static_cast<float*>(out);
  bool* ob = static_cast<bool*>(out);
  switch (op) {
    case EwBinary::Add: launch_binary(OpAdd(), a, b, of, g, s); break;
    case EwBinary::Sub: launch_binary(OpSub(), a, b, of, g, s); break;
    case EwBinary::Mul: launch_binary(OpMul(), a, b, of, g, s); break;
    case EwBinary::Div: launch_binary(OpDiv(), a, b, of, g, s); break;
    case EwBinary::Pow: launch_binary(OpPow(), a, b, of, g, s); break;
    case EwBinary::Min: launch_binary(OpMin(), a, b, of, g, s); break;
    case EwBinary::Max: launch_binary(OpMax(), a, b, of, g, s); break;
    case EwBinary::Equal: launch_binary(OpEq(), a, b, ob, g, s); break;
    case EwBinary::Less: launch_binary(OpLt(), a, b, ob, g, s); break;
    case EwBinary::Greater: launch_binary(OpGt(), a, b, ob, g, s); break;
    case EwBinary::LessOrEqual: launch_binary(OpLe(), a, b, ob, g, s); break;
    case EwBinary::GreaterOrEqual: launch_binary(OpGe(), a, b, ob, g, s); break;
    default: break;  // the adapter's supports() never picks the others
  }
}

void elementwise_binary_i64(EwBinary op, const int64_t* a, const int64_t* b, void* out,
                            const EwGeom& g, void* stream) {
  auto s = (cudaStream_t)stream;
  int64_t* oi = static_cast<int64_t*>(out);
  bool* ob = static_cast<bool*>(out);
  switch (op) {
    // NOTE: signed overflow wraps in practice on the GPU as on the CPU reference.
    case EwBinary::Add: launch_binary(OpAdd(), a, b, oi, g, s); break;
    case EwBinary::Sub: launch_binary(OpSub(), a, b, oi, g, s); break;
    case EwBinary::Mul: launch_binary(OpMul(), a, b, oi, g, s); break;
    case EwBinary::Equal: launch_binary(OpEq(), a, b, ob, g, s); break;
    case EwBinary::Less: launch_binary(OpLt(), a, b, ob, g, s); break;
    case EwBinary::Greater: launch_binary(OpGt(), a, b, ob, g, s); break;
    case EwBinary::LessOrEqual: launch_binary(OpLe(), a, b, ob, g, s); break;
    case EwBinary::GreaterOrEqual: launch_binary(OpGe(), a, b, ob, g, s); break;
    default: break;
  }
}

void elementwise_binary_bool(EwBinary op, const bool* a, const bool* b, bool* out,
                             const EwGeom& g, void* stream) {
  auto s = (cudaStream_t)stream;
  switch (op) {
    case EwBinary::And: launch_binary(OpAnd(), a, b, out, g, s); break;
    case EwBinary::Or: launch_binary(OpOr(), a, b, out, g, s); break;
    case EwBinary::Xor: launch_binary(OpXor(), a, b, out, g, s); break;
    default: break;
  }
}

void elementwise_unary_f32(EwUnary op, const float* x, float* y, int64_t n, float alpha,
                           float beta, void* stream) {
  if (n <= 0) return;
  auto s = (cudaStream_t)stream;
  switch (op) {
#define EMBER_EW_UNARY(OP) \
  case EwUnary::OP: launch_unary<EwUnary::OP>(x, y, n, alpha, beta, s); break;
    EMBER_EW_UNARY(Sqrt) EMBER_EW_UNARY(Exp) EMBER_EW_UNARY(Log) EMBER_EW_UNARY(Neg)
    EMBER_EW_UNARY(Abs) EMBER_EW_UNARY(Reciprocal) EMBER_EW_UNARY(Erf) EMBER_EW_UNARY(Tanh)
    EMBER_EW_UNARY(Sigmoid) EMBER_EW_UNARY(Relu) EMBER_EW_UNARY(Gelu) EMBER_EW_UNARY(GeluTanh)
    EMBER_EW_UNARY(Softplus) EMBER_EW_UNARY(Sin) EMBER_EW_UNARY(Cos) EMBER_EW_UNARY(LeakyRelu)
    EMBER_EW_UNARY(HardSigmoid) EMBER_EW_UNARY(HardSwish) EMBER_EW_UNARY(Elu)
#undef EMBER_EW_UNARY
  }
}

void elementwise_clip_f32(const float* x, const float* lo, const float* hi, float* y, int64_t n,
                          void* stream) {
  if (n <= 0) return;
  EMBER_LAUNCH(clip_flat, grid_for(n, kThreads), kThreads, 0, (cudaStream_t)stream)(x, lo, hi, y,
                                                                                    n);
}

void elementwise_where(const bool* cond, const void* x, const void* y, void* out, int elem_size,
                       const EwGeom& g, void* stream) {
  if (g.numel <= 0) return;
  auto s = (cudaStream_t)stream;
  switch (elem_size) {
    case 1: launch_where<uint8_t>(cond, x, y, out, g, s); break;
    case 2: launch_where<uint16_t>(cond, x, y, out, g, s); break;
    case 4: launch_where<uint32_t>(cond, x, y, out, g, s); break;
    case 8: launch_where<uint64_t>(cond, x, y, out, g, s); break;
    default: break;
  }
}

void elementwise_cast(EwType src, EwType dst, const void* x, void* y, int64_t n, void* stream) {
  if (n <= 0) return;
  auto s = (cudaStream_t)stream;
  switch (src) {
    case EwType::F32: launch_cast_from(dst, (const float*)x, y, n, s); break;
    case EwType::F16: launch_cast_from(dst, (const H16*)x, y, n, s); break;
    case EwType::BF16: launch_cast_from(dst, (const B16*)x, y, n, s); break;
    case EwType::I64: launch_cast_from(dst, (const int64_t*)x, y, n, s); break;
    case EwType::I32: launch_cast_from(dst, (const int32_t*)x, y, n, s); break;
    case EwType::Bool: launch_cast_from(dst, (const bool*)x, y, n, s); break;
  }
}

void elementwise_copy(void* dst, const void* src, int64_t bytes, void* stream) {
  if (bytes <= 0 || dst == src) return;
  cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream);
}

void elementwise_swiglu_f32(const float* x, float* y, int64_t rows, int64_t f, void* stream) {
  const int64_t n = rows * f;
  if (n <= 0) return;
  auto s = (cudaStream_t)stream;
  const int grid = grid_for(n, kThreads);
  // The 32-bit path needs every input index (< 2n) below 2^32.
  if (n < (int64_t(1) << 31))
    EMBER_LAUNCH(swiglu_flat<uint32_t>, grid, kThreads, 0, s)(x, y, (uint32_t)n, (uint32_t)f);
  else
    EMBER_LAUNCH(swiglu_flat<int64_t>, grid, kThreads, 0, s)(x, y, n, f);
}

void elementwise_reduce_f32(EwReduce op, const float* x, float* y, const ReduceGeom& g,
                            void* stream) {
  if (g.n_out <= 0) return;
  auto s = (cudaStream_t)stream;
  switch (op) {
    case EwReduce::Sum: launch_reduce<EwReduce::Sum>(x, y, g, s); break;
    case EwReduce::Mean: launch_reduce<EwReduce::Mean>(x, y, g, s); break;
    case EwReduce::Max: launch_reduce<EwReduce::Max>(x, y, g, s); break;
  }
}

void elementwise_softmax_f32(const float* x, float* y, int64_t outer, int64_t n, int64_t inner,
                             bool log, void* stream) {
  if (outer * n * inner <= 0) return;
  auto s = (cudaStream_t)stream;
  if (inner > 1) {
    EMBER_LAUNCH(softmax_cols, grid_for(outer * inner, kThreads), kThreads, 0, s)(x, y, outer, n,
                                                                                  inner, log);
    return;
  }
  const int threads = ew_row_threads(n);
  if (threads == 32)
    EMBER_LAUNCH(softmax_rows<true>, row_grid(outer, threads), kThreads, 0, s)(x, y, outer, n,
                                                                               log);
  else
    EMBER_LAUNCH(softmax_rows<false>, row_grid(outer, threads), threads, 0, s)(x, y, outer, n,
                                                                               log);
}

void elementwise_layer_norm_f32(const float* x, const float* scale, const float* bias, float* y,
                                int64_t rows, int64_t cols, bool scale_scalar, bool bias_scalar,
                                double eps, void* stream) {
  if (rows * cols <= 0) return;
  auto s = (cudaStream_t)stream;
  const int threads = ew_row_threads(cols);
  if (threads == 32)
    EMBER_LAUNCH(layer_norm_rows<true>, row_grid(rows, threads), kThreads, 0, s)(
        x, scale, bias, y, rows, cols, scale_scalar, bias_scalar, eps);
  else
    EMBER_LAUNCH(layer_norm_rows<false>, row_grid(rows, threads), threads, 0, s)(
        x, scale, bias, y, rows, cols, scale_scalar, bias_scalar, eps);
}

void elementwise_rms_norm_f32(const float* x, const float* scale, float* y, int64_t rows,
                              int64_t cols, bool scale_scalar, double eps, void* stream) {
  if (rows * cols <= 0) return;
  auto s = (cudaStream_t)stream;
  const int threads = ew_row_threads(cols);
  if (threads == 32)
    EMBER_LAUNCH(rms_norm_rows<true>, row_grid(rows, threads), kThreads, 0, s)(
        x, scale, y, rows, cols, scale_scalar, eps);
  else
    EMBER_LAUNCH(rms_norm_rows<false>, row_grid(rows, threads), threads, 0, s)(
        x, scale, y, rows, cols, scale_scalar, eps);
}

}  // namespace ember::cuda
