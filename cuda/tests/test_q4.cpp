// Q4MatMul's CUDA layouts without a GPU (cuda/src/q4_pack.h, cuda/kernels/q4_gemm.h): the
// packing round-trips on odd N and K; the fragment maps match PTX's m16n8k16 tables (written
// out here from the ISA manual, not taken from the header); and an emulation of q4_gemm.cu
// (its bit tricks, its fragment ownership, its stage / split walk) equals a naive dequantized
// matmul.
#include <cmath>
#include <random>
#include <vector>

#include "cuda/kernels/q4_gemm.h"
#include "cuda/src/q4_pack.h"
#include "cuda/tests/q4_test_util.h"
#include "doctest/doctest.h"
#include "ember/dtype.h"

using namespace ember;
using namespace ember::cuda;

namespace {

// PTX mma.m16n8k16 (.f16 / .bf16), lane = 4 groupID + threadID_in_group.
int ptx_a_row(int lane, int reg) { return lane / 4 + 8 * (reg % 2); }       // A: 4 regs x 2
int ptx_a_col(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * (reg / 2); }
int ptx_b_k(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * reg; }  // B: 2 regs x 2
int ptx_b_n(int lane) { return lane / 4; }

// The kernel's dequantization of nibbles (i, i + 4) of a word, as fp16 bits -> code values.
void kernel_codes(uint32_t q, int i, float* lo, float* hi) {
  const uint32_t t = ((q >> (4 * i)) & 0x000f000fu) | 0x64006400u;
  *lo = f16_to_f32((uint16_t)(t & 0xffff)) - 1024.0f;
  *hi = f16_to_f32((uint16_t)(t >> 16)) - 1024.0f;
}

}  // namespace

TEST_CASE("q4 layout: fragment maps match PTX m16n8k16 and cover each tile once") {
  std::vector<int> a_seen(16 * 16, 0), w_seen(16 * 64, 0);
  for (int lane = 0; lane < 32; lane++) {
    for (int e = 0; e < 8; e++) {
      const Q4Coord c = q4_a_coord(lane, e);
      CHECK(c.n == ptx_a_row(lane, e / 2));
      CHECK(c.k == ptx_a_col(lane, e / 2, e % 2));
      a_seen[c.n * 16 + c.k]++;
    }
    for (int j = 0; j < 4; j++)
      for (int p = 0; p < 8; p++) {
        // Nibble p lands in half p / 4 of B register (p % 4) % 2 of subtile 2j + (p % 4) / 2.
        const Q4Coord c = q4_nibble_coord(lane, j, p);
        const int i = p % 4, sub = 2 * j + i / 2;
        CHECK(c.k == ptx_b_k(lane, i % 2, p / 4));
        CHECK(c.n == sub * 8 + ptx_b_n(lane));
        w_seen[c.k * 64 + c.n]++;
      }
  }
  for (int v : a_seen) CHECK(v == 1);
  for (int v : w_seen) CHECK(v == 1);
  // The magic numbers give the codes exactly (fp16: 1024 + code; bf16: 128 + code).
  for (uint32_t code = 0; code < 16; code++) {
    CHECK(f16_to_f32((uint16_t)(0x6400 | code)) == 1024.0f + code);
    CHECK(bf16_to_f32((uint16_t)(0x4300 | code)) == 128.0f + code);
  }
}

TEST_CASE("q4_pack: codes and params round-trip on odd N and K") {
  std::mt19937 gen(7);
  struct Dims { int64_t n, k, group; };
  for (Dims d : {Dims{1, 32, 32}, Dims{7, 769, 64}, Dims{200, 64, 32}, Dims{65, 100, 128},
                 Dims{130, 4096, 128}, Dims{5, 1000, 256}}) {
    CAPTURE(d.n);
    CAPTURE(d.k);
    for (bool f16 : {false, true}) {
      Q4Case c = make_case(d.n, d.k, d.group, f16, gen);
      Tensor pc = q4_pack_codes(c.codes.data(), d.n, d.k);
      CHECK(q4_is_packed(pc, 1, d.n, d.k, d.group));
      CHECK(pc.shape() == Shape{q4_padded_k(d.k) / 16, q4_padded_n(d.n) / 64, 32, 4});
      CHECK(q4_unpack_codes(pc.ptr<int32_t>(), d.n, d.k) == c.codes);
      Tensor ps = q4_pack_params(c.scales, d.n, d.k, d.group);
      CHECK(q4_is_packed(ps, 2, d.n, d.k, d.group));
      const std::vector<uint16_t> back = q4_unpack_params(ps.ptr<uint16_t>(), d.n, d.k, d.group);
      bool same = true;
      for (int64_t i = 0; i < c.scales.numel(); i++)
        same = same && f16_to_f32(back[i]) == param_f16(c.scales, i);
      CHECK(same);
    }
  }
}

