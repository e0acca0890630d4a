// QConv kernel (see conv_i8.h): quantize X per channel plane, im2row, int8 GEMM, transpose.
#include "kernels/generic/conv_i8.h"

#include <algorithm>
#include <vector>

#include "kernels/generic/conv_f32.h"

namespace ember::cpu {
namespace {

constexpr int64_t kMaxRowCodes = int64_t(1) << 28;

ConvGeom geom(const Node& node, const Shape& x) {
  InferCtx ic{node, {}, {}};
  std::vector<int64_t> ws = node.attrs.get_ints("w_shape");
  return conv_geom(ic, x, Shape(ws.begin(), ws.end()), false);
}

constexpr int64_t kWindowRows = 9;  // kernel rows (k[0] x k[1]) of window3's fast path

// Whether output (o0, o1, .) with taps [lo, hi) inside reads k[2] = 3 whole columns on every
// kernel row (undilated, no padding): then off[r] is row r's first input position.
bool window3(const ConvGeom& g, int64_t o0, int64_t o1, int64_t i2b, int64_t lo, int64_t hi,
             int64_t* off) {
  if (g.k[2] != 3 || g.dil[2] != 1 || lo != 0 || hi != 3 || g.C < 1 ||
      g.k[0] * g.k[1] > kWindowRows)
    return false;
  for (int64_t t0 = 0; t0 < g.k[0]; t0++) {
    int64_t i0 = o0 * g.stride[0] - g.pad[0] + t0 * g.dil[0];
    for (int64_t t1 = 0; t1 < g.k[1]; t1++) {
      int64_t i1 = o1 * g.stride[1] - g.pad[1] + t1 * g.dil[1];
      if (i0 < 0 || i0 >= g.in[0] || i1 < 0 || i1 >= g.in[1]) return false;
      off[t0 * g.k[1] + t1] = (i0 * g.in[1] + i1) * g.in[2] + i2b;
    }
  }
  return true;
}

// One kernel row of K2 taps for every channel: dst[c * ksz + t2] = src[c * xs + t2 * d2] for
// t2 in [lo, hi) (lo < hi), else 0. Branch-free over a constant K2 (an unknown trip count
// becomes a memset or memcpy call per channel); out-of-range taps read tap lo, then masked.
template <int K2>
void copy_taps(int16_t* dst, const int16_t* src, int64_t d2, int64_t lo, int64_t hi, int64_t C,
               int64_t ksz, int64_t xs) {
  int64_t idx[K2];
  int16_t keep[K2];
  for (int t2 = 0; t2 < K2; t2++) {
    bool in = t2 >= lo && t2 < hi;
    idx[t2] = (in ? t2 : lo) * d2;
    keep[t2] = in ? (int16_t)-1 : (int16_t)0;
  }
  for (int64_t c = 0; c < C; c++, dst += ksz, src += xs)
    for (int t2 = 0; t2 < K2; t2++) dst[t2] = (int16_t)(src[idx[t2]] & keep[t2]);
}

// rows[o, c * ksz + tap] = xq[c * xs + input position of (o, tap)], 0 where that is padding;
// each row [lda] with its tail past C * ksz zeroed. Per output position and kernel row, the
// taps t2 in [lo, hi) that land inside the input are found once; every channel then copies
// that run and zeroes the rest, with no bounds check per code (it was ~40% of int8 ResNet).
void im2row(const KernelCtx& ctx, const ConvGeom& g, const int16_t* xq, int64_t xs, int64_t lda,
            int16_t* rows) {
  int64_t ksz = g.k_size(), kc = g.C * ksz, k2 = g.k[2];
  int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, kc));
  ctx.parallel_for(g.out_size(), grain, [&](int64_t o_lo, int64_t o_hi) {
    int64_t off[kWindowRows];
    for (int64_t o = o_lo; o < o_hi; o++) {
      int64_t o2 = o % g.out[2], o1 = o / g.out[2] % g.out[1], o0 = o / (g.out[2] * g.out[1]);
      int16_t* row = rows + o * lda;
      if (lda > kc) std::fill(row + kc, row + lda, (int16_t)0);
      // Taps t2 in [lo, hi) read input column i2b + t2 * dil, inside [0, in[2]).
      int64_t i2b = o2 * g.stride[2] - g.pad[2], d2 = g.dil[2];
      int64_t lo = 0, hi = k2;
      while (lo < k2 && i2b + lo * d2 < 0) lo++;
      while (hi > lo && i2b + (hi - 1) * d2 >= g.in[2]) hi--;
      if (window3(g, o0, o1, i2b, lo, hi, off)) {
        // Per channel, each kernel row's 3 codes move as one 8-byte copy whose 4th code the
        // next copy overwrites (the next channel's first, for the last row); the last channel
        // copies exactly. A third of the moves of the loop below.
        int64_t nr = g.k[0] * g.k[1];
        int16_t* dst = row;
        const int16_t* src = xq;
        for (int64_t c = 0; c + 1 < g.C; c++, dst += ksz, src += xs)
          for (int64_t r = 0; r < nr; r++) __builtin_memcpy(dst + 3 * r, src + off[r], 8);
        for (int64_t r = 0; r < nr; r++)
          for (int64_t t2 = 0; t2 < 3; t2++) dst[3 * r + t2] = src[off[r] + t2];
        continue;
      }
      for (int64_t t0 = 0; t0 < g.k[0]; t0++) {
        int64_t i0 = o0 * g.stride[0] - g.pad[0] + t0 * g.dil[0];
        for (int64_t t1 = 0; t1 < g.k[1]; t1++) {
          int64_t i1 = o1 * g.stride[1] - g.pad[1] + t1 * g.dil[1];
          int16_t* dst = row + (t0 * g.k[1] + t1) * k2;  // [k[2]] per channel, ksz apart
          if (!(i0 >= 0 && i0 < g.in[0] && i1 >= 0 && i1 < g.in[1]) || lo >= hi) {
            if (k2 == 3) {  // constant trip counts: stores, not a memset call per channel
              for (int64_t c = 0; c < g.C; c++, dst += ksz)
                for (int t2 = 0; t2 < 3; t2++) dst[t2] = 0;
            } else {
              for (int64_t c = 0; c < g.C; c++, dst += ksz)
                for (int64_t t2 = 0; t2 < k2; t2++) dst[t2] = 0;
            }
            continue;
          }
          const int16_t* src = xq + (i0 * g.in[1] + i1) * g.in[2] + i2b;
          if (k2 == 3) {
            copy_taps<3>(dst, src, d2, lo, hi, g.C, ksz, xs);
            continue;
          }
          if (k2 == 7) {  // a 7x7 stem
            copy_taps<7>(dst, src, d2, lo, hi, g.C, ksz, xs);
            continue;
          }
          for (int64_t c = 0; c < g.C; c++, dst += ksz, src += xs) {
            for (int64_t t2 = 0; t2 < lo; t2++) dst[t2] = 0;
            for (int64_t t2 = lo; t2 < hi; t2++) dst[t2] = src[t2 * d2];
            for (int64_t t2 = hi; t2 < k2; t2++) dst[t2] = 0;
          }
        }
      }
    }
  });
}

