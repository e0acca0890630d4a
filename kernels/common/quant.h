// Quantized weight formats, shared by every CPU and CUDA kernel. The block structs are plain
// C layouts bit-compatible with GGUF/ggml (Q8_0, Q4_0, Q4_1); group-wise int4 (Q4G, as in
// ONNX Runtime's com.microsoft MatMulNBits, GPTQ and AWQ) is a layout described by index
// helpers because its group size varies. Reference (de)quantization lives in quant.cpp; it is
// the specification the fast kernels are tested against. fp16 fields hold IEEE half bits.
#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define EMBER_QUANT_HD __host__ __device__ inline
#elif defined(__cplusplus)
#define EMBER_QUANT_HD inline
#else
#define EMBER_QUANT_HD static inline
#endif

#ifdef __cplusplus
#define EMBER_QUANT_STATIC_ASSERT(c, m) static_assert(c, m)
namespace ember {
#else
#define EMBER_QUANT_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define EMBER_QK8_0 32
#define EMBER_QK4_0 32
#define EMBER_QK4_1 32

// value[j] = qs[j] * d
typedef struct {
  uint16_t d;                // f16 scale
  int8_t qs[EMBER_QK8_0];
} block_q8_0;
EMBER_QUANT_STATIC_ASSERT(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes");

// value[j] = (q[j] - 8) * d; qs[i] holds element i in its low nibble, element i + 16 in its high.
typedef struct {
  uint16_t d;                // f16 scale
  uint8_t qs[EMBER_QK4_0 / 2];
} block_q4_0;
EMBER_QUANT_STATIC_ASSERT(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes");

// value[j] = q[j] * d + m; nibbles as in block_q4_0.
typedef struct {
  uint16_t d;                // f16 scale
  uint16_t m;                // f16 minimum
  uint8_t qs[EMBER_QK4_1 / 2];
} block_q4_1;
EMBER_QUANT_STATIC_ASSERT(sizeof(block_q4_1) == 20, "block_q4_1 must be 20 bytes");

// Unsigned 4-bit code of element j (0..31) of a q4_0 / q4_1 block.
EMBER_QUANT_HD int q4_block_get(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
}

// ---- Q4G: group-wise int4 (MatMulNBits bits=4) ----------------------------------------------
// Weights W [N, K] are quantized along K in groups of G elements (G a multiple of 32; the last
// group of a row may be partial, its padding codes equal the zero point so they decode to 0).
//   q      uint8 [N, groups * G / 2]   two codes per byte, even k in the low nibble
//   scales float [N, groups]           (files may store fp16; convert when loading)
//   zp     uint8 [N, ceil(groups / 2)] optional; two zero points per byte, even group low;
//                                      absent means 8 for every group
//   W[n, k] = (q[n, k] - zp[n, k / G]) * scales[n, k / G]
EMBER_QUANT_HD int64_t q4g_groups(int64_t k, int64_t group) { return (k + group - 1) / group; }
EMBER_QUANT_HD int64_t q4g_row_bytes(int64_t k, int64_t group) {
  return q4g_groups(k, group) * group / 2;
}
EMBER_QUANT_HD int64_t q4g_zp_row_bytes(int64_t k, int64_t group) {
  return (q4g_groups(k, group) + 1) / 2;
}
// Code of element k of one packed row.
EMBER_QUANT_HD int q4g_get_q(const uint8_t* row, int64_t k) {
  return (row[k >> 1] >> ((k & 1) * 4)) & 0x0f;
}
// Zero point of group g of one row (zp_row may be null: 8).
EMBER_QUANT_HD int q4g_get_zp(const uint8_t* zp_row, int64_t g) {
  return zp_row ? (zp_row[g >> 1] >> ((g & 1) * 4)) & 0x0f : 8;
}

#ifdef __cplusplus
}  // namespace ember
#endif

#ifdef __cplusplus
#include "ember/dtype.h"

namespace ember {

// One row per block-quantized DType. Kernels consuming Q8_0/Q4_0/Q4_1/Q4G weights on the
// CPU take their activations quantized on the fly per 32-element block, like Q8_0's grid but
// with int16 codes (W8A16i / W4A16i: int8 codes flipped SmolLM2's greedy answers), so the dot
// product of a weight block pairs with exactly one activation block of 32 elements.
struct QuantTraits {
  DType dtype;
  int64_t block_size;      // elements per block; 0 for Q4G (group size varies, see q4g_*)
  int64_t block_bytes;     // bytes per block; 0 for Q4G
  DType act_dtype;         // the activation block grid of the CPU kernels that consume it
  // Reference conversion of n elements (n a multiple of block_size); null for Q4G.
  void (*to_float)(const void* blocks, float* out, int64_t n);
  void (*from_float)(const float* in, void* blocks, int64_t n);
};

// Throws Internal for a dtype that is not a quantized format.
const QuantTraits& quant_traits(DType t);
// Bytes of n elements in a fixed-block format; throws Model when n is not a whole number
// of blocks.
int64_t quant_row_bytes(DType t, int64_t n);

// References (round to nearest, as ggml's reference quantizers): q8_0 d = amax / 127;
// q4_0 d = v / -8 with v the element of largest magnitude; q4_1 d = (max - min) / 15, m = min.
// n must be a multiple of 32 and every input finite, else ember::Error (Model).
void q8_0_from_float(const float* in, void* blocks, int64_t n);  // blocks: [n / 32] block_q8_0
void q8_0_to_float(const void* blocks, float* out, int64_t n);
void q4_0_from_float(const float* in, void* blocks, int64_t n);  // blocks: [n / 32] block_q4_0
void q4_0_to_float(const void* blocks, float* out, int64_t n);
void q4_1_from_float(const float* in, void* blocks, int64_t n);  // blocks: [n / 32] block_q4_1
void q4_1_to_float(const void* blocks, float* out, int64_t n);

// Q4G (layout above). Throws Model unless n >= 0, k > 0, group a positive multiple of 32.
void q4g_check(int64_t n, int64_t k, int64_t group);
// Round to nearest per group. With zero points: asymmetric over [min(min, 0), max(max, 0)]
// (ORT's range so that 0 is exact), scale = range / 15, zp = round(-min / scale). Without:
// symmetric, scale = v / -8 with v the element of largest magnitude, zero point 8.
void q4g_quantize(const float* w,      // [n, k]
                  int64_t n, int64_t k, int64_t group, bool has_zero_point,
                  uint8_t* q,          // [n, q4g_row_bytes(k, group)]
                  float* scales,       // [n, q4g_groups(k, group)]
                  uint8_t* zp);        // [n, q4g_zp_row_bytes(k, group)]; ignored without zp
void q4g_dequantize(const uint8_t* q,       // [n, q4g_row_bytes(k, group)]
                    const float* scales,    // [n, q4g_groups(k, group)]
                    const uint8_t* zp,      // [n, q4g_zp_row_bytes(k, group)] or null (8)
                    int64_t n, int64_t k, int64_t group,
                    float* w);              // [n, k]

}  // namespace ember
#endif
