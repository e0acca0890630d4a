// WinogradConv's driver and generic tile transforms (winograd_f32.h; reference: the
// WinogradConv row in cpp/src/ops/ops_winograd.cpp). Tasks are (image, block of T tiles,
// range of output channels) claimed one at a time. A task transforms its tiles' windows into
// V (16 planes of [C, T] as the GEMM's 16-wide B panels; each input row staged with its zero
// padding), runs the 16 GEMMs U[xi] [rows, C] @ V[xi] on the micro-kernel into P (16 planes
// of [rows, T]), and transforms P into output tiles. Tiles are numbered row-major over the
// image's tile grid, so a block may hold parts of several tile rows.
#include "kernels/generic/winograd_f32.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "ember/thread_pool.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

// Input channels per micro-kernel call. Each call first prefetches the same 64 columns of the
// next strip's rows: U mostly streams from memory (ResNet-18's 3x3 filters take 78 MB in this
// form), and the hardware prefetchers keep only ~7 GB/s per core flowing into a strip's 6
// interleaved row streams (a microbenchmark: 6.6 -> 8.7 GB/s, 53 -> 70 GFLOP/s).
constexpr int64_t kChunk = 64;

void input_generic(const float* s, int64_t ss, int64_t n, float* v, int64_t vs) {
  for (int64_t t = 0; t < n; t++) {
    float r[4][4];  // r = d B, row by row
    for (int i = 0; i < 4; i++) {
      const float* d = s + i * ss + 2 * t;
      r[i][0] = d[0] - d[2];
      r[i][1] = d[1] + d[2];
      r[i][2] = d[2] - d[1];
      r[i][3] = d[1] - d[3];
    }
    for (int k = 0; k < 4; k++) {  // B^T r
      v[k * vs + t] = r[0][k] - r[2][k];
      v[(4 + k) * vs + t] = r[1][k] + r[2][k];
      v[(8 + k) * vs + t] = r[2][k] - r[1][k];
      v[(12 + k) * vs + t] = r[1][k] - r[3][k];
    }
  }
}

void output_generic(const float* m, int64_t ms, int64_t n, float bias, bool relu, float* y0,
                    float* y1, const float* r0, const float* r1) {
  for (int64_t t = 0; t < n; t++) {
    float p[4][2];  // p = M A, row by row
    for (int j = 0; j < 4; j++) {
      const float* mj = m + 4 * j * ms + t;
      p[j][0] = mj[0] + mj[ms] + mj[2 * ms];
      p[j][1] = mj[ms] - mj[2 * ms] - mj[3 * ms];
    }
    float y[4] = {p[0][0] + p[1][0] + p[2][0] + bias, p[0][1] + p[1][1] + p[2][1] + bias,
                  p[1][0] - p[2][0] - p[3][0] + bias, p[1][1] - p[2][1] - p[3][1] + bias};
    if (r0) {
      y[0] += r0[2 * t];
      y[1] += r0[2 * t + 1];
      y[2] += r1[2 * t];
      y[3] += r1[2 * t + 1];
    }
    if (relu)
      for (float& v : y) v = v < 0.0f ? 0.0f : v;
    y0[2 * t] = y[0];
    y0[2 * t + 1] = y[1];
    y1[2 * t] = y[2];
    y1[2 * t + 1] = y[3];
  }
}

struct Geom {
  int64_t N, C, H, W, M, pt, pl, OH, OW, th, tw;
};

// Tiles per block: U streams through once per block (T / 2 flops per byte of U), so as many
// as keep V near L2's size (16 C T floats, 16..64 tiles), then evened out over the image's
// blocks.
int64_t block_tiles(const Geom& g) {
  int64_t cap = std::clamp<int64_t>(16384 / std::max<int64_t>(g.C, 1) / 16 * 16, 16, 64);
  int64_t nt = g.th * g.tw, blocks = ceil_div(nt, cap);
  return ceil_div(ceil_div(nt, blocks), 16) * 16;
}

