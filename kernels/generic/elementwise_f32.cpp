// Fast f32 elementwise kernels: unary maps, Add/Sub/Mul/Div (same shape, scalar operand, row
// broadcast [.., N] op [N]), Pow with a scalar exponent, Where with equal shapes. Work is split
// into chunks of kChunk elements on the pool; each chunk is a plain loop the compiler
// vectorises (results never depend on the split). exp uses Cody-Waite reduction and Cephes'
// degree-6 expf polynomial instead of libm so that it vectorises; tanh, sigmoid and tanh-Gelu
// are built on it, and erf-Gelu on it and a fitted erfc: <= 2 ulp from the double references
// over all floats (tests/cpp/test_elementwise.cpp samples every binade). Erf calls libm in
// double (TODO: vectorise). sqrt only vectorises under -fno-math-errno.
// References: the OpDef rows in cpp/src/ops/ops_unary.cpp and cpp/src/ops/ops_elementwise.cpp.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int64_t kChunk = 16384;

inline float f32_from_bits(uint32_t b) { return std::bit_cast<float>(b); }
inline uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }

// c ? a : b as a bit mask. gcc (with its default -ftrapping-math) will not if-convert a
// float compare feeding a ?: once it has sunk an arm's arithmetic into a branch; a mask
// select leaves no branch to sink into, so the loop still vectorises.
inline float blend(bool c, float a, float b) {
  uint32_t m = 0u - (uint32_t)c;
  return f32_from_bits((f32_bits(a) & m) | (f32_bits(b) & ~m));
}

// exp(x) * 2^bias, <= 2 ulp over the whole float range (subnormal results included), branch
// free. x = n ln2 + r with |r| <= ln2 / 2; exp(r) by a minimax polynomial; 2^(n + bias) is
// applied in two steps so that results in the subnormal range are rounded once.
inline float exp_scaled(float x, int32_t bias) {
  // exp(-104) 2^0 -> 0, exp(89) -> inf; bias (0..32, a constant after inlining) moves the floor.
  float lo = -104.0f - 0.693147181f * (float)bias;
  float xc = blend(x < lo, lo, x);
  xc = blend(xc > 89.0f, 89.0f, xc);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float t = xc * 1.44269504088896341f + kRound;
  float n = t - kRound;
  int32_t ni = (int32_t)(f32_bits(t) - f32_bits(kRound) + (uint32_t)bias);  // no float->int
  float r = xc - n * 0.693359375f;  // ln2 split: the high part has 9 bits, n * hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t n1 = ni >> 1, n2 = ni - n1;  // halves of n + bias: 2^n1, 2^n2 are normal floats
  float s1 = f32_from_bits((uint32_t)(n1 + 127) << 23);
  float s2 = f32_from_bits((uint32_t)(n2 + 127) << 23);
  float y = p * s1 * s2;
  return blend(x != x, x, y);  // NaN in, NaN out
}

inline float exp_approx(float x) { return exp_scaled(x, 0); }

inline float copy_sign(float mag, float sign) {
  return f32_from_bits((f32_bits(mag) & 0x7fffffffu) | (f32_bits(sign) & 0x80000000u));
}

// tanh: odd polynomial below 0.625 (Cephes tanhf), else 1 - 2 / (exp(2|x|) + 1).
inline float tanh_approx(float x) {
  float ax = std::fabs(x);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  p = p * z * x + x;
  float big = 1.0f - 2.0f / (exp_approx(2.0f * ax) + 1.0f);
  return copy_sign(blend(ax < 0.625f, p, big), x);  // NaN takes the exp branch and stays NaN
}

// 1 / (1 + exp(-x)), written with exp(-|x|) so that neither branch overflows.
inline float sigmoid_approx(float x) {
  float e = exp_approx(-std::fabs(x));
  return blend(x >= 0.0f, 1.0f, e) / (1.0f + e);
}

// tanh-Gelu = x sigmoid(v), v = 2 sqrt(2/pi) (x + 0.044715 x^3). v is formed in double and
// split into float hi + double lo, exp(-(hi + lo)) ~= exp(-hi) (1 - lo): a float v alone
// would lose ~|v| / 2 ulp in the tail. exp runs in float (2^32 too large, so it does not go
// subnormal while the result is still normal); the rest is double with one final rounding.
inline float gelu_tanh_approx(float x) {
  // Beyond |x| = 14 sigmoid(v) is 0 or 1 in float (and |v| stays finite in double).
  float xc = blend(x < -14.0f, -14.0f, x);
  xc = blend(xc > 14.0f, 14.0f, xc);
  double xd = xc;
  double v = 1.5957691216057308 * (xd + 0.044715 * xd * xd * xd);
  float hi = (float)v;
  float ahi = std::fabs(hi);
  double alo = std::fabs(v) - (double)ahi;  // |v| = ahi + alo
  double es = (double)exp_scaled(-ahi, 32) * (1.0 - alo);  // exp(-|v|) * 2^32
  double d = 1.0 + es * 0x1p-32;
  float pos = (float)((double)x / d);
  float neg = (float)((double)x * es / d * 0x1p-32);
  return blend(hi >= 0.0f, pos, neg);
}

