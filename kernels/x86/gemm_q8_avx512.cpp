// INT8 weight x INT16 activation GEMM tiles, AVX-512 + VNNI (activations: q4_act_quantize16_avx2;
// contract in kernels/generic/gemm_q8.h; reference and float order: cpp/src/ops/ops_q8matmul.cpp),
// bit-identical to gemm_q8_avx2.cpp. One zmm holds the reference's 8 lanes of two columns (column
// 2p in its low 256 bits, 2p + 1 in its high): their code halves sign-extend to int16 side by
// side, the activation block's halves are broadcast to both 256-bit halves, and madd + vpdpwssd
// give both columns' int32 lanes; convert and fma with the combined scale d * scale (8 blocks'
// products by one vmulps per row and pair, permuted into place per block). Tiles: R rows x C
// columns (odd C: the last pair repeats its column, stored once), each prefetching the next
// column group's codes and scales; up to 4 rows x 2 columns walk the codes 4 KiB ahead (the
// driver runs AVX2's tiles there: see gemm_q8_x86.cpp). Raw pointers and intrinsics only.
#include <immintrin.h>
#include <stdint.h>

// NOTE: GCC 12's AVX-512 headers build their "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wuninitialized reports at every inlined use (cast, broadcast, shuffle): noise, not a bug.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ember::cpu {
namespace {

// The GEMM tile (rows > 4): 4 x 8, 16 accumulators.
constexpr int kGemmR = 4, kGemmC = 8;

// y[r * ldy + c] (r < R, c < C) = row r of the quantized activations (q [R, nb * 32], d [R, nb])
// times weight row c (codes [C, nb, 32], scales [C, nb]), + bias[c].
template <int R, int C>
inline void tile(const int16_t* q, const float* d, const int8_t* codes, const float* scales,
                 const float* bias, int64_t nb, float* y, int64_t ldy) {
  constexpr int P = (C + 1) / 2;
  const int64_t ldq = nb * 32, ldc = nb * 32;
  // Column of half h of pair p; odd C: the last pair's high half repeats its low one.
  auto col = [](int p, int h) { return 2 * p + h < C ? 2 * p + h : 2 * p; };
  // Lane permutation picking block i of 8 in each half: i in 0..7, i + 8 in 8..15.
  const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8);
  __m512 acc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) acc[r][p] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int64_t nbc = nb - b0 < 8 ? nb - b0 : 8;
    const __mmask8 m = (__mmask8)((1u << nbc) - 1);
    // sc[r][p]: d[r, b] * scales[c, b] of blocks b0 .. b0 + 7 (lanes past nb: 0), per half.
    __m512 sc[R][P];
    {
      __m512 sv[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; p++)
        sv[p] = _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm256_maskz_loadu_ps(m, scales + col(p, 0) * nb + b0)),
            _mm256_maskz_loadu_ps(m, scales + col(p, 1) * nb + b0), 1);
      for (int c = 0; c < C; c++)  // the next column group's scales, likewise
        _mm_prefetch((const char*)(scales + (c + C) * nb + b0), _MM_HINT_T0);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        __m512 dv = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(m, d + r * nb + b0));
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) sc[r][p] = _mm512_mul_ps(dv, sv[p]);
      }
    }
    for (int64_t i = 0; i < nbc; i++) {
      const int64_t b = b0 + i;
      __m512i wl[P], wh[P];  // codes 0..15 and 16..31 of the block, int16, per half
#pragma GCC unroll 4
      for (int p = 0; p < P; p++) {
        const int8_t* p0 = codes + col(p, 0) * ldc + b * 32;
        const int8_t* p1 = codes + col(p, 1) * ldc + b * 32;
        // Fetch ahead once per 64-byte line (past the end it is a harmless hint): few columns
        // (short streams) 4 KiB, as AVX2's single-column walk; GEMM tiles the same block of
        // the next column group (the hardware prefetcher misses C streams from memory: 1.3x
        // on the 32 MB LM head at 16 rows).
        if ((b & 1) == 0) {
          const int64_t ahead = C <= 2 ? 4096 : C * ldc;
          _mm_prefetch((const char*)p0 + ahead, _MM_HINT_T0);
          if (2 * p + 1 < C) _mm_prefetch((const char*)p1 + ahead, _MM_HINT_T0);
        }
        __m256i lo = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)p0)),
            _mm_loadu_si128((const __m128i*)p1), 1);
        __m256i hi = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(p0 + 16))),
            _mm_loadu_si128((const __m128i*)(p1 + 16)), 1);
        wl[p] = _mm512_cvtepi8_epi16(lo);
        wh[p] = _mm512_cvtepi8_epi16(hi);
      }
      const __m512i pick = _mm512_add_epi32(pick0, _mm512_set1_epi32((int)i));
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const int16_t* qb = q + r * ldq + b * 32;
        const __m512i ql = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)qb));
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(qb + 16)));
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
          // Lane l of each half: codes 2l, 2l + 1, 2l + 16, 2l + 17 (exact in float).
          __m512i s = _mm512_dpwssd_epi32(_mm512_madd_epi16(wl[p], ql), wh[p], qh);
          acc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(pick, sc[r][p]),
                                      acc[r][p]);
        }
      }
    }
  }
  // y = sum8(acc) per half, sum8(a) = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) (AVX2's
  // hsum8), two pairs' four sums in the 128-bit quarters of one vector.
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int p = 0; p < P; p += 2) {
      const __m512 a1 = p + 1 < P ? acc[r][p + 1] : acc[r][p];
      // Quarters: lanes 0..3 of columns 2p, 2p + 1, 2p + 2, 2p + 3, then their lanes 4..7.
      __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(acc[r][p], a1, 0x88),
                               _mm512_shuffle_f32x4(acc[r][p], a1, 0xdd));
      __m512 t = _mm512_add_ps(s, _mm512_permute_ps(s, 0xee));  // (s0 + s2, s1 + s3)
      __m512 h = _mm512_add_ps(t, _mm512_permute_ps(t, 0x55));  // t0 + t1 in lane 0
      alignas(64) float hv[16];
      _mm512_store_ps(hv, h);
      for (int j = 0; j < 4 && 2 * p + j < C; j++) {
        const int c = 2 * p + j;
        float x = hv[4 * j];
        if (bias) x = x + bias[c];
        y[r * ldy + c] = x;
      }
    }
}

