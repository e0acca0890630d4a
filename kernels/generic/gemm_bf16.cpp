// bf16 GEMM driver for FusedMatMul at precision="bf16" (reference: the FusedMatMul row in
// cpp/src/ops/ops_fused.cpp). Tasks are (MC-row block, NC-column block) on the shared pool
// (gemm_blocks). A is rounded to bf16 once per call, row block by row block by the first task
// that needs it (pairs (k, k + 1) are adjacent bf16, so a row-major bf16 copy is already the
// pair layout). Inside a task K is cut into KC slices: each pair of 16-wide W panels
// (pre-packed at load, bgemm_pack_b) meets every MR-row strip in turn. K is never split: a new
// KC slice resumes from the float stored in C, so each element is one chain whatever M or the
// tiling.
#include "kernels/generic/gemm_bf16.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "ember/thread_pool.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int kMaxMR = 16;
constexpr int64_t kNR = 32;    // two 16-wide panels per micro-kernel call
constexpr int64_t kKP = 192;   // pairs per KC slice: two panels' slice is 24 KiB (L1)
constexpr int64_t kMC = 128;
constexpr int64_t kNC = 256;

// Generic micro-kernel: the vdpbf16ps chain in plain floats (products of bf16 are exact in
// fp32, so a * b + acc rounds once whether or not the compiler fuses it).
void micro_generic(int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t pstride,
                   float* c, int64_t ldc, int rows, int cols, bool accumulate) {
  for (int i = 0; i < rows; i++) {
    for (int j = 0; j < cols; j++) {
      const uint32_t* bj = b + (j >= 16 ? pstride : 0) + (j % 16);
      float acc = accumulate ? c[i * ldc + j] : 0.0f;
      for (int64_t q = 0; q < kp; q++) {
        uint32_t av = a[i * lda + q], bv = bj[q * 16];
        acc += bf16_to_f32((uint16_t)(av >> 16)) * bf16_to_f32((uint16_t)(bv >> 16));
        acc += bf16_to_f32((uint16_t)av) * bf16_to_f32((uint16_t)bv);
        if (acc != acc) break;  // NOTE: as in the reference: no g++ 12 vectorised in-order sum
      }
      c[i * ldc + j] = acc;
    }
  }
}

void round_generic(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = f32_to_bf16(x[i]);
}

void round_pairs_generic(const float* x0, const float* x1, int64_t n, uint32_t* out,
                         int64_t pstride) {
  for (int64_t p = 0; p < ceil_div(n, 16); p++)
    for (int64_t j = 0; j < 16; j++) {
      int64_t i = 16 * p + j;
      out[p * pstride + j] =
          i < n ? (uint32_t)f32_to_bf16(x0[i]) | (uint32_t)f32_to_bf16(x1[i]) << 16 : 0u;
    }
}

// bias and activation on C[m0:m1, n0:n1] once its sums are complete.
void epilogue(const BgemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (!g.bias && !g.act) return;
  for (int64_t i = m0; i < m1; i++) {
    float* ci = g.c + i * g.c_rs;
    if (g.bias && g.bias_per_row) {
      const float bi = g.bias[i];
      for (int64_t j = n0; j < n1; j++) ci[j] += bi;
    } else if (g.bias) {
      for (int64_t j = n0; j < n1; j++) ci[j] += g.bias[j];
    }
    if (g.act) g.act(ci + n0, ci + n0, n1 - n0);
  }
}

// A rows [m0, m1) -> bf16 pairs at ap (row stride kp pairs); an odd K's last pair gets a zero
// high half.
void round_rows(const BgemmArgs& g, const BgemmMicro& micro, int64_t m0, int64_t m1,
                uint32_t* ap, int64_t kp) {
  for (int64_t i = m0; i < m1; i++) {
    uint16_t* dst = reinterpret_cast<uint16_t*>(ap + i * kp);
    micro.round_a(g.a + i * g.a_rs, dst, g.K);
    if (g.K < 2 * kp) dst[g.K] = 0;
  }
}