// One task: tiles [i0, i1) of image n, output channels [m0, m1).
struct Task {
  const Geom& g;
  const GemmMicro& micro;
  const WinogradTiles& tiles;
  const float* x;  // [N, C, H, W]
  const float* u;  // [16, M, C]
  const float* bias;
  bool relu;
  float* y;  // [N, M, OH, OW]
  int64_t T;
  const float* res = nullptr;  // [N, M, OH, OW], added before relu (optional)

  // Staging: 4 window rows of stage_row() floats (the tile kernels read whole 8-tile steps,
  // from any tile of a row: 14 floats of slack).
  int64_t stage_row() const { return 2 * ceil_div(g.tw, 8) * 8 + 16; }
  int64_t stage_size() const { return 4 * stage_row(); }

  // Floats from V[xi] to V[xi + 1] and from P[xi] to P[xi + 1] (rows output channels): one
  // cache line more than the data, so the 16 transforms' streams do not share L1 sets (a
  // multiple of 4 KiB would put all 16 in one 8-way set). P's covers the output kernels'
  // reads past the last tile (a whole 8-tile step).
  int64_t v_stride() const { return T / 16 * g.C * kRow + 16; }
  int64_t p_stride(int64_t rows) const { return rows * T + 16; }

  // V[xi] as the GEMM's B panels: [T / 16][C][kRow] (tile j of the block at panel j / 16, lane
  // j % 16), so the micro-kernel reads each panel in order. A panel row has 8 floats of slack
  // for the 8-tile steps of the tile kernels that start at lane 8..15.
  static constexpr int64_t kRow = 24;
  float* v_at(float* v, int64_t c, int64_t j) const {
    return v + (j / 16 * g.C + c) * kRow + j % 16;
  }

  // V's rows c0..c1-1 (every xi and panel) for tiles [i0, i1) of image n; tiles past i1 - i0
  // in the last panel zero.
  void transform_input(int64_t n, int64_t i0, int64_t i1, int64_t c0, int64_t c1, float* v,
                       float* stage) const {
    const int64_t cols = i1 - i0, ss = stage_row();
    const int64_t vs = v_stride();
    for (int64_t c = c0; c < c1; c++) {
      const float* xc = x + (n * g.C + c) * g.H * g.W;
      for (int64_t ty = i0 / g.tw; ty * g.tw < i1; ty++) {
        int64_t ta = std::max(i0 - ty * g.tw, int64_t(0)), tb = std::min(g.tw, i1 - ty * g.tw);
        int64_t x0 = 2 * ta - g.pl, len = 2 * (tb - ta) + 2;
        for (int r = 0; r < 4; r++) {  // the window rows, zero outside X
          float* s = stage + r * ss;
          int64_t iy = 2 * ty - g.pt + r;
          int64_t a = std::clamp(-x0, int64_t(0), len), b = std::clamp(g.W - x0, a, len);
          if (iy < 0 || iy >= g.H) a = b = 0;
          std::fill(s, s + a, 0.0f);
          if (b > a) std::memcpy(s + a, xc + iy * g.W + x0 + a, (size_t)(b - a) * 4);
          std::fill(s + b, s + len, 0.0f);
        }
        // Tiles j0.. of the block, cut where panels end.
        for (int64_t j = ty * g.tw + ta - i0, j1 = j + tb - ta; j < j1;) {
          int64_t e = std::min(j1, (j / 16 + 1) * 16), off = j - (ty * g.tw + ta - i0);
          tiles.input(stage + 2 * off, ss, e - j, v_at(v, c, j), vs);
          j = e;
        }
      }
    }
    if (cols % 16)  // after the steps that may have run past the last tile
      for (int64_t xi = 0; xi < 16; xi++)
        for (int64_t c = c0; c < c1; c++) {
          float* row = v_at(v + xi * vs, c, cols);
          std::fill(row, row + 16 - cols % 16, 0.0f);
        }
  }

