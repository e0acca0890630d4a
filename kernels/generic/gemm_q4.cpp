// INT4 weight-only GEMM, W4A16i (Q4MatMul; reference and the exact float order: the OpDef row in
// cpp/src/ops/ops_q4matmul.cpp). This file: the pack functions (Q4G, GGUF Q4_0/Q4_1, float), the
// portable kernels, and the driver shared with the AVX2 kernels (gemm_q4_x86.cpp). The driver
// quantizes A's rows once, then runs (row block, column block) tasks on the shared pool; the
// tile kernels take whole rows of K, so each output is one fixed sequence of float operations
// whatever M, the split or the thread count (batch invariance).
// NOTE: the float steps are fmas by definition; on baseline x86 (no FMA) std::fma is a libm call,
// so the portable kernels are for portability (and FMA ISAs such as aarch64), not x86 speed.
#include "kernels/generic/gemm_q4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ember/thread_pool.h"

namespace ember::cpu {
namespace {

void check_sizes(const char* what, int64_t N, int64_t K, int64_t group) {
  EMBER_CHECK(N >= 0 && K > 0, Model, "[q4] ", what, ": invalid weight shape [", N, ", ", K, "]");
  EMBER_CHECK(group >= 32 && group % 32 == 0, Model, "[q4] ", what, ": group size ", group,
              " must be a positive multiple of 32");
}

// The 8 lanes summed in the order of the AVX2 reduction (and the reference's).
float lanes_sum(const float* a) {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

// One packed block (16 bytes) from 32 codes (values 0..15).
void pack_block(const int* c, uint8_t* out) {
  for (int j = 0; j < 16; j++) out[j] = (uint8_t)(c[j] | (c[j + 16] << 4));
}

// GGUF rows: the packed layout is GGUF's nibble order, so codes copy as they are.
template <class Block, class ScaleFn>
void pack_gguf(const char* what, const Block* w, int64_t N, int64_t K, uint8_t* codes,
               float* scales, float* offsets, ScaleFn scale_offset) {
  check_sizes(what, N, K, 32);
  EMBER_CHECK(K % 32 == 0, Model, "[q4] ", what, ": K = ", K, " is not a multiple of 32");
  const int64_t nb = K / 32;
  for (int64_t i = 0; i < N * nb; i++) {
    std::memcpy(codes + i * 16, w[i].qs, 16);
    scale_offset(w[i], scales + i, offsets + i);
  }
}

// q4_act_quantize16's algorithm for codes of type T clamped to +-kLim.
template <class T, int kLim>
void act_quantize(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group, T* q,
                  float* d, float* gsum) {
  const int64_t nb = q4_blocks(K), ng = q4_groups(K, group), bpg = group / 32;
  for (int64_t m = 0; m < M; m++) {
    const float* x = a + m * lda;
    float gs = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
      float v[32] = {};
      std::copy(x + 32 * b, x + std::min(K, 32 * b + 32), v);
      float amax = 0.0f;
      bool finite = true;
      for (float e : v) {
        amax = std::max(amax, std::fabs(e));
        finite = finite && std::isfinite(e);
      }
      float db = finite ? amax / (float)kLim : NAN;
      T* qb = q + m * nb * 32 + 32 * b;
      int isum = 0;
      for (int j = 0; j < 32; j++) {
        int c = 0;
        if (finite && db != 0.0f) c = std::clamp((int)std::nearbyint(v[j] / db), -kLim, kLim);
        qb[j] = (T)c;
        isum += c;
      }
      d[m * nb + b] = db;
      gs = std::fma(db, (float)isum, gs);  // |isum| <= 32 * 32767 < 2^24: exact
      if ((b + 1) % bpg == 0 || b + 1 == nb) {
        if (gsum) gsum[m * ng + b / bpg] = gs;  // null: Q8MatMul, which has no offsets
        gs = 0.0f;
      }
    }
  }
}

}  // namespace

// ---- packing --------------------------------------------------------------------------------

void q4_pack_from_q4g(const uint8_t* q, const float* scales, const uint8_t* zp, int64_t N,
                      int64_t K, int64_t group, uint8_t* codes, float* scales_out,
                      float* offsets_out) {
  check_sizes("pack_from_q4g", N, K, group);
  const int64_t nb = q4_blocks(K), ng = q4_groups(K, group);
  const int64_t row_bytes = q4g_row_bytes(K, group), zp_bytes = q4g_zp_row_bytes(K, group);
  for (int64_t n = 0; n < N; n++) {
    const uint8_t* qr = q + n * row_bytes;
    const uint8_t* zr = zp ? zp + n * zp_bytes : nullptr;
    for (int64_t b = 0; b < nb; b++) {
      int c[32];
      for (int j = 0; j < 32; j++) {
        int64_t k = 32 * b + j;
        c[j] = k < K ? q4g_get_q(qr, k) : 0;
      }
      pack_block(c, codes + (n * nb + b) * 16);
    }
    for (int64_t g = 0; g < ng; g++) {
      float s = scales[n * ng + g];
      scales_out[n * ng + g] = s;
      offsets_out[n * ng + g] = -(float)q4g_get_zp(zr, g) * s;
    }
  }
}

void q4_pack_from_q4_0(const block_q4_0* w, int64_t N, int64_t K, uint8_t* codes, float* scales,
                       float* offsets) {
  pack_gguf("pack_from_q4_0", w, N, K, codes, scales, offsets,
            [](const block_q4_0& blk, float* s, float* o) {
              *s = f16_to_f32(blk.d);
              *o = -8.0f * *s;  // exact: d has 11 significant bits
            });
}

void q4_pack_from_q4_1(const block_q4_1* w, int64_t N, int64_t K, uint8_t* codes, float* scales,
                       float* offsets) {
  pack_gguf("pack_from_q4_1", w, N, K, codes, scales, offsets,
            [](const block_q4_1& blk, float* s, float* o) {
              *s = f16_to_f32(blk.d);
              *o = f16_to_f32(blk.m);
            });
}

void q4_quantize(const float* w, int64_t N, int64_t K, int64_t group, bool with_zero_point,
                 uint8_t* codes, float* scales, float* offsets) {
  check_sizes("quantize", N, K, group);
  std::vector<uint8_t> q(N * q4g_row_bytes(K, group));
  std::vector<uint8_t> zp(with_zero_point ? N * q4g_zp_row_bytes(K, group) : 0);
  std::vector<float> s(N * q4g_groups(K, group));
  q4g_quantize(w, N, K, group, with_zero_point, q.data(), s.data(), zp.data());
  q4_pack_from_q4g(q.data(), s.data(), with_zero_point ? zp.data() : nullptr, N, K, group, codes,
                   scales, offsets);
}

// ---- portable kernels -------------------------------------------------------------------------

void q4_act_quantize16(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group,
                       int16_t* q, float* d, float* gsum) {
  act_quantize<int16_t, 32767>(a, lda, M, K, group, q, d, gsum);
}

namespace {

inline float scale_value(float s) { return s; }
inline float scale_value(uint16_t h) { return f16_to_f32(h); }  // exact

// q4_gemm_tile for scales and offsets of type S (float, or uint16_t f16 bits).
template <class S>
void gemm_tile(const int16_t* q, const float* d, const float* gsum, int64_t rows,
               const uint8_t* codes, const S* scales, const S* offsets, const float* bias,
               int64_t cols, int64_t K, int64_t group, float* y, int64_t ldy) {
  const int64_t nb = q4_blocks(K), ng = q4_groups(K, group), bpg = group / 32;
  thread_local std::vector<int16_t> w;  // one weight row's codes, 0..15, in element order
  thread_local std::vector<int32_t> p;  // one (row, column)'s lane sums [nb, 8]
  w.resize(nb * 32);
  p.resize(nb * 8);
  int16_t* wp = w.data();
  int32_t* pp = p.data();
  for (int64_t n = 0; n < cols; n++) {
    const uint8_t* cn = codes + n * nb * 16;
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t* c = cn + 16 * b;
      int16_t* o = wp + 32 * b;
      for (int j = 0; j < 16; j++) o[j] = c[j] & 0x0f;
      for (int j = 0; j < 16; j++) o[j + 16] = c[j] >> 4;
    }
    const S* sn = scales + n * ng;
    const S* on = offsets + n * ng;
    for (int64_t m = 0; m < rows; m++) {
      const int16_t* qm = q + m * nb * 32;
      const float* dm = d + m * nb;
      // Integer part first (exact; vectorises), in the AVX2 lane order.
      for (int64_t b = 0; b < nb; b++) block_lane_dots(qm + 32 * b, wp + 32 * b, pp + 8 * b);
      float acc[8] = {}, off[8] = {};
      for (int64_t g = 0; g < ng; g++) {
        float gacc[8] = {};
        for (int64_t b = g * bpg; b < std::min(nb, (g + 1) * bpg); b++)
          for (int l = 0; l < 8; l++) gacc[l] = std::fma((float)pp[8 * b + l], dm[b], gacc[l]);
        const float s = scale_value(sn[g]);
        for (int l = 0; l < 8; l++) acc[l] = std::fma(gacc[l], s, acc[l]);
      }
      for (int64_t g = 0; g < ng; g++)  // lane g % 8; the zeros past ng change nothing
        off[g % 8] = std::fma(scale_value(on[g]), gsum[m * ng + g], off[g % 8]);
      float v = lanes_sum(acc) + lanes_sum(off);
      if (bias) v = v + bias[n];
      y[m * ldy + n] = v;
    }
  }
}

}  // namespace

