// x86 QMatMul drivers: the generic quantize-then-GEMM flow (kernels/generic/gemm_i8.cpp) on
// the AVX2 micro-kernel, epilogue, row quantizers and activations (Isa::Avx2), and the AVX-512
// VNNI QMatMul and GEMM below (Isa::Avx512). QMatMul quantizes A's rows straight into u8 codes
// (QConv's int16 rows are converted first); qgemm_i8_vnni runs qgemm_i8's blocking: tasks are
// (row block, column block); each three-panel weight group (all of K up to 8192, else 8192-k
// slices) stays in L2 while every 8-row strip passes over it, pair rows turned into quad rows
// in registers, and the last K slice's micro-kernel call writes C's floats itself. Measured
// slower or no better on Zen 5: a repack into an L1 buffer (2-7% slower), one quad copy per
// block in L2 for all its strips (3-5% slower), software prefetch of A or B (within noise).
// Exact integer sums: no result depends on M, the tiling or the thread count.
#include <algorithm>
#include <atomic>
#include <vector>

#include "ember/thread_pool.h"
#include "kernels/generic/gemm_i8.h"
#include "kernels/x86/kernels_x86.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int kMR = 8;          // rows per strip
constexpr int kNB = 3;          // panels per micro-kernel call
constexpr int64_t kNR = 16;     // columns per panel
// Thread CPU time on Zen 5 (1024 x 2048 x 4096, 64 x 4096 x 4096): whole-K strips beat
// 2048-k slices by 2-3% and 512-k ones by 5-15% (fewer int32 tile round trips and calls).
constexpr int64_t kKCP = 4096;  // k pairs per slice: a 3-panel group is up to 384 KiB (L2)
// Blocks of 96..384 rows and 240..480 columns measured within noise of each other.
constexpr int64_t kMC = 192;    // rows per block (multiple of kMR)
constexpr int64_t kNC = 240;    // columns per block (multiple of 3 panels)
constexpr int64_t kMaxK = 65536;
constexpr int kTasksPerThread = 4;  // blocks per thread for small GEMMs: late-worker slack

// C[m0:m1, n0:n1] (n0 a multiple of 16) from u8 rows u [M, ldu]. A block of up to 8 rows is
// one strip over all of K that sums the weights' columns in registers as it goes (the
// compensation: no separate pass over the weights); taller blocks take all_comp (every
// column's, when several row blocks share the columns) or compute each panel group's as the
// group is first met (it then sits in L2 for the strips). The call that ends K writes floats
// through the epilogue; earlier K slices (K > 2 kKCP) sum in an int32 tile. Then the
// activation, row by row.
void run_block(const QGemmI8Args& g, const uint8_t* u, int64_t ldu, const int32_t* all_comp,
               int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int64_t kh = ceil_div(g.K, 2);
  int64_t rows = m1 - m0, n_panels = ceil_div(n1 - n0, kNR), n_strips = ceil_div(rows, kMR);
  int64_t ldt = n_panels * kNR;
  int64_t kcp = std::max<int64_t>(1, n_strips == 1 ? kh : kKCP);  // one strip: all of K
  thread_local std::vector<int32_t> tile_buf, comp_buf;
  if (kcp < kh) tile_buf.resize(rows * ldt);
  bool own_comp = n_strips > 1 && !all_comp;
  if (own_comp) comp_buf.resize(ldt);
  int32_t* tile = tile_buf.data();
  const int32_t* comp = n_strips == 1 ? nullptr : own_comp ? comp_buf.data() : all_comp + n0;
  QGemmU8Epilogue e;
  e.a_off = g.a_off;
  e.ldy = g.ldc;
  for (int64_t k0 = 0; k0 == 0 || k0 < kh; k0 += kcp) {
    int64_t kc = std::min(kcp, kh - k0);
    bool last = k0 + kc >= kh;
    for (int64_t p = 0; p < n_panels; p += kNB) {
      int np = (int)std::min<int64_t>(kNB, n_panels - p);
      const int8_t* panel = g.b_packed + (n0 / kNR + p) * kh * 2 * kNR;
      if (own_comp && k0 == 0)
        for (int j = 0; j < np; j++)
          qgemm_i8_comp_avx512(panel + j * kh * 2 * kNR, kh, g.a_off,
                               comp_buf.data() + (p + j) * kNR);
      e.comp = comp ? comp + p * kNR : nullptr;
      e.w_scale = g.w_scale + n0 + p * kNR;
      e.bias = g.bias ? g.bias + n0 + p * kNR : nullptr;
      e.cols = n1 - n0 - p * kNR;
      for (int64_t s = 0; s < n_strips; s++) {
        int64_t i0 = m0 + s * kMR;
        int r = (int)std::min<int64_t>(kMR, m1 - i0);
        int32_t* ti = kcp < kh ? tile + (i0 - m0) * ldt + p * kNR : nullptr;  // K sliced
        e.a_scale = g.a_scale + i0;
        e.y = g.c + i0 * g.ldc + n0 + p * kNR;
        qgemm_u8i8_micro_8x48_avx512(kc, u + i0 * ldu + 2 * k0, ldu, panel + k0 * 2 * kNR,
                                     kh * 2 * kNR, np, ti, ldt, r, k0 > 0, last ? &e : nullptr);
      }
    }
  }
  if (g.act)
    for (int64_t i = m0; i < m1; i++) g.act(g.c + i * g.ldc + n0, g.c + i * g.ldc + n0, n1 - n0);
}

}  // namespace