  // P[xi] [m1 - m0][T] = U[xi][m0:m1] @ V[xi], every element summed over c in order. Each
  // strip of U's rows (contiguous) meets every panel of V[xi] while in L1: U streams from
  // memory once per block, V[xi] from L2.
  void multiply(int64_t cols, int64_t m0, int64_t m1, const float* v, float* p) const {
    const int64_t rows = m1 - m0, panels = ceil_div(cols, 16), mr = micro.mr;
    for (int64_t xi = 0; xi < 16; xi++) {
      const float* a = u + (xi * g.M + m0) * g.C;
      const float* b = v + xi * v_stride();
      float* c = p + xi * p_stride(rows);
      if (g.C == 0)  // no input channels: every sum is 0 (the output is the bias)
        for (int64_t i = 0; i < rows; i++) std::fill(c + i * T, c + i * T + panels * 16, 0.0f);
      for (int64_t i = 0; i < rows && g.C > 0; i += mr) {
        const int r = (int)std::min(mr, rows - i);
        // The next strip: this one's successor, or the first of the next xi.
        const float* next = i + mr < rows ? a + (i + mr) * g.C
                            : xi < 15     ? u + ((xi + 1) * g.M + m0) * g.C
                                          : nullptr;
        const int next_rows = (int)std::min(mr, i + mr < rows ? rows - i - mr : rows);
        for (int64_t k0 = 0; k0 < g.C; k0 += kChunk) {
          const int64_t kc = std::min(kChunk, g.C - k0);
          for (int q = 0; next && q < next_rows; q++)
            for (int64_t k = k0; k < k0 + kc; k += 16) __builtin_prefetch(next + q * g.C + k);
          for (int64_t j = 0; j < panels; j++) {
            const float* bj = b + (j * g.C + k0) * kRow;
            if (micro.fn2 && j + 1 < panels) {  // two panels at once: the same sums
              micro.fn2(kc, a + i * g.C + k0, g.C, bj, kRow, g.C * kRow, c + i * T + 16 * j, T,
                        r, k0 > 0);
              j++;
              continue;
            }
            micro.fn(kc, a + i * g.C + k0, g.C, bj, kRow, c + i * T + 16 * j, T, r, k0 > 0);
          }
        }
      }
    }
  }

  // Output tiles [i0, i1) of image n for channels [m0, m1) from P; edge tiles clipped.
  void transform_output(int64_t n, int64_t i0, int64_t i1, int64_t m0, int64_t m1,
                        const float* p, float* stage) const {
    const int64_t ms = p_stride(m1 - m0);
    for (int64_t m = m0; m < m1; m++) {
      const int64_t plane = (n * g.M + m) * g.OH * g.OW;
      float* ym = y + plane;
      const float* rm = res ? res + plane : nullptr;
      const float* pm = p + (m - m0) * T;
      float bm = bias ? bias[m] : 0.0f;
      for (int64_t ty = i0 / g.tw; ty * g.tw < i1; ty++) {
        int64_t ta = std::max(i0 - ty * g.tw, int64_t(0)), tb = std::min(g.tw, i1 - ty * g.tw);
        int64_t oy = 2 * ty, ox = 2 * ta, w = std::min(2 * tb, g.OW) - ox;
        const int64_t o0 = oy * g.OW + ox, o1 = o0 + g.OW;
        const float* src = pm + (ty * g.tw + ta - i0);
        if (oy + 1 < g.OH && w == 2 * (tb - ta)) {
          tiles.output(src, ms, tb - ta, bm, relu, ym + o0, ym + o1, rm ? rm + o0 : nullptr,
                       rm ? rm + o1 : nullptr);
          continue;
        }
        float* s0 = stage;
        float* s1 = stage + stage_row();
        tiles.output(src, ms, tb - ta, bm, relu && !rm, s0, s1, nullptr, nullptr);
        if (rm) {  // the same float ops as the tile kernels': + residual, then relu
          for (int64_t j = 0; j < w; j++) {
            float v0 = s0[j] + rm[o0 + j], v1 = oy + 1 < g.OH ? s1[j] + rm[o1 + j] : 0.0f;
            s0[j] = relu && v0 < 0.0f ? 0.0f : v0;
            s1[j] = relu && v1 < 0.0f ? 0.0f : v1;
          }
        }
        std::memcpy(ym + o0, s0, (size_t)w * 4);
        if (oy + 1 < g.OH) std::memcpy(ym + o1, s1, (size_t)w * 4);
      }
    }
  }
};

}  // namespace

