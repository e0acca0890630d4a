// Host tests of the CUDA attention plan (cuda/src/attention_plan.h): path and launch-shape
// choices, batch-dim merging, and the kernels' tile loop emulated on the CPU against the
// op's reference kernel (ref_attention), fully masked rows and T = 0 included.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/src/attention_plan.h"
#include "cuda/tests/attention_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

namespace {

// The reference's Y and the emulated kernels' Y (both tile shapes) agree: NaN where it has NaN.
void check_against_reference(const Node& n, std::vector<Tensor> in) {
  const Tensor want = attention_reference(n, in);
  for (Precision prec : {Precision::F32, Precision::F16}) {
    AttnArgs a = bound_args(n, in);
    AttnPlan plan = attention_plan(a, prec, 227 * 1024);
    REQUIRE(plan.ok);
    // The emulation walks the tensor-core tiles in fp32, so force that tile shape for D = 0 too.
    if (prec == Precision::F16 && plan.path == AttnPath::F32) {
      plan.rows = kAttnTcRows;
      plan.keys = kAttnTcKeys;
      plan.q_tiles = attn_q_tiles(a.S, plan.rows);
      plan.blocks = a.nbatch * plan.q_tiles;
    }
    Tensor got = Tensor::empty(DType::F32, want.shape());
    for (int64_t i = 0; i < got.numel(); i++) got.ptr<float>()[i] = 12345.0f;  // every element written
    a.y = got.ptr<float>();
    attention_emulate(a, plan);
    CAPTURE(plan.keys);
    for (int64_t i = 0; i < want.numel(); i++) {
      float w = want.ptr<float>()[i], y = got.ptr<float>()[i];
      CAPTURE(i);
      if (std::isnan(w)) {
        CHECK(std::isnan(y));
      } else {
        CHECK(std::fabs(y - w) <= 1e-5f + 1e-5f * std::fabs(w));
      }
    }
  }
}

}  // namespace

TEST_CASE("attention_tc_head_pad: the tensor-core kernels' head dims") {
  CHECK(attention_tc_head_pad(64, 64) == 64);
  CHECK(attention_tc_head_pad(80, 80) == 80);
  CHECK(attention_tc_head_pad(96, 96) == 96);
  CHECK(attention_tc_head_pad(128, 128) == 128);
  CHECK(attention_tc_head_pad(8, 8) == 32);
  CHECK(attention_tc_head_pad(40, 40) == 64);
  CHECK(attention_tc_head_pad(64, 112) == 128);
  CHECK(attention_tc_head_pad(36, 36) == 0);   // not a multiple of 8
  CHECK(attention_tc_head_pad(64, 60) == 0);
  CHECK(attention_tc_head_pad(136, 136) == 0);  // over 128
  CHECK(attention_tc_head_pad(0, 64) == 0);
}

TEST_CASE("attention_plan: path, tiles and grid per precision") {
  AttnArgs a;
  a.S = 7;
  a.T = 129;
  a.D = a.Dv = 80;
  a.nbatch = 6;
  AttnPlan p = attention_plan(a, Precision::F32, 227 * 1024);
  REQUIRE(p.ok);
  CHECK(p.path == AttnPath::F32);
  CHECK(p.rows == 16);
  CHECK(p.keys == 32);
  CHECK(p.q_tiles == 1);
  CHECK(p.blocks == 6);
  CHECK(p.smem == sizeof(float) * (16 * 80 + 32 * 81 + 32 * 80));

  p = attention_plan(a, Precision::F16, 227 * 1024);
  REQUIRE(p.ok);
  CHECK(p.path == AttnPath::F16);
  CHECK(p.head_pad == 80);
  CHECK(p.rows == 64);
  CHECK(p.keys == 64);
  CHECK(p.smem == attn_tc_smem(80).bytes);
  CHECK(attention_plan(a, Precision::BF16, 227 * 1024).path == AttnPath::BF16);

  a.S = 1000;
  p = attention_plan(a, Precision::BF16, 227 * 1024);
  CHECK(p.q_tiles == 16);
  CHECK(p.blocks == 96);
  CHECK(attention_plan(a, Precision::F32, 227 * 1024).blocks == 6 * 63);

  // Head dims the tensor cores lack run the exact kernel on the device.
  a.D = a.Dv = 36;
  p = attention_plan(a, Precision::F16, 227 * 1024);
  REQUIRE(p.ok);
  CHECK(p.path == AttnPath::F32);
  // So does a device whose shared memory is too small for the tensor-core tiles.
  a.D = a.Dv = 128;
  CHECK(attn_tc_smem(128).bytes == 112896);
  p = attention_plan(a, Precision::F16, 100 * 1024);
  REQUIRE(p.ok);
  CHECK(p.path == AttnPath::F32);
  CHECK(attention_plan(a, Precision::F16, 0).smem <= 48 * 1024);  // unknown limit: 48 KiB

  a.D = 256;
  a.Dv = 256;
  p = attention_plan(a, Precision::F32, 227 * 1024);
  CHECK(p.ok);
  CHECK(p.smem == 82048);
  CHECK_FALSE(attention_plan(a, Precision::F32, 64 * 1024).ok);
  a.D = 257;
  CHECK_FALSE(attention_plan(a, Precision::F32, 227 * 1024).ok);
  CHECK_FALSE(attention_plan(a, Precision::F16, 227 * 1024).ok);

  a.D = a.Dv = 64;
  a.S = 1 << 20;
  a.nbatch = int64_t(1) << 20;
  CHECK_FALSE(attention_plan(a, Precision::F32, 227 * 1024).ok);  // over 2^31 - 1 blocks
}

