// f32 GEMM driver for MatMul, Gemm, FusedMatMul, Attention and Conv (references: their OpDef
// rows). Tasks are (matrix, MC-row block, NC-column block) on the shared pool. Inside a task K
// is cut into KC slices: the B slice is packed into 16-wide panels (or read in place when
// row-major and few rows share it, or pre-packed at load: sgemm_pack_b, or built by a callback:
// Conv's patches), A rows are read in place, and an MR x 16 micro-kernel (per ISA: GemmMicro;
// generic 4x16 here, auto-vectorised; two panels a call where the ISA has that form)
// accumulates C.
// Batch invariance: each C element is one accumulator summed over k = 0..K-1 in order (a new KC
// slice resumes from the float stored in C), with the same arithmetic for every strip height, so
// a row's result never depends on M, the tiling or the thread count. K is never split.
#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "ember/thread_pool.h"
#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int kMaxMR = 16;    // largest micro-kernel height (column-tail tiles)
constexpr int kMaxNR = 16;    // every micro-kernel is 16 wide: one packed-B layout for all ISAs
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 192;  // rows per block (rounded to MR): B panels are reused across them
constexpr int64_t kNC = 256;  // multiple of NR
constexpr int kTasksPerThread = 4;  // blocks per thread for the cost model: late-worker slack

// Generic micro-kernel: c[R, 16] (+)= a[R, kc] (row stride lda) @ b[kc, 16] (row stride ldb);
// c has row stride ldc. Local accumulators that g++ -O3 vectorises over N.
constexpr int kGenericMR = 4;
template <int R>
void micro_kernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b,
                  int64_t ldb, float* __restrict c, int64_t ldc, bool accumulate) {
  float acc[R][kMaxNR];
  for (int i = 0; i < R; i++)
    for (int j = 0; j < kMaxNR; j++) acc[i][j] = accumulate ? c[i * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kc; k++) {
    const float* bk = b + k * ldb;
    float bv[kMaxNR];
    for (int j = 0; j < kMaxNR; j++) bv[j] = bk[j];
    for (int i = 0; i < R; i++) {
      float ai = a[i * lda + k];
      for (int j = 0; j < kMaxNR; j++) acc[i][j] += ai * bv[j];
    }
  }
  for (int i = 0; i < R; i++)
    for (int j = 0; j < kMaxNR; j++) c[i * ldc + j] = acc[i][j];
}

void micro_generic(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                   int64_t ldc, int rows, bool accumulate) {
  switch (rows) {
    case 1: return micro_kernel<1>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 2: return micro_kernel<2>(kc, a, lda, b, ldb, c, ldc, accumulate);
    case 3: return micro_kernel<3>(kc, a, lda, b, ldb, c, ldc, accumulate);
    default: return micro_kernel<4>(kc, a, lda, b, ldb, c, ldc, accumulate);
  }
}

// ap[rows, kc] (row-major) <- `rows` rows of a transposed A (column stride cs != 1); A with
// contiguous rows is read in place instead.
void pack_a(const float* a, int64_t rs, int64_t cs, int rows, int64_t kc, float* ap) {
  for (int64_t k = 0; k < kc; k++)
    for (int i = 0; i < rows; i++) ap[i * kc + k] = a[i * rs + k * cs];
}

// bp[kc, NR] <- a panel of `cols` (<= NR) columns of B; missing columns are zero.
void pack_b(const float* b, int64_t rs, int64_t cs, int64_t kc, int cols, float* bp) {
  if (cs == 1) {
    for (int64_t k = 0; k < kc; k++) {
      const float* src = b + k * rs;
      float* dst = bp + k * kMaxNR;
      for (int j = 0; j < cols; j++) dst[j] = src[j];
      for (int j = cols; j < kMaxNR; j++) dst[j] = 0.0f;
    }
  } else {
    // Transposed B: walk each column contiguously.
    for (int j = 0; j < cols; j++) {
      const float* src = b + j * cs;
      for (int64_t k = 0; k < kc; k++) bp[k * kMaxNR + j] = src[k * rs];
    }
    for (int64_t k = 0; k < kc; k++)
      for (int j = cols; j < kMaxNR; j++) bp[k * kMaxNR + j] = 0.0f;
  }
}

