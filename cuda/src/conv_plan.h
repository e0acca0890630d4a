// Host plans of the convolution and pooling kernels (conv.cu), and the index maths the kernels
// run, shared so host tests (cuda/tests/test_conv.cpp) check exactly what the device computes.
// Plain C++17 without CUDA or ember-core headers: EMBER_HD marks the functions kernels call too.
//
// Conv as GEMM: im2col writes cols [nb, C*kh*kw, pc] for a chunk of nb images (or of pc output
// pixels of one image, when one image's cols exceed the scratch budget); per group g,
// Y[n, g*mg : (g+1)*mg, p0 : p0+pc] = W[g] [mg, cg*kh*kw] @ cols[n, g*cg*kh*kw :, :]. A 1x1,
// stride-1, unpadded conv needs no im2col: X [N, C, H*W] is its own cols.
#pragma once
#include <cstdint>
#include <climits>
#include <vector>

#if defined(__CUDACC__)
#ifndef EMBER_HD
#define EMBER_HD __host__ __device__
#endif
#else
#ifndef EMBER_HD
#define EMBER_HD
#endif
#endif

namespace ember {
struct ConvGeom;  // kernels/generic/conv_f32.h
struct PoolGeom;  // cpp/src/ops/pool_geom.h
}  // namespace ember

