// Generic f32 Conv (reference: the Conv row in cpp/src/ops/ops_conv.cpp).
// Depthwise (group == C == M): a direct kernel, one task per (batch, channel) plane.
// Otherwise, per (batch, group): sgemm (which threads over C's blocks) on B = the patch matrix
// [C/G * k, out], packed panel by panel straight from X by PatchPanels (no im2col matrix; an
// im2col matrix only when it is small, see kMaxColFloats), or X read in place for a 1x1 kernel
// with stride 1 and no pad; the bias is sgemm's broadcast term.
// Spatial dims are padded to three (see ConvGeom).
#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/generic/conv_f32.h"
#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int64_t kMaxRows = int64_t(1) << 28;  // PatchPanels' tables: 40 bytes per row
// Patch matrices up to this size are materialised by im2col (parallel, once) and then packed
// from cache: small outputs (ResNet's 7x7 and 14x14 stages) have many output channels, so
// sgemm cuts them into several row blocks, and each block would gather the patches again.
constexpr int64_t kMaxColFloats = int64_t(1) << 18;

bool is_depthwise(const ConvGeom& g) { return g.G == g.C && g.G == g.M; }

bool is_pointwise(const ConvGeom& g) {
  for (int d = 0; d < 3; d++)
    if (g.k[d] != 1 || g.stride[d] != 1 || g.pad[d] != 0 || g.out[d] != g.in[d]) return false;
  return true;
}

// The outputs o2 in [lo, hi) whose input base + o2 * stride lies in [0, in) (innermost dim).
void tap_range(const ConvGeom& g, int64_t base, int64_t* lo, int64_t* hi) {
  int64_t s = g.stride[2], n = g.in[2];
  auto ceil_div = [](int64_t a, int64_t b) { return a / b + (a % b != 0); };  // a >= 0
  *lo = base >= 0 ? 0 : ceil_div(-base, s);
  *hi = n - base <= 0 ? 0 : std::min(g.out[2], ceil_div(n - base, s));
  *lo = std::min(*lo, *hi);
}

void conv_depthwise(const KernelCtx& ctx, const ConvGeom& g, const float* x, const float* w,
                    const float* b, float* y) {
  int64_t isz = g.in_size(), ksz = g.k_size(), osz = g.out_size();
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, osz * ksz));
  ctx.parallel_for(g.N * g.C, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      int64_t c = p % g.C;
      const float* xp = x + p * isz;  // [in...]
      const float* wc = w + c * ksz;  // [k...]
      float* yp = y + p * osz;        // [out...]
      float bias = b ? b[c] : 0.0f;
      // Row by row; each tap adds into the row over the outputs it reaches, so the inner
      // loop has no bounds checks (and each output still sums its taps in order).
      for (int64_t o0 = 0; o0 < g.out[0]; o0++)
        for (int64_t o1 = 0; o1 < g.out[1]; o1++) {
          float* row = yp + (o0 * g.out[1] + o1) * g.out[2];
          std::fill(row, row + g.out[2], bias);
          for (int64_t k0 = 0; k0 < g.k[0]; k0++) {
            int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
            if (i0 < 0 || i0 >= g.in[0]) continue;
            for (int64_t k1 = 0; k1 < g.k[1]; k1++) {
              int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
              if (i1 < 0 || i1 >= g.in[1]) continue;
              const float* xr = xp + (i0 * g.in[1] + i1) * g.in[2];
              const float* wr = wc + (k0 * g.k[1] + k1) * g.k[2];
              for (int64_t k2 = 0; k2 < g.k[2]; k2++) {
                int64_t base = k2 * g.dil[2] - g.pad[2], lo, hi;
                tap_range(g, base, &lo, &hi);
                float wv = wr[k2];
                if (g.stride[2] == 1) {
                  for (int64_t o2 = lo; o2 < hi; o2++) row[o2] += wv * xr[base + o2];
                } else {
                  for (int64_t o2 = lo; o2 < hi; o2++) row[o2] += wv * xr[base + o2 * g.stride[2]];
                }
              }
            }
          }
        }
    }
  });
}

// dst[i] = src[i * stride] for i < n. Strides 1 and 2 (the common ones) as constants: a copy,
// and a loop the compiler vectorises with shuffles (the run-time stride kept it scalar: ~30%
// of a stride-2 conv's time).
void gather_strided(const float* src, int64_t stride, int64_t n, float* dst) {
  if (stride == 1) {
    std::copy(src, src + n, dst);
  } else if (stride == 2) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[2 * i];
  } else {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i * stride];
  }
}

