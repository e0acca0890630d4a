// Host repacking of Q4MatMul weights for q4_gemm.cu; the layouts are described in
// cuda/kernels/q4_gemm.h (q4_nibble_coord: which (k, n) each nibble of a lane's words holds).
#include "cuda/src/q4_pack.h"

#include <cstring>

#include "ember/dtype.h"
#include "ember/error.h"

namespace ember::cuda {

Tensor q4_pack_codes(const uint8_t* codes, int64_t n, int64_t k) {
  const int64_t nb = (k + 31) / 32, kt_count = q4_padded_k(k) / 16, nt_count = q4_padded_n(n) / 64;
  Tensor out = Tensor::empty(DType::I32, {kt_count, nt_count, 32, 4});
  uint32_t* w = out.ptr<uint32_t>();
  for (int64_t kt = 0; kt < kt_count; kt++)
    for (int64_t nt = 0; nt < nt_count; nt++)
      for (int lane = 0; lane < 32; lane++)
        for (int j = 0; j < 4; j++) {
          uint32_t word = 0;
          for (int p = 0; p < 8; p++) {
            const Q4Coord c = q4_nibble_coord(lane, j, p);
            const int64_t row = nt * 64 + c.n, col = kt * 16 + c.k;
            if (row < n && col < k) word |= (uint32_t)q4_code(codes, nb, row, col) << (4 * p);
          }
          *w++ = word;
        }
  return out;
}

Tensor q4_pack_params(const Tensor& params, int64_t n, int64_t k, int64_t group) {
  const int64_t ng = (k + group - 1) / group, ngp = q4_packed_groups(k, group);
  const int64_t nt_count = q4_padded_n(n) / 64;
  Tensor out = Tensor::zeros(DType::F16, {ngp, nt_count, 8, 8});
  uint16_t* o = out.ptr<uint16_t>();
  const bool f16 = params.dtype() == DType::F16;
  for (int64_t grp = 0; grp < ng; grp++)
    for (int64_t row = 0; row < n; row++) {
      const int64_t i = row * ng + grp;
      const int64_t nt = row / 64, s = row % 64 / 8, g = row % 8;
      o[((grp * nt_count + nt) * 8 + g) * 8 + s] =
          f16 ? params.ptr<uint16_t>()[i] : f32_to_f16(params.ptr<float>()[i]);
    }
  return out;
}

std::vector<uint8_t> q4_unpack_codes(const int32_t* packed, int64_t n, int64_t k) {
  const int64_t nb = (k + 31) / 32, kt_count = q4_padded_k(k) / 16, nt_count = q4_padded_n(n) / 64;
  std::vector<uint8_t> codes(n * nb * 16, 0);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(packed);
  for (int64_t kt = 0; kt < kt_count; kt++)
    for (int64_t nt = 0; nt < nt_count; nt++)
      for (int lane = 0; lane < 32; lane++)
        for (int j = 0; j < 4; j++, w++)
          for (int p = 0; p < 8; p++) {
            const Q4Coord c = q4_nibble_coord(lane, j, p);
            const int64_t row = nt * 64 + c.n, col = kt * 16 + c.k;
            if (row >= n || col >= k) continue;
            const uint8_t v = (*w >> (4 * p)) & 0x0f;
            codes[(row * nb + col / 32) * 16 + col % 16] |= col % 32 < 16 ? v : v << 4;
          }
  return codes;
}

std::vector<uint16_t> q4_unpack_params(const uint16_t* packed, int64_t n, int64_t k, int64_t group) {
  const int64_t ng = (k + group - 1) / group, nt_count = q4_padded_n(n) / 64;
  std::vector<uint16_t> params(n * ng);
  for (int64_t row = 0; row < n; row++)
    for (int64_t grp = 0; grp < ng; grp++)
      params[row * ng + grp] = packed[((grp * nt_count + row / 64) * 8 + row % 8) * 8 + row % 64 / 8];
  return params;
}

Tensor q4_prepare(const Node& node, int input, const Tensor& host) {
  const int64_t n = node.attrs.get_int("n", 0), k = node.attrs.get_int("k", 0);
  const int64_t group = node.attrs.get_int("group", 32);
  if (input < 1 || input > 3) return Tensor();
  if (q4_is_packed(host, input, n, k, group)) return Tensor();
  const int64_t nb = (k + 31) / 32, ng = (k + group - 1) / group;
  if (input == 1) {
    EMBER_CHECK(host.dtype() == DType::U8 && host.numel() == n * nb * 16, Internal,
                "[Q4MatMul] node '", node.name, "': codes are not uint8 [", n, ", ", nb, ", 16]");
    return q4_pack_codes(host.ptr<uint8_t>(), n, k);
  }
  EMBER_CHECK((host.dtype() == DType::F32 || host.dtype() == DType::F16) && host.numel() == n * ng,
              Internal, "[Q4MatMul] node '", node.name, "': ", input == 2 ? "scales" : "offsets",
              " are not float32 or float16 [", n, ", ", ng, "]");
  return q4_pack_params(host, n, k, group);
}

bool q4_is_packed(const Tensor& t, int input, int64_t n, int64_t k, int64_t group) {
  const int64_t nt_count = q4_padded_n(n) / 64;
  if (input == 1) return t.dtype() == DType::I32 && t.shape() == Shape{q4_padded_k(k) / 16, nt_count, 32, 4};
  return t.dtype() == DType::F16 && t.shape() == Shape{q4_packed_groups(k, group), nt_count, 8, 8};
}

}  // namespace ember::cuda
