// FusedConv's driver (conv_packed_f32.h; reference: the FusedConv row in
// cpp/src/ops/ops_fused_conv.cpp). Tasks are (image, block of output rows, block of 32-wide
// weight panels), claimed one at a time. A task builds its rows of P (im2row, all K: they
// stay in L2), then streams each weight panel once, KC slice by slice (kc x 32, L1-sized),
// each slice meeting every strip of up to MR rows in turn on the micro-kernel's two-panel
// form, into a [rows, 32] tile of Y^T; the finished tile gets bias and activation and is
// written transposed into Y's planes. Strips are evened out (49 rows: 5 of 10 or 9, not 4 of
// 12 and a 1-row one): a strip's height never changes its sums.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "ember/thread_pool.h"
#include "kernels/generic/conv_packed_f32.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int64_t kKC = 256;  // a panel's slice: 256 x 32 floats (32 KiB) stays in L1
constexpr int64_t kMC = 192;  // output positions per task (rounded to strips)
// A task's rows of P (all K) stay under 1 MiB: in L2 while every panel passes over them.
constexpr int64_t kMaxPatch = int64_t(1) << 18;
constexpr int64_t kNC = 256;  // output channels per task: 8 panels

struct Geom {
  int64_t C, H, W, M, K, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW;
};

// ap[i * kc + t] <- P[o0 + i, k0 + t] for i < rows: the input under tap k = (c, ky, kx) at
// output position o (zero in the padding). x: one image [C, H, W].
void pack_rows(const Geom& g, const float* x, int64_t o0, int64_t rows, int64_t k0, int64_t kc,
               float* ap) {
  const int64_t taps = g.kh * g.kw;
  for (int64_t i = 0; i < rows; i++) {
    const int64_t o = o0 + i, oy = o / g.OW, ox = o % g.OW;
    const int64_t iy0 = oy * g.sh - g.pt, ix0 = ox * g.sw - g.pl;
    // Whole kernel rows inside X: copies without checks (all but the border outputs).
    const bool inside = ix0 >= 0 && ix0 + (g.kw - 1) * g.dw < g.W;
    float* dst = ap + i * kc;
    int64_t c = k0 / taps, ky = k0 % taps / g.kw, kx = k0 % g.kw;
    for (int64_t t = 0; t < kc;) {
      const int64_t n = std::min(g.kw - kx, kc - t), iy = iy0 + ky * g.dh;
      if (iy < 0 || iy >= g.H) {
        std::fill(dst + t, dst + t + n, 0.0f);
      } else {
        const float* src = x + (c * g.H + iy) * g.W + ix0 + kx * g.dw;
        if (inside && g.dw == 1) {
          // Fixed-size copies for ResNet's 3- and 7-wide kernels (a loop of run-time length
          // costs more per float than the stem's GEMM does).
          if (n == 3) std::memcpy(dst + t, src, 3 * sizeof(float));
          else if (n == 7) std::memcpy(dst + t, src, 7 * sizeof(float));
          else std::copy(src, src + n, dst + t);
        } else {
          for (int64_t j = 0; j < n; j++) {
            const int64_t ix = ix0 + (kx + j) * g.dw;
            dst[t + j] = ix >= 0 && ix < g.W ? src[j * g.dw] : 0.0f;
          }
        }
      }
      t += n;
      kx = 0;
      if (++ky == g.kh) ky = 0, c++;
    }
  }
}

// A task's strip: rows [i0, i0 + rows) of its block; taps2: the offset of its first window
// in the padded image.
struct Strip {
  int64_t i0;
  int rows;
  int64_t base;
};

// Rows [o0, o0 + rows) split into strips of at most mr, as even as possible.
struct Strips {
  int64_t count, base, extra;  // `extra` strips of base + 1 rows, then strips of base rows
  Strips(int64_t rows, int64_t mr) {
    count = ceil_div(rows, mr);
    base = rows / count;
    extra = rows % count;
  }
  int64_t start(int64_t s) const { return s * base + std::min(s, extra); }
  int64_t height(int64_t s) const { return base + (s < extra ? 1 : 0); }
};

// The padded plane's extent along one axis: the leading pad, the input, and as much of the
// trailing pad as the last window reaches.
int64_t padded(int64_t pad, int64_t in, int64_t out, int64_t s, int64_t k, int64_t d) {
  return pad + in + std::max<int64_t>(0, (out - 1) * s + (k - 1) * d + 1 - pad - in);
}

// Planes [q0, q1) of X (H x W) into xp's Hp x Wp planes, the padding zero.
void pad_planes(const Geom& g, const float* x, int64_t q0, int64_t q1, int64_t Hp, int64_t Wp,
                float* xp) {
  for (int64_t q = q0; q < q1; q++) {
    float* d = xp + q * Hp * Wp;
    const float* s = x + q * g.H * g.W;
    std::fill(d, d + g.pt * Wp, 0.0f);
    for (int64_t iy = 0; iy < g.H; iy++) {
      float* row = d + (g.pt + iy) * Wp;
      std::fill(row, row + g.pl, 0.0f);
      std::copy(s + iy * g.W, s + (iy + 1) * g.W, row + g.pl);
      std::fill(row + g.pl + g.W, row + Wp, 0.0f);
    }
    std::fill(d + (g.pt + g.H) * Wp, d + Hp * Wp, 0.0f);
  }
}

