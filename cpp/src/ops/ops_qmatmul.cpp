// QMatMul: Y = act(dequant(quant(A) @ Wq) + bias), the W8A8 form of FusedMatMul, replacing
// [DynamicQuantizeLinear | QuantizeLinear](A) -> MatMulInteger(., Wq) -> Cast -> Mul(scales)
// [-> Add(bias)] [-> act], or a float MatMul whose weight was quantized at load (made by the
// graph passes, never by a frontend). Fast kernels: kernels/generic/gemm_i8.h.
//  Inputs: A f32 [..., K] (K <= 65536); Wp int8 [ceil(N / 16), ceil(K / 2), 16, 2],
//  Wp[p, kk, j, t] = Wq[2 kk + t, 16 p + j] (zero past K and N), Wq already minus its zero point;
//  w_scale f32 [N]; bias f32 [N] (optional); a_scale f32 [] or [1] and a_zero_point uint8 | int8
//  [] or [1] (optional, default uint8 0): both only in static mode. attrs n = N, activation
//  "none" | "relu" | "gelu" | "gelu_tanh", a_mode "token" | "static" | "tensor_u8" | "rows".
//  Each row m of A becomes int16 codes a16 with a scale s_m:
//   token: s_m = max(max_k |A[m, k]| / 127, FLT_MIN), a16 = clamp(nearbyint(A / s_m), -127, 127);
//   static: ONNX QuantizeLinear, q = clamp(nearbyint(A / s) + zp, zp type's range), a16 = q - zp;
//   tensor_u8: ONNX DynamicQuantizeLinear over the whole A (its s and zp), then as static (so a
//   row depends on the batch; the other modes are batch invariant);
//   rows: A is already the token mode's int8 codes [..., K] and input 4 its scales f32 [...]
//   (AddNorm's quantized outputs, graph/fuse_norm_quant.cpp): the same sums as token mode.
//  Division, not a reciprocal; rounding half to even; NaN ignored by max / min and clamped to
//  the low bound. acc[m, n] = sum_k a16[m, k] * Wq[k, n] exactly in int32; then
//  y = ((float)acc * s_m) * w_scale[n] (two roundings), y + bias[n], and the activation in
//  double like FusedMatMul's reference.
#include <cfloat>
#include <cmath>
#include <vector>

#include "ops/op_util.h"
#include "ops/quantize_rows.h"

