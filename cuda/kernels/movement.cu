// Data movement on the GPU, moving raw units of the element size (any dtype).
// - strided_copy: one thread per unit of a collapsed box (StridedPlan); each decomposes its index
//   (int32 maths where the plan fits) into source and destination offsets. Writes are
//   coalesced whenever the destination is contiguous; units widen to 16 bytes on aligned rows.
// - transpose_tiles: 32x32 shared-memory tiles (32x8 threads) for boxes that move the innermost
//   dim: reads along the source-contiguous dim, writes along the destination-contiguous one.
// - gather / gather_elements report an out-of-range index through a device flag.
// - pad_constant, trilu, rope_f32: one thread per output element (per pair for rope).
// Index maths shared with the host tests: cuda/src/movement_plan.h. References:
// cpp/src/ops/ops_shape.cpp, ops_index.cpp, ops_tensor.cpp, ops_tensor_index.cpp, ops_llm.cpp.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/kernels/intrinsics.cuh"
#include "cuda/kernels/launch.cuh"
#include "cuda/kernels/movement.h"
#include "cuda/src/movement_plan.h"

namespace ember::cuda {
namespace {

// A raw unit of `Bytes` bytes; 16 moves as one vector load/store.
template <int Bytes> struct UnitOf;
template <> struct UnitOf<1> { using type = uint8_t; };
template <> struct UnitOf<2> { using type = uint16_t; };
template <> struct UnitOf<4> { using type = uint32_t; };
template <> struct UnitOf<8> { using type = unsigned long long; };
template <> struct UnitOf<16> { using type = uint4; };

// Calls f(std::integral_constant<int, B>) for B = bytes (1, 2, 4, 8 or 16).
template <class F>
void dispatch_unit(int bytes, F&& f) {
  switch (bytes) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: break;  // adapters only pass 1, 2, 4, 8
  }
}

// ---- box copies ----------------------------------------------------------------------------

template <class U, class I>
__global__ void strided_copy_kernel(U* __restrict__ dst,        // plan.dst_stride layout
                                    const U* __restrict__ src,  // plan.src_stride layout
                                    StridedPlan plan, I n) {
  // The loop counter is 64-bit even when I is int32: i + step may pass INT32_MAX (n up to
  // 2^31 - 1, step up to kMaxBlocks * kThreads = 2^28); only i < n is decomposed in I.
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)n; i += step) {
    I s, d;
    strided_offsets(plan, (I)i, &s, &d);
    dst[d] = src[s];
  }
}

template <class U>
__global__ void transpose_tiles_kernel(U* __restrict__ dst,        // p stride dst_p_stride, l stride 1
                                       const U* __restrict__ src,  // p stride 1, l stride src_l_stride
                                       TransposeTilePlan t, int64_t tiles_p, int64_t tiles_l, int64_t tiles) {
  __shared__ U tile[kTileDim][kTileDim + 1];  // [l][p]; +1 keeps the column reads off one bank
  for (int64_t id = blockIdx.x; id < tiles; id += gridDim.x) {
    int64_t b = id / (tiles_p * tiles_l), r = id - b * tiles_p * tiles_l;
    int64_t p0 = (r / tiles_l) * kTileDim, l0 = (r % tiles_l) * kTileDim;
    int64_t sb, db;
    strided_offsets(t.batch, b, &sb, &db);
    for (int j = threadIdx.y; j < kTileDim; j += blockDim.y) {
      int64_t l = l0 + j, p = p0 + threadIdx.x;
      if (l < t.l_size && p < t.p_size) tile[j][threadIdx.x] = src[sb + l * t.src_l_stride + p];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTileDim; j += blockDim.y) {
      int64_t p = p0 + j, l = l0 + threadIdx.x;
      if (p < t.p_size && l < t.l_size) dst[db + p * t.dst_p_stride + l] = tile[threadIdx.x][j];
    }
    __syncthreads();  // the next tile overwrites `tile`
  }
}

// ---- Gather --------------------------------------------------------------------------------

__device__ void report_index(unsigned long long* err, int64_t v) {
  if (err && atomicCAS(err, 0ull, 1ull) == 0ull) err[1] = (unsigned long long)v;
}

template <class U, class Idx, class I>
__global__ void gather_kernel(U* __restrict__ y,            // [outer, n, inner] units
                              const U* __restrict__ x,      // [outer, dim, inner] units
                              const Idx* __restrict__ ind,  // [n]
                              I n, I dim, I inner, I total, unsigned long long* err) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;  // 64-bit counter: see strided_copy_kernel
  for (int64_t i64 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i64 < (int64_t)total; i64 += step) {
    const I i = (I)i64;
    I o, j, k;
    gather_split(i, n, inner, &o, &j, &k);
    int64_t v = (int64_t)ind[j];
    if (v < -(int64_t)dim || v >= (int64_t)dim) {
      report_index(err, v);
      continue;
    }
    if (v < 0) v += dim;
    y[i] = x[(o * dim + (I)v) * inner + k];
  }
}