// erf-Gelu = x Phi(x), Phi(x) = erfc(-x / sqrt2) / 2. With z = |x| / sqrt2 and t = 2 / (2 + z),
// erfc(z) = t exp(g(t) - z^2), g a degree-11 polynomial (least-squares Chebyshev fit on
// z in [0, 12], |error| < 4e-9, the Numerical Recipes erfcc form). The exponent is formed in
// double and split like tanh-Gelu's; x < 0 uses x Phi(x) directly, x >= 0 uses x (1 - Phi(-x)),
// so neither side cancels.
inline float gelu_erf_approx(float x) {
  float xc = blend(x < -16.0f, -16.0f, x);  // beyond 16, x Phi(x) is 0 or x in float
  xc = blend(xc > 16.0f, 16.0f, xc);
  double z = std::fabs((double)xc) * 0.70710678118654752;
  double t = 2.0 / (2.0 + z);
  double g = -0.09724855369777087;
  g = g * t + 0.48283067205843966;
  g = g * t - 0.8056563168795099;
  g = g * t + 0.16281815517902168;
  g = g * t + 1.0716901021941536;
  g = g * t - 1.2523828945375761;
  g = g * t + 0.5171914955897345;
  g = g * t - 0.3167415179559214;
  g = g * t + 0.13450551179804035;
  g = g * t + 0.36798151869055634;
  g = g * t + 1.0005419032191691;
  g = g * t - 1.2655300789309543;
  double arg = g - z * z;
  float hi = (float)arg;
  double lo = arg - (double)hi;
  double h = 0.5 * t * (double)exp_scaled(hi, 32) * (1.0 + lo);  // Phi(-|x|) * 2^32
  float neg = (float)((double)x * h * 0x1p-32);
  float pos = (float)((double)x * (1.0 - h * 0x1p-32));
  return blend(x >= 0.0f, pos, neg);
}

// y[i] = f(x[i]). x == y (in place) vectorises too: gcc's alias check allows equal pointers.
template <class F>
inline void map_range(const float* x, float* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; i++) y[i] = f(x[i]);
}

template <class F>
inline void zip_range(const float* a, const float* b, float* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; i++) y[i] = f(a[i], b[i]);
}

template <class F>
void unary_map(const KernelCtx& ctx, F f) {
  const float* x = ctx.input(0).ptr<float>();  // [n]
  float* y = ctx.output(0).ptr<float>();        // [n]
  int64_t n = ctx.output(0).numel();
  if (n == 0) return;
  ctx.parallel_for(n, kChunk, [&](int64_t b, int64_t e) { map_range(x + b, y + b, e - b, f); });
}

// ---- binary broadcasting plans ----------------------------------------------------------

enum class BinCase { Same, ScalarA, ScalarB, RowA, RowB, ColA, ColB, None };

struct BinPlan {
  BinCase kind = BinCase::None;
  int64_t inner = 1;  // row length for RowA / RowB; out's last dim for ColA / ColB
};

// s without leading 1s is a suffix of out: s repeats as a row of out.
bool is_row_of(const Shape& s, const Shape& out) {
  size_t lead = 0;
  while (lead < s.size() && s[lead] == 1) lead++;
  size_t k = s.size() - lead;
  if (k > out.size()) return false;
  return std::equal(s.begin() + lead, s.end(), out.end() - k);
}

// s is out with its last dim 1 (leading 1s of either aside): one value per row of out, as a
// [.., S, 1] mask on [.., S, H].
bool is_col_of(const Shape& s, const Shape& out) {
  if (s.empty() || s.back() != 1 || out.empty() || out.back() == 1) return false;
  size_t ls = 0, lo = 0;
  while (ls + 1 < s.size() && s[ls] == 1) ls++;
  while (lo + 1 < out.size() && out[lo] == 1) lo++;
  return std::equal(s.begin() + ls, s.end() - 1, out.begin() + lo, out.end() - 1) &&
         s.size() - ls == out.size() - lo;
}

