// AVX2 MaxPool, f32, one 2-D plane. Each output row: the row's window range is clipped once;
// outputs whose column window lies wholly inside the input go 8 at a time (the last block
// overlaps the one before it), the rest through the scalar walk. Lane j of tap (kh, kw) reads
// column (ow0 + j) * sw - pw + kw * dw: stride 1 is a plain load, stride 2 two loads and a
// vshufps (lanes come out 64-bit-pair-swapped, fixed by one vpermpd before the store), other
// strides a gather. Taps fold in the reference's order (kh outer, kw inner) with
// best = max_ps(v, best), i.e. v > best ? v : best: the first tap starts the max and only a
// strictly greater value replaces it, so NaN and +-0 come out as in the reference
// (cpp/src/ops/ops_pool.cpp); an all-padding window gives 0. Driver: pool_x86.cpp. Built with
// -mavx2 -mfma: raw pointers and intrinsics only.
#include <immintrin.h>
#include <stdint.h>

namespace ember::cpu {
namespace {

// Taps [lo, hi) of a window starting at st (may be negative) that fall inside [0, n).
static inline void window_clip(int64_t st, int64_t k, int64_t d, int64_t n, int64_t* lo,
                               int64_t* hi) {
  *lo = st >= 0 ? 0 : (-st + d - 1) / d;
  int64_t h = n - 1 - st >= 0 ? (n - 1 - st) / d + 1 : 0;
  *hi = h < k ? h : k;
}

// One output, the reference's walk over its clipped window.
static inline float max_one(const float* xp, int64_t W, int64_t ih0, int64_t dh, int64_t kh_n,
                            int64_t iw0, int64_t dw, int64_t kw_n) {
  float best = xp[ih0 * W + iw0];
  for (int64_t a = 0; a < kh_n; a++) {
    const float* row = xp + (ih0 + a * dh) * W + iw0;
    for (int64_t b = 0; b < kw_n; b++) {
      float v = row[b * dw];
      if (v > best) best = v;
    }
  }
  return best;
}

// Lanes j = 0..7 of p[j * 2], in the order [0, 1, 4, 5, 2, 3, 6, 7]; reads p[0..14] only.
static inline __m256 load_s2(const float* p) {
  return _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7), _MM_SHUFFLE(3, 1, 2, 0));
}

// 8 outputs of one row: ow0 .. ow0 + 7, all with full column windows starting at p (the
// first valid window row, column (ow0 * sw - pw)). kind: 1 stride 1, 2 stride 2, 3 gather.
static inline void max_block8(const float* p, int64_t W, int64_t dh, int64_t kh_n, int64_t dw,
                              int64_t kw_n, int kind, __m256i gidx, float* out) {
  __m256 best;
  if (kind == 1) {
    best = _mm256_loadu_ps(p);
    for (int64_t a = 0; a < kh_n; a++) {
      const float* row = p + a * dh * W;
      for (int64_t b = a == 0 ? 1 : 0; b < kw_n; b++)
        best = _mm256_max_ps(_mm256_loadu_ps(row + b * dw), best);
    }
    _mm256_storeu_ps(out, best);
  } else if (kind == 2) {
    best = load_s2(p);
    for (int64_t a = 0; a < kh_n; a++) {
      const float* row = p + a * dh * W;
      for (int64_t b = a == 0 ? 1 : 0; b < kw_n; b++)
        best = _mm256_max_ps(load_s2(row + b * dw), best);
    }
    best = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(best), _MM_SHUFFLE(3, 1, 2, 0)));
    _mm256_storeu_ps(out, best);
  } else {
    best = _mm256_i32gather_ps(p, gidx, 4);
    for (int64_t a = 0; a < kh_n; a++) {
      const float* row = p + a * dh * W;
      for (int64_t b = a == 0 ? 1 : 0; b < kw_n; b++)
        best = _mm256_max_ps(_mm256_i32gather_ps(row + b * dw, gidx, 4), best);
    }
    _mm256_storeu_ps(out, best);
  }
}

}  // namespace

// x [H, W] -> y [OH, OW]; k, s, d, pb: kernel, stride, dilation, begin pad, each [2] (h, w),
// as pool_geom gives them (every value <= 2^31, so no product below overflows int64).
void max_pool_f32_plane_avx2(const float* x, float* y, int64_t H, int64_t W, int64_t OH,
                             int64_t OW, const int64_t* k, const int64_t* s, const int64_t* d,
                             const int64_t* pb) {
  const int64_t sh = s[0], sw = s[1], dh = d[0], dw = d[1], ph = pb[0], pw = pb[1];
  // Outputs [ow_a, ow_b) have every column tap inside [0, W).
  int64_t ow_a = (pw + sw - 1) / sw;
  if (ow_a > OW) ow_a = OW;
  int64_t last = W - 1 - (k[1] - 1) * dw + pw;  // the largest window start + pw that fits
  int64_t ow_b = last >= 0 ? last / sw + 1 : 0;
  if (ow_b > OW) ow_b = OW;
  if (ow_b < ow_a) ow_b = ow_a;
  int kind = sw == 1 ? 1 : sw == 2 ? 2 : 3;
  bool vec = ow_b - ow_a >= 8 && (kind != 3 || sw <= (int64_t)0x7fffffff / 8);
  __m256i gidx = _mm256_setzero_si256();
  if (kind == 3 && vec) {
    int32_t s32 = (int32_t)sw;
    gidx = _mm256_setr_epi32(0, s32, 2 * s32, 3 * s32, 4 * s32, 5 * s32, 6 * s32, 7 * s32);
  }
  for (int64_t oh = 0; oh < OH; oh++) {
    float* yr = y + oh * OW;
    int64_t hst = oh * sh - ph, hlo, hhi;
    window_clip(hst, k[0], dh, H, &hlo, &hhi);
    if (hhi <= hlo) {
      for (int64_t ow = 0; ow < OW; ow++) yr[ow] = 0.0f;
      continue;
    }
    int64_t ih0 = hst + hlo * dh, kh_n = hhi - hlo;
    auto scalar = [&](int64_t ow) {
      int64_t wst = ow * sw - pw, wlo, whi;
      window_clip(wst, k[1], dw, W, &wlo, &whi);
      yr[ow] = whi <= wlo ? 0.0f : max_one(x, W, ih0, dh, kh_n, wst + wlo * dw, dw, whi - wlo);
    };
    if (!vec) {
      for (int64_t ow = 0; ow < OW; ow++) scalar(ow);
      continue;
    }
    for (int64_t ow = 0; ow < ow_a; ow++) scalar(ow);
    const float* xr = x + ih0 * W;
    for (int64_t ow0 = ow_a;; ow0 += 8) {
      if (ow0 + 8 > ow_b) ow0 = ow_b - 8;  // overlap the last full block
      max_block8(xr + ow0 * sw - pw, W, dh, kh_n, dw, k[1], kind, gidx, yr + ow0);
      if (ow0 + 8 >= ow_b) break;
    }
    for (int64_t ow = ow_b; ow < OW; ow++) scalar(ow);
  }
}

}  // namespace ember::cpu