template <class U, class Idx>
__global__ void gather_elements_kernel(U* __restrict__ y,            // plan.shape
                                       const U* __restrict__ x,      // plan.x_stride
                                       const Idx* __restrict__ ind,  // plan.shape
                                       GatherElementsPlan plan, int64_t total, unsigned long long* err) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t v = (int64_t)ind[i];
    if (v < -plan.axis_dim || v >= plan.axis_dim) {
      report_index(err, v);
      continue;
    }
    if (v < 0) v += plan.axis_dim;
    y[i] = x[gather_elements_source(plan, i, v)];
  }
}

// ---- Pad, Trilu ----------------------------------------------------------------------------

template <class U>
__global__ void pad_constant_kernel(U* __restrict__ y,        // plan.out_shape
                                    const U* __restrict__ x,  // plan.in_shape
                                    const U* value,           // [1] or nullptr
                                    PadPlan plan, int64_t total) {
  const U c = value ? *value : U{};
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t s = pad_source(plan, i);
    y[i] = s < 0 ? c : x[s];
  }
}

template <class U>
__global__ void trilu_kernel(U* __restrict__ y,        // [batch, m, n]
                             const U* __restrict__ x,  // [batch, m, n]
                             int64_t m, int64_t n, int64_t k, bool upper, int64_t total) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = i / n, col = i - row * n;
    y[i] = trilu_keep(row % m, col, k, upper) ? x[i] : U{};
  }
}

// ---- Rope ----------------------------------------------------------------------------------

