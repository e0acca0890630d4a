// q8_gemm.cu run on the emulated device (cuda/emu/emu.h) as ops_q8.cpp runs it, against the
// QMatMul reference: every a_mode's quantization kernels (token rows, static params, tensor_u8's
// two-pass min / max over several blocks), then q8_gemm_small (1, 2, 4 and 8-row tiles, several
// row tiles, k past one warp step) or, for the cuBLASLt path, int32 sums on the host and
// q8_epilogue. Bit for bit but for the gelu activations (double maths on each side).
#include "cuda/kernels/q8_gemm.cu"

#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/tests/q8_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

namespace {

Q8Act act_of(const std::string& a) {
  return a == "relu"        ? Q8Act::Relu
         : a == "gelu"      ? Q8Act::Gelu
         : a == "gelu_tanh" ? Q8Act::GeluTanh
                            : Q8Act::None;
}

// qmatmul_cuda's launches on the emulated device: Y [m, n]. `small`: q8_gemm_small, else the
// int32 sums cuBLASLt would return (computed here) and q8_epilogue.
std::vector<float> run_device(const Q8Run& r, const Q8Case& c, bool small) {
  const Q8Layout l = q8_layout(r.n, r.k);
  const Q8Mode mode = q8_mode(r.node);
  const Tensor packed = q8_prepare(r.node, 1, r.wp);
  const int8_t* w = packed.ptr<int8_t>();
  Tensor codes_t = Tensor::empty(DType::I8, {r.m * l.k_pad});  // 16-byte aligned rows
  int8_t* codes = codes_t.ptr<int8_t>();
  std::memset(codes, 0x5a, r.m * l.k_pad);  // the kernels write the padding too
  std::vector<float> row_scale(r.m, NAN), partial(q8_minmax_partial_floats(r.m * r.k), NAN);
  Q8Params params;
  std::memset(&params, 0xff, sizeof(params));
  const float a_scale = r.a_scale;
  const int8_t zp_s = (int8_t)r.zp;
  const uint8_t zp_u = (uint8_t)r.zp;

  Q8Epilogue e;
  e.w_scale = r.w_scale.data();
  e.bias = r.bias.data();
  e.act = act_of(c.act);
  if (mode == Q8Mode::Token) {
    q8_quantize_token(r.a.data(), codes, row_scale.data(), r.m, r.k, l.k_pad, nullptr);
    e.row_scale = row_scale.data();
  } else {
    if (mode == Q8Mode::Static)
      q8_params_static(&a_scale, r.zp_signed ? (const void*)&zp_s : (const void*)&zp_u, r.zp_signed,
                       &params, nullptr);
    else
      q8_params_tensor_u8(r.a.data(), r.m * r.k, partial.data(), &params, nullptr);
    q8_quantize_static(r.a.data(), codes, &params, r.m, r.k, l.k_pad, nullptr);
    e.params = &params;
    e.colsum = reinterpret_cast<const int32_t*>(w + l.colsum_offset());
  }
  std::vector<float> y(r.m * r.n, NAN);
  if (small) {
    q8_gemm_small(codes, w, e, y.data(), r.m, r.n, l.k_pad, nullptr);
  } else {
    std::vector<int32_t> acc(r.m * l.n_pad);
    for (int64_t i = 0; i < r.m; i++)
      for (int64_t j = 0; j < l.n_pad; j++) {
        int32_t s = 0;
        for (int64_t kk = 0; kk < l.k_pad; kk++) s += codes[i * l.k_pad + kk] * w[j * l.k_pad + kk];
        acc[i * l.n_pad + j] = s;
      }
    q8_epilogue(acc.data(), e, y.data(), r.m, r.n, l.n_pad, nullptr);
  }
  return y;
}

}  // namespace

TEST_CASE("q8_gemm on the emulated device equals the QMatMul reference") {
  std::mt19937 g(19);
  std::vector<Q8Case> cases = q8_cases();
  cases.push_back({"token", 0, false, "gelu"});
  cases.push_back({"static", 128, false, "gelu_tanh"});
  cases.push_back({"tensor_u8", 0, false, "gelu"});
  // m: 1, 2, 3 (a 4-row tile), 5 and 7 (8-row tiles), 17 (three tiles). k = 600: k_pad 608
  // takes a lane two steps; m * k = 3000 gives tensor_u8 two min / max blocks. n = 17, 33, 40:
  // blocks with idle warps.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1}, {7, 33, 17}, {5, 70, 40}, {2, 600, 9}, {3, 40, 33}, {17, 20, 8}, {5, 600, 3}};
  for (const Q8Case& c : cases)
    for (auto [m, k, n] : shapes) {
      CAPTURE(c.mode);
      CAPTURE(c.zp);
      CAPTURE(c.act);
      CAPTURE(m);
      CAPTURE(k);
      CAPTURE(n);
      const Q8Run r = q8_run(c, m, k, n, g);
      const bool exact = c.act == "none" || c.act == "relu";
      for (bool small : {true, false}) {
        CAPTURE(small);
        std::vector<float> y = run_device(r, c, small);
        const Tensor got = Tensor::borrow(DType::F32, {m, n}, y.data());
        if (exact)
          check_same(r.y, got);
        else
          check_near(r.y, got, 1e-6);
      }
    }
}