TEST_CASE("q4_prepare: packs inputs 1-3 once, keeps A and bias") {
  std::mt19937 gen(3);
  Q4Case c = make_case(7, 769, 64, true, gen);
  Node node;
  node.op = OpType::Q4MatMul;
  node.attrs.set("n", (int64_t)7);
  node.attrs.set("k", (int64_t)769);
  node.attrs.set("group", (int64_t)64);
  Tensor codes = Tensor::borrow(DType::U8, {7, 25, 16}, c.codes.data());
  Tensor pc = q4_prepare(node, 1, codes);
  CHECK(q4_is_packed(pc, 1, 7, 769, 64));
  CHECK(!q4_prepare(node, 1, pc).defined());  // already packed
  CHECK(q4_is_packed(q4_prepare(node, 2, c.scales), 2, 7, 769, 64));
  CHECK(q4_is_packed(q4_prepare(node, 3, c.offsets), 3, 7, 769, 64));
  CHECK(!q4_prepare(node, 0, c.scales).defined());
  CHECK(!q4_prepare(node, 4, c.scales).defined());
}

TEST_CASE("q4_launch: splits cover every stage once; deterministic plans ignore M") {
  for (int64_t k : {32, 64, 769, 4096, 14336})
    for (int64_t n : {1, 200, 5125})
      for (int64_t m : {1, 7, 16, 17, 64, 65, 300})
        for (bool det : {false, true}) {
          CAPTURE(k);
          CAPTURE(n);
          CAPTURE(m);
          const Q4Launch p = q4_launch(m, n, k, 132, det);
          CHECK(p.stages == q4_padded_k(k) / 64);
          CHECK(p.splits >= 1);
          CHECK(p.splits <= 32);
          CHECK(p.splits * p.stages_per_split >= p.stages);
          CHECK((p.splits - 1) * p.stages_per_split < p.stages);  // no empty split
          CHECK(p.grid_x * 64 >= n);
          CHECK(p.grid_y * (p.small ? 16 : 128) >= m);
          if (det) {
            const Q4Launch one = q4_launch(1, n, k, 132, true);
            CHECK(p.small);
            CHECK(p.splits == one.splits);
            CHECK(p.stages_per_split == one.stages_per_split);
          }
        }
}

TEST_CASE("q4_launch_stream: splits cover every k16 tile once, a block's A fits, partials stay small") {
  for (int64_t k : {32, 64, 769, 4096, 14336})
    for (int64_t n : {1, 200, 4096, 14336})
      for (int64_t m : {1, 7, 16}) {
        CAPTURE(k);
        CAPTURE(n);
        CAPTURE(m);
        const Q4Launch p = q4_launch(m, n, k, 132, false, true);
        REQUIRE(p.stream);
        CHECK(p.small);
        CHECK(p.stages == q4_padded_k(k) / 16);
        CHECK(p.stages_per_split <= kQ4StreamMaxTiles);
        CHECK(p.splits * p.stages_per_split >= p.stages);
        CHECK((p.splits - 1) * p.stages_per_split < p.stages);  // no empty split
        CHECK(p.grid_x * 64 >= n);
        CHECK(p.grid_y == 1);
        // Partial sums at most 1/8 of the codes' bytes, unless A's shared memory forces splits.
        if (p.splits > (p.stages + kQ4StreamMaxTiles - 1) / kQ4StreamMaxTiles)
          CHECK(p.splits * m * 4 <= std::max<int64_t>(k / 16, 4));
      }
  CHECK(!q4_launch(17, 64, 64, 132, false, true).stream);
  CHECK(!q4_launch(1, 64, 64, 132, true, true).stream);
}