void q4_gemm_tile(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                  const uint8_t* codes, const float* scales, const float* offsets,
                  const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                  int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

void q4_gemm_tile(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                  const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                  const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                  int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

namespace {

template <class S>
void dequant_panels(const uint8_t* codes, const S* scales, const S* offsets, int64_t K,
                    int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1, float* bp) {
  const int64_t nb = q4_blocks(K), ng = q4_groups(K, group);
  for (int64_t p = 0; p * 16 < j1 - j0; p++) {
    float* panel = bp + p * kc * 16;
    for (int64_t c = 0; c < 16; c++) {
      const int64_t n = j0 + p * 16 + c;
      if (n >= j1) {
        for (int64_t k = 0; k < kc; k++) panel[k * 16 + c] = 0.0f;
        continue;
      }
      const uint8_t* cn = codes + n * nb * 16;
      for (int64_t k = k0; k < k0 + kc; k++) {
        const uint8_t byte = cn[(k / 32) * 16 + k % 16];
        const int code = k % 32 < 16 ? byte & 0x0f : byte >> 4;
        const int64_t g = n * ng + k / group;
        panel[(k - k0) * 16 + c] =
            std::fma((float)code, scale_value(scales[g]), scale_value(offsets[g]));
      }
    }
  }
}

}  // namespace

void q4_dequant_panels(const uint8_t* codes, const float* scales, const float* offsets,
                       int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                       float* bp) {
  dequant_panels(codes, scales, offsets, K, group, k0, kc, j0, j1, bp);
}

void q4_dequant_panels(const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                       int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
                       float* bp) {
  dequant_panels(codes, scales, offsets, K, group, k0, kc, j0, j1, bp);
}

// ---- driver -------------------------------------------------------------------------------------

namespace {

// One Q4MatMul's weights and epilogue, for either path.
struct Q4Weights {
  const uint8_t* codes;    // [N, nb, 16]
  const void* scales;      // [N, ng] f32, or f16 bits when f16
  const void* offsets;     // [N, ng] the dtype of scales
  bool f16;
  const float* bias;       // [N] or nullptr
  GemmActs::Fn act;        // or nullptr
  int64_t N, K, group;
};

// W4A16i: y [M, N] (row stride N) = the rows a [M, K] quantized to int16, times the weights.
void run_i16(const Q4Kernels& kern, const Q4Weights& w, const float* ap, int64_t M,
             int max_threads, float* yp) {
  const int64_t N = w.N, K = w.K, group = w.group;
  const int64_t nb = q4_blocks(K), ng = q4_groups(K, group);
  // Quantized activations: q [M, nb * 32], d [M, nb], gsum [M, ng].
  thread_local std::vector<int16_t> qbuf;
  thread_local std::vector<float> fbuf;
  qbuf.resize(M * nb * 32);
  fbuf.resize(M * (nb + ng));
  int16_t* q = qbuf.data();
  float* d = fbuf.data();
  float* gsum = d + M * nb;
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  // Below ~128 KiB of weights the pool costs more than it saves (a decode GEMV streams them).
  if ((double)M * (double)N * (double)K < 2.5e5) threads = 1;
  int64_t row_grain = std::max<int64_t>(1, 16384 / K);
  ::ember::parallel_for(M, row_grain, threads, [&](int64_t m0, int64_t m1) {
    kern.act_quantize(ap + m0 * K, K, m1 - m0, K, group, q + m0 * nb * 32, d + m0 * nb,
                      gsum + m0 * ng);
  });

  // Tasks: column blocks of a multiple of 16 (the activation sees the same 8-wide vectors
  // whatever the split), row blocks of 64 so one block's quantized rows stay in L2. The pool
  // hands each thread a contiguous run of tasks: column-major task order keeps a thread's
  // weight reads contiguous (the GEMV case streams them once). Up to 4 column blocks per
  // thread, at most 256 wide, the count dividing a thread's share of 16-column units where one
  // does, so that the runs get equal columns (N = 576 on 2 threads: 3 x 96 each, not 4 x 80
  // and 3 x 80 + 16).
  const int64_t mc = 64, mb = (M + mc - 1) / mc;
  const int64_t units = (N + 15) / 16, per_thread = (units + threads - 1) / threads;
  const int64_t fewest = (per_thread + 15) / 16;  // blocks per thread at 256 columns
  int64_t blocks = std::max<int64_t>(fewest, 4);
  for (int64_t t = blocks; t >= fewest; t--)
    if (per_thread % t == 0) {
      blocks = t;
      break;
    }
  const int64_t nc = (per_thread + blocks - 1) / blocks * 16;
  const int64_t ncb = (N + nc - 1) / nc;
  const uint8_t* cp = w.codes;
  const float* bias = w.bias;
  ::ember::parallel_for(ncb * mb, 1, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t n0 = (t / mb) * nc, n1 = std::min(N, n0 + nc);
      const int64_t m0 = (t % mb) * mc, m1 = std::min(M, m0 + mc);
      if (w.f16)
        kern.gemm_tile_f16(q + m0 * nb * 32, d + m0 * nb, gsum + m0 * ng, m1 - m0,
                           cp + n0 * nb * 16, (const uint16_t*)w.scales + n0 * ng,
                           (const uint16_t*)w.offsets + n0 * ng, bias ? bias + n0 : nullptr,
                           n1 - n0, K, group, yp + m0 * N + n0, N);
      else
        kern.gemm_tile(q + m0 * nb * 32, d + m0 * nb, gsum + m0 * ng, m1 - m0,
                       cp + n0 * nb * 16, (const float*)w.scales + n0 * ng,
                       (const float*)w.offsets + n0 * ng, bias ? bias + n0 : nullptr, n1 - n0, K,
                       group, yp + m0 * N + n0, N);
      if (w.act)
        for (int64_t m = m0; m < m1; m++) w.act(yp + m * N + n0, yp + m * N + n0, n1 - n0);
    }
  });
}

struct DequantCtx {
  const Q4Kernels* kern;
  const Q4Weights* w;
};

void dequant_b(const void* p, int64_t, int64_t k0, int64_t kc, int64_t j0, int64_t j1,
               float* bp) {
  const DequantCtx& c = *(const DequantCtx*)p;
  const Q4Weights& w = *c.w;
  if (w.f16)
    c.kern->dequant_f16(w.codes, (const uint16_t*)w.scales, (const uint16_t*)w.offsets, w.K,
                        w.group, k0, kc, j0, j1, bp);
  else
    c.kern->dequant(w.codes, (const float*)w.scales, (const float*)w.offsets, w.K, w.group, k0,
                    kc, j0, j1, bp);
}

// f32: y [M, N] = a [M, K] times the dequantized weights on the f32 GEMM (its summation order:
// each element one accumulator over k in order, whatever M).
void run_f32(const Q4Kernels& kern, const Q4Weights& w, const float* ap, int64_t M,
             int max_threads, float* yp) {
  DequantCtx dc{&kern, &w};
  SgemmArgs g;
  g.M = M;
  g.N = w.N;
  g.K = w.K;
  g.a = ap;
  g.a_rs = w.K;
  g.c = yp;
  g.c_rs = w.N;
  g.b_pack = dequant_b;
  g.b_pack_ctx = &dc;
  if (w.bias) {
    g.bias = w.bias;
    g.bias_cs = 1;
    g.beta = 1.0f;
  }
  g.act = w.act;
  sgemm(g, max_threads, kern.micro());
}

}  // namespace