void winograd_weights_f32(const float* w, int64_t M, int64_t C, float* u) {
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (int64_t m = 0; m < M; m++)
    for (int64_t c = 0; c < C; c++) {
      const float* g = w + (m * C + c) * 9;
      double gg[4][3];  // G g
      for (int i = 0; i < 4; i++)
        for (int k = 0; k < 3; k++)
          gg[i][k] = G[i][0] * g[k] + G[i][1] * g[3 + k] + G[i][2] * g[6 + k];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
          u[((4 * i + j) * M + m) * C + c] =
              (float)(gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2]);
    }
}

const WinogradTiles& winograd_tiles_generic() {
  static const WinogradTiles t{input_generic, output_generic};
  return t;
}

namespace {
// The convolution into yt (Y's shape), + res (Y's shape; optional) and relu in the output
// transform.
void winograd_run(const KernelCtx& ctx, const GemmMicro& micro, const WinogradTiles& tiles,
                  const Tensor& xt, const Tensor& ut, const std::vector<int64_t>& pads,
                  Tensor& yt, const float* res, bool relu);
}  // namespace

void winograd_conv_f32(const KernelCtx& ctx) {
  winograd_conv_f32_with(ctx, gemm_micro_generic(), winograd_tiles_generic());
}

void winograd_conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                            const WinogradTiles& tiles) {
  const Tensor& xt = ctx.input(0);  // [N, C, H, W]
  const Tensor& ut = ctx.input(1);  // [16, M, C]
  std::vector<int64_t> pads = ctx.node.attrs.get_ints("pads");
  const Shape conv_shape{xt.dim(0), ut.dim(1), xt.dim(2) + pads.at(0) + pads.at(2) - 2,
                         xt.dim(3) + pads.at(1) + pads.at(3) - 2};
  const Tensor* rt = ctx.has_input(3) ? &ctx.input(3) : nullptr;  // the residual
  const bool relu = ctx.node.attrs.get_string("activation", "none") == "relu";
  if (rt && (rt->shape() != conv_shape || ctx.output(0).shape() != conv_shape)) {
    // A residual that broadcasts: the convolution into a buffer, then the Add and relu.
    Tensor conv = Tensor::empty(DType::F32, conv_shape);
    winograd_run(ctx, micro, tiles, xt, ut, pads, conv, nullptr, false);
    Tensor& out = ctx.output(0);
    const float* c = conv.ptr<float>();
    const float* r = rt->ptr<float>();
    float* o = out.ptr<float>();
    int64_t i = 0;
    for (BroadcastIter it(out.shape(), {broadcast_strides(conv_shape, out.shape()),
                                        broadcast_strides(rt->shape(), out.shape())});
         !it.done(); it.next(), i++) {
      const float v = c[it.off[0]] + r[it.off[1]];
      o[i] = relu && v < 0.0f ? 0.0f : v;
    }
    return;
  }
  winograd_run(ctx, micro, tiles, xt, ut, pads, ctx.output(0), rt ? rt->ptr<float>() : nullptr,
               relu);
}

