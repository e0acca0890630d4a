// WinogradConv (cpp/src/ops/ops_winograd.cpp, made by fuse_conv_winograd from 3x3 stride-1
// Conv): Winograd F(2x2, 3x3). Each 2 x 2 output tile comes from its 4 x 4 input window d as
//   Y = A^T [ U (.) (B^T d B) ] A,  U = G g G^T (per output and input channel, made at load),
// so the 9 multiplies per output and input channel become 4: the 16 products of a tile
// position xi = 4 j + k, summed over input channels, are one GEMM U[xi] [M, C] @ V[xi] [C, tiles].
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]
// The transforms are additions only (the halves are in U), so they round like the sums of a
// direct convolution; every output sums the input channels in order, whatever the batch,
// the tiling or the thread count.
#pragma once
#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {

// u [16, M, C] <- G g G^T for each 3 x 3 filter g = w[m, c] of w [M, C, 3, 3]; each element is
// computed in double and rounded once.
void winograd_weights_f32(const float* w, int64_t M, int64_t C, float* u);

// The tile transforms of one ISA. Every ISA does the same float additions in the same order,
// so they give the same bits (tests/cpp/test_winograd.cpp holds them to it).
struct WinogradTiles {
  // n tiles of one channel. Tile t's window is d[r][k] = s[r * ss + 2 t + k] (r, k in 0..3);
  // v[xi * vs + t] <- (B^T d B)[xi / 4][xi % 4] for xi in 0..15. Each row of s must be
  // readable up to 2 ceil8(n) + 2 floats (ceil8: rounded up to a multiple of 8), and
  // v[xi * vs + t] writable for t < ceil8(n): vector kernels run whole 8-tile steps (what
  // they leave past n is garbage).
  void (*input)(const float* s, int64_t ss, int64_t n, float* v, int64_t vs);
  // n tiles of one output channel. M[j][k] = m[(4 j + k) * ms + t]; Y = A^T M A + bias, then
  // + the residual where r0 is set (r0, r1 laid out as y0, y1), then max(., 0) where relu
  // (NaN stays NaN). y0[2t], y0[2t + 1] <- Y[0][0], Y[0][1]; y1[2t], y1[2t + 1] <- Y[1][0],
  // Y[1][1]. Rows of M summed first, then columns. m must be readable up to
  // m[15 ms + ceil8(n)).
  void (*output)(const float* m, int64_t ms, int64_t n, float bias, bool relu, float* y0,
                 float* y1, const float* r0, const float* r1);
};
const WinogradTiles& winograd_tiles_generic();

// WinogradConv: X [N, C, H, W], U [16, M, C], bias [M] (optional), residual R (optional;
// added before the activation: Y's shape, or one Add broadcasts to Y's); attrs pads [top,
// left, bottom, right], activation "none" | "relu". The GEMMs run on `micro`, the transforms
// on `tiles`.
void winograd_conv_f32(const KernelCtx& ctx);
void winograd_conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                            const WinogradTiles& tiles);

}  // namespace ember::cpu