TEST_CASE("attention_tc_smem: wmma tiles stay 32-byte aligned") {
  for (int hd : {32, 64, 80, 96, 128}) {
    AttnTcSmem m = attn_tc_smem(hd);
    CAPTURE(hd);
    for (size_t off : {m.q, m.k, m.v, m.s, m.p, m.o, m.r}) CHECK(off % 128 == 0);
    // A 16-row block and a 16-column step of each buffer start on 32 bytes.
    CHECK((16 * m.lh * 2) % 32 == 0);
    CHECK((16 * m.ls * 4) % 32 == 0);
    CHECK((16 * m.lp * 2) % 32 == 0);
    CHECK((16 * m.lo * 4) % 32 == 0);
    CHECK(m.lh % 8 == 0);  // wmma ldm: a multiple of 16 bytes
    CHECK(m.lp % 8 == 0);
    CHECK(m.ls % 4 == 0);
    CHECK(m.lo % 4 == 0);
  }
}

TEST_CASE("attention_args: batch dims merged where every operand allows") {
  Node bhsd = attention_node("bhsd", "mul", 0.125);
  AttnArgs a = args_for(bhsd, {{2, 3, 7, 8}, {2, 3, 8, 9}, {2, 3, 9, 4}});
  CHECK(a.nb == 1);
  CHECK(a.nbatch == 6);
  CHECK(a.bdim[0] == 6);
  CHECK(a.st[kAttnQ][0] == 7 * 8);
  CHECK(a.st[kAttnK][0] == 8 * 9);
  CHECK(a.st[kAttnY][0] == 7 * 4);
  CHECK(a.k_d == 9);
  CHECK(a.k_t == 1);

  // A key-padding mask [B, 1, 1, T] steps over B only: two dims.
  a = args_for(bhsd, {{2, 3, 7, 8}, {2, 3, 8, 9}, {2, 3, 9, 4}, {2, 1, 1, 9}});
  CHECK(a.nb == 2);
  CHECK(a.st[kAttnM][0] == 9);
  CHECK(a.st[kAttnM][1] == 0);
  CHECK(a.mask_s == 0);
  CHECK(a.mask_t == 1);

  // Size-1 dims dropped; K shared across the batch (stride 0).
  a = args_for(bhsd, {{1, 4, 1, 5, 16}, {1, 1, 16, 3}, {4, 1, 1, 3, 16}});
  CHECK(a.nb == 2);
  CHECK(a.nbatch == 16);  // [1, 4, 1] x [4, 1, 1] -> [4, 4, 1]
  CHECK(a.st[kAttnK][0] == 0);

  // bshd: B and H do not merge (K and V step T * H * D per batch, H * D per row).
  Node bshd = attention_node("bshd", "div", 8.0);
  a = args_for(bshd, {{2, 7, 3, 8}, {2, 9, 3, 8}, {2, 9, 3, 8}});
  CHECK(a.nb == 2);
  CHECK(a.q_rs == 3 * 8);
  CHECK(a.k_d == 1);
  CHECK(a.k_t == 3 * 8);
  CHECK(a.st[kAttnK][0] == 9 * 3 * 8);
  CHECK(a.st[kAttnK][1] == 8);
  CHECK(a.st[kAttnY][0] == 7 * 3 * 8);

  a = args_for(bhsd, {{0, 3, 7, 8}, {0, 3, 8, 9}, {0, 3, 9, 4}});
  CHECK(a.nbatch == 0);
  CHECK(a.nb == 0);

  // More than kAttnMaxBatchRank dims left: the CPU runs it.
  AttnArgs big;
  CHECK_FALSE(attention_args(geom(bhsd, {{2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 1, 1},
                                         {1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 1},
                                         {1, 1}}), &big));
}