namespace {

void winograd_run(const KernelCtx& ctx, const GemmMicro& micro, const WinogradTiles& tiles,
                  const Tensor& xt, const Tensor& ut, const std::vector<int64_t>& pads,
                  Tensor& yt, const float* res, bool relu) {
  Geom g{xt.dim(0), xt.dim(1), xt.dim(2), xt.dim(3), ut.dim(1), pads.at(0), pads.at(1),
         yt.dim(2), yt.dim(3), 0, 0};
  g.th = ceil_div(g.OH, 2);
  g.tw = ceil_div(g.OW, 2);
  if (g.N == 0 || g.M == 0 || g.OH == 0 || g.OW == 0) return;
  const int64_t T = block_tiles(g), nt = g.th * g.tw, blocks = ceil_div(nt, T);
  int threads = std::max(1, std::min(ctx.max_threads, thread_pool_size()));
  // Split the output channels only where the tile blocks alone leave threads idle.
  int64_t ranges = 1;
  if (g.N * blocks < 2 * threads)
    ranges = std::clamp(ceil_div(2 * threads, g.N * blocks), int64_t(1), std::max<int64_t>(1, g.M / 32));
  const int64_t mc = ceil_div(ceil_div(g.M, ranges), micro.mr) * micro.mr;
  ranges = ceil_div(g.M, mc);
  Task task{g, micro, tiles, xt.ptr<float>(), ut.ptr<float>(),
            ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr, relu, yt.ptr<float>(), T, res};
  const int64_t jobs = g.N * blocks, vsize = 16 * task.v_stride(), psize = 16 * task.p_stride(mc);
  auto tiles_of = [&](int64_t job, int64_t* n, int64_t* i0, int64_t* i1) {
    *n = job / blocks;
    *i0 = job % blocks * T;
    *i1 = std::min(nt, *i0 + T);
  };
  // With the channels split, each block's windows are transformed once, spread over the
  // threads by input channel, before the (block, channel range) tasks. Their V is the
  // caller's buffer, kept between calls (a fresh 0.5-2 MB one faults its pages in every
  // time); workers reach it through `shared` (a thread_local named in a lambda is the running
  // thread's own).
  thread_local std::vector<float> shared_v;
  if (ranges > 1 && shared_v.size() < (size_t)(jobs * vsize)) shared_v.resize((size_t)(jobs * vsize));
  float* const shared = shared_v.data();
  if (ranges > 1) {
    const int64_t cc = ceil_div(g.C, 2 * threads);
    ::ember::parallel_for(jobs * ceil_div(g.C, cc), 1, threads, [&](int64_t b, int64_t e) {
      std::vector<float> stage((size_t)task.stage_size());
      for (int64_t t = b; t < e; t++) {
        int64_t job = t / ceil_div(g.C, cc), c0 = t % ceil_div(g.C, cc) * cc, n, i0, i1;
        tiles_of(job, &n, &i0, &i1);
        task.transform_input(n, i0, i1, c0, std::min(g.C, c0 + cc), shared + job * vsize,
                             stage.data());
      }
    });
  }
  const int64_t count = jobs * ranges;
  std::atomic<int64_t> next{0};
  ::ember::parallel_for(threads, 1, threads, [&](int64_t, int64_t) {
    thread_local std::vector<float> v, p, stage;
    if (ranges == 1) v.resize((size_t)vsize);
    p.resize((size_t)psize);
    stage.resize((size_t)task.stage_size());
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
      int64_t job = t / ranges, r = t % ranges, n, i0, i1;
      tiles_of(job, &n, &i0, &i1);
      int64_t m0 = r * mc, m1 = std::min(g.M, m0 + mc);
      const float* vt = shared + job * vsize;
      if (ranges == 1) {
        task.transform_input(n, i0, i1, 0, g.C, v.data(), stage.data());
        vt = v.data();
      }
      task.multiply(i1 - i0, m0, m1, vt, p.data());
      task.transform_output(n, i0, i1, m0, m1, p.data(), stage.data());
    }
  });
}

}  // namespace

}  // namespace ember::cpu
