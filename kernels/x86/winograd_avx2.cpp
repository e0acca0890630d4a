// WinogradConv tile transforms, AVX2: the WinogradTiles contract of
// kernels/generic/winograd_f32.h, 8 tiles per step (driver and generic transforms:
// winograd_f32.cpp). The same additions in the same order as the generic ones, so the same
// bits. Input: each window row is read as two 16-float spans (columns 2t.. and 2t + 2..) and
// split into even and odd columns; output: the 2 x 2 results of 8 tiles are interleaved into
// 16 floats per output row (then the residual added and relu, row by row). The last 1..7
// tiles take a full step too (rows shorter than 8 tiles are common: 7 x 7 outputs have 4
// tiles per row): the input kernel stores all 8 lanes (the contract leaves room), the output
// kernel copies what exists from and to a local tile (masked stores are slow on AMD).
// Raw pointers and intrinsics only (see CMakeLists.txt).
#include <immintrin.h>

#include <cstdint>

namespace ember::cpu {
namespace {

// Columns 2t and 2t + 1 of p[0..15] for 8 t: the even and the odd floats, in order.
inline void split_even_odd(const float* p, __m256* even, __m256* odd) {
  __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
  __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
  *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
  *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Stores the first k floats of lo, hi (16 when k >= 16).
inline void store_first(float* p, __m256 lo, __m256 hi, int64_t k) {
  if (k >= 16) {
    _mm256_storeu_ps(p, lo);
    _mm256_storeu_ps(p + 8, hi);
    return;
  }
  alignas(32) float t[16];
  _mm256_store_ps(t, lo);
  _mm256_store_ps(t + 8, hi);
  for (int64_t i = 0; i < k; i++) p[i] = t[i];
}

// The first k floats of p (16 when k >= 16) into lo, hi; the rest zero.
inline void load_first(const float* p, __m256* lo, __m256* hi, int64_t k) {
  if (k >= 16) {
    *lo = _mm256_loadu_ps(p);
    *hi = _mm256_loadu_ps(p + 8);
    return;
  }
  alignas(32) float t[16] = {};
  for (int64_t i = 0; i < k; i++) t[i] = p[i];
  *lo = _mm256_load_ps(t);
  *hi = _mm256_load_ps(t + 8);
}

}  // namespace

void winograd_input_avx2(const float* s, int64_t ss, int64_t n, float* v, int64_t vs) {
  for (int64_t t = 0; t < n; t += 8) {
    __m256 r[4][4];  // r = d B for 8 tiles
    for (int i = 0; i < 4; i++) {
      __m256 e0, o0, e1, o1;  // columns 2t, 2t + 1, 2t + 2, 2t + 3
      split_even_odd(s + i * ss + 2 * t, &e0, &o0);
      split_even_odd(s + i * ss + 2 * t + 2, &e1, &o1);
      r[i][0] = _mm256_sub_ps(e0, e1);
      r[i][1] = _mm256_add_ps(o0, e1);
      r[i][2] = _mm256_sub_ps(e1, o0);
      r[i][3] = _mm256_sub_ps(o0, o1);
    }
    for (int j = 0; j < 4; j++) {
      _mm256_storeu_ps(v + j * vs + t, _mm256_sub_ps(r[0][j], r[2][j]));
      _mm256_storeu_ps(v + (4 + j) * vs + t, _mm256_add_ps(r[1][j], r[2][j]));
      _mm256_storeu_ps(v + (8 + j) * vs + t, _mm256_sub_ps(r[2][j], r[1][j]));
      _mm256_storeu_ps(v + (12 + j) * vs + t, _mm256_sub_ps(r[1][j], r[3][j]));
    }
  }
}

void winograd_output_avx2(const float* m, int64_t ms, int64_t n, float bias, bool relu, float* y0,
                          float* y1, const float* r0, const float* r1) {
  const __m256 vb = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
  for (int64_t t = 0; t < n; t += 8) {
    const int64_t k = 2 * (n - t);  // output floats of this step per row
    __m256 p0[4], p1[4];  // M A for 8 tiles
    for (int j = 0; j < 4; j++) {
      const float* mj = m + 4 * j * ms + t;
      __m256 a = _mm256_loadu_ps(mj), b = _mm256_loadu_ps(mj + ms);
      __m256 c = _mm256_loadu_ps(mj + 2 * ms), d = _mm256_loadu_ps(mj + 3 * ms);
      p0[j] = _mm256_add_ps(_mm256_add_ps(a, b), c);
      p1[j] = _mm256_sub_ps(_mm256_sub_ps(b, c), d);
    }
    __m256 y00 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(p0[0], p0[1]), p0[2]), vb);
    __m256 y01 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(p1[0], p1[1]), p1[2]), vb);
    __m256 y10 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(p0[1], p0[2]), p0[3]), vb);
    __m256 y11 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(p1[1], p1[2]), p1[3]), vb);
    // Output rows 0 and 1 in order (a0, a1: row 0's 16 floats; b0, b1: row 1's).
    __m256 lo = _mm256_unpacklo_ps(y00, y01), hi = _mm256_unpackhi_ps(y00, y01);
    __m256 a0 = _mm256_permute2f128_ps(lo, hi, 0x20), a1 = _mm256_permute2f128_ps(lo, hi, 0x31);
    lo = _mm256_unpacklo_ps(y10, y11);
    hi = _mm256_unpackhi_ps(y10, y11);
    __m256 b0 = _mm256_permute2f128_ps(lo, hi, 0x20), b1 = _mm256_permute2f128_ps(lo, hi, 0x31);
    if (r0) {
      __m256 ra0, ra1, rb0, rb1;
      load_first(r0 + 2 * t, &ra0, &ra1, k);
      load_first(r1 + 2 * t, &rb0, &rb1, k);
      a0 = _mm256_add_ps(a0, ra0);
      a1 = _mm256_add_ps(a1, ra1);
      b0 = _mm256_add_ps(b0, rb0);
      b1 = _mm256_add_ps(b1, rb1);
    }
    if (relu) {  // max(0, y) returns y where y is NaN, and keeps -0, as y < 0 ? 0 : y does
      a0 = _mm256_max_ps(zero, a0);
      a1 = _mm256_max_ps(zero, a1);
      b0 = _mm256_max_ps(zero, b0);
      b1 = _mm256_max_ps(zero, b1);
    }
    store_first(y0 + 2 * t, a0, a1, k);
    store_first(y1 + 2 * t, b0, b1, k);
  }
}

}  // namespace ember::cpu