// A tensor that broadcasts to `out` with the same element count has out's flat layout.
BinPlan bin_plan(const Shape& a, const Shape& b, const Shape& out) {
  int64_t n = shape_numel(out), na = shape_numel(a), nb = shape_numel(b);
  if (na == n && nb == n) return {BinCase::Same};
  if (na == n) {
    if (nb == 1) return {BinCase::ScalarB};
    if (is_row_of(b, out)) return {BinCase::RowB, nb};
    if (is_col_of(b, out)) return {BinCase::ColB, out.back()};
  }
  if (nb == n) {
    if (na == 1) return {BinCase::ScalarA};
    if (is_row_of(a, out)) return {BinCase::RowA, na};
    if (is_col_of(a, out)) return {BinCase::ColA, out.back()};
  }
  return {};
}

template <class F>
void binary_run(const KernelCtx& ctx, F f) {
  const Tensor &ta = ctx.input(0), &tb = ctx.input(1);
  Tensor& to = ctx.output(0);
  BinPlan p = bin_plan(ta.shape(), tb.shape(), to.shape());
  if (p.kind == BinCase::None) {  // supports() rejects these; stay correct regardless
    op_def(ctx.node.op).reference(ctx);
    return;
  }
  const float* a = ta.ptr<float>();  // [out] or [inner] or [1] or [out / inner]
  const float* b = tb.ptr<float>();  // [out] or [inner] or [1] or [out / inner]
  float* y = to.ptr<float>();        // [out]
  int64_t n = to.numel();
  if (n == 0) return;
  ctx.parallel_for(n, kChunk, [&](int64_t s, int64_t e) {
    switch (p.kind) {
      case BinCase::Same: zip_range(a + s, b + s, y + s, e - s, f); break;
      case BinCase::ScalarB: {
        float bv = b[0];
        map_range(a + s, y + s, e - s, [&](float v) { return f(v, bv); });
        break;
      }
      case BinCase::ScalarA: {
        float av = a[0];
        map_range(b + s, y + s, e - s, [&](float v) { return f(av, v); });
        break;
      }
      case BinCase::RowB:
      case BinCase::RowA:
        for (int64_t i = s; i < e;) {
          int64_t j = i % p.inner;
          int64_t len = std::min(p.inner - j, e - i);
          if (p.kind == BinCase::RowB) zip_range(a + i, b + j, y + i, len, f);
          else zip_range(a + j, b + i, y + i, len, f);
          i += len;
        }
        break;
      case BinCase::ColB:
      case BinCase::ColA:
        for (int64_t i = s; i < e;) {
          const int64_t r = i / p.inner, len = std::min(p.inner - i % p.inner, e - i);
          if (p.kind == BinCase::ColB) {
            const float bv = b[r];
            map_range(a + i, y + i, len, [&](float v) { return f(v, bv); });
          } else {
            const float av = a[r];
            map_range(b + i, y + i, len, [&](float v) { return f(av, v); });
          }
          i += len;
        }
        break;
      case BinCase::None: break;
    }
  });
}

bool f32_operands(const InferCtx& ctx) {
  return ctx.num_inputs() == 2 && ctx.in[0].dtype == DType::F32 && ctx.in[1].dtype == DType::F32;
}

Shape out_shape(const InferCtx& ctx) {
  return broadcast_shapes(ctx, ctx.in[0].shape, ctx.in[1].shape);
}

}  // namespace

// ---- unary ----------------------------------------------------------------------------------

void exp_f32_array(const float* x, float* y, int64_t n) {
  map_range(x, y, n, [](float v) { return exp_approx(v); });
}

void relu_f32_array(const float* x, float* y, int64_t n) {
  map_range(x, y, n, [](float v) { return blend(v < 0.0f, 0.0f, v); });
}
void gelu_f32_array(const float* x, float* y, int64_t n) {
  map_range(x, y, n, [](float v) { return gelu_erf_approx(v); });
}
void sigmoid_f32_array(const float* x, float* y, int64_t n) {
  map_range(x, y, n, [](float v) { return sigmoid_approx(v); });
}
void gelu_tanh_f32_array(const float* x, float* y, int64_t n) {
  map_range(x, y, n, [](float v) { return gelu_tanh_approx(v); });
}

void exp_f32(const KernelCtx& ctx) { unary_map(ctx, [](float v) { return exp_approx(v); }); }
void tanh_f32(const KernelCtx& ctx) { unary_map(ctx, [](float v) { return tanh_approx(v); }); }
void sigmoid_f32(const KernelCtx& ctx) {
  unary_map(ctx, [](float v) { return sigmoid_approx(v); });
}
void relu_f32(const KernelCtx& ctx) {
  unary_map(ctx, [](float v) { return blend(v < 0.0f, 0.0f, v); });  // NaN stays NaN
}
void sqrt_f32(const KernelCtx& ctx) { unary_map(ctx, [](float v) { return std::sqrt(v); }); }
void neg_f32(const KernelCtx& ctx) { unary_map(ctx, [](float v) { return -v; }); }
void abs_f32(const KernelCtx& ctx) { unary_map(ctx, [](float v) { return std::fabs(v); }); }
void reciprocal_f32(const KernelCtx& ctx) {
  unary_map(ctx, [](float v) { return 1.0f / v; });
}
// libm in double: correctly rounded in practice, and float erff is no faster here.
void erf_f32(const KernelCtx& ctx) {
  unary_map(ctx, [](float v) { return (float)std::erf((double)v); });
}
void gelu_f32(const KernelCtx& ctx) {
  if (ctx.node.attrs.get_string("approximate", "none") == "tanh") {
    unary_map(ctx, [](float v) { return gelu_tanh_approx(v); });
  } else {
    unary_map(ctx, [](float v) { return gelu_erf_approx(v); });
  }
}