// alpha, bias and activation on C[m0:m1, n0:n1] once its sums are complete. The bias's
// column stride is 0 (one value per row: Conv), 1 (a row: FusedMatMul) or other, each its own
// loop: with a stride known only at run time the compiler kept the row scalar.
void epilogue(const SgemmArgs& g, float* C, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const bool scale = g.alpha != 1.0f;
  const bool add = g.bias && g.beta != 0.0f;
  if (!scale && !add && !g.act) return;
  const float alpha = g.alpha, beta = g.beta;  // locals: C's stores cannot change them
  for (int64_t i = m0; i < m1; i++) {
    float* ci = C + i * g.c_rs;
    if (scale)
      for (int64_t j = n0; j < n1; j++) ci[j] *= alpha;
    if (add) {
      const float* bi = g.bias + i * g.bias_rs;
      if (g.bias_cs == 0) {
        const float b = beta * bi[0];
        for (int64_t j = n0; j < n1; j++) ci[j] += b;
      } else if (g.bias_cs == 1) {
        for (int64_t j = n0; j < n1; j++) ci[j] += beta * bi[j];
      } else {
        for (int64_t j = n0; j < n1; j++) ci[j] += beta * bi[j * g.bias_cs];
      }
    }
    if (g.act) g.act(ci + n0, ci + n0, n1 - n0);
  }
}