// One thread per (token, head, pair i < head_dim / 2): pairs past rot_half copy their two dims.
// __fmul_rn/__fsub_rn/__fadd_rn keep the reference's rounding (no fused multiply-add).
template <class P>
__global__ void rope_kernel(float* __restrict__ y,            // [tokens, heads * head_dim]
                            const float* __restrict__ x,      // [tokens, heads * head_dim]
                            const P* __restrict__ positions,  // [tokens]
                            const float* __restrict__ inv_freq,  // [rot_half]
                            int64_t heads, int64_t head_dim, int64_t rot_half, bool interleaved,
                            int64_t total) {
  const int64_t pairs = head_dim / 2;
  for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
    int64_t row = g / pairs, i = g - row * pairs;  // row = token * heads + head
    const float* xr = x + row * head_dim;
    float* yr = y + row * head_dim;
    if (i >= rot_half) {  // pass-through dims 2i, 2i + 1 (both >= 2 * rot_half)
      yr[2 * i] = xr[2 * i];
      yr[2 * i + 1] = xr[2 * i + 1];
      continue;
    }
    const float pos = (float)(int64_t)positions[row / heads];
    // sin/cos of the float angle in double, rounded once: matches libm's sinf/cosf (nearly
    // always bit for bit) and stays accurate for large angles even under --use_fast_math.
    double sd, cd;
    sincos((double)__fmul_rn(pos, inv_freq[i]), &sd, &cd);
    const float s = (float)sd, c = (float)cd;
    const int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + rot_half;
    const float x0 = xr[i0], x1 = xr[i1];
    yr[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    yr[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

}  // namespace

void movement_copy(void* dst, const void* src, int64_t bytes, void* stream) {
  if (bytes <= 0 || dst == src) return;  // a planner that aliases the buffers needs no copy
  cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, as_stream(stream));
}

void movement_strided_copy(void* dst, const void* src, const StridedPlan& plan_in, int elem_bytes,
                           void* stream) {
  StridedPlan plan = plan_in;
  const int64_t n = strided_numel(plan);
  if (n == 0) return;
  TransposeTilePlan t;
  if (transpose_tile_plan(plan, &t)) {
    const int64_t tiles_p = (t.p_size + kTileDim - 1) / kTileDim, tiles_l = (t.l_size + kTileDim - 1) / kTileDim;
    const int64_t tiles = strided_numel(t.batch) * tiles_p * tiles_l;
    const int blocks = (int)(tiles < kMaxBlocks ? tiles : kMaxBlocks);
    dispatch_unit(elem_bytes, [&](auto b) {
      using U = typename UnitOf<decltype(b)::value>::type;
      EMBER_LAUNCH(transpose_tiles_kernel<U>, blocks, dim3(kTileDim, 8), 0, as_stream(stream))(
          static_cast<U*>(dst), static_cast<const U*>(src), t, tiles_p, tiles_l, tiles);
    });
    return;
  }
  const int unit = strided_widen(&plan, elem_bytes, (uintptr_t)dst, (uintptr_t)src);
  const int64_t units = strided_numel(plan);
  const bool small = strided_fits_i32(plan);
  dispatch_unit(unit, [&](auto b) {
    using U = typename UnitOf<decltype(b)::value>::type;
    auto* narrow = strided_copy_kernel<U, int32_t>;
    auto* wide = strided_copy_kernel<U, int64_t>;
    if (small)
      EMBER_LAUNCH(narrow, blocks_for(units), kThreads, 0, as_stream(stream))(
          static_cast<U*>(dst), static_cast<const U*>(src), plan, (int32_t)units);
    else
      EMBER_LAUNCH(wide, blocks_for(units), kThreads, 0, as_stream(stream))(
          static_cast<U*>(dst), static_cast<const U*>(src), plan, units);
  });
}

void movement_gather(void* y, const void* x, const void* indices, bool indices_i64, int64_t outer,
                     int64_t dim, int64_t inner, int64_t n, int elem_bytes, unsigned long long* err,
                     void* stream) {
  if (err) cudaMemsetAsync(err, 0, 2 * sizeof(unsigned long long), as_stream(stream));
  if (outer * n * inner == 0) return;
  const int unit = gather_unit(elem_bytes, inner, (uintptr_t)y, (uintptr_t)x);
  const int64_t inner_u = inner * elem_bytes / unit, total = outer * n * inner_u;
  const bool small = total <= INT32_MAX && outer * dim * inner_u <= INT32_MAX;
  dispatch_unit(unit, [&](auto b) {
    using U = typename UnitOf<decltype(b)::value>::type;
    auto go = [&](auto idx_tag, auto i_tag) {
      using Idx = decltype(idx_tag);
      using I = decltype(i_tag);
      auto* kernel = gather_kernel<U, Idx, I>;
      EMBER_LAUNCH(kernel, blocks_for(total), kThreads, 0, as_stream(stream))(
          static_cast<U*>(y), static_cast<const U*>(x), static_cast<const Idx*>(indices), (I)n, (I)dim,
          (I)inner_u, (I)total, err);
    };
    if (indices_i64) small ? go(int64_t{}, int32_t{}) : go(int64_t{}, int64_t{});
    else small ? go(int32_t{}, int32_t{}) : go(int32_t{}, int64_t{});
  });
}

void movement_gather_elements(void* y, const void* x, const void* indices, bool indices_i64,
                              const GatherElementsPlan& plan, int elem_bytes, unsigned long long* err,
                              void* stream) {
  if (err) cudaMemsetAsync(err, 0, 2 * sizeof(unsigned long long), as_stream(stream));
  int64_t total = 1;
  for (int k = 0; k < plan.rank; k++) total *= plan.shape[k];
  if (total == 0) return;
  dispatch_unit(elem_bytes, [&](auto b) {
    using U = typename UnitOf<decltype(b)::value>::type;
    auto* i64 = gather_elements_kernel<U, int64_t>;
    auto* i32 = gather_elements_kernel<U, int32_t>;
    if (indices_i64)
      EMBER_LAUNCH(i64, blocks_for(total), kThreads, 0, as_stream(stream))(
          static_cast<U*>(y), static_cast<const U*>(x), static_cast<const int64_t*>(indices), plan, total, err);
    else
      EMBER_LAUNCH(i32, blocks_for(total), kThreads, 0, as_stream(stream))(
          static_cast<U*>(y), static_cast<const U*>(x), static_cast<const int32_t*>(indices), plan, total, err);
  });
}

void movement_pad_constant(void* y, const void* x, const void* value, const PadPlan& plan, int elem_bytes,
                           void* stream) {
  int64_t total = 1;
  for (int k = 0; k < plan.rank; k++) total *= plan.out_shape[k];
  if (total == 0) return;
  dispatch_unit(elem_bytes, [&](auto b) {
    using U = typename UnitOf<decltype(b)::value>::type;
    EMBER_LAUNCH(pad_constant_kernel<U>, blocks_for(total), kThreads, 0, as_stream(stream))(
        static_cast<U*>(y), static_cast<const U*>(x), static_cast<const U*>(value), plan, total);
  });
}

void movement_trilu(void* y, const void* x, int64_t batch, int64_t m, int64_t n, int64_t k, bool upper,
                    int elem_bytes, void* stream) {
  const int64_t total = batch * m * n;
  if (total == 0) return;
  dispatch_unit(elem_bytes, [&](auto b) {
    using U = typename UnitOf<decltype(b)::value>::type;
    EMBER_LAUNCH(trilu_kernel<U>, blocks_for(total), kThreads, 0, as_stream(stream))(
        static_cast<U*>(y), static_cast<const U*>(x), m, n, k, upper, total);
  });
}

void movement_rope_f32(float* y, const float* x, const void* positions, bool positions_i64,
                       const float* inv_freq, int64_t tokens, int64_t heads, int64_t head_dim,
                       int64_t rot_half, bool interleaved, void* stream) {
  const int64_t total = tokens * heads * (head_dim / 2);
  if (total == 0) return;
  if (positions_i64)
    EMBER_LAUNCH(rope_kernel<int64_t>, blocks_for(total), kThreads, 0, as_stream(stream))(
        y, x, static_cast<const int64_t*>(positions), inv_freq, heads, head_dim, rot_half, interleaved, total);
  else
    EMBER_LAUNCH(rope_kernel<int32_t>, blocks_for(total), kThreads, 0, as_stream(stream))(
        y, x, static_cast<const int32_t*>(positions), inv_freq, heads, head_dim, rot_half, interleaved, total);
}

}  // namespace ember::cuda