TEST_CASE("q4 kernel emulation equals a naive dequantized matmul") {
  // Walks q4_gemm_kernel's loops on the host: blocks, splits, stages, k16 tiles, lanes; A and
  // B tiles are rebuilt from the lanes' registers through the PTX tables, so any disagreement
  // between packing, dequantization and fragment ownership shows up as a wrong sum.
  std::mt19937 gen(11);
  struct Dims { int64_t m, n, k, group; };
  for (Dims d : {Dims{1, 1, 32, 32}, Dims{7, 70, 769, 64}, Dims{17, 130, 256, 128}, Dims{3, 64, 1000, 32}}) {
    CAPTURE(d.m);
    CAPTURE(d.n);
    CAPTURE(d.k);
    Q4Case c = make_case(d.n, d.k, d.group, false, gen);
    std::vector<float> a(d.m * d.k);
    std::uniform_real_distribution<float> ad(-1.0f, 1.0f);
    for (float& v : a) v = ad(gen);
    Tensor pc = q4_pack_codes(c.codes.data(), d.n, d.k);
    Tensor ps = q4_pack_params(c.scales, d.n, d.k, d.group);
    Tensor po = q4_pack_params(c.offsets, d.n, d.k, d.group);
    const int64_t kt_count = q4_padded_k(d.k) / 16, nt_count = q4_padded_n(d.n) / 64;
    const int64_t mt_count = q4_padded_m(d.m) / 16;
    // q4_convert_a (values kept in float).
    std::vector<float> frag(mt_count * kt_count * 32 * 8);
    for (int64_t mt = 0; mt < mt_count; mt++)
      for (int64_t kt = 0; kt < kt_count; kt++)
        for (int lane = 0; lane < 32; lane++)
          for (int e = 0; e < 8; e++) {
            const Q4Coord q = q4_a_coord(lane, e);
            const int64_t row = mt * 16 + q.n, col = kt * 16 + q.k;
            frag[((mt * kt_count + kt) * 32 + lane) * 8 + e] = row < d.m && col < d.k ? a[row * d.k + col] : 0.0f;
          }
    const Q4Launch plan = q4_launch(d.m, d.n, d.k, 132, false);
    std::vector<double> y(q4_padded_m(d.m) * q4_padded_n(d.n), 0.0);
    const uint32_t* words = reinterpret_cast<const uint32_t*>(pc.ptr<int32_t>());
    const uint16_t *sp = ps.ptr<uint16_t>(), *op = po.ptr<uint16_t>();
    for (int64_t split = 0; split < plan.splits; split++)
      for (int64_t st = split * plan.stages_per_split;
           st < std::min(plan.stages, (split + 1) * plan.stages_per_split); st++)
        for (int64_t kt = st * 4; kt < st * 4 + 4; kt++)
          for (int64_t nt = 0; nt < nt_count; nt++) {
            // B tile k16 x n64 from the lanes' dequantized registers.
            float b[16][64];
            for (int lane = 0; lane < 32; lane++) {
              const int64_t pi = ((kt / (d.group / 16) * nt_count + nt) * 8 + lane / 4) * 8;
              for (int j = 0; j < 4; j++) {
                const uint32_t q = words[((kt * nt_count + nt) * 32 + lane) * 4 + j];
                for (int i = 0; i < 4; i++) {
                  const int sub = 2 * j + i / 2, reg = i % 2;
                  const float s = f16_to_f32(sp[pi + sub]), o = f16_to_f32(op[pi + sub]);
                  float lo, hi;
                  kernel_codes(q, i, &lo, &hi);
                  b[ptx_b_k(lane, reg, 0)][sub * 8 + ptx_b_n(lane)] = std::fma(lo, s, o);
                  b[ptx_b_k(lane, reg, 1)][sub * 8 + ptx_b_n(lane)] = std::fma(hi, s, o);
                }
              }
            }
            for (int64_t mt = 0; mt < mt_count; mt++) {
              float at[16][16];
              for (int lane = 0; lane < 32; lane++)
                for (int reg = 0; reg < 4; reg++)
                  for (int h = 0; h < 2; h++)
                    at[ptx_a_row(lane, reg)][ptx_a_col(lane, reg, h)] =
                        frag[((mt * kt_count + kt) * 32 + lane) * 8 + 2 * reg + h];
              for (int r = 0; r < 16; r++)
                for (int col = 0; col < 64; col++) {
                  double acc = 0;
                  for (int kk = 0; kk < 16; kk++) acc += (double)at[r][kk] * b[kk][col];
                  y[(mt * 16 + r) * q4_padded_n(d.n) + nt * 64 + col] += acc;
                }
            }
          }
    const int64_t nb = (d.k + 31) / 32, ng = (d.k + d.group - 1) / d.group;
    double worst = 0;
    for (int64_t r = 0; r < d.m; r++)
      for (int64_t col = 0; col < d.n; col++) {
        double want = 0;
        for (int64_t kk = 0; kk < d.k; kk++) {
          const int64_t i = col * ng + kk / d.group;
          want += (double)a[r * d.k + kk] *
                  std::fma((float)q4_code(c.codes.data(), nb, col, kk), param_f16(c.scales, i), param_f16(c.offsets, i));
        }
        worst = std::max(worst, std::fabs(y[r * q4_padded_n(d.n) + col] - want));
      }
    CHECK(worst < 1e-9);
  }
}