// C[m0:m1, n0:n1] from A's bf16 pairs ap [M, kp] (rounded once per call, shared by the tasks).
void run_block(const BgemmArgs& g, const BgemmMicro& micro, const uint32_t* ap, int64_t m0,
               int64_t m1, int64_t n0, int64_t n1) {
  const int64_t kp = ceil_div(g.K, 2);
  const int mr = micro.mr;
  for (int64_t q0 = 0; q0 < kp; q0 += kKP) {
    const int64_t kpc = std::min(kKP, kp - q0);
    const bool accumulate = q0 > 0;
    for (int64_t j0 = n0; j0 < n1; j0 += kNR) {
      const int cols = (int)std::min(kNR, n1 - j0);
      const uint32_t* bp =
          reinterpret_cast<const uint32_t*>(g.b_packed) + ((j0 / 16) * kp + q0) * 16;
      for (int64_t i0 = m0; i0 < m1; i0 += mr) {
        const int r = (int)std::min<int64_t>(mr, m1 - i0);
        micro.fn(kpc, ap + i0 * kp + q0, kp, bp, kp * 16, g.c + i0 * g.c_rs + j0, g.c_rs, r, cols,
                 accumulate);
      }
    }
  }
  if (g.K == 0)
    for (int64_t i = m0; i < m1; i++) std::fill(g.c + i * g.c_rs + n0, g.c + i * g.c_rs + n1, 0.0f);
  epilogue(g, m0, m1, n0, n1);
}

}  // namespace

const BgemmMicro& bgemm_micro_generic() {
  static const BgemmMicro m{4, micro_generic, round_generic, round_pairs_generic,
                            "generic bf16 4x32"};
  return m;
}

Shape bgemm_packed_b_shape(int64_t K, int64_t N) {
  return {ceil_div(N, 16), ceil_div(K, 2), 16, 2};
}

void bgemm_pack_b(const float* w, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* out) {
  const int64_t kp = ceil_div(K, 2);
  for (int64_t p = 0; p < ceil_div(N, 16); p++)
    for (int64_t q = 0; q < kp; q++)
      for (int64_t j = 0; j < 16; j++)
        for (int64_t e = 0; e < 2; e++) {
          int64_t k = 2 * q + e, n = 16 * p + j;
          out[((p * kp + q) * 16 + j) * 2 + e] =
              k < K && n < N ? f32_to_bf16(w[k * rs + n * cs]) : uint16_t(0);
        }
}

void bgemm_pack_b_with(const float* w, int64_t rs, int64_t cs, int64_t K, int64_t N, uint16_t* out,
                       const BgemmMicro& micro) {
  const int64_t kp = ceil_div(K, 2), np = ceil_div(N, 16);
  uint32_t* out32 = reinterpret_cast<uint32_t*>(out);
  if (rs == 1) {
    // Column n is contiguous over k: rounded, it is already column n's run of pairs.
    thread_local std::vector<uint16_t> col;
    col.assign(2 * kp, 0);
    for (int64_t n = 0; n < np * 16; n++) {
      uint32_t* dst = out32 + (n / 16) * kp * 16 + n % 16;
      if (n >= N) {
        for (int64_t q = 0; q < kp; q++) dst[q * 16] = 0;
        continue;
      }
      micro.round_a(w + n * cs, col.data(), K);
      const uint32_t* pairs = reinterpret_cast<const uint32_t*>(col.data());
      for (int64_t q = 0; q < kp; q++) dst[q * 16] = pairs[q];
    }
  } else if (cs == 1) {
    // Rows 2q and 2q + 1 rounded into pair line q of every panel (an odd K's last row pairs
    // with zeros).
    thread_local std::vector<float> zeros;
    if (K % 2) zeros.assign(N, 0.0f);
    for (int64_t q = 0; q < kp; q++) {
      const float* x1 = 2 * q + 1 < K ? w + (2 * q + 1) * rs : zeros.data();
      micro.round_pairs(w + 2 * q * rs, x1, N, out32 + q * 16, kp * 16);
    }
  } else {
    bgemm_pack_b(w, rs, cs, K, N, out);
  }
}