// y[m, o] = out[o, m]: 16 x 16 tiles, so both sides stream whole cache lines; whole tiles go
// to tile16 where there is one (a copy: any path gives the same bits).
void transpose_out(const KernelCtx& ctx, const float* out, int64_t P, int64_t M, float* y,
                   TransposeTile16 tile16) {
  constexpr int64_t kT = 16;
  ctx.parallel_for((M + kT - 1) / kT, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t m0 = b0 * kT; m0 < std::min(M, b1 * kT); m0 += kT)
      for (int64_t p0 = 0; p0 < P; p0 += kT) {
        if (tile16 && m0 + kT <= M && p0 + kT <= P) {
          tile16(out + p0 * M + m0, M, y + m0 * P + p0, P);
          continue;
        }
        for (int64_t m = m0; m < std::min(M, m0 + kT); m++)
          for (int64_t p = p0; p < std::min(P, p0 + kT); p++) y[m * P + p] = out[p * M + m];
      }
  });
}

// QConv on a GEMM callback: X quantized per channel plane, im2row, gemm(args), transpose.
template <class Gemm>
void qconv_i8_run(const KernelCtx& ctx, const QuantizeRowsI8& quant, const GemmActs& acts,
                  TransposeTile16 tile16, Gemm&& gemm) {
  ConvGeom g = geom(ctx.node, ctx.input(0).shape());
  const float* x = ctx.input(0).ptr<float>();  // [N, C, in...]
  float* y = ctx.output(0).ptr<float>();       // [N, M, out...]
  int64_t isz = g.in_size(), osz = g.out_size(), kc = g.C * g.k_size();
  if (g.N == 0 || g.M == 0 || osz == 0) return;
  float s = ctx.input(4).ptr<float>()[0];
  const Tensor& zt = ctx.input(5);
  bool u8 = zt.dtype() == DType::U8;
  int32_t zp = u8 ? zt.ptr<uint8_t>()[0] : zt.ptr<int8_t>()[0];
  int32_t qmin = u8 ? 0 : -128, qmax = u8 ? 255 : 127;

  QGemmI8Args a;
  a.M = osz;
  a.N = g.M;
  a.K = kc;
  a.lda = kc + (kc & 1);
  a.b_packed = ctx.input(1).ptr<int8_t>();  // [ceil(M / 16), ceil(Kc / 2), 16, 2]
  a.w_scale = ctx.input(2).ptr<float>();    // [M]
  a.bias = ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr;  // [M]
  a.ldc = g.M;
  a.a_off = zp + (qmin < 0 ? 128 : 0);  // codes + a_off = the u8 / int8 + 128 values
  a.act = acts.for_node(ctx.node);
  int64_t xs = isz + (isz & 1);  // a channel's codes: the row quantizer pads odd rows with a 0
  // NOTE: kept per calling thread between runs (as QMatMul's codes): fresh megabytes on every
  // call cost more in page faults than the convolution itself.
  thread_local std::vector<int16_t> xq, rows;
  thread_local std::vector<float> scales, out;  // out: [positions, M]
  xq.resize(g.C * xs);
  rows.resize(osz * a.lda);
  scales.assign(osz, s);
  out.resize(osz * g.M);
  // Pointers, not the names: a lambda run on a pool worker would see that thread's buffers.
  int16_t* codes = xq.data();
  a.a = rows.data();
  a.a_scale = scales.data();
  a.c = out.data();
  for (int64_t n = 0; n < g.N; n++) {
    ctx.parallel_for(g.C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++)
        quant.linear(x + (n * g.C + c) * isz, isz, s, zp, qmin, qmax, codes + c * xs);
    });
    im2row(ctx, g, codes, xs, a.lda, rows.data());
    gemm(a);
    transpose_out(ctx, out.data(), osz, g.M, y + n * g.M * osz, tile16);
  }
}

}  // namespace

