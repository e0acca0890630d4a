// Element types: one enum, one trait table. Quantized block formats are DTypes too (their
// block layouts live in kernels/common/quant.h); they only ever appear as packed weights.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace ember {

enum class DType : uint8_t {
  F32, F16, BF16, F64, I8, U8, I16, I32, I64, Bool,
  Q8_0, Q4_0, Q4_1, Q4G,  // quantized blocks (kernels/common/quant.h)
  Count
};

struct DTypeInfo {
  DType dtype;
  const char* name;     // "float32": numpy's name
  size_t size;          // bytes per element; 0 for block formats
  bool is_float;
  bool is_signed;
  bool is_quant;
};

const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
inline size_t dtype_size(DType t) { return dtype_info(t).size; }
// Returns false where `name` is not a known dtype.
bool dtype_from_name(const std::string& name, DType* out);

// Half-precision conversions (round to nearest even), shared by every kernel.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { man <<= 1; e++; } while ((man & 0x400) == 0);
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in f16
    if (absx < 0x33000000u) return (uint16_t)sign;
    uint32_t e = absx >> 23;
    uint32_t m = (absx & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;  // 14..24
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t r = absx + 0xfff + ((absx >> 13) & 1);  // round to nearest even
  r -= (112u << 23);
  return (uint16_t)(sign | (r >> 13));
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

// Storage types for the 16-bit floats, so templates can tell them from uint16_t.
struct f16_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

}  // namespace ember