namespace ember {
namespace {

constexpr int64_t kPanel = 16;
constexpr int64_t kMaxK = 65536;  // 65536 * 255 * 128 < 2^31: the int32 sums cannot overflow

enum class AMode { Token, Static, TensorU8, Rows };

AMode qmatmul_mode(const Node& node) {
  std::string m = node.attrs.get_string("a_mode", "token");
  if (m == "static") return AMode::Static;
  if (m == "tensor_u8") return AMode::TensorU8;
  if (m == "rows") return AMode::Rows;
  return AMode::Token;
}

bool is_scalar(const Shape& s) { return s.empty() || s == Shape{1}; }

std::vector<TensorType> infer_qmatmul(const InferCtx& ctx) {
  const TensorType& a = ctx.in[0];
  const TensorType& w = ctx.in[1];
  const Attrs& at = ctx.node.attrs;
  int64_t n = at.get_int("n", -1);
  fused_activation(&ctx, ctx.node);
  std::string mode = at.get_string("a_mode", "token");
  if (mode != "token" && mode != "static" && mode != "tensor_u8" && mode != "rows")
    ctx.fail("a_mode must be 'token', 'static', 'tensor_u8' or 'rows', got '", mode, "'");
  const DType a_type = mode == "rows" ? DType::I8 : DType::F32;
  if (a.dtype != a_type)
    ctx.fail("A must be ", dtype_name(a_type), " for a_mode '", mode, "', got ",
             dtype_name(a.dtype));
  if (a.shape.empty()) ctx.fail("A must have rank >= 1");
  int64_t k = a.shape.back();
  if (k > kMaxK) ctx.fail("K = ", k, " is over ", kMaxK, " (int32 sums could overflow)");
  if (n < 0) ctx.fail("attr n must be >= 0, got ", n);
  if (w.dtype != DType::I8) ctx.fail("packed Wp must be int8, got ", dtype_name(w.dtype));
  Shape want{(n + kPanel - 1) / kPanel, (k + 1) / 2, kPanel, 2};
  if (w.shape != want)
    ctx.fail("packed Wp ", shape_str(w.shape), " does not fit K = ", k, ", N = ", n, " (want ",
             shape_str(want), ")");
  if (ctx.in[2].dtype != DType::F32 || ctx.in[2].shape != Shape{n})
    ctx.fail("w_scale must be float32 [", n, "], got ", dtype_name(ctx.in[2].dtype), " ",
             shape_str(ctx.in[2].shape));
  if (ctx.has(3) && (ctx.in[3].dtype != DType::F32 || ctx.in[3].shape != Shape{n}))
    ctx.fail("bias must be float32 [", n, "], got ", dtype_name(ctx.in[3].dtype), " ",
             shape_str(ctx.in[3].shape));
  if (mode == "static") {
    if (!ctx.has(4)) ctx.fail("a_mode 'static' needs a_scale (input 4)");
    if (ctx.in[4].dtype != DType::F32 || !is_scalar(ctx.in[4].shape))
      ctx.fail("a_scale must be a float32 scalar, got ", dtype_name(ctx.in[4].dtype), " ",
               shape_str(ctx.in[4].shape));
    if (ctx.has(5) && ((ctx.in[5].dtype != DType::U8 && ctx.in[5].dtype != DType::I8) ||
                       !is_scalar(ctx.in[5].shape)))
      ctx.fail("a_zero_point must be a uint8 or int8 scalar, got ", dtype_name(ctx.in[5].dtype),
               " ", shape_str(ctx.in[5].shape));
  } else if (mode == "rows") {
    const Shape rows(a.shape.begin(), a.shape.end() - 1);
    if (!ctx.has(4) || ctx.has(5) || ctx.in[4].dtype != DType::F32 || ctx.in[4].shape != rows)
      ctx.fail("a_mode 'rows' needs the codes' row scales, float32 ", shape_str(rows),
               " (input 4), and no a_zero_point");
  } else if (ctx.has(4) || ctx.has(5)) {
    ctx.fail("a_scale / a_zero_point are only for a_mode 'static', not '", mode, "'");
  }
  Shape out = a.shape;
  out.back() = n;
  return {{DType::F32, out}};
}

// Max / min that keep the running value where v is NaN (v > m ? v : m).
float max_keep(float v, float m) { return v > m ? v : m; }
float min_keep(float v, float m) { return v < m ? v : m; }

// An opaque copy: keeps the product's rounding from being fused with the bias add (GCC
// contracts into FMA across statements where the target has one); the kernels do the same.
float rounded(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}

// ONNX QuantizeLinear of one value, zero point removed.
int32_t quantize_code(float x, float s, int32_t zp, int32_t qmin, int32_t qmax) {
  float r = std::nearbyint(x / s) + (float)zp;
  r = min_keep(max_keep(r, (float)qmin), (float)qmax);
  return (int32_t)r - zp;
}

// The token mode's scale of a row of k values.
float token_scale(const float* x, int64_t k) {
  float amax = 0.0f;
  for (int64_t i = 0; i < k; i++) amax = max_keep(std::fabs(x[i]), amax);
  return std::max(amax / 127.0f, FLT_MIN);
}

void ref_qmatmul(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);   // [..., K]
  const Tensor& wt = ctx.input(1);  // [ceil(N / 16), ceil(K / 2), 16, 2]
  Tensor& y = ctx.output(0);        // [..., N]
  int64_t k_dim = a.dim(-1), n = ctx.node.attrs.get_int("n", 0), kh = wt.dim(1);
  int64_t rows = shape_prod(a.shape(), 0, a.rank() - 1);
  const bool rows_mode = qmatmul_mode(ctx.node) == AMode::Rows;
  const float* ap = rows_mode ? nullptr : a.ptr<float>();  // rows: A holds int8 codes
  const int8_t* wp = wt.ptr<int8_t>();
  const float* w_scale = ctx.input(2).ptr<float>();
  const float* bias = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;
  FusedAct act = fused_activation(nullptr, ctx.node);
  AMode mode = qmatmul_mode(ctx.node);
  float s = 1.0f;
  int32_t zp = 0, qmin = 0, qmax = 255;
  if (mode == AMode::Static) {
    s = ctx.input(4).ptr<float>()[0];
    if (ctx.has_input(5) && ctx.input(5).dtype() == DType::I8) {
      zp = ctx.input(5).ptr<int8_t>()[0];
      qmin = -128;
      qmax = 127;
    } else if (ctx.has_input(5)) {
      zp = ctx.input(5).ptr<uint8_t>()[0];
    }
  } else if (mode == AMode::TensorU8) {
    // onnx.reference's DynamicQuantizeLinear, in float32 as it computes.
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < a.numel(); i++) {
      lo = min_keep(ap[i], lo);
      hi = max_keep(ap[i], hi);
    }
    s = (hi == lo ? 1.0f : hi - lo) / 255.0f;
    float z = 0.0f - lo / s;
    z = max_keep(min_keep(z, 255.0f), 0.0f);
    zp = (int32_t)std::nearbyint(z);
  }
  float* yp = y.ptr<float>();
  std::vector<int32_t> a16(k_dim);
  for (int64_t m = 0; m < rows; m++) {
    const float* x = ap ? ap + m * k_dim : nullptr;
    float sm = s;
    if (mode == AMode::Rows) {
      const int8_t* c = a.ptr<int8_t>() + m * k_dim;
      for (int64_t k = 0; k < k_dim; k++) a16[k] = c[k];
      sm = ctx.input(4).ptr<float>()[m];
    } else if (mode == AMode::Token) {
      sm = token_scale(x, k_dim);
      for (int64_t k = 0; k < k_dim; k++) a16[k] = quantize_code(x[k], sm, 0, -127, 127);
    } else {
      for (int64_t k = 0; k < k_dim; k++) a16[k] = quantize_code(x[k], sm, zp, qmin, qmax);
    }
    for (int64_t j = 0; j < n; j++) {
      const int8_t* col = wp + (j / kPanel) * kh * 2 * kPanel + (j % kPanel) * 2;
      int32_t acc = 0;
      for (int64_t k = 0; k < k_dim; k++) acc += a16[k] * col[(k / 2) * 2 * kPanel + k % 2];
      float v = (float)acc * sm;
      v = rounded(v * w_scale[j]);
      if (bias) v = v + bias[j];
      yp[m * n + j] = (float)fused_activate_d(act, v);
    }
  }
}

const OpDef kOps[] = {
    {OpType::QMatMul, "QMatMul", 3, 6, 1, 1, kOpFused,
     {{"n", AttrKind::Int, true}, {"activation", AttrKind::String}, {"a_mode", AttrKind::String}},
     infer_qmatmul, ref_qmatmul},
};

}  // namespace

void quantize_rows_token(const float* a, int64_t rows, int64_t k, int8_t* codes, float* scales) {
  for (int64_t m = 0; m < rows; m++) {
    const float* x = a + m * k;
    const float s = token_scale(x, k);
    scales[m] = s;
    for (int64_t i = 0; i < k; i++) codes[m * k + i] = (int8_t)quantize_code(x[i], s, 0, -127, 127);
  }
}

std::span<const OpDef> op_defs_qmatmul() { return kOps; }

}  // namespace ember