// Patches packed straight into sgemm's 16-wide B panels: B[r, o] for r = (c, k0, k1, k2) and
// o = (o0, o1, o2) is the input under tap r at output o (zero in the padding). Each B row of the
// block is gathered into a line (per output row: one bounds check, then a copy), then cut into
// the panels; per-row tables hold each tap's offsets. No [C/G * k, out] matrix is written and
// read back, and no buffer of that size is allocated per call.
struct PatchPanels {
  static constexpr int64_t kLine = 256;  // columns gathered per pass (sgemm's blocks are <= 256)
  const ConvGeom* g;
  const float* x;                   // [C/G, in...] of the current (batch, group)
  std::vector<int64_t> t0, t1, xo;  // per r: k0 * dil0, k1 * dil1, c * in_size + k2 * dil2 - pad2
  std::vector<int64_t> lo, hi;      // per r: the o2 in [lo, hi) whose input lies in [0, in2)

  PatchPanels(const ConvGeom& geom, int64_t rows) : g(&geom), x(nullptr) {
    t0.resize(rows), t1.resize(rows), xo.resize(rows), lo.resize(rows), hi.resize(rows);
    int64_t ksz = geom.k_size();
    for (int64_t r = 0; r < rows; r++) {
      int64_t c = r / ksz, kr = r % ksz;
      int64_t k2 = kr % geom.k[2], k1 = kr / geom.k[2] % geom.k[1], k0 = kr / (geom.k[2] * geom.k[1]);
      int64_t base = k2 * geom.dil[2] - geom.pad[2];
      t0[r] = k0 * geom.dil[0];
      t1[r] = k1 * geom.dil[1];
      xo[r] = c * geom.in_size() + base;
      tap_range(geom, base, &lo[r], &hi[r]);
    }
  }

  static void pack(const void* self, int64_t, int64_t k0, int64_t kc, int64_t n0, int64_t n1,
                   float* bp) {  // bp: ceil((n1 - n0) / 16) panels [kc, 16], kc * 16 apart
    const PatchPanels& pp = *static_cast<const PatchPanels*>(self);
    for (int64_t j0 = n0; j0 < n1; j0 += kLine)
      pp.pack_line(k0, kc, j0, std::min(n1, j0 + kLine), bp + (j0 - n0) * kc);
  }

  void pack_line(int64_t k0, int64_t kc, int64_t j0, int64_t j1, float* bp) const {
    // The columns cut at output-row ends.
    struct Seg {
      int64_t col, len, i0, i1, o2;  // i0, i1 before the tap's offset
    };
    std::vector<Seg> segs;
    int64_t o2 = j0 % g->out[2], o1 = j0 / g->out[2] % g->out[1], o0 = j0 / (g->out[2] * g->out[1]);
    for (int64_t j = j0; j < j1;) {
      int64_t len = std::min(j1 - j, g->out[2] - o2);
      segs.push_back({j - j0, len, o0 * g->stride[0] - g->pad[0], o1 * g->stride[1] - g->pad[1], o2});
      j += len;
      o2 = 0;
      if (++o1 == g->out[1]) o1 = 0, o0++;
    }
    const int64_t in0 = g->in[0], in1 = g->in[1], in2 = g->in[2], s2 = g->stride[2];
    const int64_t n = j1 - j0, panels = (n + 15) / 16;
    alignas(64) float line[kLine + 16];
    for (int64_t t = 0; t < kc; t++) {
      int64_t r = k0 + t;
      for (const Seg& sg : segs) {
        float* d = line + sg.col;
        int64_t i0 = sg.i0 + t0[r], i1 = sg.i1 + t1[r];
        if ((uint64_t)i0 >= (uint64_t)in0 || (uint64_t)i1 >= (uint64_t)in1) {
          std::fill(d, d + sg.len, 0.0f);
          continue;
        }
        int64_t a = std::clamp(lo[r] - sg.o2, int64_t(0), sg.len);
        int64_t b = std::clamp(hi[r] - sg.o2, a, sg.len);
        std::fill(d, d + a, 0.0f);
        const float* src = x + (xo[r] + (i0 * in1 + i1) * in2 + (sg.o2 + a) * s2);  // a >= lo
        gather_strided(src, s2, b - a, d + a);
        std::fill(d + b, d + sg.len, 0.0f);
      }
      for (int64_t j = n; j < panels * 16; j++) line[j] = 0.0f;
      for (int64_t p = 0; p < panels; p++) {
        float* dst = bp + (p * kc + t) * 16;
        for (int j = 0; j < 16; j++) dst[j] = line[p * 16 + j];
      }
    }
  }
};

