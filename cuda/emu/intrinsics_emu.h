// The emulation's versions of cuda/kernels/intrinsics.cuh (same names and contracts), written
// from the PTX ISA's fragment tables quoted there; cuda/emu/tests/test_emu.cpp checks them
// against plain matrix products.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda/emu/emu.h"

namespace ember::cuda {
namespace emu {

inline float half_bits_to_float(__half, uint16_t b) { return __half2float(__ushort_as_half(b)); }
inline float half_bits_to_float(__nv_bfloat16, uint16_t b) {
  return __bfloat162float(__ushort_as_bfloat16(b));
}
void check_aligned(const void* p, int bytes, const char* what);

template <class H>
void mma_m16n8k16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  struct In {
    uint32_t a[4], b[2];
    float c[4];
  };
  struct Out {
    float d[4];
  };
  In in{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
  const Out out = warp_collective<In, Out>(in, [](const In* all, int lane) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
      const int g = l / 4, c = l % 4;
      for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++)
          A[g + 8 * (r % 2)][2 * c + 8 * (r / 2) + h] =
              half_bits_to_float(H{}, all[l].a[r] >> (16 * h));
      for (int r = 0; r < 2; r++)
        for (int h = 0; h < 2; h++)
          B[2 * c + 8 * r + h][g] = half_bits_to_float(H{}, all[l].b[r] >> (16 * h));
      for (int r = 0; r < 4; r++) C[g + 8 * (r / 2)][2 * c + r % 2] = all[l].c[r];
    }
    Out o;
    const int g = lane / 4, c = lane % 4;
    for (int r = 0; r < 4; r++) {
      const int row = g + 8 * (r / 2), col = 2 * c + r % 2;
      float acc = C[row][col];
      for (int k = 0; k < 16; k++) acc = std::fma(A[row][k], B[k][col], acc);
      o.d[r] = acc;
    }
    return o;
  });
  for (int r = 0; r < 4; r++) d[r] = out.d[r];
}

template <bool TRANS>
void ldmatrix_x4(uint32_t r[4], const void* row) {
  check_aligned(row, 16, "ldmatrix row");
  struct Out {
    uint32_t r[4];
  };
  const Out out = warp_collective<const void*, Out>(row, [](const void* const* all, int lane) {
    Out o;
    const int g = lane / 4, c = lane % 4;
    auto at = [&](int m, int i, int j) {  // element (row i, col j) of matrix m
      uint16_t v;
      std::memcpy(&v, static_cast<const unsigned char*>(all[8 * m + i]) + 2 * j, 2);
      return (uint32_t)v;
    };
    for (int m = 0; m < 4; m++)
      o.r[m] = TRANS ? at(m, 2 * c, g) | at(m, 2 * c + 1, g) << 16
                     : at(m, g, 2 * c) | at(m, g, 2 * c + 1) << 16;
    return o;
  });
  for (int m = 0; m < 4; m++) r[m] = out.r[m];
}

}  // namespace emu

inline void mma_m16n8k16(__half, float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  emu::mma_m16n8k16<__half>(d, a, b0, b1);
}
inline void mma_m16n8k16(__nv_bfloat16, float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  emu::mma_m16n8k16<__nv_bfloat16>(d, a, b0, b1);
}
inline void ldmatrix_x4(uint32_t r[4], const void* row) { emu::ldmatrix_x4<false>(r, row); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* row) { emu::ldmatrix_x4<true>(r, row); }
inline void cp_async16(void* dst, const void* src, int src_bytes = 16) {
  emu::cp_async(dst, src, 16, src_bytes);
}
inline void cp_async4(void* dst, const void* src) { emu::cp_async(dst, src, 4, 4); }
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
void cp_async_wait() {
  emu::cp_async_wait(N);
}

}  // namespace ember::cuda

#define EMBER_LAUNCH(kernel, grid, block, smem, stream) \
  ((void)(stream), ::ember::cuda::emu::launch(kernel, dim3(grid), dim3(block), (size_t)(smem)))
#define EMBER_DYNAMIC_SMEM(type, name, align) \
  type* name = reinterpret_cast<type*>(::ember::cuda::emu::dynamic_smem())
