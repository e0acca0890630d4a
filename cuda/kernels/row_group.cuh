// Reductions across a warp or a block, and the row groups the row kernels (softmax, norms,
// residual add + norm) iterate with: a warp per row, or the block per row. Every sum runs in a
// fixed order (xor shuffles, then the warps' partials in order), so results are deterministic.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ember::cuda {

struct SumOp { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };

template <class T, class F>
__device__ __forceinline__ T warp_reduce(T v, F f) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Every thread of the block gets the result. `sh` holds 32 T; every thread must call this.
template <class T, class F>
__device__ __forceinline__ T block_reduce(T v, F f, T* sh) {
  v = warp_reduce(v, f);
  if (blockDim.x <= 32) return v;
  const int nw = (blockDim.x + 31) >> 5;
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = sh[0];
  for (int w = 1; w < nw; w++) r = f(r, sh[w]);  // fixed order: deterministic
  __syncthreads();  // sh is reused by the next call
  return r;
}

// WARP: a warp per row, blockDim.x / 32 rows per block; else a block per row.
template <bool WARP>
struct RowGroup {
  int64_t first, step;  // row iteration
  int lane, size;       // this thread's index in the group, and the group's size
  __device__ RowGroup() {
    if (WARP) {
      const int per_block = blockDim.x >> 5;
      first = (int64_t)blockIdx.x * per_block + (threadIdx.x >> 5);
      step = (int64_t)gridDim.x * per_block;
      lane = threadIdx.x & 31;
      size = 32;
    } else {
      first = blockIdx.x;
      step = gridDim.x;
      lane = threadIdx.x;
      size = blockDim.x;
    }
  }
  template <class T, class F>
  __device__ T reduce(T v, F f, T* sh) const {
    return WARP ? warp_reduce(v, f) : block_reduce(v, f, sh);
  }
};

}  // namespace ember::cuda
