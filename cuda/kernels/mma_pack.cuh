// What the mma.sync attention kernels (attention.cu, paged_attention.cu) share besides the PTX
// wrappers: two floats packed into a 16-bit pair register, the sum of a pair as rounded, and
// log2(e) for exp2-based softmax.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ember::cuda {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack2(__half, float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16, float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
// The sum of a packed pair as rounded (l sums the probabilities P @ V uses, so weights sum to 1).
__device__ __forceinline__ float pair_sum(__half, uint32_t x) {
  float2 f = __half22float2(*reinterpret_cast<__half2*>(&x));
  return f.x + f.y;
}
__device__ __forceinline__ float pair_sum(__nv_bfloat16, uint32_t x) {
  float2 f = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
  return f.x + f.y;
}

}  // namespace ember::cuda