// C[m0:m1, n0:n1] of matrix `mat`. Per KC slice: the B panels are packed (unless pre-packed
// or read in place); A is read in place (packed only when transposed); then each 16-wide B
// panel (kc x 16, L1-sized) meets every MR-row strip of A in turn, so B streams from memory
// once per slice and the A block stays in L2.
void run_block(const SgemmArgs& g, const GemmMicro& micro, int64_t mat, int64_t m0, int64_t m1,
               int64_t n0, int64_t n1) {
  const float* A = g.a + (g.a_off ? g.a_off[mat] : 0);
  const float* B = g.b + (g.b_off ? g.b_off[mat] : 0);
  float* C = g.c + (g.c_off ? g.c_off[mat] : 0);
  const int mr = micro.mr;
  int64_t n_panels = ceil_div(n1 - n0, kMaxNR);
  int64_t n_strips = ceil_div(m1 - m0, mr);
  thread_local std::vector<float> ap_buf, bp_buf;
  bool direct_a = g.a_cs == 1;
  if (!direct_a) ap_buf.resize(kKC * mr * n_strips);
  if (!g.b_packed) bp_buf.resize(kKC * kMaxNR * n_panels);
  float* bp = bp_buf.data();
  alignas(64) float tile[kMaxMR * kMaxNR];
  // Row-major B read in place when packing would not be amortised over many strips.
  bool direct_b = !g.b_packed && !g.b_pack && g.b_cs == 1 && (m1 - m0) <= 2 * mr;

  if (g.K == 0) {
    for (int64_t i = m0; i < m1; i++) std::fill(C + i * g.c_rs + n0, C + i * g.c_rs + n1, 0.0f);
  }
  for (int64_t k0 = 0; k0 < g.K; k0 += kKC) {
    int64_t kc = std::min(kKC, g.K - k0);
    bool accumulate = k0 > 0;
    if (g.b_pack) g.b_pack(g.b_pack_ctx, mat, k0, kc, n0, n1, bp);
    for (int64_t p = 0; p < n_panels && !g.b_packed && !g.b_pack; p++) {
      int64_t j0 = n0 + p * kMaxNR;
      int w = (int)std::min<int64_t>(kMaxNR, n1 - j0);
      if (!(direct_b && w == kMaxNR))
        pack_b(B + k0 * g.b_rs + j0 * g.b_cs, g.b_rs, g.b_cs, kc, w, bp + p * kc * kMaxNR);
    }
    for (int64_t s = 0; s < n_strips && !direct_a; s++) {
      int64_t i0 = m0 + s * mr;
      int r = (int)std::min<int64_t>(mr, m1 - i0);
      pack_a(A + i0 * g.a_rs + k0 * g.a_cs, g.a_rs, g.a_cs, r, kc, ap_buf.data() + s * kc * mr);
    }
    int64_t p = 0;
    if (micro.row4 && m1 - m0 == 1) {
      // One row: four full panels at a time (a GEMV keeps more FMA chains in flight).
      const float* a1 = direct_a ? A + m0 * g.a_rs + k0 : ap_buf.data();
      for (; p + 4 <= n_panels && n0 + (p + 4) * kMaxNR <= n1; p += 4) {
        int64_t j0 = n0 + p * kMaxNR;
        const float* bk = bp + p * kc * kMaxNR;
        int64_t ldb = kMaxNR, pstride = kc * kMaxNR;
        if (g.b_packed) {
          bk = g.b_packed + (j0 / kMaxNR) * g.K * kMaxNR + k0 * kMaxNR;
          pstride = g.K * kMaxNR;
        } else if (direct_b) {
          bk = B + k0 * g.b_rs + j0;
          ldb = g.b_rs;
          pstride = kMaxNR;
        }
        micro.row4(kc, a1, bk, ldb, pstride, C + m0 * g.c_rs + j0, accumulate);
      }
    }
    while (p < n_panels) {
      int64_t j0 = n0 + p * kMaxNR;
      int w = (int)std::min<int64_t>(kMaxNR, n1 - j0);
      const float* bk = bp + p * kc * kMaxNR;
      int64_t ldb = kMaxNR, pstride = kc * kMaxNR;  // pstride: from panel p to p + 1
      if (g.b_packed) {
        bk = g.b_packed + (j0 / kMaxNR) * g.K * kMaxNR + k0 * kMaxNR;
        pstride = g.K * kMaxNR;
      } else if (direct_b && w == kMaxNR) {
        bk = B + k0 * g.b_rs + j0;
        ldb = g.b_rs;
        pstride = kMaxNR;
      }
      // Two full panels together where the micro-kernel has a two-panel form.
      const bool pair = micro.fn2 && j0 + 2 * kMaxNR <= n1;
      // Pre-packed B (weights, often cold: a model's weights outgrow L3) is prefetched one step
      // ahead: the next panels' lines (or the next KC slice's first ones), a share before each
      // strip of this one.
      int64_t pn = p + (pair ? 2 : 1), kn = k0, kcn = kc;
      if (pn >= n_panels) pn = 0, kn = k0 + kc, kcn = std::min(kKC, g.K - kn);
      const float* next = g.b_packed && kn < g.K
                              ? g.b_packed + (n0 / kMaxNR + pn) * g.K * kMaxNR + kn * kMaxNR
                              : nullptr;
      const int64_t next_lines = next ? kcn * std::min<int64_t>(2, n_panels - pn) : 0;
      for (int64_t s = 0; s < n_strips; s++) {
        int64_t i0 = m0 + s * mr;
        int r = (int)std::min<int64_t>(mr, m1 - i0);
        for (int64_t l = s * next_lines / n_strips; l < (s + 1) * next_lines / n_strips; l++)
          __builtin_prefetch(next + (l / kcn) * g.K * kMaxNR + (l % kcn) * kMaxNR);
        const float* ap = direct_a ? A + i0 * g.a_rs + k0 : ap_buf.data() + s * kc * mr;
        int64_t lda = direct_a ? g.a_rs : kc;
        float* ck = C + i0 * g.c_rs + j0;
        if (pair) {
          micro.fn2(kc, ap, lda, bk, ldb, pstride, ck, g.c_rs, r, accumulate);
          continue;
        }
        if (w == kMaxNR) {
          micro.fn(kc, ap, lda, bk, ldb, ck, g.c_rs, r, accumulate);
          continue;
        }
        // Column tail: the same micro-kernel on a padded tile (same sums per element).
        if (accumulate)
          for (int i = 0; i < r; i++)
            std::copy(ck + i * g.c_rs, ck + i * g.c_rs + w, tile + i * kMaxNR);
        micro.fn(kc, ap, lda, bk, ldb, tile, kMaxNR, r, accumulate);
        for (int i = 0; i < r; i++) std::copy(tile + i * kMaxNR, tile + i * kMaxNR + w, ck + i * g.c_rs);
      }
      p += pair ? 2 : 1;
    }
  }
  epilogue(g, C, m0, m1, n0, n1);
}

}  // namespace