TEST_CASE("attention_emulate: the kernels' tile loop matches the reference") {
  std::mt19937 gen(20240611);
  SUBCASE("bhsd, odd S and T, D = 80, no mask") {
    check_against_reference(attention_node("bhsd", "mul", 1 / std::sqrt(80.0)),
                            {random_tensor({2, 3, 7, 80}, gen), random_tensor({2, 3, 80, 129}, gen),
                             random_tensor({2, 3, 129, 80}, gen)});
  }
  SUBCASE("bhsd broadcasting, div, key mask, Dv != D") {
    Tensor mask = random_tensor({2, 1, 1, 33}, gen);
    for (int i = 0; i < 66; i += 3) mask.ptr<float>()[i] = -1e4f;
    check_against_reference(attention_node("bhsd", "div", 4.0),
                            {random_tensor({2, 3, 5, 16}, gen), random_tensor({1, 3, 16, 33}, gen),
                             random_tensor({3, 33, 24}, gen), mask});
  }
  SUBCASE("bshd with a causal [S, T] mask over several tiles") {
    const int S = 70, T = 150;
    Tensor mask = Tensor::empty(DType::F32, {S, T});
    for (int s = 0; s < S; s++)
      for (int t = 0; t < T; t++) mask.ptr<float>()[s * T + t] = t <= s + (T - S) ? 0.0f : -INFINITY;
    check_against_reference(attention_node("bshd", "mul", 0.17),
                            {random_tensor({2, S, 3, 32}, gen), random_tensor({2, T, 3, 32}, gen),
                             random_tensor({2, T, 3, 40}, gen), mask});
  }
  SUBCASE("rows masked to -inf: whole rows (NaN) and leading tiles only") {
    const int S = 5, T = 129;
    Tensor mask = random_tensor({1, 1, S, T}, gen);
    for (int t = 0; t < T; t++) {
      mask.ptr<float>()[0 * T + t] = -INFINITY;                 // all keys: NaN, as the reference
      if (t < 100) mask.ptr<float>()[2 * T + t] = -INFINITY;  // first tiles empty, then keys
      if (t != 128) mask.ptr<float>()[4 * T + t] = -INFINITY;  // only the last key
    }
    check_against_reference(attention_node("bhsd", "mul", 0.3),
                            {random_tensor({2, 2, S, 24}, gen), random_tensor({2, 2, 24, T}, gen),
                             random_tensor({2, 2, T, 24}, gen), mask});
  }
  SUBCASE("T = 0 writes zeros; D = 0 averages V") {
    check_against_reference(attention_node("bhsd", "mul", 1.0),
                            {random_tensor({1, 2, 3, 8}, gen), random_tensor({1, 2, 8, 0}, gen),
                             random_tensor({1, 2, 0, 8}, gen)});
    check_against_reference(attention_node("bhsd", "mul", 1.0),
                            {random_tensor({1, 2, 3, 0}, gen), random_tensor({1, 2, 0, 40}, gen),
                             random_tensor({1, 2, 40, 8}, gen)});
  }
  SUBCASE("S = 1 decode, bshd, large scores") {
    Tensor q = random_tensor({3, 1, 4, 64}, gen);
    for (int64_t i = 0; i < q.numel(); i++) q.ptr<float>()[i] *= 8.0f;  // peaked softmax
    check_against_reference(attention_node("bshd", "mul", 0.125),
                            {q, random_tensor({3, 200, 4, 64}, gen), random_tensor({3, 200, 4, 64}, gen)});
  }
}

TEST_CASE("attn_mma_supports: head pads 32/64/128, K contiguous along d or t, float4 steps") {
  AttnArgs a;
  a.S = 5, a.T = 7, a.D = a.Dv = 64;
  a.q_rs = 64, a.k_d = 7 + 1, a.k_t = 1, a.v_t = 64, a.y_rs = 64;  // bhsd, T padded to 8
  CHECK(attn_mma_supports(a, 64));
  CHECK(attn_mma_supports(a, 32));
  CHECK(attn_mma_supports(a, 128));
  CHECK_FALSE(attn_mma_supports(a, 80));
  CHECK_FALSE(attn_mma_supports(a, 96));
  AttnArgs odd = a;
  odd.k_d = 7;  // Kt rows of 7 floats: not float4 steps
  CHECK_FALSE(attn_mma_supports(odd, 64));
  AttnArgs strided = a;
  strided.k_d = 2, strided.k_t = 128;  // neither d nor t contiguous
  CHECK_FALSE(attn_mma_supports(strided, 64));
  AttnArgs bshd = a;
  bshd.k_d = 1, bshd.k_t = 12 * 64;  // K [b, t, h, d]
  CHECK(attn_mma_supports(bshd, 64));
  AttnArgs batch = a;
  batch.nb = 1, batch.bdim[0] = 3, batch.st[kAttnV][0] = 7 * 64 + 2;
  CHECK_FALSE(attn_mma_supports(batch, 64));
  AttnArgs misaligned = a;
  static float buf[16];
  misaligned.q = buf + 1;
  CHECK_FALSE(attn_mma_supports(misaligned, 64));
}
