// QMatMul's weight on the GPU: the CPU-packed Wp [ceil(N / 16), ceil(K / 2), 16, 2] (see
// cpp/src/ops/ops_qmatmul.cpp) repacked at load into what cuBLASLt's int8 GEMM reads, plus the
// per-column sums the zero-point correction needs. Plain C++ (no CUDA) so host tests cover it.
//
// Device layout, one int8 tensor of q8_layout(n, k).bytes() bytes:
//   W      int8  [n_pad, k_pad]  row-major, W[j, k] = Wq[k, j], zero past K and N
//   colsum int32 [n_pad]         sum_k Wq[k, j], at byte offset n_pad * k_pad (4-byte aligned)
// n_pad, k_pad: multiples of 16, so rows start 16-byte aligned (IMMA wants ld % 4 == 0, and
// 16-byte vector loads).
#pragma once
#include <cstdint>

#include "ember/op.h"
#include "ember/tensor.h"

namespace ember::cuda {

constexpr int64_t kQ8Pad = 16;

struct Q8Layout {
  int64_t n = 0, k = 0;          // the weight's true sizes (k: A's last dim)
  int64_t n_pad = 0, k_pad = 0;  // rounded up to kQ8Pad
  int64_t colsum_offset() const { return n_pad * k_pad; }
  int64_t bytes() const { return n_pad * k_pad + 4 * n_pad; }
};

inline int64_t q8_round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }
inline Q8Layout q8_layout(int64_t n, int64_t k) {
  return {n, k, q8_round_up(n, kQ8Pad), q8_round_up(k, kQ8Pad)};
}

// How each row's activation scale is found (attr a_mode); Rows: codes and scales come as
// inputs 0 and 4 (AddNorm's quantized outputs).
enum class Q8Mode { Token, Static, TensorU8, Rows };
Q8Mode q8_mode(const Node& node);

// m at or below which q8_gemm_small runs (reads the weight once, fused epilogue: decode is
// weight-bandwidth bound); above it cuBLASLt's int8 GEMM and q8_epilogue. K == 0: the small
// kernel (cuBLASLt refuses k = 0).
constexpr int64_t kQ8SmallM = 16;
inline bool q8_use_small(int64_t m, const Q8Layout& l) { return m <= kQ8SmallM || l.k_pad == 0; }

// One scratch for a call, byte offsets 256-aligned (-1: not needed): codes int8 [m, k_pad],
// row_scale f32 [m] (token), params Q8Params (static, tensor_u8), partial f32
// [partial_floats] (tensor_u8), acc int32 [m, n_pad] (cuBLASLt path).
struct Q8Work {
  int64_t codes = -1, row_scale = -1, params = -1, partial = -1, acc = -1, bytes = 0;
};
Q8Work q8_work(int64_t m, const Q8Layout& l, Q8Mode mode, int64_t partial_floats, bool acc);

// CPU layout -> device layout. wp: [ceil(n / 16), ceil(k / 2), 16, 2]; out: l.bytes() bytes.
void q8_pack(const int8_t* wp, const Q8Layout& l, int8_t* out);
// Device layout -> Wq [k, n] row-major (tests).
void q8_unpack(const int8_t* packed, const Q8Layout& l, int8_t* wq);
// Wq [k, n] row-major -> the CPU layout (tests build Wp as the graph pass does).
void q8_cpu_pack(const int8_t* wq, int64_t k, int64_t n, int8_t* wp);

// QMatMul's DevicePrepareFn: input 1 (Wp) becomes an int8 [l.bytes()] tensor in the device
// layout (n from the node's attr n, k_pad from Wp's second dim: entries past K are zero);
// other inputs stay as they are (an undefined Tensor).
Tensor q8_prepare(const Node& node, int input, const Tensor& host);

}  // namespace ember::cuda
