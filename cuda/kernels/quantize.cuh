// Int8 quantization of one value and the NaN-ignoring max / min, as the references compute them
// (cpp/src/ops/ops_qmatmul.cpp, ops/quantize_rows.h): shared by the W8A8 quantizers
// (q8_gemm.cu) and AddNorm's quantized outputs (add_norm.cu), so both round alike.
#pragma once
#include <cuda_runtime.h>

#include <cfloat>

namespace ember::cuda {

// The reference's NaN-ignoring max / min (v > m ? v : m): the running value stays on NaN.
template <class T>
__device__ __forceinline__ T max_keep(T v, T m) { return v > m ? v : m; }
template <class T>
__device__ __forceinline__ T min_keep(T v, T m) { return v < m ? v : m; }

struct MaxKeep {
  template <class T> __device__ T operator()(T a, T b) const { return max_keep(a, b); }
};
struct MinKeep {
  template <class T> __device__ T operator()(T a, T b) const { return min_keep(a, b); }
};

// ONNX QuantizeLinear of one value: clamp(rint(x / s) + zp, qmin, qmax), NaN to qmin.
__device__ __forceinline__ int quantize(float x, float s, float zp, float qmin, float qmax) {
  float r = __fadd_rn(rintf(__fdiv_rn(x, s)), zp);
  return (int)min_keep(max_keep(r, qmin), qmax);
}

// Token mode's row scale from the row's max |a|: max(amax / 127, FLT_MIN).
__device__ __forceinline__ float token_scale(float amax) {
  const float s = __fdiv_rn(amax, 127.0f);
  return s < FLT_MIN ? FLT_MIN : s;
}

// Token mode's code of one value: clamp(rint(x / s), -127, 127).
__device__ __forceinline__ int token_code(float x, float s) {
  return quantize(x, s, 0.0f, -127.0f, 127.0f);
}

__device__ __forceinline__ uint32_t pack4(int c0, int c1, int c2, int c3) {
  return (uint32_t)(c0 & 0xff) | (uint32_t)(c1 & 0xff) << 8 | (uint32_t)(c2 & 0xff) << 16 |
         (uint32_t)(c3 & 0xff) << 24;
}

}  // namespace ember::cuda
