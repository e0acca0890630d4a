// x86 QMatMul drivers: the generic quantize-then-GEMM flow (kernels/generic/gemm_i8.cpp) on
// the AVX2 micro-kernel, epilogue, row quantizers and activations (Isa::Avx2), and on the
// AVX-512 VNNI GEMM below (Isa::Avx512). qgemm_i8_vnni turns the int16 codes into u8 rows and
// the weights' column sums into the compensation, then runs qgemm_i8's blocking: tasks are
// (row block, column block); each three-panel weight group (all of K up to 8192, else 8192-k
// slices) stays in L2 while every 8-row strip passes over it, pair rows turned into quad rows
// in registers (a repack into an L1 buffer measured 2-7% slower). With one row block a row of
// ones rides along instead of the column-sum pass, so the weights are read once. Exact
// integer sums: no result depends on M, the tiling or the thread count.
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

// C[m0:m1, n0:n1] (n0 a multiple of 16) from u8 rows u [M, ldu] and the compensation comp;
// comp == nullptr: the block holds every row and u has a row of ones after the last, summed
// as one more row (the column sums: no separate pass over the weights). Up to 8 rows, it
// makes a single strip of 9.
void run_block(const QGemmI8Args& g, const uint8_t* u, int64_t ldu, const int32_t* comp,
               int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int64_t kh = ceil_div(g.K, 2);
  int64_t rows = m1 - m0 + (comp ? 0 : 1);
  int64_t n_panels = ceil_div(n1 - n0, kNR);
  int64_t n_strips = !comp && rows <= kMR + 1 ? 1 : ceil_div(rows, kMR);
  int64_t ldt = n_panels * kNR;
  thread_local std::vector<int32_t> tile_buf, own_comp;
  tile_buf.resize(rows * ldt);
  int32_t* tile = tile_buf.data();
  if (kh == 0) std::fill(tile, tile + rows * ldt, 0);
  int64_t kcp = n_strips == 1 ? kh : kKCP;  // one strip streams the whole K
  for (int64_t k0 = 0; k0 < kh; k0 += kcp) {
    int64_t kc = std::min(kcp, kh - k0);
    for (int64_t p = 0; p < n_panels; p += kNB) {
      int np = (int)std::min<int64_t>(kNB, n_panels - p);
      const int8_t* bp = g.b_packed + ((n0 / kNR + p) * kh + k0) * 2 * kNR;
      for (int64_t s = 0; s < n_strips; s++) {
        int64_t i0 = m0 + s * kMR;
        int r = (int)std::min<int64_t>(n_strips == 1 ? kMR + 1 : kMR, m0 + rows - i0);
        const uint8_t* ui = u + i0 * ldu + 2 * k0;
        int32_t* ti = tile + (i0 - m0) * ldt + p * kNR;
        qgemm_u8i8_micro_8x48_avx512(kc, ui, ldu, bp, kh * 2 * kNR, np, ti, ldt, r, k0 > 0);
      }
    }
  }
  const int32_t* comp_n0 = comp ? comp + n0 : nullptr;
  if (!comp) {
    // a_off x the column sums, mod 2^32 as the int32 sums.
    own_comp.resize(ldt);
    const uint32_t* sums = (const uint32_t*)(tile + (m1 - m0) * ldt);
    for (int64_t j = 0; j < ldt; j++) own_comp[j] = (int32_t)((uint32_t)g.a_off * sums[j]);
    comp_n0 = own_comp.data();
  }
  for (int64_t i = m0; i < m1; i++) {
    float* ci = g.c + i * g.ldc + n0;
    qgemm_i8_epilogue_avx512(tile + (i - m0) * ldt, comp_n0, n1 - n0, g.a_scale[i],
                             g.w_scale + n0, g.bias ? g.bias + n0 : nullptr, ci);
    if (g.act) g.act(ci, ci, n1 - n0);
  }
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
  EMBER_CHECK(g.K <= kMaxK && g.lda >= 2 * ceil_div(g.K, 2) && g.a_off >= 0 && g.a_off <= 255,
              Internal, "[qgemm_i8_vnni] K = ", g.K, ", lda = ", g.lda, ", a_off = ", g.a_off);
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  double ops = 2.0 * (double)g.M * (double)g.N * (double)std::max<int64_t>(g.K, 1);
  if (ops < 2e5) threads = 1;  // the pool costs more than it saves
  int64_t kh = ceil_div(g.K, 2), ldu = 4 * ceil_div(g.K, 4) + 64, n_panels = ceil_div(g.N, kNR);
  // NOTE: kept per calling thread between runs (as the codes); pointers go to the workers.
  thread_local std::vector<uint8_t> u_buf;
  thread_local std::vector<int32_t> comp_buf;
  // Blocks are claimed one at a time (as sgemm's): a worker that wakes late or shares its core
  // joins for what is left; small GEMMs get kTasksPerThread x threads blocks for that slack.
  int split = threads > 1 && ops < 1e8 ? threads * kTasksPerThread : threads;
  auto [mc, nc, mb, nb] = gemm_blocks(1, g.M, g.N, kMR, kNB * kNR, kMC, kNC, split);
  // One row block (always so up to 8 rows): the column sums ride along as a row of ones.
  bool ones_row = mb == 1;
  u_buf.resize((g.M + ones_row) * ldu);
  comp_buf.resize(n_panels * kNR);
  uint8_t* u = u_buf.data();
  int32_t* comp = ones_row ? nullptr : comp_buf.data();
  if (ones_row) std::fill(u + g.M * ldu, u + (g.M + 1) * ldu, (uint8_t)1);
  // One pass for both: items [0, M) are u8 rows, [M, M + panels) the panels' compensation.
  int64_t comp_items = ones_row ? 0 : n_panels;
  double bytes = (double)g.M * (double)ldu + (double)comp_items * (double)kh * 32.0;
  int64_t grain = std::max<int64_t>(1, (int64_t)((double)(g.M + comp_items) * 16384.0 / bytes));
  ::ember::parallel_for(g.M + comp_items, grain, threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      if (i < g.M) {
        qgemm_i8_codes_u8_avx512(g.a + i * g.lda, g.K, g.a_off, u + i * ldu);
      } else {
        int64_t p = i - g.M;
        qgemm_i8_comp_avx512(g.b_packed + p * kh * 2 * kNR, kh, g.a_off, comp + p * kNR);
      }
    }
  });
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
  static const GemmActs acts{relu_f32_array, gelu_erf_f32_array_avx2, gelu_tanh_f32_array_avx2};
  qmatmul_i8_with_gemm(ctx, qgemm_i8_vnni, quantize_rows_i8_avx2(), acts);
}

}  // namespace ember::cpu
