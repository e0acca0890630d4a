// QuantizeLinear (float32 -> uint8 / int8) and DequantizeLinear (uint8 / int8 -> float32) with
// one scale and zero point for the whole tensor: the activation Q/DQ pairs of QDQ models that
// stay outside the integer kernels. Same arithmetic as the references in
// cpp/src/ops/ops_quant.cpp (float32 divide or multiply, round half to even, saturate, NaN to
// the minimum); the op case table runs both on every row.
#include <cstdint>
#include <type_traits>

#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int64_t kGrain = 16384;

bool scalar_of(const TensorType& t, bool (*dtype_ok)(DType)) {
  return dtype_ok(t.dtype) && shape_numel(t.shape) == 1 && t.shape.size() <= 1;
}
bool is_f32(DType t) { return t == DType::F32; }
bool is_q8(DType t) { return t == DType::U8 || t == DType::I8; }

// nearbyint without a libm call (baseline x86 has no round instruction): clamped far inside
// 2^22 (beyond it every value saturates anyway; NaN goes to the low end), adding and removing
// 1.5 * 2^23 leaves the nearest integer, ties to even.
inline float round_even_clamped(float v) {
  v = v > -0x1p22f ? v : -0x1p22f;
  v = v < 0x1p22f ? v : 0x1p22f;
  return (v + 0x1.8p23f) - 0x1.8p23f;
}

// One chunk, with everything in locals and restrict pointers: a uint8 store may alias anything,
// so through the lambda's captures the compiler would reload s and zp per element and not
// vectorise.
template <class Q>
void quantize_chunk(const float* __restrict x, float s, float fz, Q* __restrict y, int64_t n) {
  constexpr float lo = std::is_signed_v<Q> ? -128.0f : 0.0f, hi = std::is_signed_v<Q> ? 127.0f : 255.0f;
  for (int64_t i = 0; i < n; i++) {
    float v = round_even_clamped(x[i] / s) + fz;
    v = v >= lo ? v : lo;  // NaN too
    v = v <= hi ? v : hi;
    y[i] = (Q)(int32_t)v;
  }
}

template <class Q>
void quantize_rows(const KernelCtx& ctx, const float* x, float s, int zp, Q* y, int64_t n) {
  ctx.parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    quantize_chunk(x + i0, s, (float)zp, y + i0, i1 - i0);
  });
}

template <class Q>
void dequantize_chunk(const Q* __restrict x, float s, float z, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = ((float)x[i] - z) * s;
}

template <class Q>
void dequantize_rows(const KernelCtx& ctx, const Q* x, float s, int zp, float* y, int64_t n) {
  ctx.parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    dequantize_chunk(x + i0, s, (float)zp, y + i0, i1 - i0);
  });
}

int zero_point(const KernelCtx& ctx) {
  if (!ctx.has_input(2)) return 0;
  const Tensor& z = ctx.input(2);
  return z.dtype() == DType::U8 ? (int)z.ptr<uint8_t>()[0] : (int)z.ptr<int8_t>()[0];
}

}  // namespace

bool quantize_linear_f32_supports(const InferCtx& ctx) {
  const Attrs& a = ctx.node.attrs;
  int64_t od = a.get_int("output_dtype", 0);
  return ctx.in[0].dtype == DType::F32 && scalar_of(ctx.in[1], is_f32) &&
         (!ctx.has(2) || scalar_of(ctx.in[2], is_q8)) && a.get_int("block_size", 0) == 0 &&
         a.get_int("precision", 0) == 0 && (od == 0 || od == 2 || od == 3);
}

void quantize_linear_f32(const KernelCtx& ctx) {
  const float* x = ctx.input(0).ptr<float>();  // [n]
  float s = ctx.input(1).ptr<float>()[0];
  int zp = zero_point(ctx);
  Tensor& y = ctx.output(0);                   // [n] uint8 | int8
  if (y.dtype() == DType::U8) quantize_rows(ctx, x, s, zp, y.ptr<uint8_t>(), y.numel());
  else quantize_rows(ctx, x, s, zp, y.ptr<int8_t>(), y.numel());
}

void quantize_linear_f32_with(const KernelCtx& ctx, QuantizeRowQ8Fn row) {
  const float* x = ctx.input(0).ptr<float>();  // [n]
  float s = ctx.input(1).ptr<float>()[0];
  int zp = zero_point(ctx);
  Tensor& y = ctx.output(0);                   // [n] uint8 | int8, stored as bytes
  bool u8 = y.dtype() == DType::U8;
  uint8_t* yb = u8 ? y.ptr<uint8_t>() : (uint8_t*)y.ptr<int8_t>();
  ctx.parallel_for(y.numel(), kGrain, [&](int64_t i0, int64_t i1) {
    row(x + i0, i1 - i0, s, zp, u8 ? 0 : -128, u8 ? 255 : 127, yb + i0);
  });
}

bool dequantize_linear_q8_supports(const InferCtx& ctx) {
  int64_t od = ctx.node.attrs.get_int("output_dtype", 0);
  return is_q8(ctx.in[0].dtype) && scalar_of(ctx.in[1], is_f32) &&
         (!ctx.has(2) || scalar_of(ctx.in[2], is_q8)) && ctx.node.attrs.get_int("block_size", 0) == 0 &&
         (od == 0 || od == 1);
}

void dequantize_linear_q8(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [n] uint8 | int8
  float s = ctx.input(1).ptr<float>()[0];
  int zp = zero_point(ctx);
  float* y = ctx.output(0).ptr<float>();  // [n]
  if (x.dtype() == DType::U8) dequantize_rows(ctx, x.ptr<uint8_t>(), s, zp, y, x.numel());
  else dequantize_rows(ctx, x.ptr<int8_t>(), s, zp, y, x.numel());
}

}  // namespace ember::cpu
