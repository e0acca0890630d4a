// q4_gemm.cu run on the emulated device (cuda/emu/emu.h): both plans (the small kernel with its
// cp.async ring and in-kernel A conversion, the large one with q4_convert_a), fp16 and bf16,
// K splits, groups 32/64/128, odd M, N and K, bias and activations, against a double reference
// of what the kernel computes (A and W rounded to the 16-bit type, fp32 sums).
#include "cuda/kernels/q4_gemm.cu"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "cuda/src/q4_pack.h"
#include "cuda/tests/q4_test_util.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

namespace {

float round16(float v, bool bf16) {
  return bf16 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
}

double act_ref(double v, int act) {
  switch (act) {
    case 1: return v < 0 ? 0 : v;
    case 2: return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case 3: return 0.5 * v * (1 + std::tanh(0.79788456080286536 * (v + 0.044715 * v * v * v)));
    default: return v;
  }
}

struct Run {
  int64_t m, n, k, group;
  bool bf16 = false, deterministic = false, bias = false;
  int act = 0;
  bool stream = false;
};

// Max |y - reference| / (sum |a w| + 1) over the output, for one emulated q4_gemm.
double run_q4(const Run& r, std::mt19937& gen, Q4Launch* used) {
  Q4Case c = make_case(r.n, r.k, r.group, gen() % 2, gen);
  std::uniform_real_distribution<float> ad(-1.0f, 1.0f);
  std::vector<float> a(r.m * r.k), bias(r.n), y(r.m * r.n, NAN);
  for (float& v : a) v = ad(gen);
  for (float& v : bias) v = ad(gen);
  Tensor pc = q4_pack_codes(c.codes.data(), r.n, r.k);
  Tensor ps = q4_pack_params(c.scales, r.n, r.k, r.group);
  Tensor po = q4_pack_params(c.offsets, r.n, r.k, r.group);
  const Q4Launch plan = q4_launch(r.m, r.n, r.k, q4_multiprocessors(), r.deterministic, r.stream);
  *used = plan;
  std::vector<uint16_t> frag;
  if (!plan.small) {
    frag.resize(q4_padded_m(r.m) * q4_padded_k(r.k) * 8);
    q4_convert_a(a.data(), frag.data(), r.m, r.k, r.bf16, nullptr);
  }
  std::vector<float> partial(plan.splits > 1 ? plan.splits * r.m * r.n : 0);
  std::vector<int> counters(plan.grid_x * plan.grid_y, 0);
  q4_gemm(a.data(), plan.small ? nullptr : frag.data(), pc.ptr<int32_t>(), ps.ptr<uint16_t>(),
          po.ptr<uint16_t>(), r.bias ? bias.data() : nullptr, y.data(),
          partial.empty() ? nullptr : partial.data(), counters.data(), r.m, r.n, r.k, r.group,
          r.act, r.bf16, plan, nullptr);
  for (int c : counters) CHECK(c == 0);  // left ready for the next launch
  if (plan.splits > 1) {
    // Another block last (the grid run in reverse): the same bits, the counters 0 again.
    std::vector<float> again(y.size(), NAN);
    emu::set_block_order(emu::BlockOrder::Reverse);
    q4_gemm(a.data(), plan.small ? nullptr : frag.data(), pc.ptr<int32_t>(), ps.ptr<uint16_t>(),
            po.ptr<uint16_t>(), r.bias ? bias.data() : nullptr, again.data(), partial.data(),
            counters.data(), r.m, r.n, r.k, r.group, r.act, r.bf16, plan, nullptr);
    emu::set_block_order(emu::BlockOrder::Forward);
    CHECK(std::memcmp(again.data(), y.data(), y.size() * sizeof(float)) == 0);
    for (int c : counters) CHECK(c == 0);
    // The tile's last block added the partial sums in split order, then bias and act.
    const int64_t mn = r.m * r.n;
    int64_t differ = 0;
    for (int64_t i = 0; i < mn; i++) {
      float v = partial[i];
      for (int64_t s = 1; s < plan.splits; s++) v += partial[s * mn + i];
      if (r.bias) v += bias[i % r.n];
      v = q4_act(v, r.act);
      differ += std::memcmp(&v, &y[i], sizeof v) != 0;
    }
    CHECK(differ == 0);
  }

  const int64_t nb = (r.k + 31) / 32, ng = (r.k + r.group - 1) / r.group;
  double worst = 0;
  for (int64_t row = 0; row < r.m; row++)
    for (int64_t col = 0; col < r.n; col++) {
      double sum = 0, mag = 0;
      for (int64_t kk = 0; kk < r.k; kk++) {
        const int64_t i = col * ng + kk / r.group;
        const float s = round16(param_f16(c.scales, i), r.bf16),
                    o = round16(param_f16(c.offsets, i), r.bf16);
        const float w =
            round16(std::fma((float)q4_code(c.codes.data(), nb, col, kk), s, o), r.bf16);
        const double p = (double)round16(a[row * r.k + kk], r.bf16) * w;
        sum += p;
        mag += std::fabs(p);
      }
      const double want = act_ref(r.bias ? sum + bias[col] : sum, r.act);
      worst = std::max(worst, std::fabs(y[row * r.n + col] - want) / (mag + 1.0));
    }
  return worst;  // NaN (never written) compares false below
}

// Every run within 1e-5 of the reference (relative to sum |a w|), on the plan it asks for.
template <size_t N>
void check_runs(const Run (&runs)[N], std::mt19937& gen) {
  for (const Run& r : runs) {
    CAPTURE(r.m);
    CAPTURE(r.n);
    CAPTURE(r.k);
    CAPTURE(r.group);
    CAPTURE(r.bf16);
    Q4Launch plan;
    const double err = run_q4(r, gen, &plan);
    CAPTURE(plan.small);
    CAPTURE(plan.splits);
    CAPTURE(plan.stages_per_split);
    CHECK(plan.stream == r.stream);
    CHECK(err < 1e-5);
  }
}

}  // namespace