const QGemmI8Micro& qgemm_i8_micro_avx2() {
  static const QGemmI8Micro m{6, qgemm_i8_micro_6x16_avx2, qgemm_i8_epilogue_avx2, "avx2 6x16"};
  return m;
}

const QuantizeRowsI8& quantize_rows_i8_avx2() {
  static const QuantizeRowsI8 q{quantize_row_i8_token_avx2, quantize_row_i8_linear_avx2,
                                minmax_f32_row_avx2};
  return q;
}

void qmatmul_i8_avx2(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  qmatmul_i8_with(ctx, qgemm_i8_micro_avx2(), quantize_rows_i8_avx2(), acts);
}

void quantize_linear_f32_avx2(const KernelCtx& ctx) {
  quantize_linear_f32_with(ctx, quantize_row_q8_linear_avx2);
}

void qgemm_i8_vnni(const QGemmI8Args& g, int max_threads) {
  if (g.M <= 0 || g.N <= 0) return;
  EMBER_CHECK(g.K <= kMaxK && (g.u ? g.ldu >= 4 * ceil_div(g.K, 4) && g.ldu % 4 == 0
                                   : g.lda >= 2 * ceil_div(g.K, 2)) &&
                  g.a_off >= 0 && g.a_off <= 255,
              Internal, "[qgemm_i8_vnni] K = ", g.K, ", lda = ", g.lda, ", ldu = ", g.ldu,
              ", a_off = ", g.a_off);
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  double ops = 2.0 * (double)g.M * (double)g.N * (double)std::max<int64_t>(g.K, 1);
  if (ops < 2e5) threads = 1;  // the pool costs more than it saves
  const uint8_t* u = g.u;
  int64_t ldu = g.ldu;
  if (!u) {
    // int16 codes (QConv's rows): turned into u8 rows first.
    // NOTE: kept per calling thread between runs (as the codes); pointers go to the workers.
    thread_local std::vector<uint8_t> u_buf;
    ldu = 4 * ceil_div(g.K, 4) + 64;
    u_buf.resize(g.M * ldu);
    uint8_t* uw = u_buf.data();
    int64_t grain = std::max<int64_t>(1, 16384 / ldu);
    ::ember::parallel_for(g.M, grain, threads, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i++)
        qgemm_i8_codes_u8_avx512(g.a + i * g.lda, g.K, g.a_off, uw + i * ldu);
    });
    u = uw;
  }
  // Blocks are claimed one at a time (as sgemm's): a worker that wakes late or shares its core
  // joins for what is left; small GEMMs get kTasksPerThread x threads blocks for that slack.
  int split = threads > 1 && ops < 1e8 ? threads * kTasksPerThread : threads;
  auto [mc, nc, mb, nb] = gemm_blocks(1, g.M, g.N, kMR, kNB * kNR, kMC, kNC, split);
  // Several row blocks share each column block: its compensation once, in a pass of its own
  // (computed per block it measured 3.6% of a 2048^3 GEMM).
  const int32_t* comp = nullptr;
  if (mb > 1) {
    thread_local std::vector<int32_t> comp_buf;
    int64_t n_panels = ceil_div(g.N, kNR), kh = ceil_div(g.K, 2);
    comp_buf.resize(n_panels * kNR);
    int32_t* cw = comp_buf.data();
    ::ember::parallel_for(n_panels, 1, threads, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; p++)
        qgemm_i8_comp_avx512(g.b_packed + p * kh * 2 * kNR, kh, g.a_off, cw + p * kNR);
    });
    comp = cw;
  }
  std::atomic<int64_t> next{0};
  ::ember::parallel_for(threads, 1, threads, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < mb * nb;) {
      int64_t jb = t / mb, ib = t % mb;  // neighbouring tasks share a column block
      run_block(g, u, ldu, comp, ib * mc, std::min(g.M, (ib + 1) * mc), jb * nc,
                std::min(g.N, (jb + 1) * nc));
    }
  });
}

void qmatmul_i8_avx512(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx512, gelu_tanh_f32_array_avx2};
  QGemmI8Args g = qmatmul_i8_args(ctx, acts);
  if (g.M == 0 || g.N == 0) return;
  QMatMulAQuant aq = qmatmul_i8_a_quant(ctx, minmax_f32_row_avx2);
  // A's rows straight to u8 codes, quantized in parallel (the int16 codes are not needed).
  // NOTE: kept per calling thread between runs (like sgemm's packing buffers).
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<float> scales;
  g.ldu = 4 * ceil_div(g.K, 4) + 64;
  codes.resize(g.M * g.ldu);
  scales.resize(g.M);
  const float* x = ctx.input(0).ptr<float>();
  uint8_t* u = codes.data();
  float* s = scales.data();
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(g.K, 1));
  ctx.parallel_for(g.M, grain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++) {
      if (aq.token) {
        s[m] = quantize_row_u8_token_avx512(x + m * g.K, g.K, u + m * g.ldu);
      } else {
        quantize_row_u8_linear_avx512(x + m * g.K, g.K, aq.scale, aq.zp, aq.qmin, aq.qmax,
                                      u + m * g.ldu);
        s[m] = aq.scale;
      }
    }
  });
  g.u = u;
  g.a_scale = s;
  g.a_off = aq.a_off;
  qgemm_i8_vnni(g, ctx.max_threads);
}

}  // namespace ember::cpu