using TileFn = void (*)(const int16_t*, const float*, const int8_t*, const float*, const float*,
                        int64_t, float*, int64_t);

// Tiles of r = 1..4 rows for C columns: kRows<C>[r].
template <int C>
constexpr TileFn kRows[5] = {nullptr, tile<1, C>, tile<2, C>, tile<3, C>, tile<4, C>};

}  // namespace

void q8_gemm_tile_avx512(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                         const float* scales, const float* bias, int64_t cols, int64_t K,
                         float* y, int64_t ldy) {
  const int64_t nb = (K + 31) / 32;
  int64_t c0 = 0;
  // Many rows: kGemmR x kGemmC tiles (column groups outer, so their codes stay in L1 over the
  // rows).
  if (rows > 4)
    for (; c0 + kGemmC <= cols; c0 += kGemmC)
      for (int64_t r0 = 0; r0 < rows; r0 += kGemmR) {
        int64_t r = rows - r0 < kGemmR ? rows - r0 : kGemmR;
        kRows<kGemmC>[r](q + r0 * nb * 32, d + r0 * nb, codes + c0 * nb * 32, scales + c0 * nb,
                         bias ? bias + c0 : nullptr, nb, y + r0 * ldy + c0, ldy);
      }
  // Up to 4 rows (and the last columns of more): two columns at a time, then one.
  for (int cw = 2; cw >= 1; cw--)
    for (; c0 + cw <= cols; c0 += cw)
      for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        int64_t r = rows - r0 < 4 ? rows - r0 : 4;
        (cw == 2 ? kRows<2>[r] : kRows<1>[r])(q + r0 * nb * 32, d + r0 * nb, codes + c0 * nb * 32,
                                             scales + c0 * nb, bias ? bias + c0 : nullptr, nb,
                                             y + r0 * ldy + c0, ldy);
      }
}

}  // namespace ember::cpu
