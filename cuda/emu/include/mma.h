// The emulation build's <mma.h> (cuda/emu/emu.h): nvcuda::wmma for the m16n16k16 shapes the
// kernels use. Fragment layouts are opaque in CUDA, so here every lane holds its whole tile as
// floats and does the whole product; each call opens with a warp barrier, as the .sync
// operations need the warp converged.
#pragma once
#include "cuda/emu/emu.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  float x[rows * cols];  // row-major tile
};

namespace detail {
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace detail

template <class Use, int M, int N, int K, class T, class L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  ::ember::cuda::emu::warp_barrier();
  for (float& e : f.x) e = v;
}

// matrix_a / matrix_b: the layout is the fragment's.
template <class Use, int M, int N, int K, class T, class L, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, L>;
  ::ember::cuda::emu::warp_barrier();
  for (int r = 0; r < F::rows; r++)
    for (int c = 0; c < F::cols; c++)
      f.x[r * F::cols + c] =
          detail::to_float(std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c]);
}
template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const float* p, unsigned ldm,
                      layout_t l) {
  ::ember::cuda::emu::warp_barrier();
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      f.x[r * N + c] = l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}
template <int M, int N, int K, class T>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                       layout_t l) {
  ::ember::cuda::emu::warp_barrier();
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * N + c];
}

template <int M, int N, int K, class TA, class LA, class LB, class TC>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TA, LB>& b,
              const fragment<accumulator, M, N, K, TC>& c) {
  ::ember::cuda::emu::warp_barrier();
  float out[M * N];
  for (int r = 0; r < M; r++)
    for (int col = 0; col < N; col++) {
      float acc = c.x[r * N + col];
      for (int k = 0; k < K; k++) acc = std::fma(a.x[r * K + k], b.x[k * N + col], acc);
      out[r * N + col] = acc;
    }
  for (int i = 0; i < M * N; i++) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma
