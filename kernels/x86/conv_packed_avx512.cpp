// FusedConv's epilogue, AVX-512 (the ConvTileStore contract of
// kernels/generic/conv_packed_f32.h; generic version and driver: conv_packed_f32.cpp): a
// [rows, 32] tile of Y^T is written into 32 planes of Y with bias and relu, 16 x 16 blocks
// transposed in registers (the strided scalar loop cost as much as the stem's packing). The
// same additions and max(0, v) as the generic store (v < 0 ? 0 : v: NaN stays NaN, -0 stays
// -0), so the same bits. Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>

#include <cstdint>

// GCC 12's intrinsics start some results from an undefined vector, which
// -Wmaybe-uninitialized reports once they are inlined (as in elementwise_avx512.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ember::cpu {
namespace {

// r[0..15] (rows of a 16 x 16 block) <- its columns.
inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // r[4 k + j]'s 128-bit lane L now holds column 4 L + j of rows 4 k .. 4 k + 3; two rounds of
  // lane shuffles gather column c's four lanes into r[c].
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

}  // namespace

void conv_tile_store_avx512(const float* tile, int64_t rows, int64_t cols, const float* bias,
                            bool relu, float* y, int64_t ys) {
  const __m512 zero = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= rows; i += 16)
    for (int64_t m0 = 0; m0 < 32 && m0 < cols; m0 += 16) {
      __m512 r[16];
      for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(tile + (i + j) * 32 + m0);
      transpose16(r);
      for (int j = 0; j < 16 && m0 + j < cols; j++) {
        __m512 v = bias ? _mm512_add_ps(r[j], _mm512_set1_ps(bias[m0 + j])) : r[j];
        if (relu) v = _mm512_max_ps(zero, v);
        _mm512_storeu_ps(y + (m0 + j) * ys + i, v);
      }
    }
  for (int64_t m = 0; m < cols && i < rows; m++) {  // the last rows % 16
    for (int64_t k = i; k < rows; k++) {
      const float v = bias ? tile[k * 32 + m] + bias[m] : tile[k * 32 + m];
      y[m * ys + k] = relu && v < 0.0f ? 0.0f : v;
    }
  }
}

}  // namespace ember::cpu
