// attention.cu run on the emulated device (cuda/emu/emu.h) against the op's reference kernel:
// the fp32 SIMT kernel, the wmma kernel, and the mma.sync kernel (ldmatrix, cp.async double
// buffering; opt-in on the device until a GPU has run it), fp16 and bf16, both K layouts, masks,
// fully masked rows, odd S and T, decode.
#include "cuda/kernels/attention.cu"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/tests/attention_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

namespace {

enum class Kernel { F32, Wmma, Mma };

// Y of one emulated kernel, every element first set to a value no kernel writes.
Tensor run_kernel(Kernel k, AttnArgs a, int head_pad, bool bf16, const Shape& out) {
  Tensor y = Tensor::empty(DType::F32, out);
  for (int64_t i = 0; i < y.numel(); i++) y.ptr<float>()[i] = 12345.0f;
  a.y = y.ptr<float>();
  if (k == Kernel::F32) {
    attention_f32(a, nullptr);
  } else {
    const size_t smem =
        k == Kernel::Mma ? attn_mma_smem_bytes(head_pad) : attn_tc_smem(head_pad).bytes;
    (void)smem;
    if (k == Kernel::Mma)
      attention_mma(a, head_pad, bf16, nullptr);
    else
      attention_tc(a, head_pad, bf16, nullptr);
  }
  return y;
}

void check_close(const Tensor& want, const Tensor& got, double rtol, double atol) {
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < want.numel(); i++) {
    const float w = want.ptr<float>()[i], y = got.ptr<float>()[i];
    if (std::isnan(w)) {
      bad += !std::isnan(y);
      continue;
    }
    const double err = std::fabs((double)y - w);
    worst = std::max(worst, err);
    bad += !(err <= atol + rtol * std::fabs(w));
  }
  CAPTURE(worst);
  CHECK(bad == 0);
}

// Every kernel that can run these inputs, against the reference: the exact one to 2e-5, the
// tensor-core ones (Q, K, V and P rounded to 16 bits) to the device tests' tolerances.
// `want_mma`: the inputs are laid out so the mma.sync kernel takes them (checked, so a case
// meant for it cannot silently skip it).
void check_kernels(const Node& n, const std::vector<Tensor>& in, bool want_mma) {
  const Tensor want = attention_reference(n, in);
  const AttnArgs a = bound_args(n, in);
  if (a.D <= kAttnF32MaxHead && a.Dv <= kAttnF32MaxHead) {
    CAPTURE("f32");
    check_close(want, run_kernel(Kernel::F32, a, 0, false, want.shape()), 2e-5, 2e-5);
  }
  const int hd = attention_tc_head_pad(a.D, a.Dv);
  if (!hd) return;
  CHECK(attn_mma_supports(a, hd) == want_mma);
  for (bool bf16 : {false, true}) {
    CAPTURE(bf16);
    const double tol = bf16 ? 4e-2 : 1e-2;
    check_close(want, run_kernel(Kernel::Wmma, a, hd, bf16, want.shape()), tol, tol);
    if (attn_mma_supports(a, hd)) {
      CAPTURE("mma");
      check_close(want, run_kernel(Kernel::Mma, a, hd, bf16, want.shape()), tol, tol);
    }
  }
}

Tensor causal_mask(int S, int T) {
  Tensor mask = Tensor::empty(DType::F32, {S, T});
  for (int s = 0; s < S; s++)
    for (int t = 0; t < T; t++) mask.ptr<float>()[s * T + t] = t <= s + (T - S) ? 0.0f : -INFINITY;
  return mask;
}

}  // namespace

TEST_CASE("attention kernels on the emulated device match the reference") {
  std::mt19937 gen(77);
  SUBCASE("bhsd (K transposed: t contiguous), D = 64, odd S, causal mask over 3 key tiles") {
    check_kernels(attention_node("bhsd", "mul", 0.125),
                  {random_tensor({1, 2, 70, 64}, gen), random_tensor({1, 2, 64, 152}, gen),
                   random_tensor({1, 2, 152, 64}, gen), causal_mask(70, 152)},
                  true);
  }
  SUBCASE("bshd (K rows: d contiguous), D = 32, Dv = 64, div, key-padding mask") {
    Tensor mask = random_tensor({2, 1, 1, 100}, gen);
    for (int i = 0; i < 200; i += 7) mask.ptr<float>()[i] = -1e4f;
    check_kernels(attention_node("bshd", "div", 5.6),
                  {random_tensor({2, 9, 2, 32}, gen), random_tensor({2, 100, 2, 32}, gen),
                   random_tensor({2, 100, 2, 64}, gen), mask},
                  true);
  }
  SUBCASE("D = 128, T not a multiple of 4 (no mma), broadcast K") {
    check_kernels(attention_node("bhsd", "mul", 0.09),
                  {random_tensor({2, 1, 17, 128}, gen), random_tensor({1, 1, 128, 67}, gen),
                   random_tensor({2, 1, 67, 128}, gen)},
                  false);
  }
  SUBCASE("rows masked to -inf: whole rows (NaN), leading tiles, only the last key") {
    const int S = 5, T = 132;
    Tensor mask = random_tensor({1, 1, S, T}, gen);
    for (int t = 0; t < T; t++) {
      mask.ptr<float>()[0 * T + t] = -INFINITY;
      if (t < 100) mask.ptr<float>()[2 * T + t] = -INFINITY;
      if (t != T - 1) mask.ptr<float>()[4 * T + t] = -INFINITY;
    }
    check_kernels(attention_node("bhsd", "mul", 0.3),
                  {random_tensor({1, 2, S, 32}, gen), random_tensor({1, 2, 32, T}, gen),
                   random_tensor({1, 2, T, 32}, gen), mask},
                  true);
  }
  SUBCASE("S = 1 decode, bshd, peaked scores") {
    Tensor q = random_tensor({2, 1, 2, 64}, gen);
    for (int64_t i = 0; i < q.numel(); i++) q.ptr<float>()[i] *= 4.0f;
    check_kernels(attention_node("bshd", "mul", 0.125),
                  {q, random_tensor({2, 130, 2, 64}, gen), random_tensor({2, 130, 2, 64}, gen)},
                  true);
  }
  SUBCASE("D = 80: the wmma kernel's head pad, not mma's") {
    check_kernels(attention_node("bhsd", "mul", 0.11),
                  {random_tensor({1, 1, 20, 80}, gen), random_tensor({1, 1, 80, 40}, gen),
                   random_tensor({1, 1, 40, 80}, gen)},
                  false);
  }
}