// Strips of outputs [o0, o0 + rows) for taps2, none across an output row (so a strip's windows
// lie sw apart in the padded plane, Wp wide).
void row_strips(const Geom& g, int64_t o0, int64_t rows, int64_t mr, int64_t Wp,
                std::vector<Strip>* strips) {
  for (int64_t o = o0; o < o0 + rows;) {
    const int64_t oy = o / g.OW, ox = o % g.OW;
    const int64_t len = std::min(o0 + rows, (oy + 1) * g.OW) - o;
    const Strips st(len, mr);
    for (int64_t s = 0; s < st.count; s++)
      strips->push_back({o - o0 + st.start(s), (int)st.height(s),
                         oy * g.sh * Wp + (ox + st.start(s)) * g.sw});
    o += len;
  }
}

}  // namespace

void conv_packed_weights_f32(const float* w, int64_t M, int64_t K, float* wp) {
  for (int64_t p = 0; p < ceil_div(M, kConvPanel); p++)
    for (int64_t k = 0; k < K; k++) {
      float* dst = wp + (p * K + k) * kConvPanel;
      for (int64_t j = 0; j < kConvPanel; j++) {
        const int64_t m = p * kConvPanel + j;
        dst[j] = m < M ? w[m * K + k] : 0.0f;
      }
    }
}

void conv_tile_store(const float* tile, int64_t rows, int64_t cols, const float* bias, bool relu,
                     float* y, int64_t ys) {
  for (int64_t m = 0; m < cols; m++) {
    const float* src = tile + m;
    float* dst = y + m * ys;
    for (int64_t i = 0; i < rows; i++) {
      const float v = bias ? src[i * kConvPanel] + bias[m] : src[i * kConvPanel];
      dst[i] = relu && v < 0.0f ? 0.0f : v;
    }
  }
}

void fused_conv_f32(const KernelCtx& ctx) { fused_conv_f32_with(ctx, gemm_micro_generic()); }