namespace ember::cuda {

// A 1-D or 2-D Conv as 2-D (1-D: H = OH = kh = 1).
struct Conv2d {
  int64_t N = 0, C = 0, H = 1, W = 1;  // X [N, C, H, W]
  int64_t M = 0, OH = 1, OW = 1;       // Y [N, M, OH, OW]
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, ph = 0, pw = 0;  // pads: leading
  int64_t G = 1;
  EMBER_HD int64_t cg() const { return C / G; }                // input channels per group
  EMBER_HD int64_t mg() const { return M / G; }                // output channels per group
  EMBER_HD int64_t kg() const { return C / G * kh * kw; }      // GEMM K of one group
  EMBER_HD int64_t rows() const { return C * kh * kw; }        // cols rows of one image
  EMBER_HD int64_t P() const { return OH * OW; }               // output pixels per image
};

// Conv2d from the core's geometry; false for 3-D convs (and a leading dim that is not trivial).
bool conv2d_from(const ConvGeom& g, Conv2d* out);

enum class ConvPath : uint8_t {
  Direct,    // one input channel per group (depthwise): direct kernel, no GEMM
  Gemm1x1,   // 1x1, stride 1, no pad: GEMMs straight on X
  Im2col,    // im2col chunks into scratch, then GEMMs
  Empty,     // no output elements: nothing to run
  Fill,      // no input channels (K == 0): Y is the bias (or zeros)
};

// How a Conv runs: the path, and for Im2col the chunk (nb images of all pixels, or pc pixels
// of one image when nb == 1 and pc < P) and its scratch size.
struct ConvPlan {
  ConvPath path = ConvPath::Empty;
  int64_t nb = 0, pc = 0;
  int64_t cols_elems = 0;  // nb * rows * pc floats of scratch (Im2col)
  int64_t gemm_calls = 0;  // cuBLASLt calls over the whole node
};

// Default scratch bound for im2col columns.
constexpr int64_t kConvColsBytes = int64_t(256) << 20;
// Pixel chunks narrower than this would make too many tiny GEMMs: such convs run on the CPU.
constexpr int64_t kConvMinPixelChunk = 256;

// Fills *plan; false where the conv cannot run on the GPU: a GEMM dim past cuBLASLt's 32-bit
// limits, or a pixel chunk of kConvMinPixelChunk whose cols do not fit `cols_bytes`.
bool conv_plan(const Conv2d& g, int64_t cols_bytes, ConvPlan* plan);

// One strided-batched GEMM of a chunk, offsets in floats from W, cols and Y:
// D[b] [m, n] (ld ldd) = A[b] [m, k] (ld k) @ B[b] [k, n] (ld ldb), for b < batch.
struct ConvGemmCall {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t a_off = 0, b_off = 0, d_off = 0;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
  int64_t ldb = 0, ldd = 0;
};

// The GEMMs of the chunk (images n0 .. n0+nb, pixels p0 .. p0+pc) whose cols are laid out
// [nb, rows, pc]: per group with the images as the batch, or per image with the groups as the
// batch, whichever makes fewer calls.
std::vector<ConvGemmCall> conv_gemm_calls(const Conv2d& g, int64_t n0, int64_t nb, int64_t p0,
                                          int64_t pc);

// Whether every index the conv kernels compute fits int32: offsets in X, Y and W, and window
// coordinates however far the padding and dilation reach (then the kernels use 32-bit maths).
inline bool conv_fits_int32(const Conv2d& g) {
  const int64_t lim = INT32_MAX;
  // (out - 1) * stride + (k - 1) * dil <= padded input - 1: no int64 overflow here.
  int64_t reach_y = (g.OH - 1) * g.sh + (g.kh - 1) * g.dh;
  int64_t reach_x = (g.OW - 1) * g.sw + (g.kw - 1) * g.dw;
  return g.N * g.C * g.H * g.W <= lim && g.N * g.M * g.P() <= lim && g.M * g.kg() <= lim &&
         reach_y <= lim && reach_x <= lim && g.ph <= lim && g.pw <= lim;
}

// cols element i of the chunk [nb, rows, pc] (images from n0, pixels from p0): its offset in
// X [N, C, H, W], or -1 where the tap lands in the padding (a zero).
template <class I>
EMBER_HD inline I im2col_source(const Conv2d& g, I n0, I p0, I pc, I i) {
  I q = i % pc, t = i / pc;
  I r = t % (I)g.rows(), n = n0 + t / (I)g.rows();
  I kx = r % (I)g.kw, u = r / (I)g.kw;
  I ky = u % (I)g.kh, c = u / (I)g.kh;
  I p = p0 + q, ox = p % (I)g.OW, oy = p / (I)g.OW;
  I iy = oy * (I)g.sh - (I)g.ph + ky * (I)g.dh;
  I ix = ox * (I)g.sw - (I)g.pw + kx * (I)g.dw;
  if (iy < 0 || iy >= (I)g.H || ix < 0 || ix >= (I)g.W) return -1;
  return ((n * (I)g.C + c) * (I)g.H + iy) * (I)g.W + ix;
}

// One output of a conv with one input channel per group (ConvPath::Direct), fp32 sums in the
// reference's tap order: image n, output channel m (reading input channel m / mg), pixel (oy, ox).
template <class I>
EMBER_HD inline float conv_direct_one(const Conv2d& g,
                                      const float* x,  // [N, C, H, W]
                                      const float* w,  // [M, 1, kh, kw]
                                      I n, I m, I oy, I ox) {
  I H = (I)g.H, W = (I)g.W, kh = (I)g.kh, kw = (I)g.kw;
  const float* xp = x + (n * (I)g.C + m / (I)g.mg()) * H * W;
  const float* wp = w + m * kh * kw;
  I y0 = oy * (I)g.sh - (I)g.ph, x0 = ox * (I)g.sw - (I)g.pw;
  float acc = 0.0f;
  for (I ky = 0; ky < kh; ky++) {
    I iy = y0 + ky * (I)g.dh;
    if (iy < 0 || iy >= H) continue;
    for (I kx = 0; kx < kw; kx++) {
      I ix = x0 + kx * (I)g.dw;
      if (ix < 0 || ix >= W) continue;
      acc += xp[iy * W + ix] * wp[ky * kw + kx];
    }
  }
  return acc;
}

// ---- pooling --------------------------------------------------------------------------------

// A 1-D or 2-D MaxPool / AveragePool as 2-D over planes = N * C.
struct Pool2d {
  int64_t planes = 0, H = 1, W = 1, OH = 1, OW = 1;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t ph = 0, pw = 0, peh = 0, pew = 0;  // begin / end pads
  bool is_max = false, include_pad = false;
};

// Pool2d from the core's geometry and X's [N, C]; false for 3-D pools.
bool pool2d_from(const PoolGeom& g, int64_t n, int64_t c, bool is_max, bool include_pad,
                 Pool2d* out);

// The taps of one window dim inside the input, [lo, hi), and how many lie inside the input
// plus end padding (AveragePool's count_include_pad divisor), as the reference counts them.
struct PoolTaps {
  int64_t lo, hi, padded;
};
EMBER_HD inline PoolTaps pool_taps(int64_t o, int64_t s, int64_t pb, int64_t pe, int64_t d,
                                   int64_t k, int64_t in) {
  int64_t st = o * s - pb;  // first tap; >= -pb
  PoolTaps t;
  t.lo = st >= 0 ? 0 : (-st + d - 1) / d;
  int64_t last = in - 1 - st, last_p = in + pe - 1 - st;
  t.hi = last >= 0 ? (k < last / d + 1 ? k : last / d + 1) : 0;
  t.padded = last_p >= 0 ? (k < last_p / d + 1 ? k : last_p / d + 1) : 0;
  return t;
}

// One output of a 2-D pool over plane `xp` [H, W], walked as the reference walks it: the max
// keeps the first tap unless a later one is greater (so a leading NaN sticks, later ones are
// skipped); an empty window gives 0 (max) or NaN (average over no taps).
EMBER_HD inline float pool_one(const Pool2d& g, const float* xp, int64_t oy, int64_t ox) {
  PoolTaps ty = pool_taps(oy, g.sh, g.ph, g.peh, g.dh, g.kh, g.H);
  PoolTaps tx = pool_taps(ox, g.sw, g.pw, g.pew, g.dw, g.kw, g.W);
  int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
  bool empty = ty.hi <= ty.lo || tx.hi <= tx.lo;
  if (g.is_max) {
    if (empty) return 0.0f;
    float best = xp[(y0 + ty.lo * g.dh) * g.W + x0 + tx.lo * g.dw];
    for (int64_t a = ty.lo; a < ty.hi; a++)
      for (int64_t b = tx.lo; b < tx.hi; b++) {
        float v = xp[(y0 + a * g.dh) * g.W + x0 + b * g.dw];
        if (v > best) best = v;
      }
    return best;
  }
  float acc = 0.0f;
  if (!empty)
    for (int64_t a = ty.lo; a < ty.hi; a++)
      for (int64_t b = tx.lo; b < tx.hi; b++) acc += xp[(y0 + a * g.dh) * g.W + x0 + b * g.dw];
  float count = g.include_pad ? (float)ty.padded * (float)tx.padded
                              : (empty ? 0.0f : (float)(ty.hi - ty.lo) * (float)(tx.hi - tx.lo));
  return count > 0 ? acc / count : __builtin_nanf("");
}

}  // namespace ember::cuda