const GemmMicro& gemm_micro_generic() {
  static const GemmMicro m{kGenericMR, kMaxNR, micro_generic, "generic 4x16"};
  return m;
}

int64_t sgemm_packed_b_size(int64_t K, int64_t N) { return ceil_div(N, kMaxNR) * K * kMaxNR; }

void sgemm_pack_b(const float* b, int64_t rs, int64_t cs, int64_t K, int64_t N, float* out) {
  for (int64_t p = 0; p < ceil_div(N, kMaxNR); p++) {
    int w = (int)std::min<int64_t>(kMaxNR, N - p * kMaxNR);
    pack_b(b + p * kMaxNR * cs, rs, cs, K, w, out + p * K * kMaxNR);
  }
}

GemmBlocks gemm_blocks(int64_t batch, int64_t M, int64_t N, int64_t mr, int64_t nr, int64_t mc_max,
                       int64_t nc_max, int threads) {
  // The pool gives each thread an equal run of tasks; block sizes never change the sums.
  auto round_up = [](int64_t v, int64_t m) { return ceil_div(v, m) * m; };
  int64_t mb = ceil_div(M, mc_max), nb = ceil_div(N, nc_max);
  if (threads > 1) {
    int64_t best_mb = mb, best_nb = nb;
    double best = 1e30;
    for (int64_t n_blocks = nb; n_blocks <= std::max<int64_t>(nb, ceil_div(N, 4 * nr)); n_blocks++) {
      for (int64_t m_blocks = mb; m_blocks <= std::max<int64_t>(mb, ceil_div(M, mr)); m_blocks++) {
        int64_t tasks = batch * m_blocks * n_blocks;
        double rounds = (double)ceil_div(tasks, threads);
        // Time ~ rounds x task size; a little extra per task for packing and dispatch.
        double cost = rounds * (double)round_up(ceil_div(M, m_blocks), mr) *
                      (double)round_up(ceil_div(N, n_blocks), nr) * (1.0 + 0.02 * tasks);
        if (cost < best) {
          best = cost;
          best_mb = m_blocks;
          best_nb = n_blocks;
        }
        if (tasks >= 8 * threads) break;
      }
    }
    mb = best_mb;
    nb = best_nb;
  }
  int64_t mc = round_up(ceil_div(M, mb), mr), nc = round_up(ceil_div(N, nb), nr);
  return {mc, nc, ceil_div(M, mc), ceil_div(N, nc)};
}