TEST_CASE("q4_gemm on the emulated device equals the reference") {
  std::mt19937 gen(5);
  // Small plan: M <= 64 (one m16 tile per block, more on grid.y), K splits when K is long.
  // Large plan: M > 64. K % 4 != 0 takes the 4-byte A copies.
  const Run runs[] = {
      {1, 64, 64, 32},
      {1, 70, 100, 32, false, false, true, 1},
      {3, 130, 256, 64, true},
      {16, 64, 130, 128, false, false, true, 2},
      {17, 65, 192, 64, true, false, false, 3},
      {5, 64, 1024, 128},  // 16 stages: K splits
      {2, 64, 1000, 32, true, false, true, 0},
      {7, 64, 512, 64, false, true},            // deterministic: small kernel, fixed splits
      {70, 70, 96, 32, false, false, true, 1},  // large plan
      {130, 64, 200, 64, true},
      {80, 64, 1024, 64, false, false, true, 1},  // large plan, K splits
  };
  check_runs(runs, gen);
}

TEST_CASE("q4_gemm's stream kernel on the emulated device equals the reference") {
  // Splits of one tile short of a whole warp quarter, a lone split, tiles past the ring depth,
  // M up to 16, every activation.
  std::mt19937 gen(9);
  const Run runs[] = {
      {1, 64, 64, 32, false, false, false, 0, true},
      {1, 70, 100, 32, false, false, true, 1, true},
      {3, 130, 256, 64, true, false, false, 2, true},
      {16, 64, 130, 128, false, false, true, 3, true},
      {1, 64, 4096, 128, false, false, false, 0, true},  // 256 tiles: 4 splits of 64
      {2, 192, 1000, 32, true, false, true, 0, true},
      {9, 64, 2048, 64, false, false, false, 1, true},
  };
  check_runs(runs, gen);
}

TEST_CASE("q4_dequantize on the emulated device gives the mma kernels' 16-bit weights") {
  // W16 = T(code * scale + offset) rounded once (the hfma), params as T: fp16, or bf16 from fp16.
  std::mt19937 gen(13);
  struct Dims {
    int64_t n, k, group;
  };
  for (Dims d : {Dims{70, 100, 32}, Dims{64, 256, 128}, Dims{130, 769, 64}})
    for (bool bf16 : {false, true}) {
      CAPTURE(d.n);
      CAPTURE(d.k);
      CAPTURE(bf16);
      Q4Case c = make_case(d.n, d.k, d.group, gen() % 2, gen);
      Tensor pc = q4_pack_codes(c.codes.data(), d.n, d.k);
      Tensor ps = q4_pack_params(c.scales, d.n, d.k, d.group);
      Tensor po = q4_pack_params(c.offsets, d.n, d.k, d.group);
      std::vector<uint16_t> w16(d.n * d.k, 0xffff);
      q4_dequantize(pc.ptr<int32_t>(), ps.ptr<uint16_t>(), po.ptr<uint16_t>(), w16.data(), d.n, d.k,
                    d.group, bf16, nullptr);
      const int64_t nb = (d.k + 31) / 32, ng = (d.k + d.group - 1) / d.group;
      int bad = 0;
      for (int64_t r = 0; r < d.n; r++)
        for (int64_t col = 0; col < d.k; col++) {
          const int64_t i = r * ng + col / d.group;
          const double s = round16(param_f16(c.scales, i), bf16),
                       o = round16(param_f16(c.offsets, i), bf16);
          const double exact = q4_code(c.codes.data(), nb, r, col) * s + o;
          const uint16_t want = bf16 ? f32_to_bf16((float)exact) : f32_to_f16((float)exact);
          bad += w16[r * d.k + col] != want;
        }
      CHECK(bad == 0);
    }
}

