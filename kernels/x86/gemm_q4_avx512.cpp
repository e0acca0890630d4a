// INT4 x INT16 GEMM tiles, AVX-512 + VNNI (contracts in kernels/generic/gemm_q4.h; reference and
// float order: cpp/src/ops/ops_q4matmul.cpp), bit-identical to gemm_q4_avx2.cpp. One zmm holds
// the reference's 8 lanes of two columns (column 2p in its low 256 bits, 2p + 1 in its high): the
// 16-byte code blocks zero-extend to 32 int16 (mask / shift: elements 0..15, 16..31), the
// activation block's halves are broadcast to both 256-bit halves, madd + vpdpwssd give both
// columns' int32 lanes; then convert, * d, fma with the block scale (8 blocks' scales permuted
// into place) or the group scale, per lane as AVX2. The offset term and the 8-lane sums run on
// both columns at once. Tiles: R x C (odd C: the last pair repeats its column, stored once),
// prefetching 4 column groups ahead (1.2-1.35x at 16 rows from memory); GEMV 1 x 8 (f16
// scales) or 1 x 4. Raw pointers and intrinsics only.
#include <immintrin.h>
#include <stdint.h>

// NOTE: GCC 12's AVX-512 headers build their "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wuninitialized reports at every inlined use (cast, broadcast, shuffle): noise, not a bug.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ember::cpu {
namespace {

// Prefetch distance, in column groups (GEMV with f16 scales, 8 columns: 2, 6 and 8 no better;
// 16 rows from memory: 1 to 4 the same; 2 rows: 4 is 7% ahead of 1).
constexpr int64_t kPrefetchTiles = 4;

// GEMM tiles: kGemmR rows x kGemmC columns, 16 accumulators (and 16 group accumulators when
// groups span blocks, partly spilled: still the fastest measured, ahead of 4 x 4 and 2 x 8).
constexpr int kGemmR = 4, kGemmC = 8;

// Columns 2p and 2p + 1 of 8 values from p0 and p1 (n < 8: the rest 0), f32 or f16 bits.
inline __m512 load8x2(const float* p0, const float* p1, __mmask8 m) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(m, p0)),
                            _mm256_maskz_loadu_ps(m, p1), 1);
}
inline __m512 load8x2(const uint16_t* p0, const uint16_t* p1, __mmask8 m) {
  __m128i h0 = _mm_maskz_loadu_epi16(m, p0), h1 = _mm_maskz_loadu_epi16(m, p1);
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1));
}
// One value of each column in its 8 lanes.
inline __m512 broadcast1x2(const float* p0, const float* p1) {
  return _mm512_insertf32x8(_mm512_set1_ps(*p0), _mm256_set1_ps(*p1), 1);
}
inline __m512 broadcast1x2(const uint16_t* p0, const uint16_t* p1) {
  return _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(*p0)), _mm256_set1_ps(_cvtsh_ss(*p1)), 1);
}