// col[r, o] for r = (c, k0, k1, k2) and o = (o0, o1, o2): the input under tap r at output o
// (for small patch matrices, see kMaxColFloats).
void im2col(const KernelCtx& ctx, const ConvGeom& g, const float* x, int64_t rows, float* col) {
  int64_t ksz = g.k_size(), osz = g.out_size(), isz = g.in_size();
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, osz));
  ctx.parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t c = r / ksz, kr = r % ksz;
      int64_t k2 = kr % g.k[2], k1 = kr / g.k[2] % g.k[1], k0 = kr / (g.k[2] * g.k[1]);
      const float* xc = x + c * isz;  // [in...]
      float* dst = col + r * osz;     // [out...]
      for (int64_t o0 = 0; o0 < g.out[0]; o0++) {
        int64_t i0 = o0 * g.stride[0] - g.pad[0] + k0 * g.dil[0];
        for (int64_t o1 = 0; o1 < g.out[1]; o1++, dst += g.out[2]) {
          int64_t i1 = o1 * g.stride[1] - g.pad[1] + k1 * g.dil[1];
          if (i0 < 0 || i0 >= g.in[0] || i1 < 0 || i1 >= g.in[1]) {
            std::fill(dst, dst + g.out[2], 0.0f);
            continue;
          }
          const float* xr = xc + (i0 * g.in[1] + i1) * g.in[2];
          int64_t base = k2 * g.dil[2] - g.pad[2], lo, hi;
          tap_range(g, base, &lo, &hi);
          std::fill(dst, dst + lo, 0.0f);
          gather_strided(xr + base + lo * g.stride[2], g.stride[2], hi - lo, dst + lo);
          std::fill(dst + hi, dst + g.out[2], 0.0f);
        }
      }
    }
  });
}

}  // namespace

bool conv_f32_supports(const InferCtx& ctx) {
  if (!ctx.has(1) || ctx.in[1].dtype != DType::F32) return false;
  ConvGeom g = conv_geom(ctx, ctx.in[0].shape, ctx.in[1].shape, false);
  if (is_depthwise(g) || is_pointwise(g)) return true;
  int64_t rows;
  return !__builtin_mul_overflow(g.C / g.G, g.k_size(), &rows) && rows <= kMaxRows;
}

void conv_f32(const KernelCtx& ctx) { conv_f32_with(ctx, gemm_micro_generic()); }

void conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                   void (*act)(const float* x, float* y, int64_t n)) {
  InferCtx ic{ctx.node, {}, {}};
  ConvGeom g = conv_geom(ic, ctx.input(0).shape(), ctx.input(1).shape(), false);
  const float* x = ctx.input(0).ptr<float>();  // [N, C, in...]
  const float* w = ctx.input(1).ptr<float>();  // [M, C/G, k...]
  const float* b = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [M]
  float* y = ctx.output(0).ptr<float>();       // [N, M, out...]
  int64_t osz = g.out_size(), isz = g.in_size();
  if (g.N == 0 || g.M == 0 || osz == 0) return;
  int64_t cg = g.C / g.G, mg = g.M / g.G, kg = cg * g.k_size();
  if (kg == 0) {  // no input channels: the output is the bias
    for (int64_t n = 0; n < g.N; n++)
      for (int64_t m = 0; m < g.M; m++)
        std::fill(y + (n * g.M + m) * osz, y + (n * g.M + m + 1) * osz, b ? b[m] : 0.0f);
    if (act) act(y, y, g.N * g.M * osz);
    return;
  }
  if (is_depthwise(g)) {
    conv_depthwise(ctx, g, x, w, b, y);
    if (act) act(y, y, g.N * g.M * osz);
    return;
  }
  bool pointwise = is_pointwise(g);
  bool small = !pointwise && kg * osz <= kMaxColFloats;
  // The caller's patch matrix, kept between calls: a fresh one (up to 1 MiB) faults its pages
  // in on every call. The workers that fill it get the pointer.
  thread_local std::vector<float> col_buf;
  if (small && col_buf.size() < (size_t)(kg * osz)) col_buf.resize((size_t)(kg * osz));
  float* const col = small ? col_buf.data() : nullptr;
  std::unique_ptr<PatchPanels> patches(pointwise || small ? nullptr : new PatchPanels(g, kg));
  for (int64_t n = 0; n < g.N; n++) {
    for (int64_t grp = 0; grp < g.G; grp++) {
      const float* xg = x + (n * g.C + grp * cg) * isz;  // [C/G, in...]
      SgemmArgs a;
      a.M = mg;
      a.N = osz;
      a.K = kg;
      a.a = w + grp * mg * kg;
      a.a_rs = kg;
      if (pointwise || small) {
        if (small) im2col(ctx, g, xg, kg, col);
        a.b = small ? col : xg;
        a.b_rs = osz;
      } else {
        patches->x = xg;
        a.b_pack = PatchPanels::pack;
        a.b_pack_ctx = patches.get();
      }
      a.c = y + (n * g.M + grp * mg) * osz;
      a.c_rs = osz;
      if (b) {
        a.bias = b + grp * mg;
        a.bias_rs = 1;
        a.bias_cs = 0;
        a.beta = 1.0f;
      }
      a.act = act;
      sgemm(a, ctx.max_threads, micro);
    }
  }
}

}  // namespace ember::cpu
