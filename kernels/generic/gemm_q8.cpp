// INT8 weight GEMM, W8A16i (Q8MatMul; reference and the exact float order: the OpDef row in
// cpp/src/ops/ops_q8matmul.cpp), and Q8Gather. This file: the pack functions (GGUF Q8_0, float),
// the portable activation quantizer and tile kernel, the driver shared with the AVX2 kernels
// (gemm_q8_x86.cpp) and the gather. The driver quantizes A's rows once (int16 per 32-block),
// then runs (row block, column block) tasks from gemm_blocks on the shared pool; tiles take
// whole rows of K, so each output is one fixed sequence of float operations whatever M, the
// split or the thread count (batch invariance).
// NOTE: as in gemm_q4.cpp the float steps are fmas by definition (libm calls on baseline x86):
// the portable tile is for portability and FMA ISAs, not x86 speed.
#include "kernels/generic/gemm_q8.h"

#include "kernels/generic/gemm_q4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ember/thread_pool.h"

namespace ember::cpu {
namespace {

void check_sizes(const char* what, int64_t N, int64_t K) {
  EMBER_CHECK(N >= 0 && K > 0, Model, "[q8] ", what, ": invalid weight shape [", N, ", ", K, "]");
}

// The 8 lanes summed in the order of the AVX2 reduction (and the reference's).
float lanes_sum(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

}  // namespace

// ---- packing --------------------------------------------------------------------------------

void q8_pack_from_q8_0(const block_q8_0* w, int64_t N, int64_t K, int8_t* codes, float* scales) {
  check_sizes("pack_from_q8_0", N, K);
  EMBER_CHECK(K % 32 == 0, Model, "[q8] pack_from_q8_0: K = ", K, " is not a multiple of 32");
  for (int64_t i = 0; i < N * (K / 32); i++) {
    std::memcpy(codes + i * 32, w[i].qs, 32);
    scales[i] = f16_to_f32(w[i].d);
  }
}

void q8_quantize(const float* w, int64_t N, int64_t K, int8_t* codes, float* scales) {
  check_sizes("quantize", N, K);
  const int64_t nb = q8_blocks(K);
  for (int64_t n = 0; n < N; n++)
    for (int64_t b = 0; b < nb; b++) {
      float v[32] = {};
      const float* x = w + n * K + 32 * b;
      std::copy(x, x + std::min<int64_t>(32, K - 32 * b), v);
      float amax = 0.0f;
      for (float e : v) {
        EMBER_CHECK(std::isfinite(e), Model, "[q8] quantize: non-finite weight in row ", n);
        amax = std::max(amax, std::fabs(e));
      }
      float d = amax / 127.0f;
      int8_t* c = codes + (n * nb + b) * 32;
      // |v / d| <= 127 (and a little rounding): the clamp only guards that rounding.
      for (int j = 0; j < 32; j++)
        c[j] = d != 0.0f ? (int8_t)std::clamp((int)std::roundf(v[j] / d), -127, 127) : 0;
      scales[n * nb + b] = d;
    }
}

// ---- portable kernels -----------------------------------------------------------------------

void q8_act_quantize16(const float* a, int64_t lda, int64_t M, int64_t K, int16_t* q, float* d) {
  q4_act_quantize16(a, lda, M, K, 32, q, d, nullptr);  // one quantizer for both ops
}

void q8_gemm_tile(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                  const float* scales, const float* bias, int64_t cols, int64_t K, float* y,
                  int64_t ldy) {
  const int64_t nb = q8_blocks(K);
  thread_local std::vector<int32_t> p;  // one (row, column)'s lane sums [nb, 8]
  thread_local std::vector<float> s;    // its combined block scales [nb]
  p.resize(nb * 8);
  s.resize(nb);
  int32_t* pp = p.data();
  float* sp = s.data();
  for (int64_t n = 0; n < cols; n++) {
    const int8_t* wn = codes + n * nb * 32;
    const float* sn = scales + n * nb;
    for (int64_t m = 0; m < rows; m++) {
      const int16_t* qm = q + m * nb * 32;
      const float* dm = d + m * nb;
      // Integer part first (exact; vectorises), in the AVX2 lane order.
      for (int64_t b = 0; b < nb; b++) block_lane_dots(qm + 32 * b, wn + 32 * b, pp + 8 * b);
      for (int64_t b = 0; b < nb; b++) sp[b] = dm[b] * sn[b];
      float acc[8] = {};
      for (int64_t b = 0; b < nb; b++)
        for (int l = 0; l < 8; l++) acc[l] = std::fma((float)pp[8 * b + l], sp[b], acc[l]);
      float v = lanes_sum(acc);
      if (bias) v = v + bias[n];
      y[m * ldy + n] = v;
    }
  }
}

// ---- driver -------------------------------------------------------------------------------------

void q8matmul_with(const KernelCtx& ctx, const Q8Kernels& kern) {
  const Tensor& a = ctx.input(0);       // [..., K] f32
  const Tensor& codes = ctx.input(1);   // [N, nb, 32] i8
  const Tensor& scales = ctx.input(2);  // [N, nb] f32
  Tensor& out = ctx.output(0);          // [..., N] f32
  const Attrs& at = ctx.node.attrs;
  const int64_t N = at.get_int("n", 0), K = at.get_int("k", 0);
  const int64_t M = N > 0 ? out.numel() / N : 0;
  if (M == 0 || N == 0) return;
  const int64_t nb = q8_blocks(K);
  const float* bias = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;  // [N]
  GemmActs::Fn act = kern.acts.for_node(ctx.node);

  // Quantized activations: q [M, nb * 32], d [M, nb].
  thread_local std::vector<int16_t> qbuf;
  thread_local std::vector<float> dbuf;
  qbuf.resize(M * nb * 32);
  dbuf.resize(M * nb);
  int16_t* q = qbuf.data();
  float* d = dbuf.data();
  const float* ap = a.ptr<float>();
  int threads = std::max(1, std::min(ctx.max_threads, thread_pool_size()));
  if ((double)M * (double)N * (double)K < 1e6) threads = 1;  // the pool costs more than it saves
  int64_t row_grain = std::max<int64_t>(1, 16384 / K);
  ::ember::parallel_for(M, row_grain, threads, [&](int64_t m0, int64_t m1) {
    kern.act_quantize(ap + m0 * K, K, m1 - m0, K, q + m0 * nb * 32, d + m0 * nb);
  });

  // Column blocks a multiple of 16 (the activation sees the same 8-wide vectors whatever the
  // split), row blocks of at most 64 so one block's quantized rows stay in L2. Column-major
  // task order keeps a thread's weight reads contiguous (the GEMV case streams them once).
  auto [mc, nc, mb, ncb] = gemm_blocks(1, M, N, 4, 16, 64, 256, threads);
  const int8_t* cp = codes.ptr<int8_t>();
  const float* sp = scales.ptr<float>();
  float* yp = out.ptr<float>();
  ::ember::parallel_for(ncb * mb, 1, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t n0 = (t / mb) * nc, n1 = std::min(N, n0 + nc);
      const int64_t m0 = (t % mb) * mc, m1 = std::min(M, m0 + mc);
      kern.gemm_tile(q + m0 * nb * 32, d + m0 * nb, m1 - m0, cp + n0 * nb * 32, sp + n0 * nb,
                     bias ? bias + n0 : nullptr, n1 - n0, K, yp + m0 * N + n0, N);
      if (act)
        for (int64_t m = m0; m < m1; m++) act(yp + m * N + n0, yp + m * N + n0, n1 - n0);
    }
  });
}

