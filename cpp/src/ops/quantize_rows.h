// Per-token int8 quantization as QMatMul's a_mode "token" does it (ops_qmatmul.cpp), shared
// with AddNorm's quantized outputs (ops_add_norm.cpp), so a QMatMul of a_mode "rows" reading
// them computes exactly what the token mode would.
#pragma once
#include <cstdint>

namespace ember {

// Row m of a [rows, k]: s_m = max(max_k |a| / 127, FLT_MIN) (NaN ignored by the max) and codes
// clamp(nearbyint(a / s_m), -127, 127) (division; half to even; NaN to the low bound).
void quantize_rows_token(const float* a,  // [rows, k]
                         int64_t rows, int64_t k,
                         int8_t* codes,   // [rows, k]
                         float* scales);  // [rows]

}  // namespace ember
