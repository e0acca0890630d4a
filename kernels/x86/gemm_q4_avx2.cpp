// INT4 x INT16 GEMM tiles and activation quantization, AVX2 + FMA (contracts and generic twins in
// kernels/generic/gemm_q4.h; reference and float order: cpp/src/ops/ops_q4matmul.cpp). A 16-byte
// code block is zero-extended to 16 bits and split by mask / shift into elements 0..15 and
// 16..31, lining up with the activation block's two halves of 16 int16; madd + madd + add give
// 8 int32 lanes of 4 products, converted and FMA'd with the block scale into group lanes, folded
// into the output lanes with the group scale at each group's end; the offsets meet the
// per-group activation sums in a final 8-lane dot. Tiles: 4 rows x 2 columns reuse each
// unpacked block 4 times (GEMM, bound by vector uops: madd, madd, add, cvt, fma per 32 MACs);
// 1 row x 4 columns streams codes with prefetch (GEMV). Scales and offsets are f32 or f16 (F16C
// converts them; exact). The f32 path's B panels (q4_dequant_panels_avx2): 8 columns x 8 k
// dequantized as 8 vectors along k (zero-extend, nibble, convert, fma with the group's scale and
// offset), then transposed into the panel's rows. Raw pointers and intrinsics only.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

namespace ember::cpu {
namespace {

// GEMV prefetch distance, in tiles: short rows (K = 576: 288 bytes of codes) need the lines a
// few tiles ahead requested early, or the streams stall (1 tile: 22-28 GB/s, 4: 25-31 GB/s on
// SmolLM2's decode matrices).
constexpr int64_t kPrefetchTiles = 4;

inline float hsum8(__m256 v) {
  // ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), the reference's order.
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

inline float fma1(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// Scales and offsets as floats, from f32 or f16 bits (uint16_t): one value in every lane, and
// 8 values of which only the first n are read (n < 8: the rest are 0).
inline __m256 broadcast1(const float* p) { return _mm256_broadcast_ss(p); }
inline __m256 broadcast1(const uint16_t* p) { return _mm256_cvtph_ps(_mm_set1_epi16((short)*p)); }
inline __m256 load8(const float* p, int64_t n) {
  if (n >= 8) return _mm256_loadu_ps(p);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lanes));
}
inline __m256 load8(const uint16_t* p, int64_t n) {
  if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
  // Inserts, not a copy through the stack: a memcpy call in the GEMV loop spills its registers.
  __m128i h = _mm_setzero_si128();
  switch (n) {
    case 7: h = _mm_insert_epi16(h, p[6], 6); [[fallthrough]];
    case 6: h = _mm_insert_epi16(h, p[5], 5); [[fallthrough]];
    case 5: h = _mm_insert_epi16(h, p[4], 4); [[fallthrough]];
    case 4: h = _mm_insert_epi16(h, p[3], 3); [[fallthrough]];
    case 3: h = _mm_insert_epi16(h, p[2], 2); [[fallthrough]];
    case 2: h = _mm_insert_epi16(h, p[1], 1); [[fallthrough]];
    case 1: h = _mm_insert_epi16(h, p[0], 0); [[fallthrough]];
    default: break;
  }
  return _mm256_cvtph_ps(h);
}

// y[r * ldy + c] (r < R, c < C) = row r of the quantized activations (q [R, nb * 32], d [R, nb],
// gsum [R, ng]) times weight row c (codes [C, nb, 16], scales and offsets [C, ng]), + bias[c].
// ONE: groups of one block (GGUF), folded as they come: acc = fma(f * d, scale, acc), the same
// bits as the general gacc = fma(f, d, 0) (f * d is never -0 here), with half the registers.
// S: float, or uint16_t for f16 scales and offsets.
template <int R, int C, bool ONE, class S>
inline void tile(const int16_t* q, const float* d, const float* gsum, const uint8_t* codes,
                 const S* scales, const S* offsets, const float* bias, int64_t nb, int64_t ng,
                 int64_t bpg, float* y, int64_t ldy) {
  constexpr bool kF16 = sizeof(S) == 2;
  constexpr int64_t kLine = 64 / sizeof(S);  // scale (offset) elements per cache line
  const int64_t ldq = nb * 32, ldc = nb * 16;
  // ONE with f16: each column's scales of the next 8 blocks, converted at once (not a scalar
  // conversion per block), then broadcast from here.
  alignas(32) float sbuf[C][8];
  const __m256i low4 = _mm256_set1_epi16(0x0f);
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
  __m256 gacc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) gacc[r][c] = _mm256_setzero_ps();
  // One flat loop over blocks (group ends are a predictable branch): cheaper than a loop per
  // group when groups are one block (GGUF).
  int64_t g = 0, left = bpg;
  for (int64_t b = 0; b < nb; b++) {
    if constexpr (ONE && kF16) {
      if ((b & 7) == 0) {
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) _mm256_store_ps(sbuf[c], load8(scales + c * ng + b, nb - b));
      }
    }
    __m256i wlo[C], whi[C];  // elements 0..15 and 16..31 of the block, int16
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) {
      const uint8_t* p = codes + c * ldc + b * 16;
      // GEMV: C streams in lock step outrun the hardware prefetcher; fetch the same line of
      // the next tile (once per 64 bytes; past the end it is a harmless hint).
      if (R == 1 && (b & 3) == 0) _mm_prefetch((const char*)(p + kPrefetchTiles * C * ldc), _MM_HINT_T0);
      // Byte j -> 16-bit j: its low nibble is element j, its high nibble element j + 16.
      __m256i raw = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p));
      wlo[c] = _mm256_and_si256(raw, low4);
      whi[c] = _mm256_srli_epi16(raw, 4);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      __m256i qlo = _mm256_loadu_si256((const __m256i*)(q + r * ldq + b * 32));
      __m256i qhi = _mm256_loadu_si256((const __m256i*)(q + r * ldq + b * 32 + 16));
      __m256 dv = _mm256_broadcast_ss(d + r * nb + b);
#pragma GCC unroll 4
      for (int c = 0; c < C; c++) {
        // Lane l: elements 2l, 2l + 1, 2l + 16, 2l + 17 (|p| < 2^21: exact in float).
        __m256i p = _mm256_add_epi32(_mm256_madd_epi16(wlo[c], qlo),
                                     _mm256_madd_epi16(whi[c], qhi));
        if (ONE) {
          __m256 sv;
          if constexpr (kF16) sv = _mm256_broadcast_ss(&sbuf[c][b & 7]);
          else sv = _mm256_broadcast_ss(scales + c * ng + b);
          acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), dv), sv, acc[r][c]);
        } else {
          gacc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), dv, gacc[r][c]);
        }
      }
    }
    if (R == 1 && (b & (kLine - 1)) == 0) {  // once per line of each stream
#pragma GCC unroll 4
      for (int c = 0; c < C; c++) {
        _mm_prefetch((const char*)(scales + (c + kPrefetchTiles * C) * ng + b), _MM_HINT_T0);
        _mm_prefetch((const char*)(offsets + (c + kPrefetchTiles * C) * ng + b), _MM_HINT_T0);
      }
    }
    if (!ONE && (--left == 0 || b + 1 == nb)) {  // the group's end: fold with its scale
#pragma GCC unroll 4
      for (int c = 0; c < C; c++) {
        __m256 sv = broadcast1(scales + c * ng + g);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
          acc[r][c] = _mm256_fmadd_ps(gacc[r][c], sv, acc[r][c]);
          gacc[r][c] = _mm256_setzero_ps();
        }
      }
      g++;
      left = bpg;
    }
  }
  // The offset term: sum over groups of offsets[n, g] * gsum[m, g] in 8 lanes, zeros past ng.
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      const S* o = offsets + c * ng;
      const float* gs = gsum + r * ng;
      __m256 ov = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 8 <= ng; i += 8)
        ov = _mm256_fmadd_ps(load8(o + i, 8), _mm256_loadu_ps(gs + i), ov);
      if (i < ng) ov = _mm256_fmadd_ps(load8(o + i, ng - i), load8(gs + i, ng - i), ov);
      float v = hsum8(acc[r][c]) + hsum8(ov);
      if (bias) v = v + bias[c];
      y[r * ldy + c] = v;
    }
}

template <class S>
using TileFn = void (*)(const int16_t*, const float*, const float*, const uint8_t*, const S*,
                        const S*, const float*, int64_t, int64_t, int64_t, float*, int64_t);

// Tiles of r = 1..4 rows for C columns: kRows<C, ONE, S>[r].
template <int C, bool ONE, class S>
constexpr TileFn<S> kRows[5] = {nullptr, tile<1, C, ONE, S>, tile<2, C, ONE, S>,
                                tile<3, C, ONE, S>, tile<4, C, ONE, S>};

// q4_act_quantize16_avx2's algorithm for codes of type T clamped to +-kLim.
template <class T, int kLim>
void act_quantize(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group, T* q,
                  float* d, float* gsum) {
  const int64_t nb = (K + 31) / 32, ng = (K + group - 1) / group, bpg = group / 32;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i lim = _mm256_set1_epi32(kLim), nlim = _mm256_set1_epi32(-kLim);
  for (int64_t m = 0; m < M; m++) {
    const float* x = a + m * lda;
    float gs = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
      const float* src = x + 32 * b;
      float pad[32];
      if (32 * b + 32 > K) {  // the tail block, zero-padded
        for (int j = 0; j < 32; j++) pad[j] = 32 * b + j < K ? src[j] : 0.0f;
        src = pad;
      }
      __m256 v[4], vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
      for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(src + 8 * i);
        vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, v[i]));
        // x - x is NaN exactly for inf and NaN.
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v[i], v[i]), v[i], _CMP_UNORD_Q));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
      bool finite = _mm256_movemask_ps(bad) == 0;
      float db = finite ? amax / (float)kLim : NAN;
      __m256i qi[4];
      if (finite && db != 0.0f) {
        __m256 dv = _mm256_set1_ps(db);
        for (int i = 0; i < 4; i++) {
          __m256i t = _mm256_cvtps_epi32(_mm256_div_ps(v[i], dv));  // nearest even (MXCSR)
          qi[i] = _mm256_max_epi32(_mm256_min_epi32(t, lim), nlim);
        }
      } else {
        for (int i = 0; i < 4; i++) qi[i] = _mm256_setzero_si256();
      }
      __m256i s = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      int isum = _mm_cvtsi128_si32(s4);
      // packs works within 128-bit lanes: packs_epi32(e0..7, e8..15) holds e0..3 e8..11 e4..7
      // e12..15 in 64-bit quarters, hence the permutes back to element order.
      __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]), p23 = _mm256_packs_epi32(qi[2], qi[3]);
      T* dst = q + m * nb * 32 + 32 * b;
      if constexpr (sizeof(T) == 2) {
        _mm256_storeu_si256((__m256i*)dst, _mm256_permute4x64_epi64(p01, 0xd8));
        _mm256_storeu_si256((__m256i*)(dst + 16), _mm256_permute4x64_epi64(p23, 0xd8));
      } else {
        _mm256_storeu_si256((__m256i*)dst,
                            _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23),
                                                        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
      }
      d[m * nb + b] = db;
      gs = fma1(db, (float)isum, gs);
      if ((b + 1) % bpg == 0 || b + 1 == nb) {
        if (gsum) gsum[m * ng + b / bpg] = gs;  // null: Q8MatMul, which has no offsets
        gs = 0.0f;
      }
    }
  }
}

}  // namespace

void q4_act_quantize16_avx2(const float* a, int64_t lda, int64_t M, int64_t K, int64_t group,
                            int16_t* q, float* d, float* gsum) {
  act_quantize<int16_t, 32767>(a, lda, M, K, group, q, d, gsum);
}

namespace {

template <class S>
void gemm_tile(const int16_t* q, const float* d, const float* gsum, int64_t rows,
               const uint8_t* codes, const S* scales, const S* offsets, const float* bias,
               int64_t cols, int64_t K, int64_t group, float* y, int64_t ldy) {
  const int64_t nb = (K + 31) / 32, ng = (K + group - 1) / group, bpg = group / 32;
  const bool one = bpg == 1;
  int64_t c0 = 0;
  // One row (GEMV): four columns at a time, each a stream of codes.
  if (rows == 1) {
    TileFn<S> gemv = one ? kRows<4, true, S>[1] : kRows<4, false, S>[1];
    for (; c0 + 4 <= cols; c0 += 4)
      gemv(q, d, gsum, codes + c0 * nb * 16, scales + c0 * ng, offsets + c0 * ng,
           bias ? bias + c0 : nullptr, nb, ng, bpg, y + c0, ldy);
  }
  // Then 4 x 2 tiles (any rows), and a last column 4 x 1.
  for (int cw = 2; cw >= 1; cw--) {
    for (; c0 + cw <= cols; c0 += cw) {
      for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        int64_t r = rows - r0 < 4 ? rows - r0 : 4;
        TileFn<S> fn = cw == 2 ? (one ? kRows<2, true, S>[r] : kRows<2, false, S>[r])
                               : (one ? kRows<1, true, S>[r] : kRows<1, false, S>[r]);
        fn(q + r0 * nb * 32, d + r0 * nb, gsum + r0 * ng, codes + c0 * nb * 16, scales + c0 * ng,
           offsets + c0 * ng, bias ? bias + c0 : nullptr, nb, ng, bpg, y + r0 * ldy + c0, ldy);
      }
    }
  }
}

}  // namespace

