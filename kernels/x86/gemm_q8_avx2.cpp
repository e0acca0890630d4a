// INT8 weight x INT16 activation GEMM tiles, AVX2 + FMA (activations: q4_act_quantize16_avx2)
// (contract and generic twins in kernels/generic/gemm_q8.h; reference and float order:
// cpp/src/ops/ops_q8matmul.cpp). Per 32-block the codes widen to int16 in two halves
// (cvtepi8_epi16) and madd_epi16 against the int16 activations gives the reference's 8 int32
// lanes (|lane| <= 4 * 32767 * 128 < 2^24), converted and FMA'd with the block's combined scale
// d * scale (8 blocks' products by one vmulps, kept on the stack). Tiles: kGemmR rows x kGemmC
// columns share each widened code and activation load (GEMM, bound by the vector ALUs); up to
// 4 rows x 1 column walk the codes as one sequential stream with software prefetch (GEMV and
// small batches, bound by memory: columns read in lock step are short streams that the
// hardware prefetcher misses). Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

namespace ember::cpu {
namespace {

// The GEMM tile (rows > 4): 4 x 3 needs 12 accumulators and 6 widened code halves.
constexpr int kGemmR = 4, kGemmC = 3;

inline float hsum8(__m256 v) {
  // ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), the reference's order.
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// y[r * ldy + c] (r < R, c < C) = row r of the quantized activations (q [R, nb * 32], d [R, nb])
// times weight row c (codes [C, nb, 32], scales [C, nb]), + bias[c].
template <int R, int C>
inline void tile(const int16_t* q, const float* d, const int8_t* codes, const float* scales,
                 const float* bias, int64_t nb, float* y, int64_t ldy) {
  const int64_t ldq = nb * 32, ldc = nb * 32;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
  alignas(32) float sc[R][C][8];  // combined scales d[r, b] * scales[c, b] of 8 blocks
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int64_t nbc = nb - b0 < 8 ? nb - b0 : 8;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nbc), lane);
    __m256 sv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
      sv[c] = nbc == 8 ? _mm256_loadu_ps(scales + c * nb + b0)
                       : _mm256_maskload_ps(scales + c * nb + b0, mask);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      __m256 dv = nbc == 8 ? _mm256_loadu_ps(d + r * nb + b0)
                           : _mm256_maskload_ps(d + r * nb + b0, mask);
#pragma GCC unroll 4
      for (int c = 0; c < C; c++) _mm256_store_ps(sc[r][c], _mm256_mul_ps(dv, sv[c]));
    }
    for (int64_t i = 0; i < nbc; i++) {
      const int64_t b = b0 + i;
      __m256i wl[C], wh[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; c++) {
        const int8_t* p = codes + c * ldc + b * 32;
        // One column: the codes are one stream; fetch 4 KiB ahead (once per 64-byte line; past
        // the end it is a harmless hint). Measured best between 2 and 9 KiB.
        if (C == 1 && (b & 1) == 0) _mm_prefetch((const char*)p + 4096, _MM_HINT_T0);
        wl[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p));
        wh[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(p + 16)));
      }
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) {
        const __m256i ql = _mm256_loadu_si256((const __m256i*)(q + r * ldq + b * 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i*)(q + r * ldq + b * 32 + 16));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
          __m256i p32 =
              _mm256_add_epi32(_mm256_madd_epi16(wl[c], ql), _mm256_madd_epi16(wh[c], qh));
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_broadcast_ss(&sc[r][c][i]),
                                      acc[r][c]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) {
      float v = hsum8(acc[r][c]);
      if (bias) v = v + bias[c];
      y[r * ldy + c] = v;
    }
}

using TileFn = void (*)(const int16_t*, const float*, const int8_t*, const float*, const float*,
                        int64_t, float*, int64_t);

// Tiles of r = 1..4 rows for C columns: kRows<C>[r].
template <int C>
constexpr TileFn kRows[5] = {nullptr, tile<1, C>, tile<2, C>, tile<3, C>, tile<4, C>};

}  // namespace

void q8_gemm_tile_avx2(const int16_t* q, const float* d, int64_t rows, const int8_t* codes,
                       const float* scales, const float* bias, int64_t cols, int64_t K, float* y,
                       int64_t ldy) {
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
  // Up to 4 rows (and the last columns of more): one column at a time, a stream of codes.
  for (; c0 < cols; c0++)
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      int64_t r = rows - r0 < 4 ? rows - r0 : 4;
      kRows<1>[r](q + r0 * nb * 32, d + r0 * nb, codes + c0 * nb * 32, scales + c0 * nb,
                  bias ? bias + c0 : nullptr, nb, y + r0 * ldy + c0, ldy);
    }
}

}  // namespace ember::cpu
