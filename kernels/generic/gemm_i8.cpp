// INT8 W8A8 GEMM for QMatMul (reference: cpp/src/ops/ops_qmatmul.cpp). A is quantized per row
// (attr a_mode) into int16 codes up front; tasks are (MC-row block, NC-column block) on the
// shared pool. Inside a task K is cut into KC pair slices (one strip of rows streams all K at
// once): each 16-wide weight panel slice meets every MR-row strip in turn, summing into an
// int32 tile; the finished tile goes through the float epilogue and the activation row by row.
// Integer sums are exact, so results never depend on M, the tiling or the thread count; the
// generic MR x 16 micro-kernel here is auto-vectorised, the AVX2 one is gemm_i8_avx2.cpp.
#include "kernels/generic/gemm_i8.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ember/thread_pool.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int kMaxMR = 8;
constexpr int64_t kNR = 16;
// Measured on Zen 3 (32 KiB L1d, 512 KiB L2): longer slices beat smaller blocks (fewer int32
// tile round trips); 1024 x 48 .. 256 x 144 are within 10%.
constexpr int64_t kKCP = 1024;  // k pairs per slice: a panel slice is 32 KiB, streamed from L2
constexpr int64_t kMC = 72;     // rows per block (multiple of 4 and 6): 72 x 2048 int16 in L2
constexpr int64_t kNC = 256;    // multiple of NR
constexpr int64_t kMaxK = 65536;  // 65536 * 255 * 128 < 2^31: no int32 overflow in any order

// An opaque copy: keeps a rounded product from being contracted with a following add into
// an FMA (GCC contracts across statements where the target has FMA).
inline float rounded(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}

// Round half to even (the default rounding mode) of v clamped to +-2^22 (NaN -> -2^22):
// adding and removing 1.5 * 2^23 leaves the nearest integer. Callers clamp far inside 2^22,
// so the result equals their clamp of nearbyint(v).
inline float round_even_clamped(float v) {
  v = v > -0x1p22f ? v : -0x1p22f;
  v = v < 0x1p22f ? v : 0x1p22f;
  return (v + 0x1.8p23f) - 0x1.8p23f;
}

template <int R>
void micro_kernel(int64_t kp, const int16_t* __restrict a, int64_t lda, const int8_t* __restrict b,
                  int32_t* __restrict c, int64_t ldc, bool accumulate) {
  int32_t acc[R][kNR];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < kNR; j++) acc[i][j] = accumulate ? c[i * ldc + j] : 0;
  for (int64_t kk = 0; kk < kp; kk++) {
    const int8_t* bk = b + kk * 2 * kNR;
    int32_t b0[kNR], b1[kNR];
    for (int j = 0; j < kNR; j++) {
      b0[j] = bk[2 * j];
      b1[j] = bk[2 * j + 1];
    }
    for (int i = 0; i < R; i++) {
      // NOTE: one 32-bit load per pair (little-endian: a[2 kk] is the low half). Reading the two
      // separately makes g++ 12 -O3 vectorise the rows as a strided group that reads past row R.
      uint32_t pair;
      std::memcpy(&pair, a + i * lda + 2 * kk, 4);
      int32_t a0 = (int16_t)(pair & 0xffff), a1 = (int16_t)(pair >> 16);
      for (int j = 0; j < kNR; j++) acc[i][j] += a0 * b0[j] + a1 * b1[j];
    }
  }
  for (int i = 0; i < R; i++)
    for (int j = 0; j < kNR; j++) c[i * ldc + j] = acc[i][j];
}

void micro_generic(int64_t kp, const int16_t* a, int64_t lda, const int8_t* b, int32_t* c,
                   int64_t ldc, int rows, bool accumulate) {
  switch (rows) {
    case 1: return micro_kernel<1>(kp, a, lda, b, c, ldc, accumulate);
    case 2: return micro_kernel<2>(kp, a, lda, b, c, ldc, accumulate);
    case 3: return micro_kernel<3>(kp, a, lda, b, c, ldc, accumulate);
    default: return micro_kernel<4>(kp, a, lda, b, c, ldc, accumulate);
  }
}

void epilogue_generic(const int32_t* acc, int64_t n, float a_scale, const float* w_scale,
                      const float* bias, float* y) {
  for (int64_t j = 0; j < n; j++) {
    float v = rounded((float)acc[j] * a_scale * w_scale[j]);
    y[j] = bias ? v + bias[j] : v;
  }
}