void fused_conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro, ConvTileStore store) {
  const bool relu = ctx.node.attrs.get_string("activation", "none") == "relu";
  if (ctx.input(1).rank() == 4)  // plain weights: Conv's GEMM, the relu in its epilogue
    return conv_f32_with(ctx, micro, relu ? relu_f32_array : nullptr);
  InferCtx ic{ctx.node, {}, {}};
  const ConvGeom cg = fused_conv_geom(ic, ctx.input(0).shape());
  const float* x = ctx.input(0).ptr<float>();   // [N, C, H, W]
  const float* wp = ctx.input(1).ptr<float>();  // [ceil(M / 32), K, 32]
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [M]
  float* y = ctx.output(0).ptr<float>();        // [N, M, OH, OW]
  const Geom g{cg.C, cg.in[1], cg.in[2], cg.M, cg.C * cg.k[1] * cg.k[2], cg.k[1], cg.k[2],
               cg.stride[1], cg.stride[2], cg.dil[1], cg.dil[2], cg.pad[1], cg.pad[2],
               cg.out[1], cg.out[2]};
  const int64_t N = cg.N, osz = g.OH * g.OW, panels = ceil_div(g.M, kConvPanel);
  if (N == 0 || g.M == 0 || osz == 0) return;
  int threads = std::max(1, std::min(ctx.max_threads, thread_pool_size()));
  // With a gathering micro-kernel (taps2) P is read in place from X padded: a copy with the
  // padding written out (Hp x Wp planes), so every window lies inside it, and off[k] the
  // offset of tap k = (c, ky, kx) from a window's corner. Else P's rows are packed per task.
  const int64_t Hp = padded(g.pt, g.H, g.OH, g.sh, g.kh, g.dh);
  const int64_t Wp = padded(g.pl, g.W, g.OW, g.sw, g.kw, g.dw);
  const int64_t plane = Hp * Wp;
  const bool taps = micro.taps2 && g.C * plane < (int64_t(1) << 31);
  // The caller's buffer, kept between calls (as Winograd's V); workers reach it by pointer.
  // No padding (1x1 downsampling convs): X itself.
  thread_local std::vector<float> padded_buf;
  const bool in_place = Hp == g.H && Wp == g.W && g.pt == 0 && g.pl == 0;
  std::vector<int32_t> off;
  if (taps && !in_place) {
    const size_t size = (size_t)(N * g.C * plane);
    if (padded_buf.size() < size) padded_buf.resize(size);
    float* const xp = padded_buf.data();
    ::ember::parallel_for(N * g.C, std::max<int64_t>(1, 16384 / std::max<int64_t>(plane, 1)),
                          threads, [&](int64_t q0, int64_t q1) {
      pad_planes(g, x, q0, q1, Hp, Wp, xp);
    });
  }
  if (taps) {
    off.resize((size_t)g.K);
    for (int64_t k = 0; k < g.K; k++) {
      const int64_t c = k / (g.kh * g.kw), ky = k / g.kw % g.kh, kx = k % g.kw;
      off[k] = (int32_t)(c * plane + ky * g.dh * Wp + kx * g.dw);
    }
  }
  const float* const xpad = in_place ? x : padded_buf.data();
  const int64_t mc_max =
      taps ? kMC : std::clamp(kMaxPatch / std::max<int64_t>(g.K, 1), (int64_t)micro.mr, kMC);
  // Blocks per image, claimed one at a time; columns a multiple of 32. The blocks never change
  // the sums. NOTE: 4 blocks a thread (slack for a late worker) measured 2% slower on ResNet-18.
  auto [mc, nc, mb, nb] =
      gemm_blocks(N, osz, panels * kConvPanel, micro.mr, kConvPanel, mc_max, kNC, threads);
  const int64_t count = N * mb * nb;
  std::atomic<int64_t> next{0};
  ::ember::parallel_for(threads, 1, threads, [&](int64_t, int64_t) {
    thread_local std::vector<float> ap, tile;
    thread_local std::vector<Strip> strips;
    if (!taps) ap.resize((size_t)(mc * g.K));
    tile.resize((size_t)(mc * kConvPanel));
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
      const int64_t n = t / (mb * nb), rem = t % (mb * nb);
      const int64_t jb = rem / mb, ib = rem % mb;  // neighbouring tasks share weight panels
      const int64_t o0 = ib * mc, rows = std::min(osz, o0 + mc) - o0;
      const int64_t p0 = jb * nc / kConvPanel, p1 = std::min(panels, (jb + 1) * nc / kConvPanel);
      strips.clear();
      if (taps) {
        row_strips(g, o0, rows, micro.mr, Wp, &strips);
      } else {
        const Strips st(rows, micro.mr);
        for (int64_t s = 0; s < st.count; s++)
          strips.push_back({st.start(s), (int)st.height(s), 0});
        // P's rows slice by slice ([slice][rows][kc]): a strip's slice is one contiguous run
        // (rows K floats apart map to few L1 sets: 4608 floats is 4.5 times 4 KiB).
        for (int64_t k0 = 0; k0 < g.K; k0 += kKC)
          pack_rows(g, x + n * g.C * g.H * g.W, o0, rows, k0, std::min(kKC, g.K - k0),
                    ap.data() + rows * k0);
      }
      const int64_t ns = (int64_t)strips.size();
      const float* xn = xpad + n * g.C * plane;
      float* c = tile.data();
      for (int64_t p = p0; p < p1; p++) {
        const float* wpp = wp + p * g.K * kConvPanel;
        if (g.K == 0) std::fill(c, c + rows * kConvPanel, 0.0f);
        for (int64_t k0 = 0; k0 < g.K; k0 += kKC) {
          const int64_t kc = std::min(kKC, g.K - k0);
          const float* b = wpp + k0 * kConvPanel;
          // The panel's next slice (the next panel's first one after its last: panels lie
          // one after the other), a share per strip: weights are often cold (a late layer's
          // outgrow L3), and the hardware prefetchers lag at each new slice. Spread over the
          // taps2 kernel's steps, not issued in a burst before it: ResNet-18 at 2 threads
          // 8.74 -> 8.60 ms (A/B in one process).
          const float* ahead = b + kc * kConvPanel;
          const int64_t lines = p + 1 < p1 || k0 + kc < g.K ? 2 * kKC : 0;
          for (int64_t s = 0; s < ns; s++) {
            const int64_t l0 = s * lines / ns, l1 = (s + 1) * lines / ns;
            const int64_t i0 = strips[s].i0;
            const int r = strips[s].rows;
            float* ck = c + i0 * kConvPanel;
            if (taps) {  // its share of the prefetches spread over the micro-kernel's steps
              micro.taps2(kc, xn + strips[s].base, g.sw, off.data() + k0, b, kConvPanel, 16, ck,
                          kConvPanel, r, k0 > 0, ahead + l0 * 16, std::min(l1 - l0, 2 * kc));
              continue;
            }
            for (int64_t l = l0; l < l1; l++) __builtin_prefetch(ahead + l * 16);
            const float* a = ap.data() + rows * k0 + i0 * kc;
            if (micro.fn2) {
              micro.fn2(kc, a, kc, b, kConvPanel, 16, ck, kConvPanel, r, k0 > 0);
            } else {
              micro.fn(kc, a, kc, b, kConvPanel, ck, kConvPanel, r, k0 > 0);
              micro.fn(kc, a, kc, b + 16, kConvPanel, ck + 16, kConvPanel, r, k0 > 0);
            }
          }
        }
        // Y[n, 32 p.., o0..] while the tile is in L1.
        const int64_t m0 = p * kConvPanel;
        store(c, rows, std::min(g.M - m0, kConvPanel), bias ? bias + m0 : nullptr, relu,
              y + (n * g.M + m0) * osz + o0, osz);
      }
    }
  });
}

}  // namespace ember::cpu