void sgemm(const SgemmArgs& g, int max_threads, const GemmMicro& micro) {
  if (g.batch <= 0 || g.M <= 0 || g.N <= 0) return;
  EMBER_CHECK(micro.nr == kMaxNR && micro.mr <= kMaxMR, Internal, "[sgemm] micro-kernel ",
              micro.name, " is ", micro.mr, "x", micro.nr);
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  double flops =
      2.0 * (double)g.batch * (double)g.M * (double)g.N * (double)std::max<int64_t>(g.K, 1);
  if (flops < 2e5) threads = 1;  // the pool costs more than it saves
  // Blocks are claimed one at a time, so a worker that wakes late (parked after 2 ms idle;
  // 0.1-0.2 ms to wake on a VM) joins for what is left instead of the caller running its whole
  // share alone. Small GEMMs with pre-packed B (no packing per block; a wake is a large part
  // of their time) get kTasksPerThread x threads blocks for that slack. Which thread runs a
  // block never changes the sums.
  bool slack = threads > 1 && g.b_packed && flops < 1e8;
  int split = slack ? threads * kTasksPerThread : threads;
  auto [mc, nc, mb, nb] = gemm_blocks(g.batch, g.M, g.N, micro.mr, kMaxNR, kMC, kNC, split);
  // Those blocks are column blocks (at least 4 panels: GemmMicro::row4, a multiple of the
  // threads) where N allows: each weight panel is then read (from memory: a model's weights
  // outgrow L3) by one task, where row blocks made every core read all of B. MiniLM's
  // 128x384x384 at 2 threads: 0.133 -> 0.096 ms a node.
  const int64_t panels = ceil_div(g.N, kMaxNR);
  int64_t col_blocks = std::min<int64_t>(split, panels / 4);
  col_blocks -= col_blocks % threads;
  if (slack && g.batch == 1 && g.M <= kMC && col_blocks >= threads) {
    nc = ceil_div(panels, col_blocks) * kMaxNR;
    nb = ceil_div(g.N, nc);
    mc = ceil_div(g.M, micro.mr) * micro.mr;
    mb = 1;
  }
  // A B that every row block would pack again (read from its matrix, several row blocks too
  // tall to read it in place) is packed whole once instead, spread over the threads: the
  // same panels, so the same sums (2048^3: 11 packings of each panel become 1).
  SgemmArgs gp = g;
  std::unique_ptr<float[]> whole;
  if (g.batch == 1 && !g.b_packed && !g.b_pack && mb > 1 && mc > 2 * micro.mr && g.K > 0) {
    const int64_t panels = ceil_div(g.N, kMaxNR);
    whole.reset(new float[(size_t)(panels * g.K * kMaxNR)]);
    float* const dst = whole.get();
    const float* const B = g.b + (g.b_off ? g.b_off[0] : 0);
    ::ember::parallel_for(panels, 1, threads, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; p++) {
        int w = (int)std::min<int64_t>(kMaxNR, g.N - p * kMaxNR);
        pack_b(B + p * kMaxNR * g.b_cs, g.b_rs, g.b_cs, g.K, w, dst + p * g.K * kMaxNR);
      }
    });
    gp.b_packed = dst;
  }
  int64_t count = g.batch * mb * nb;
  std::atomic<int64_t> next{0};
  ::ember::parallel_for(threads, 1, threads, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
      int64_t mat = t / (mb * nb), rem = t % (mb * nb);
      int64_t jb = rem / mb, ib = rem % mb;  // neighbouring tasks share a column block
      run_block(gp, micro, mat, ib * mc, std::min(g.M, (ib + 1) * mc), jb * nc,
                std::min(g.N, (jb + 1) * nc));
    }
  });
}

void matmul_f32(const KernelCtx& ctx) { matmul_f32_with(ctx, gemm_micro_generic()); }
void gemm_f32(const KernelCtx& ctx) { gemm_f32_with(ctx, gemm_micro_generic()); }

void matmul_f32_with(const KernelCtx& ctx, const GemmMicro& micro) {
  const Tensor& a = ctx.input(0);  // [..., M, K] or [K]
  const Tensor& b = ctx.input(1);  // [..., K, N] or [K]
  Tensor& out = ctx.output(0);     // [batch..., M, N] without the dims of 1-D operands
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  EMBER_CHECK(!as.empty() && !bs.empty(), Internal, "[MatMul] rank-0 operand");
  bool a1 = as.size() == 1, b1 = bs.size() == 1;
  SgemmArgs g;
  g.M = a1 ? 1 : as[as.size() - 2];
  g.K = as.back();
  g.N = b1 ? 1 : bs.back();
  Shape a_batch(as.begin(), as.end() - (a1 ? 1 : 2));
  Shape b_batch(bs.begin(), bs.end() - (b1 ? 1 : 2));
  Shape batch(out.shape().begin(), out.shape().end() - (a1 ? 0 : 1) - (b1 ? 0 : 1));
  EMBER_CHECK((b1 ? bs[0] : bs[bs.size() - 2]) == g.K, Internal, "[MatMul] inner dims differ");
  int64_t nbatch = shape_numel(batch);
  if (nbatch == 0 || g.M == 0 || g.N == 0) return;
  g.a = a.ptr<float>();
  g.a_rs = g.K;
  g.b = b.ptr<float>();
  g.b_rs = g.N;
  g.c = out.ptr<float>();
  g.c_rs = g.N;
  std::vector<int64_t> offs;
  if (shape_numel(b_batch) == 1 && shape_numel(a_batch) == nbatch) {
    g.M *= nbatch;  // one weight matrix: fold A's batch dims into M
  } else {
    offs.resize(3 * nbatch);
    Shape sa = broadcast_strides(a_batch, batch), sb = broadcast_strides(b_batch, batch);
    int64_t i = 0;
    for (BroadcastIter it(batch, {sa, sb}); !it.done(); it.next(), i++) {
      offs[i] = it.off[0] * g.M * g.K;
      offs[nbatch + i] = it.off[1] * g.K * g.N;
      offs[2 * nbatch + i] = i * g.M * g.N;
    }
    g.batch = nbatch;
    g.a_off = offs.data();
    g.b_off = offs.data() + nbatch;
    g.c_off = offs.data() + 2 * nbatch;
  }
  sgemm(g, ctx.max_threads, micro);
}