void q4matmul_with(const KernelCtx& ctx, const Q4Kernels& kern) {
  const Tensor& a = ctx.input(0);        // [..., K] f32
  const Tensor& scales = ctx.input(2);   // [N, ng] f32 or f16
  Tensor& out = ctx.output(0);           // [..., N] f32
  const Attrs& at = ctx.node.attrs;
  Q4Weights w{ctx.input(1).ptr<uint8_t>(),  // [N, nb, 16] u8
              scales.data(),
              ctx.input(3).data(),  // [N, ng] the dtype of scales (shape inference)
              scales.dtype() == DType::F16,
              ctx.has_input(4) ? ctx.input(4).ptr<float>() : nullptr,
              kern.acts.for_node(ctx.node),
              at.get_int("n", 0),
              at.get_int("k", 0),
              at.get_int("group", 0)};
  const int64_t N = w.N, K = w.K;
  const int64_t M = N > 0 ? out.numel() / N : 0;
  if (M == 0 || N == 0) return;
  const float* ap = a.ptr<float>();
  float* yp = out.ptr<float>();
  // f32_rows [M] (optional): which rows take the f32 path.
  const uint8_t* flags = ctx.has_input(5) ? ctx.input(5).ptr<uint8_t>() : nullptr;
  int64_t nf = 0;
  for (int64_t m = 0; flags && m < M; m++) nf += flags[m] != 0;
  if (nf == 0) return run_i16(kern, w, ap, M, ctx.max_threads, yp);
  if (nf == M) return run_f32(kern, w, ap, M, ctx.max_threads, yp);
  // Mixed: each path on its rows gathered, results scattered back. Every row's result is the
  // same as in a run of its path alone.
  thread_local std::vector<float> abuf, ybuf;
  abuf.resize(M * K);
  ybuf.resize(M * N);
  float* af = abuf.data();          // f32 rows, then W4A16i rows
  float* ai = af + nf * K;
  for (int64_t m = 0, f = 0, i = 0; m < M; m++)
    std::copy(ap + m * K, ap + (m + 1) * K, flags[m] ? af + K * f++ : ai + K * i++);
  run_f32(kern, w, af, nf, ctx.max_threads, ybuf.data());
  run_i16(kern, w, ai, M - nf, ctx.max_threads, ybuf.data() + nf * N);
  const float* yf = ybuf.data();
  const float* yi = yf + nf * N;
  for (int64_t m = 0, f = 0, i = 0; m < M; m++) {
    const float* src = flags[m] ? yf + N * f++ : yi + N * i++;
    std::copy(src, src + N, yp + m * N);
  }
}

void q4matmul(const KernelCtx& ctx) {
  static const Q4Kernels k{q4_act_quantize16,
                           q4_gemm_tile,
                           q4_gemm_tile,
                           {relu_f32_array, gelu_f32_array, gelu_tanh_f32_array},
                           q4_dequant_panels,
                           q4_dequant_panels,
                           gemm_micro_generic};
  q4matmul_with(ctx, k);
}

}  // namespace ember::cpu