// y[r * ldy + c] (r < R, c < C) = row r of the quantized activations (q [R, nb * 32], d [R, nb],
// gsum [R, ng]) times weight row c (codes [C, nb, 16], scales and offsets [C, ng]), + bias[c].
// ONE: groups of one block (GGUF), folded as they come (acc = fma(f * d, scale, acc), as AVX2).
// S: float, or uint16_t for f16 scales and offsets.
template <int R, int C, bool ONE, class S>
inline void tile(const int16_t* q, const float* d, const float* gsum, const uint8_t* codes,
                 const S* scales, const S* offsets, const float* bias, int64_t nb, int64_t ng,
                 int64_t bpg, float* y, int64_t ldy) {
  constexpr int P = (C + 1) / 2;
  constexpr int64_t kLine = 64 / sizeof(S);  // scale (offset) elements per cache line
  const int64_t ldq = nb * 32, ldc = nb * 16;
  // Column of half h of pair p; odd C: the last pair's high half repeats its low one.
  auto col = [](int p, int h) { return 2 * p + h < C ? 2 * p + h : 2 * p; };
  const __m512i low4 = _mm512_set1_epi16(0x0f);
  // Lane permutation picking block i of 8 in each half: i in 0..7, i + 8 in 8..15.
  const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
  __m512 acc[R][P], gacc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) acc[r][p] = gacc[r][p] = _mm512_setzero_ps();
  int64_t g = 0, left = bpg;
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int64_t nbc = nb - b0 < 8 ? nb - b0 : 8;
    __m512 s8[P];  // ONE: the pair's scales of blocks b0 .. b0 + 7
    if constexpr (ONE) {
      const __mmask8 m = (__mmask8)((1u << nbc) - 1);
#pragma GCC unroll 4
      for (int p = 0; p < P; p++)
        s8[p] = load8x2(scales + col(p, 0) * ng + b0, scales + col(p, 1) * ng + b0, m);
    }
    for (int64_t i = 0; i < nbc; i++) {
      const int64_t b = b0 + i;
      __m512i wlo[P], whi[P];  // elements 0..15 and 16..31 of the block, int16, per half
#pragma GCC unroll 4
      for (int p = 0; p < P; p++) {
        const uint8_t* p0 = codes + col(p, 0) * ldc + b * 16;
        const uint8_t* p1 = codes + col(p, 1) * ldc + b * 16;
        // The C streams outrun the hardware prefetcher; fetch the same line of the column
        // group kPrefetchTiles ahead, once per 64 bytes (past the end it is a harmless hint).
        if ((b & 3) == 0) {
          const int64_t ahead = kPrefetchTiles * C * ldc;
          _mm_prefetch((const char*)(p0 + ahead), _MM_HINT_T0);
          if (2 * p + 1 < C) _mm_prefetch((const char*)(p1 + ahead), _MM_HINT_T0);
        }
        __m256i two = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)p0)),
            _mm_loadu_si128((const __m128i*)p1), 1);
        // Byte j -> 16-bit j: its low nibble is element j, its high nibble element j + 16.
        __m512i raw = _mm512_cvtepu8_epi16(two);
        wlo[p] = _mm512_and_si512(raw, low4);
        whi[p] = _mm512_srli_epi16(raw, 4);
      }
      __m512 sv[P];
      if constexpr (ONE) {
        const __m512i pick = _mm512_add_epi32(pick0, _mm512_set1_epi32((int)i));
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) sv[p] = _mm512_permutexvar_ps(pick, s8[p]);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const int16_t* qb = q + r * ldq + b * 32;
        const __m512i qlo = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)qb));
        const __m512i qhi = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(qb + 16)));
        const __m512 dv = _mm512_set1_ps(d[r * nb + b]);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
          // Lane l of each half: elements 2l, 2l + 1, 2l + 16, 2l + 17 (exact in float).
          __m512i s = _mm512_dpwssd_epi32(_mm512_madd_epi16(wlo[p], qlo), whi[p], qhi);
          if constexpr (ONE)
            acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), dv), sv[p], acc[r][p]);
          else
            gacc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dv, gacc[r][p]);
        }
      }
      if ((b & (kLine - 1)) == 0) {  // once per line of each stream
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) {
          _mm_prefetch((const char*)(scales + (c + kPrefetchTiles * C) * ng + b), _MM_HINT_T0);
          _mm_prefetch((const char*)(offsets + (c + kPrefetchTiles * C) * ng + b), _MM_HINT_T0);
        }
      }
      if (!ONE && (--left == 0 || b + 1 == nb)) {  // the group's end: fold with its scale
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
          const __m512 gs = broadcast1x2(scales + col(p, 0) * ng + g, scales + col(p, 1) * ng + g);
#pragma GCC unroll 8
          for (int r = 0; r < R; r++) {
            acc[r][p] = _mm512_fmadd_ps(gacc[r][p], gs, acc[r][p]);
            gacc[r][p] = _mm512_setzero_ps();
          }
        }
        g++;
        left = bpg;
      }
    }
  }
  // The offset term per half: sum over groups of offsets[n, g] * gsum[m, g] in 8 lanes, zeros
  // past ng (fma(0, 0, .) as AVX2's masked tail).
  __m512 ov[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) ov[r][p] = _mm512_setzero_ps();
  for (int64_t i = 0; i < ng; i += 8) {
    const __mmask8 m = (__mmask8)(ng - i >= 8 ? 0xff : (1u << (ng - i)) - 1);
    __m512 o[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
      o[p] = load8x2(offsets + col(p, 0) * ng + i, offsets + col(p, 1) * ng + i, m);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m512 gv = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(m, gsum + r * ng + i));
#pragma GCC unroll 4
      for (int p = 0; p < P; p++) ov[r][p] = _mm512_fmadd_ps(o[p], gv, ov[r][p]);
    }
  }
  // y = sum8(acc) + sum8(ov) per half, sum8(a) = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 +
  // a7)) (AVX2's hsum8), the four sums of a pair in the 128-bit quarters of one vector.
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
      // Quarters: acc lanes 0..3 of columns 0, 1 and ov's of both, then their lanes 4..7.
      __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(acc[r][p], ov[r][p], 0x88),
                               _mm512_shuffle_f32x4(acc[r][p], ov[r][p], 0xdd));
      __m512 t = _mm512_add_ps(s, _mm512_permute_ps(s, 0xee));  // (s0 + s2, s1 + s3)
      __m512 h = _mm512_add_ps(t, _mm512_permute_ps(t, 0x55));  // t0 + t1 in lane 0
      // Lane 0: sum8(acc) + sum8(ov) of column 0; lane 4: of column 1.
      __m512 v = _mm512_add_ps(h, _mm512_shuffle_f32x4(h, h, 0xee));
      for (int hf = 0; hf < 2 && 2 * p + hf < C; hf++) {
        const int c = 2 * p + hf;
        float x = _mm_cvtss_f32(hf ? _mm512_extractf32x4_ps(v, 1) : _mm512_castps512_ps128(v));
        if (bias) x = x + bias[c];
        y[r * ldy + c] = x;
      }
    }
}