void gemm_f32_with(const KernelCtx& ctx, const GemmMicro& micro) {
  const Tensor& a = ctx.input(0);  // [M, K] or [K, M] (transA)
  const Tensor& b = ctx.input(1);  // [K, N] or [N, K] (transB)
  Tensor& out = ctx.output(0);     // [M, N]
  const Attrs& at = ctx.node.attrs;
  bool ta = at.get_int("transA", 0) != 0, tb = at.get_int("transB", 0) != 0;
  EMBER_CHECK(a.rank() == 2 && b.rank() == 2 && out.rank() == 2, Internal,
              "[Gemm] operands must be 2-D");
  SgemmArgs g;
  g.M = out.dim(0);
  g.N = out.dim(1);
  g.K = ta ? a.dim(0) : a.dim(1);
  EMBER_CHECK((tb ? b.dim(1) : b.dim(0)) == g.K, Internal, "[Gemm] inner dims differ");
  g.a = a.ptr<float>();
  g.a_rs = ta ? 1 : g.K;
  g.a_cs = ta ? g.M : 1;
  g.b = b.ptr<float>();
  g.b_rs = tb ? 1 : g.N;
  g.b_cs = tb ? g.K : 1;
  g.c = out.ptr<float>();
  g.c_rs = g.N;
  g.alpha = (float)at.get_float("alpha", 1.0);
  g.beta = (float)at.get_float("beta", 1.0);
  if (ctx.has_input(2)) {
    const Tensor& c = ctx.input(2);  // broadcasts to [M, N]
    int64_t rows = c.rank() == 2 ? c.dim(0) : 1;
    int64_t cols = c.rank() == 0 ? 1 : c.dim(-1);
    EMBER_CHECK(c.rank() <= 2 && (rows == 1 || rows == g.M) && (cols == 1 || cols == g.N), Internal,
                "[Gemm] C ", shape_str(c.shape()), " does not broadcast to the output");
    g.bias = c.ptr<float>();
    g.bias_rs = rows == 1 ? 0 : cols;
    g.bias_cs = cols == 1 ? 0 : 1;
  }
  sgemm(g, ctx.max_threads, micro);
}

void fused_matmul_f32_with(const KernelCtx& ctx, const GemmMicro& micro, const GemmActs& acts) {
  const Tensor& a = ctx.input(0);  // [..., K]
  const Tensor& w = ctx.input(1);  // [ceil(N / 16), K, 16] (sgemm_pack_b), or [K, N] unpacked
  Tensor& out = ctx.output(0);     // [..., N]
  const bool packed = fused_matmul_packed(ctx.node);
  SgemmArgs g;
  g.K = packed ? w.dim(1) : w.dim(0);
  g.N = ctx.node.attrs.get_int("n", 0);
  g.M = g.N ? out.numel() / g.N : 0;
  if (g.M == 0 || g.N == 0) return;
  g.a = a.ptr<float>();
  g.a_rs = g.K;
  // A device session's FusedMatMul keeps W plain (the device reads it so); run here, it is
  // packed per call, as MatMul's kernels pack B.
  Tensor panels;
  if (!packed) {
    panels = Tensor::empty(DType::F32, {(g.N + 15) / 16, g.K, 16});
    sgemm_pack_b(w.ptr<float>(), g.N, 1, g.K, g.N, panels.ptr<float>());
  }
  g.b_packed = packed ? w.ptr<float>() : panels.ptr<float>();
  g.c = out.ptr<float>();
  g.c_rs = g.N;
  if (ctx.has_input(2)) {
    g.bias = ctx.input(2).ptr<float>();  // [N]
    g.bias_cs = 1;
    g.beta = 1.0f;
  }
  g.act = acts.for_node(ctx.node);
  sgemm(g, ctx.max_threads, micro);
}

void fused_matmul_f32(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  fused_matmul_f32_with(ctx, gemm_micro_generic(), acts);
}

}  // namespace ember::cpu