// C[m0:m1, n0:n1] (n0 a multiple of 16): the int32 tile [m1 - m0, panels * 16] is summed over
// K slices, then each row segment goes through the epilogue and the activation.
void run_block(const QGemmI8Args& g, const QGemmI8Micro& micro, int64_t m0, int64_t m1,
               int64_t n0, int64_t n1) {
  const int mr = micro.mr;
  int64_t kh = ceil_div(g.K, 2);
  int64_t n_panels = ceil_div(n1 - n0, kNR), n_strips = ceil_div(m1 - m0, mr);
  int64_t ldt = n_panels * kNR;
  thread_local std::vector<int32_t> tile_buf;
  tile_buf.resize((m1 - m0) * ldt);
  int32_t* tile = tile_buf.data();
  if (kh == 0) std::fill(tile, tile + (m1 - m0) * ldt, 0);
  // A single strip streams the whole K: its A rows are few, B is read once either way.
  int64_t kcp = n_strips == 1 ? kh : kKCP;
  for (int64_t k0 = 0; k0 < kh; k0 += kcp) {
    int64_t kc = std::min(kcp, kh - k0);
    for (int64_t p = 0; p < n_panels; p++) {
      const int8_t* bp = g.b_packed + ((n0 / kNR + p) * kh + k0) * 2 * kNR;
      for (int64_t s = 0; s < n_strips; s++) {
        int64_t i0 = m0 + s * mr;
        int r = (int)std::min<int64_t>(mr, m1 - i0);
        micro.fn(kc, g.a + i0 * g.lda + 2 * k0, g.lda, bp, tile + (i0 - m0) * ldt + p * kNR, ldt, r,
                 k0 > 0);
      }
    }
  }
  for (int64_t i = m0; i < m1; i++) {
    float* ci = g.c + i * g.ldc + n0;
    micro.epilogue(tile + (i - m0) * ldt, n1 - n0, g.a_scale[i], g.w_scale + n0,
                   g.bias ? g.bias + n0 : nullptr, ci);
    if (g.act) g.act(ci, ci, n1 - n0);
  }
}

// Rows quantized in parallel (each row on its own): the largest cost outside the GEMM.
template <class F>
void for_rows(int64_t M, int64_t K, int threads, F&& fn) {
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1));
  ::ember::parallel_for(M, grain, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0; m < r1; m++) fn(m);
  });
}

}  // namespace

// ---- packing ----

int64_t qgemm_i8_packed_size(int64_t K, int64_t N) {
  return ceil_div(N, kNR) * ceil_div(K, 2) * 2 * kNR;
}

void qgemm_i8_pack_b(const int8_t* w, int64_t rs, int64_t cs, int64_t K, int64_t N, int8_t* out) {
  int64_t kh = ceil_div(K, 2);
  for (int64_t p = 0; p < ceil_div(N, kNR); p++)
    for (int64_t kk = 0; kk < kh; kk++) {
      int8_t* dst = out + (p * kh + kk) * 2 * kNR;
      for (int64_t j = 0; j < kNR; j++)
        for (int64_t t = 0; t < 2; t++) {
          int64_t k = 2 * kk + t, n = p * kNR + j;
          dst[2 * j + t] = k < K && n < N ? w[k * rs + n * cs] : 0;
        }
    }
}

// ---- activation quantization ----

void quantize_row_i8_linear(const float* x, int64_t k, float s, int32_t zp, int32_t qmin,
                            int32_t qmax, int16_t* q) {
  float fz = (float)zp, lo = (float)qmin, hi = (float)qmax;
  for (int64_t j = 0; j < k; j++) {
    float r = round_even_clamped(x[j] / s) + fz;
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    q[j] = (int16_t)((int32_t)r - zp);
  }
  if (k % 2) q[k] = 0;
}

float quantize_row_i8_token(const float* x, int64_t k, int16_t* q) {
  float amax = 0.0f;
  for (int64_t j = 0; j < k; j++) {
    float v = std::fabs(x[j]);
    amax = v > amax ? v : amax;
  }
  float s = amax / 127.0f;
  s = s > FLT_MIN ? s : FLT_MIN;
  quantize_row_i8_linear(x, k, s, 0, -127, 127, q);
  return s;
}

void minmax_f32_row(const float* x, int64_t n, float* lo, float* hi) {
  float l = *lo, h = *hi;
  for (int64_t j = 0; j < n; j++) {
    l = x[j] < l ? x[j] : l;
    h = x[j] > h ? x[j] : h;
  }
  *lo = l;
  *hi = h;
}

// ---- GEMM ----

const QGemmI8Micro& qgemm_i8_micro_generic() {
  static const QGemmI8Micro m{4, micro_generic, epilogue_generic, "generic 4x16"};
  return m;
}

void qgemm_i8(const QGemmI8Args& g, int max_threads, const QGemmI8Micro& micro) {
  if (g.M <= 0 || g.N <= 0) return;
  EMBER_CHECK(micro.mr <= kMaxMR && g.K <= kMaxK && g.lda >= 2 * ceil_div(g.K, 2) && g.lda % 2 == 0,
              Internal, "[qgemm_i8] ", micro.name, " with K = ", g.K, ", lda = ", g.lda);
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  double ops = 2.0 * (double)g.M * (double)g.N * (double)std::max<int64_t>(g.K, 1);
  if (ops < 2e5) threads = 1;  // the pool costs more than it saves
  auto [mc, nc, mb, nb] = gemm_blocks(1, g.M, g.N, micro.mr, kNR, kMC, kNC, threads);
  ::ember::parallel_for(mb * nb, 1, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      int64_t jb = t / mb, ib = t % mb;  // neighbouring tasks share a column block
      run_block(g, micro, ib * mc, std::min(g.M, (ib + 1) * mc), jb * nc, std::min(g.N, (jb + 1) * nc));
    }
  });
}