void bgemm(const BgemmArgs& g, int max_threads, const BgemmMicro& micro) {
  if (g.M <= 0 || g.N <= 0) return;
  EMBER_CHECK(micro.mr <= kMaxMR, Internal, "[bgemm] micro-kernel ", micro.name, " has mr ",
              micro.mr);
  int threads = std::max(1, std::min(max_threads, thread_pool_size()));
  double flops = 2.0 * (double)g.M * (double)g.N * (double)std::max<int64_t>(g.K, 1);
  if (flops < 2e5) threads = 1;  // the pool costs more than it saves
  // A few blocks per thread: a worker that wakes late joins for what is left (as sgemm).
  int split = threads > 1 && flops < 1e8 ? threads * 4 : threads;
  auto [mc, nc, mb, nb] = gemm_blocks(1, g.M, g.N, micro.mr, kNR, kMC, kNC, split);
  // A is rounded once per call into pairs shared by the tasks: the first task that needs a row
  // block rounds it; a task that finds it claimed waits for the claimer, which is running.
  const int64_t kp = ceil_div(g.K, 2);
  // Kept per calling thread up to 4 MiB; larger ones are freed after the call.
  thread_local std::vector<uint32_t> ap_kept;
  std::vector<uint32_t> ap_big;
  std::vector<uint32_t>& ap_buf = g.M * kp <= (int64_t(1) << 20) ? ap_kept : ap_big;
  ap_buf.resize(g.M * kp);
  uint32_t* ap = ap_buf.data();
  std::unique_ptr<std::atomic<int>[]> state(new std::atomic<int>[mb]);  // 0, 1 claimed, 2 done
  for (int64_t i = 0; i < mb; i++) state[i].store(0, std::memory_order_relaxed);
  const int64_t count = mb * nb;
  std::atomic<int64_t> next{0};
  ::ember::parallel_for(threads, 1, threads, [&](int64_t, int64_t) {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
      int64_t jb = t / mb, ib = t % mb;  // neighbouring tasks share a column block
      int64_t m0 = ib * mc, m1 = std::min(g.M, (ib + 1) * mc);
      int expected = 0;
      if (state[ib].compare_exchange_strong(expected, 1, std::memory_order_acquire)) {
        round_rows(g, micro, m0, m1, ap, kp);
        state[ib].store(2, std::memory_order_release);
      } else {
        while (state[ib].load(std::memory_order_acquire) != 2) std::this_thread::yield();
      }
      run_block(g, micro, ap, m0, m1, jb * nc, std::min(g.N, (jb + 1) * nc));
    }
  });
}

bool fused_matmul_bf16_supports(const InferCtx& ctx) {
  return ctx.num_inputs() > 1 && ctx.in[1].dtype == DType::BF16;
}

void fused_matmul_bf16_with(const KernelCtx& ctx, const BgemmMicro& micro, const GemmActs& acts) {
  const Tensor& a = ctx.input(0);  // [..., K]
  const Tensor& w = ctx.input(1);  // [ceil(N / 16), ceil(K / 2), 16, 2] bf16 (bgemm_pack_b)
  Tensor& out = ctx.output(0);     // [..., N]
  BgemmArgs g;
  g.K = a.dim(-1);
  g.N = ctx.node.attrs.get_int("n", 0);
  g.M = g.N ? out.numel() / g.N : 0;
  if (g.M == 0 || g.N == 0) return;
  g.a = a.ptr<float>();
  g.a_rs = g.K;
  g.b_packed = static_cast<const uint16_t*>(w.data());
  g.c = out.ptr<float>();
  g.c_rs = g.N;
  if (ctx.has_input(2)) g.bias = ctx.input(2).ptr<float>();  // [N]
  g.act = acts.for_node(ctx.node);
  bgemm(g, ctx.max_threads, micro);
}

void fused_matmul_bf16(const KernelCtx& ctx) {
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  fused_matmul_bf16_with(ctx, bgemm_micro_generic(), acts);
}

}  // namespace ember::cpu