// ---- binary ---------------------------------------------------------------------------------

bool binary_f32_supports(const InferCtx& ctx) {
  if (!f32_operands(ctx)) return false;
  return bin_plan(ctx.in[0].shape, ctx.in[1].shape, out_shape(ctx)).kind != BinCase::None;
}

void add_f32(const KernelCtx& ctx) { binary_run(ctx, [](float a, float b) { return a + b; }); }
void sub_f32(const KernelCtx& ctx) { binary_run(ctx, [](float a, float b) { return a - b; }); }
void mul_f32(const KernelCtx& ctx) { binary_run(ctx, [](float a, float b) { return a * b; }); }
void div_f32(const KernelCtx& ctx) { binary_run(ctx, [](float a, float b) { return a / b; }); }

// Pow: f32 base, any numeric scalar exponent, base with the output's layout.
bool pow_f32_supports(const InferCtx& ctx) {
  if (ctx.num_inputs() != 2 || ctx.in[0].dtype != DType::F32) return false;
  DType e = ctx.in[1].dtype;
  if (e != DType::F32 && e != DType::F64 && e != DType::I32 && e != DType::I64) return false;
  return shape_numel(ctx.in[1].shape) == 1 &&
         shape_numel(ctx.in[0].shape) == shape_numel(out_shape(ctx));
}

// Matches the reference bit for bit: it computes (float)pow(double(x), double(float(e))).
void pow_f32(const KernelCtx& ctx) {
  const Tensor& te = ctx.input(1);
  if (te.numel() != 1 || ctx.input(0).numel() != ctx.output(0).numel()) {
    op_def(ctx.node.op).reference(ctx);
    return;
  }
  const double e = (double)(float)tensor_get_f64(te, 0);
  if (e == 1.0) {
    unary_map(ctx, [](float v) { return v; });
  } else if (e == 2.0) {
    unary_map(ctx, [](float v) { return v * v; });  // exact square, one rounding
  } else if (e == 3.0) {
    // x*x is exact in double; one more rounding gives double pow's result.
    unary_map(ctx, [](float v) { double d = v; return (float)(d * d * d); });
  } else if (e == 0.5) {
    // pow(-0, .5) = +0 and pow(-inf, .5) = +inf, unlike sqrt.
    unary_map(ctx, [](float v) {
      return v == -std::numeric_limits<float>::infinity() ? -v : std::sqrt(v) + 0.0f;
    });
  } else if (e == -1.0) {
    unary_map(ctx, [](float v) { return (float)(1.0 / (double)v); });
  } else {
    unary_map(ctx, [e](float v) { return (float)std::pow((double)v, e); });
  }
}

// ---- Where ----------------------------------------------------------------------------------

bool where_f32_supports(const InferCtx& ctx) {
  return ctx.num_inputs() == 3 && ctx.in[0].dtype == DType::Bool &&
         ctx.in[1].dtype == DType::F32 && ctx.in[2].dtype == DType::F32 &&
         ctx.in[0].shape == ctx.in[1].shape && ctx.in[1].shape == ctx.in[2].shape;
}

void where_f32(const KernelCtx& ctx) {
  const Tensor &tc = ctx.input(0), &tx = ctx.input(1), &ty = ctx.input(2);
  Tensor& to = ctx.output(0);
  int64_t n = to.numel();
  if (tc.numel() != n || tx.numel() != n || ty.numel() != n) {
    op_def(ctx.node.op).reference(ctx);
    return;
  }
  // bool storage is one byte of 0 / 1; reading it as uint8 keeps the select branch-free.
  const uint8_t* c = static_cast<const uint8_t*>(tc.data());  // [n]
  const float* x = tx.ptr<float>();                           // [n]
  const float* y = ty.ptr<float>();                           // [n]
  float* o = to.ptr<float>();                                 // [n]
  if (n == 0) return;
  ctx.parallel_for(n, kChunk, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; i++) {
      o[i] = blend(c[i] != 0, x[i], y[i]);
    }
  });
}

}  // namespace ember::cpu
