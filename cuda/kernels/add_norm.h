// Residual add + LayerNorm / RMSNorm on CUDA (add_norm.cu): launchers and their launch shape.
// C++17 (no CUDA headers): the host adapter (cuda/src/ops_add_norm.cpp) and the host tests
// include it.
#pragma once
#include <algorithm>
#include <cstdint>

namespace ember::cuda {

// Elements of a row each thread keeps in registers.
constexpr int kAddNormPerThread = 8;

// How add_norm_f32 runs rows of `cols` elements: a warp per row (8 rows per 256-thread block)
// up to 32 * 8 columns, else a block of `threads` per row. Rows of up to 1024 * 8 columns stay
// in registers (`cached`); longer ones are read again for each pass.
struct AddNormLaunch {
  int threads = 32;  // per row
  bool warp = true;
  bool cached = true;
};
inline AddNormLaunch add_norm_launch(int64_t cols) {
  constexpr int64_t k = kAddNormPerThread;
  if (cols <= 32 * k) return {32, true, true};
  if (cols <= 1024 * k) {
    const int64_t threads = (cols + k - 1) / k;
    return {(int)((threads + 31) / 32 * 32), false, true};
  }
  return {1024, false, false};
}

// Y's rows quantized per token (fuse_norm_quant) as QMatMul's token mode quantizes them:
// scales[row] = max(max |y| / 127, FLT_MIN), codes = clamp(rint(y / scale), -127, 127).
struct AddNormCodes {
  int8_t* codes = nullptr;  // [rows, cols]; nullptr: not wanted
  float* scales = nullptr;  // [rows]
};

// s = x + r; y = (s - mean) / sqrt(var + eps) * scale + bias (layer) or
// y = s / sqrt(mean(s^2) + eps) * scale (rms) per row, statistics in double. scale / bias are
// [cols] or, with their *_scalar flag, [1]; bias may be nullptr (always, for rms); s may be
// nullptr (the sum is not wanted). With q.codes, the same launch quantizes y's rows.
void add_norm_f32(const float* x,      // [rows, cols]
                  const float* r,      // [rows, cols]
                  const float* scale,  // [cols] or [1]
                  const float* bias,   // [cols] or [1] or nullptr
                  float* y,            // [rows, cols]
                  float* s,            // [rows, cols] or nullptr
                  int64_t rows, int64_t cols, bool rms, bool scale_scalar, bool bias_scalar,
                  double eps, void* stream, AddNormCodes q = {});

}  // namespace ember::cuda