void q8matmul(const KernelCtx& ctx) {
  static const Q8Kernels k{q8_act_quantize16, q8_gemm_tile,
                           {relu_f32_array, gelu_f32_array, gelu_tanh_f32_array}};
  q8matmul_with(ctx, k);
}

// ---- Q8Gather -------------------------------------------------------------------------------

void q8gather(const KernelCtx& ctx) {
  const Tensor& codes = ctx.input(0);   // [V, nb, 32] i8
  const Tensor& scales = ctx.input(1);  // [V, nb] f32
  const Tensor& idx = ctx.input(2);     // [...] i32 | i64
  float* y = ctx.output(0).ptr<float>();  // [..., K]
  const int64_t K = ctx.node.attrs.get_int("k", 0), V = codes.dim(0), nb = q8_blocks(K);
  const int64_t rows = idx.numel();
  for (int64_t r = 0; r < rows; r++) {
    int64_t v = tensor_get_i64(idx, r);
    EMBER_CHECK(v >= -V && v < V, Input, "[Q8Gather] node '", ctx.node.name, "': index ", v,
                " out of range [0, ", V, ")");
    if (v < 0) v += V;
    const int8_t* c = codes.ptr<int8_t>() + v * nb * 32;
    const float* s = scales.ptr<float>() + v * nb;
    float* o = y + r * K;
    for (int64_t k = 0; k < K; k++) o[k] = (float)c[k] * s[k / 32];
  }
}

}  // namespace ember::cpu