template <class S>
using TileFn = void (*)(const int16_t*, const float*, const float*, const uint8_t*, const S*,
                        const S*, const float*, int64_t, int64_t, int64_t, float*, int64_t);

// Tiles of r = 1..4 rows for C columns: kRows<C, ONE, S>[r].
template <int C, bool ONE, class S>
constexpr TileFn<S> kRows[5] = {nullptr, tile<1, C, ONE, S>, tile<2, C, ONE, S>,
                                tile<3, C, ONE, S>, tile<4, C, ONE, S>};

template <class S>
void gemm_tile(const int16_t* q, const float* d, const float* gsum, int64_t rows,
               const uint8_t* codes, const S* scales, const S* offsets, const float* bias,
               int64_t cols, int64_t K, int64_t group, float* y, int64_t ldy) {
  const int64_t nb = (K + 31) / 32, ng = (K + group - 1) / group, bpg = group / 32;
  const bool one = bpg == 1;
  int64_t c0 = 0;
  // One row with f32 scales (the GEMV's 3 streams per column): 4 columns at a time (8 read
  // group-32 weights ~20% slower).
  if (rows == 1 && sizeof(S) == 4) {
    TileFn<S> gemv = one ? kRows<4, true, S>[1] : kRows<4, false, S>[1];
    for (; c0 + 4 <= cols; c0 += 4)
      gemv(q, d, gsum, codes + c0 * nb * 16, scales + c0 * ng, offsets + c0 * ng,
           bias ? bias + c0 : nullptr, nb, ng, bpg, y + c0, ldy);
  }
  // kGemmC-column tiles (column groups outer, so their codes stay in L1 over the rows; one row
  // with f16 scales, the GGUF GEMV: 8 streams, ~12% faster from memory than 4), and the last
  // columns 2, then 1 at a time.
  const int widths[3] = {kGemmC, 2, 1};
  for (int cw : widths) {
    for (; c0 + cw <= cols; c0 += cw) {
      const int64_t rmax = cw == kGemmC ? kGemmR : 4;
      for (int64_t r0 = 0; r0 < rows; r0 += rmax) {
        const int64_t r = rows - r0 < rmax ? rows - r0 : rmax;
        TileFn<S> fn;
        if (cw == kGemmC) fn = one ? kRows<kGemmC, true, S>[r] : kRows<kGemmC, false, S>[r];
        else if (cw == 2) fn = one ? kRows<2, true, S>[r] : kRows<2, false, S>[r];
        else fn = one ? kRows<1, true, S>[r] : kRows<1, false, S>[r];
        fn(q + r0 * nb * 32, d + r0 * nb, gsum + r0 * ng, codes + c0 * nb * 16, scales + c0 * ng,
           offsets + c0 * ng, bias ? bias + c0 : nullptr, nb, ng, bpg, y + r0 * ldy + c0, ldy);
      }
    }
  }
}

}  // namespace

void q4_gemm_tile_avx512(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                         const uint8_t* codes, const float* scales, const float* offsets,
                         const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                         int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

void q4_gemm_tile_avx512(const int16_t* q, const float* d, const float* gsum, int64_t rows,
                         const uint8_t* codes, const uint16_t* scales, const uint16_t* offsets,
                         const float* bias, int64_t cols, int64_t K, int64_t group, float* y,
                         int64_t ldy) {
  gemm_tile(q, d, gsum, rows, codes, scales, offsets, bias, cols, K, group, y, ldy);
}

}  // namespace ember::cpu
