// gemm_epilogue.cu run on the emulated device (cuda/emu/emu.h): gemm_fill_c as run_plan's C fill
// in every MatMul and Gemm case of the host GEMM test (the cuBLASLt call emulated on the host)
// against the ops' references, and gemm_round_16 (the float4 path and the scalar tail, aligned
// and not) against ember's own fp16 / bf16 rounding, special values included.
#include "cuda/kernels/gemm_epilogue.cu"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cuda/tests/gemm_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

TEST_CASE("gemm_fill_c on the emulated device: MatMul and Gemm cases match the references") {
  check_gemm_reference_cases(
      [](const float* c, float* d, int64_t rows, int64_t cols, int64_t c_rs, int64_t c_cs,
         float scale) { gemm_fill_c(c, d, rows, cols, c_rs, c_cs, scale, nullptr); });
}

TEST_CASE("gemm_round_16 on the emulated device rounds like f32_to_f16 / f32_to_bf16") {
  std::mt19937 gen(8);
  std::uniform_real_distribution<float> d(-70000.0f, 70000.0f);
  const float inf = std::numeric_limits<float>::infinity();
  // Overflow, subnormals, signed zeros, ties to even in both formats.
  const float special[] = {0.0f,
                           -0.0f,
                           inf,
                           -inf,
                           NAN,
                           65504.0f,
                           65520.0f,
                           -65536.0f,
                           1e-8f,
                           -3e-6f,
                           1e-40f,
                           1.0f + 0x1p-11f,
                           1.0f + 0x3p-11f,
                           1.0f + 0x1p-8f,
                           3.0e38f};
  constexpr uint16_t kGuard = 0xabcd;
  for (bool bf16 : {false, true})
    for (int64_t n : {1, 3, 4, 7, 33, 769, 1030})
      for (int x_off : {0, 1})         // floats: 1 leaves x unaligned for float4s
        for (int y_off : {0, 1, 4}) {  // 16-bit values: 1 leaves y unaligned, 4 is 8 bytes
          CAPTURE(bf16);
          CAPTURE(n);
          CAPTURE(x_off);
          CAPTURE(y_off);
          std::vector<float4> xb(n / 4 + 2);
          float* x = reinterpret_cast<float*>(xb.data()) + x_off;
          for (int64_t i = 0; i < n; i++)
            x[i] = i < 15 && n > 15 ? special[i] : d(gen) * (i % 3 ? 1e-3f : 1.0f);
          std::vector<uint2> yb(n / 4 + 3);  // 8-byte aligned
          uint16_t* y0 = reinterpret_cast<uint16_t*>(yb.data());
          std::fill(y0, y0 + 4 * yb.size(), kGuard);
          uint16_t* y = y0 + y_off;
          gemm_round_16(x, y, n, bf16, nullptr);
          int bad = 0;
          for (int64_t i = 0; i < n; i++) {
            const uint16_t want = bf16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
            const bool nan = bf16 ? std::isnan(bf16_to_f32(y[i])) : std::isnan(f16_to_f32(y[i]));
            bad += std::isnan(x[i]) ? !nan : y[i] != want;
          }
          CHECK(bad == 0);
          // Nothing written outside y[0, n).
          int outside = 0;
          for (int64_t i = 0; i < 4 * (int64_t)yb.size(); i++)
            outside += (i < y_off || i >= y_off + n) && y0[i] != kGuard;
          CHECK(outside == 0);
        }
}