void q4_gemm_tile_avx2(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                       const uint8_t* codes, const float* scales, const float* offsets,
                       const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                       int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

void q4_gemm_tile_avx2(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                       const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                       const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                       int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

namespace {

inline float scalar_value(float v) { return v; }
inline float scalar_value(uint16_t h) { return _cvtsh_ss(h); }  // exact

// x[c] = 16 code bytes of column c -> out[8 j + c] = byte j of column c (an 8 x 16 byte
// transpose: three rounds of unpacks).
inline void transpose_codes(const __m128i x[8], uint8_t* out) {
  __m128i t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);      // j 0..7, columns 2i, 2i + 1
    t[2 * i + 1] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);  // j 8..15
  }
  for (int h = 0; h < 2; h++)  // columns 0..3, then 4..7
    for (int i = 0; i < 2; i++) {
      u[4 * h + 2 * i] = _mm_unpacklo_epi16(t[4 * h + i], t[4 * h + 2 + i]);
      u[4 * h + 2 * i + 1] = _mm_unpackhi_epi16(t[4 * h + i], t[4 * h + 2 + i]);
    }
  // u[i] (i < 4): j 4i .. 4i + 3 of columns 0..3, 4 bytes each; u[i + 4]: columns 4..7.
  for (int i = 0; i < 4; i++) {
    _mm_storeu_si128((__m128i*)(out + 32 * i), _mm_unpacklo_epi32(u[i], u[i + 4]));
    _mm_storeu_si128((__m128i*)(out + 32 * i + 16), _mm_unpackhi_epi32(u[i], u[i + 4]));
  }
}

template <class S>
void dequant_panels(const uint8_t* codes, const S* scales, const S* offsets, int64_t K,
                    int64_t group, int64_t k0, int64_t kc, int64_t j0, int64_t j1, float* bp) {
  const int64_t nb = (K + 31) / 32, ng = (K + group - 1) / group;
  const __m256i low4 = _mm256_set1_epi32(0x0f);
  for (int64_t p = 0; p * 16 < j1 - j0; p++) {
    float* panel = bp + p * kc * 16;
    for (int half = 0; half < 2; half++) {
      const int64_t c0 = j0 + p * 16 + half * 8;
      const int cols = c0 < j1 ? (int)(j1 - c0 < 8 ? j1 - c0 : 8) : 0;
      float* out = panel + half * 8;
      if (cols == 0) {
        for (int64_t k = 0; k < kc; k++) _mm256_storeu_ps(out + k * 16, _mm256_setzero_ps());
        continue;
      }
      // Per 32-block (k0 is a multiple of 32): the 8 columns' code bytes transposed, so that
      // byte j of every column lies in one 8-byte row (its low nibble is element j, its high
      // nibble element j + 16), and their scales and offsets as vectors. Missing columns
      // repeat column 0 and are zeroed.
      const uint8_t* cn[8];
      const S* sn[8];
      const S* on[8];
      for (int c = 0; c < 8; c++) {
        const int64_t n = c0 + (c < cols ? c : 0);
        cn[c] = codes + n * nb * 16;
        sn[c] = scales + n * ng;
        on[c] = offsets + n * ng;
      }
      const __m256 keep = _mm256_castsi256_ps(
          _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
      for (int64_t b = k0 / 32; b * 32 < k0 + kc; b++) {
        alignas(32) float sv[8], ov[8];
        alignas(16) uint8_t tb[128];
        __m128i x[8];
        const int64_t g = b * 32 / group;
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
          sv[c] = scalar_value(sn[c][g]);
          ov[c] = scalar_value(on[c][g]);
          x[c] = _mm_loadu_si128((const __m128i*)(cn[c] + b * 16));
        }
        transpose_codes(x, tb);
        const __m256 s = _mm256_and_ps(_mm256_load_ps(sv), keep);
        const __m256 o = _mm256_and_ps(_mm256_load_ps(ov), keep);
        const int64_t kend = k0 + kc - b * 32 < 32 ? k0 + kc - b * 32 : 32;
        float* dst = out + (b * 32 - k0) * 16;
        if (kend == 32) {
#pragma GCC unroll 16
          for (int j = 0; j < 16; j++) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(tb + 8 * j)));
            _mm256_storeu_ps(dst + j * 16,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, low4)), s, o));
            _mm256_storeu_ps(dst + (j + 16) * 16,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), s, o));
          }
        } else {
          for (int64_t e = 0; e < kend; e++) {
            __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(tb + 8 * (e % 16))));
            v = e < 16 ? _mm256_and_si256(v, low4) : _mm256_srli_epi32(v, 4);
            _mm256_storeu_ps(dst + e * 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), s, o));
          }
        }
      }
    }
  }
}

}  // namespace

void q4_dequant_panels_avx2(const uint8_t* codes, const float* scales, const float* offsets,
                            int64_t K, int64_t group, int64_t k0, int64_t kc, int64_t j0,
                            int64_t j1, float* bp) {
  dequant_panels(codes, scales, offsets, K, group, k0, kc, j0, j1, bp);
}

void q4_dequant_panels_avx2(const uint8_t* codes, const uint16_t* scales,
                            const uint16_t* offsets, int64_t K, int64_t group, int64_t k0,
                            int64_t kc, int64_t j0, int64_t j1, float* bp) {
  dequant_panels(codes, scales, offsets, K, group, k0, kc, j0, j1, bp);
}

}  // namespace ember::cpu