// ---- QMatMul ----

namespace {

// QMatMul on a GEMM callback: A quantized per row into codes, then gemm(args).
template <class Gemm>
void qmatmul_i8_run(const KernelCtx& ctx, const QuantizeRowsI8& quant, const GemmActs& acts,
                    Gemm&& gemm) {
  QGemmI8Args g = qmatmul_i8_args(ctx, acts);
  if (g.M == 0 || g.N == 0) return;
  QMatMulAQuant aq = qmatmul_i8_a_quant(ctx, quant.minmax);
  g.lda = 2 * ceil_div(g.K, 2);
  // NOTE: kept per calling thread between runs (like sgemm's packing buffers).
  thread_local std::vector<int16_t> codes;
  thread_local std::vector<float> scales;
  codes.resize(g.M * g.lda);
  scales.resize(g.M);
  const float* x = ctx.input(0).ptr<float>();
  int16_t* q = codes.data();
  float* s = scales.data();
  for_rows(g.M, g.K, std::max(1, ctx.max_threads), [&](int64_t m) {
    if (aq.token) {
      s[m] = quant.token(x + m * g.K, g.K, q + m * g.lda);
    } else {
      quant.linear(x + m * g.K, g.K, aq.scale, aq.zp, aq.qmin, aq.qmax, q + m * g.lda);
      s[m] = aq.scale;
    }
  });
  g.a = q;
  g.a_scale = s;
  g.a_off = aq.a_off;
  gemm(g);
}

}  // namespace

QGemmI8Args qmatmul_i8_args(const KernelCtx& ctx, const GemmActs& acts) {
  const Tensor& a = ctx.input(0);  // [..., K] f32
  Tensor& out = ctx.output(0);     // [..., N] f32
  QGemmI8Args g;
  g.K = a.dim(-1);
  g.N = ctx.node.attrs.get_int("n", 0);
  g.M = shape_prod(a.shape(), 0, a.rank() - 1);
  g.b_packed = ctx.input(1).ptr<int8_t>();  // [ceil(N / 16), ceil(K / 2), 16, 2]
  g.w_scale = ctx.input(2).ptr<float>();    // [N]
  g.bias = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;  // [N]
  g.c = out.ptr<float>();
  g.ldc = g.N;
  g.act = acts.for_node(ctx.node);
  return g;
}

QMatMulAQuant qmatmul_i8_a_quant(const KernelCtx& ctx,
                                 void (*minmax)(const float*, int64_t, float*, float*)) {
  QMatMulAQuant q;
  std::string mode = ctx.node.attrs.get_string("a_mode", "token");
  if (mode == "token") return q;
  q.token = false;
  if (mode == "static") {
    q.scale = ctx.input(4).ptr<float>()[0];
    if (ctx.has_input(5) && ctx.input(5).dtype() == DType::I8) {
      q.zp = ctx.input(5).ptr<int8_t>()[0];
      q.qmin = -128;
      q.qmax = 127;
    } else if (ctx.has_input(5)) {
      q.zp = ctx.input(5).ptr<uint8_t>()[0];
    }
  } else {
    // tensor_u8: ONNX DynamicQuantizeLinear's scale and zero point over the whole A.
    const Tensor& a = ctx.input(0);
    int64_t k = a.dim(-1), m = k ? a.numel() / k : 0;
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < m; i++) minmax(a.ptr<float>() + i * k, k, &lo, &hi);
    q.scale = (hi == lo ? 1.0f : hi - lo) / 255.0f;
    float z = 0.0f - lo / q.scale;
    z = z < 255.0f ? z : 255.0f;
    z = z > 0.0f ? z : 0.0f;
    q.zp = (int32_t)std::nearbyint(z);
  }
  q.a_off = q.zp + (q.qmin < 0 ? 128 : 0);
  return q;
}

void qmatmul_i8_with(const KernelCtx& ctx, const QGemmI8Micro& micro, const QuantizeRowsI8& quant,
                     const GemmActs& acts) {
  qmatmul_i8_run(ctx, quant, acts,
                 [&](const QGemmI8Args& g) { qgemm_i8(g, ctx.max_threads, micro); });
}

void qmatmul_i8_with_gemm(const KernelCtx& ctx, QGemmI8Fn gemm, const QuantizeRowsI8& quant,
                          const GemmActs& acts) {
  qmatmul_i8_run(ctx, quant, acts, [&](const QGemmI8Args& g) { gemm(g, ctx.max_threads); });
}

void qmatmul_i8(const KernelCtx& ctx) {
  static const QuantizeRowsI8 quant{quantize_row_i8_token, quantize_row_i8_linear, minmax_f32_row};
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  qmatmul_i8_with(ctx, qgemm_i8_micro_generic(), quant, acts);
}

}  // namespace ember::cpu
