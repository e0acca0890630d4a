// QMatMul weight repacking for the CUDA int8 GEMM (layouts in q8_pack.h).
#include "cuda/src/q8_pack.h"

#include <cstring>

#include "ember/error.h"

namespace ember::cuda {
namespace {

constexpr int64_t kPanel = 16;  // the CPU layout's column panel

// Offset of Wq[k, j] in the CPU layout with kh = ceil(K / 2) pairs per panel.
int64_t cpu_offset(int64_t k, int64_t j, int64_t kh) {
  return (j / kPanel) * kh * 2 * kPanel + (k / 2) * 2 * kPanel + (j % kPanel) * 2 + k % 2;
}

}  // namespace

void q8_pack(const int8_t* wp, const Q8Layout& l, int8_t* out) {
  std::memset(out, 0, (size_t)l.bytes());
  int64_t kh = (l.k + 1) / 2;
  auto* colsum = reinterpret_cast<int32_t*>(out + l.colsum_offset());
  for (int64_t j = 0; j < l.n; j++) {
    int8_t* row = out + j * l.k_pad;
    int32_t sum = 0;
    for (int64_t k = 0; k < l.k; k++) {
      row[k] = wp[cpu_offset(k, j, kh)];
      sum += row[k];
    }
    colsum[j] = sum;
  }
}

void q8_unpack(const int8_t* packed, const Q8Layout& l, int8_t* wq) {
  for (int64_t k = 0; k < l.k; k++)
    for (int64_t j = 0; j < l.n; j++) wq[k * l.n + j] = packed[j * l.k_pad + k];
}

void q8_cpu_pack(const int8_t* wq, int64_t k, int64_t n, int8_t* wp) {
  int64_t kh = (k + 1) / 2, panels = (n + kPanel - 1) / kPanel;
  std::memset(wp, 0, (size_t)(panels * kh * 2 * kPanel));
  for (int64_t kk = 0; kk < k; kk++)
    for (int64_t j = 0; j < n; j++) wp[cpu_offset(kk, j, kh)] = wq[kk * n + j];
}

Q8Mode q8_mode(const Node& node) {
  std::string m = node.attrs.get_string("a_mode", "token");
  if (m == "static") return Q8Mode::Static;
  if (m == "tensor_u8") return Q8Mode::TensorU8;
  if (m == "rows") return Q8Mode::Rows;
  return Q8Mode::Token;
}

Q8Work q8_work(int64_t m, const Q8Layout& l, Q8Mode mode, int64_t partial_floats, bool acc) {
  Q8Work w;
  auto take = [&](int64_t bytes) {
    int64_t at = w.bytes;
    w.bytes += q8_round_up(bytes > 0 ? bytes : 1, 256);
    return at;
  };
  w.codes = take(m * l.k_pad);
  if (mode == Q8Mode::Token) w.row_scale = take(4 * m);
  else if (mode != Q8Mode::Rows) w.params = take(64);  // a Q8Params (24 bytes)
  if (mode == Q8Mode::TensorU8) w.partial = take(4 * partial_floats);
  if (acc) w.acc = take(4 * m * l.n_pad);
  return w;
}

Tensor q8_prepare(const Node& node, int input, const Tensor& host) {
  if (input != 1) return Tensor();
  int64_t n = node.attrs.get_int("n", 0);
  EMBER_CHECK(host.dtype() == DType::I8 && host.rank() == 4 &&
                  host.dim(0) == (n + kPanel - 1) / kPanel && host.dim(2) == kPanel &&
                  host.dim(3) == 2,
              Internal, "[QMatMul] node '", node.name, "': packed weight ",
              shape_str(host.shape()), " is not the CPU layout for n = ", n);
  // Entries past K are zero, so 2 * ceil(K / 2) stands for K (same k_pad: 16 is even).
  Q8Layout l = q8_layout(n, host.dim(1) * 2);
  Tensor out = Tensor::empty(DType::I8, {l.bytes()});
  q8_pack(host.ptr<const int8_t>(), l, out.ptr<int8_t>());
  return out;
}

}  // namespace ember::cuda
