// Launchers of q8_gemm.cu: QMatMul (W8A8) on the GPU beside cuBLASLt's int8 GEMM. Plain C++
// (no CUDA headers). The weight layout (W [n_pad, k_pad] int8 + colsum [n_pad]) is in
// cuda/src/q8_pack.h; activation codes are int8 [m, k_pad], zero past k.
#pragma once
#include <cstdint>

namespace ember::cuda {

// Activation quantization of the static and tensor_u8 modes, computed on the device. Codes are
// stored as c = q - off (off 128 for a uint8 q, 0 for int8) so they fit int8, and the epilogue
// adds corr * colsum[n] (corr = off - zp): sum (q - zp) w == sum c w + (off - zp) sum w.
struct Q8Params {
  float s;                          // the activation scale
  int32_t zp, qmin, qmax, off, corr;
};

// The fused epilogue's inputs: y = act(((float)acc * s_m) * w_scale[n] + bias[n]).
enum class Q8Act : int32_t { None = 0, Relu = 1, Gelu = 2, GeluTanh = 3 };
struct Q8Epilogue {
  const float* row_scale = nullptr;  // [m] (token mode: s_m), else null
  const Q8Params* params = nullptr;  // [1] (static / tensor_u8: s and corr), else null
  const int32_t* colsum = nullptr;   // [n_pad] (read only with params)
  const float* w_scale = nullptr;    // [n]
  const float* bias = nullptr;       // [n] or null
  Q8Act act = Q8Act::None;
};

// Static mode: params from QuantizeLinear's scale and zero point (zp null: uint8 0).
void q8_params_static(const float* a_scale,  // [1]
                      const void* zp,        // [1] uint8 or int8 (zp_signed), or null
                      bool zp_signed, Q8Params* out, void* stream);
// tensor_u8 mode: DynamicQuantizeLinear's scale and zero point over all of a, in two passes
// (per-block min / max into `partial`, then one block). q8_minmax_partial_floats(numel) floats
// of scratch.
int64_t q8_minmax_partial_floats(int64_t numel);
void q8_params_tensor_u8(const float* a,  // [numel]
                         int64_t numel, float* partial, Q8Params* out, void* stream);

// Token mode: one block per row; s_m = max(amax / 127, FLT_MIN), c = clamp(rint(a / s_m)).
void q8_quantize_token(const float* a,   // [m, k]
                       int8_t* codes,    // [m, k_pad]
                       float* row_scale, // [m]
                       int64_t m, int64_t k, int64_t k_pad, void* stream);
// Rows mode (codes made ahead, by AddNorm): codes [m, k] copied into [m, k_pad], zero past k.
void q8_pad_codes(const int8_t* src,  // [m, k]
                  int8_t* dst,        // [m, k_pad]
                  int64_t m, int64_t k, int64_t k_pad, void* stream);
// Static / tensor_u8 modes: c = clamp(rint(a / s) + zp, qmin, qmax) - off.
void q8_quantize_static(const float* a,           // [m, k]
                        int8_t* codes,            // [m, k_pad]
                        const Q8Params* params,   // [1]
                        int64_t m, int64_t k, int64_t k_pad, void* stream);

// After cuBLASLt: y[m, n] from the int32 sums acc[m, n_pad].
void q8_epilogue(const int32_t* acc,  // [m, n_pad]
                 const Q8Epilogue& e,
                 float* y,            // [m, n]
                 int64_t m, int64_t n, int64_t n_pad, void* stream);

// The whole GEMM with the epilogue fused, dp4a on CUDA cores, one warp per output column and
// up to 8 rows per warp: the memory-bound small-m path (decode), and the fallback where
// cuBLASLt has no int8 algorithm (rows beyond 8 re-read the weight).
void q8_gemm_small(const int8_t* codes,  // [m, k_pad]
                   const int8_t* w,      // [n_pad, k_pad]
                   const Q8Epilogue& e,
                   float* y,             // [m, n]
                   int64_t m, int64_t n, int64_t k_pad, void* stream);

}  // namespace ember::cuda