bool qconv_i8_supports(const InferCtx& ctx) {
  ConvGeom g = geom(ctx.node, ctx.in[0].shape);
  int64_t kc = g.C * g.k_size(), codes;
  return !__builtin_mul_overflow(kc + 1, g.out_size(), &codes) && codes <= kMaxRowCodes;
}

void qconv_i8(const KernelCtx& ctx) {
  static const QuantizeRowsI8 quant{quantize_row_i8_token, quantize_row_i8_linear, minmax_f32_row};
  static const GemmActs acts{relu_f32_array, gelu_f32_array, gelu_tanh_f32_array};
  qconv_i8_with(ctx, qgemm_i8_micro_generic(), quant, acts);
}

void qconv_i8_with(const KernelCtx& ctx, const QGemmI8Micro& micro, const QuantizeRowsI8& quant,
                   const GemmActs& acts) {
  qconv_i8_run(ctx, quant, acts, nullptr,
               [&](const QGemmI8Args& a) { qgemm_i8(a, ctx.max_threads, micro); });
}

void qconv_i8_with_gemm(const KernelCtx& ctx, QGemmI8Fn gemm, const QuantizeRowsI8& quant,
                        const GemmActs& acts, TransposeTile16 tile16) {
  qconv_i8_run(ctx, quant, acts, tile16, [&](const QGemmI8Args& a) { gemm(a, ctx.max_threads); });
}

}  // namespace ember::cpu