TEST_CASE("q4_bias_act on the emulated device") {
  std::vector<float> y = {-1.0f, 2.0f, -3.0f, 4.0f, 0.5f, -0.5f}, bias = {0.5f, -1.0f, 1.0f};
  q4_bias_act(y.data(), bias.data(), 2, 3, 1, nullptr);  // relu(y + bias)
  CHECK(y == std::vector<float>{0.0f, 1.0f, 0.0f, 4.5f, 0.0f, 0.5f});
  CHECK(q4_use_dequant_gemm(kQ4DequantMinM, false));
  CHECK(!q4_use_dequant_gemm(kQ4DequantMinM - 1, false));
  CHECK(!q4_use_dequant_gemm(4096, true));
}

TEST_CASE("q4_gemm emulated: the plans tested above include splits and every kernel") {
  const int sms = q4_multiprocessors();
  CHECK(q4_launch(5, 64, 1024, sms, false).splits > 1);
  CHECK(!q4_launch(70, 70, 96, sms, false).small);
  CHECK(q4_launch(80, 64, 1024, sms, false).splits > 1);
  CHECK(!q4_launch(80, 64, 1024, sms, false).small);
  // The stream plan: splits past one, a block's tiles not a multiple of 4 or of the ring depth.
  CHECK(q4_launch(1, 64, 4096, sms, false, true).splits > 1);
  CHECK(q4_launch(2, 192, 1000, sms, false, true).stages_per_split % 4 != 0);
  CHECK(!q4_launch(17, 64, 64, sms, false, true).stream);
  CHECK(!q4_launch(1, 64, 64, sms, true, true).stream);
}

TEST_CASE("Q4MatMul's adapter on the emulated device: K splits finished in the kernel") {
  // Through ops_q4.cpp: the plan, the device's tile counters (backend_emu.cpp checks that every
  // launch left them 0), both decode kernels; a second run gives the same bits.
  std::mt19937 gen(21);
  const int64_t n = 70, k = 1000, group = 64;
  for (bool stream : {false, true})
    for (int64_t m : {1, 5, 40}) {
      if (stream && m > 16) continue;
      CAPTURE(stream);
      CAPTURE(m);
      if (stream)
        setenv("EMBER_CUDA_Q4_KERNEL", "stream", 1);
      else
        unsetenv("EMBER_CUDA_Q4_KERNEL");
      Q4Case c = make_case(n, k, group, gen() % 2, gen);
      Tensor codes = Tensor::empty(DType::U8, {n, (k + 31) / 32, 16});
      std::memcpy(codes.data(), c.codes.data(), c.codes.size());
      Tensor a = test::random_f32({m, k}, (uint32_t)gen(), -1.0f, 1.0f);
      Tensor bias = test::random_f32({n}, (uint32_t)gen(), -1.0f, 1.0f);
      Node node = test::node(OpType::Q4MatMul);
      node.attrs.set("n", n);
      node.attrs.set("k", k);
      node.attrs.set("group", group);
      node.attrs.set("activation", std::string("relu"));
      CHECK(q4_launch(m, n, k, q4_multiprocessors(), false, stream).splits > 1);
      const std::vector<const Tensor*> in = {&a, &codes, &c.scales, &c.offsets, &bias};
      Tensor want = Tensor::empty(DType::F32, {m, n});
      KernelCtx rc{node, in, {&want}};
      op_def(OpType::Q4MatMul).reference(rc);
      // The weights as the session binds them on a device: repacked at load.
      Tensor packed[3];
      for (int i = 1; i <= 3; i++) packed[i - 1] = q4_prepare(node, i, *in[i]);
      std::vector<TensorType> types;
      for (const Tensor* t : in) types.push_back({t->dtype(), t->shape()});
      DeviceOptions opt;
      REQUIRE(q4matmul_cuda_supports(InferCtx{node, types, in}, opt));
      Tensor got[2];
      for (Tensor& y : got) {
        y = Tensor::empty(DType::F32, {m, n});
        KernelCtx kc{node, {&a, &packed[0], &packed[1], &packed[2], &bias}, {&y}, 1};
        kc.device_options = &opt;
        q4matmul_cuda(kc);
      }
      check_same(got[0], got[1]);
      check_near(want, got[0], 2e-2);  // A and W in fp16: sums to ~1e-3
    }
  unsetenv("EMBER_CUDA_Q4_KERNEL");
}
