// conv.cu run on the emulated device (cuda/emu/emu.h): im2col (fp32 into the host GEMMs against
// the Conv reference; fp16 / bf16 cols against the fp32 cols rounded), the bias fill and the
// direct (depthwise) kernel on the shared conv cases, conv_finish_16, pool_2d on the shared pool
// cases, the global pools (warp and block rows, NaNs, empty rows) and BatchNormalization, each
// against its op's reference.
#include "cuda/kernels/conv.cu"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/tests/conv_test_util.h"
#include "doctest/doctest.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::cuda;

namespace {

// conv_cuda's steps as the kernels run them (fp32 cols).
ConvSteps conv_device_steps() {
  ConvSteps s;
  s.im2col = [](const float* x, float* cols, const Conv2d& g, int64_t n0, int64_t nb, int64_t p0,
                int64_t pc) { conv_im2col(x, cols, g, n0, nb, p0, pc, 0, nullptr); };
  s.direct = [](const float* x, const float* w, const float* bias, float* y, const Conv2d& g) {
    conv_direct(x, w, bias, y, g, nullptr);
  };
  s.bias_fill = [](float* y, const float* bias, const Conv2d& g) {
    conv_bias_fill(y, bias, g.N, g.M, g.P(), nullptr);
  };
  return s;
}

uint16_t round16(float v, bool bf16) { return bf16 ? f32_to_bf16(v) : f32_to_f16(v); }

Node plain_node(OpType op) {
  Node n;
  n.op = op;
  n.outputs = {100};
  return n;
}

}  // namespace

TEST_CASE("conv kernels on the emulated device: im2col + host GEMMs, bias fill, direct") {
  check_conv_runs(conv_device_steps());
}

TEST_CASE("conv_im2col on the emulated device: 16-bit cols are the fp32 cols rounded") {
  std::mt19937 gen(3);
  for (const ConvRun& r : conv_runs()) {
    if (r.path != ConvPath::Im2col) continue;
    CAPTURE(shape_str(r.c.x));
    CAPTURE(shape_str(r.c.w));
    const Conv2d g = conv2d_of(r.c);
    Tensor x = test::random_f32(r.c.x, gen(), -3.0f, 3.0f);
    // The whole batch, and a pixel chunk of the last image that starts mid-row.
    const int64_t P = g.P();
    const int64_t chunks[2][4] = {{0, g.N, 0, P}, {g.N - 1, 1, P / 3, P - P / 3 - P / 4}};
    for (const auto& ch : chunks) {
      const int64_t n = ch[1] * g.rows() * ch[3];
      std::vector<float> cols(n, NAN);
      conv_im2col(x.ptr<float>(), cols.data(), g, ch[0], ch[1], ch[2], ch[3], 0, nullptr);
      for (int type : {1, 2}) {
        CAPTURE(type);
        std::vector<uint16_t> c16(n, 0xffff);
        conv_im2col(x.ptr<float>(), c16.data(), g, ch[0], ch[1], ch[2], ch[3], type, nullptr);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += c16[i] != round16(cols[i], type == 2);
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("conv_finish_16 on the emulated device: 16-bit Y to f32 plus bias") {
  std::mt19937 gen(4);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  const int64_t N = 2, M = 3, P = 37;
  std::vector<float> bias(M);
  for (float& b : bias) b = d(gen);
  for (bool bf16 : {false, true})
    for (bool with_bias : {false, true}) {
      CAPTURE(bf16);
      CAPTURE(with_bias);
      std::vector<uint16_t> y16(N * M * P);
      for (uint16_t& v : y16) v = round16(d(gen), bf16);
      std::vector<float> y(y16.size(), NAN);
      conv_finish_16(y16.data(), with_bias ? bias.data() : nullptr, y.data(), N, M, P, bf16,
                     nullptr);
      int bad = 0;
      for (size_t i = 0; i < y.size(); i++) {
        const float v = bf16 ? bf16_to_f32(y16[i]) : f16_to_f32(y16[i]);
        bad += y[i] != (with_bias ? v + bias[i / P % M] : v);
      }
      CHECK(bad == 0);
    }
}

TEST_CASE("pool_2d on the emulated device matches the MaxPool / AveragePool reference") {
  for_each_pool_case([](const Node& n, const Shape& xs, bool with_nan) {
    PoolRun r = pool_run(n, xs, with_nan);
    std::vector<float> got(r.want.numel(), 12345.0f);
    pool_2d(r.x.ptr<float>(), got.data(), r.p, nullptr);
    check_pool_out(r.want, got.data());
  });
}

TEST_CASE("pool_global on the emulated device matches the global pools' reference") {
  // Rows of <= 1024 take a warp each (8 a block), longer ones a block each.
  const Shape shapes[] = {{1, 1, 1},    {3, 3, 7},      {2, 9, 33}, {1, 9, 32, 32},
                          {1, 3, 1500}, {2, 1, 37, 41}, {1, 2, 0}};
  for (OpType op : {OpType::GlobalMaxPool, OpType::GlobalAveragePool})
    for (const Shape& xs : shapes)
      for (bool with_nan : {false, true}) {
        CAPTURE(std::string(op_name(op)));
        CAPTURE(shape_str(xs));
        CAPTURE(with_nan);
        Tensor x = test::random_f32(xs, 21, -5.0f, 5.0f);
        if (with_nan)  // a NaN in some rows (13 is not a multiple of any row length)
          for (int64_t i = 3; i < x.numel(); i += 13 * 41) x.ptr<float>()[i] = NAN;
        const test::OpRun want = test::op_run(plain_node(op), {&x}, nullptr, false, 1, true);
        const int64_t rows = want[0].numel(), cols = rows ? x.numel() / rows : 0;
        Tensor got = Tensor::empty(DType::F32, want[0].shape());
        pool_global(x.ptr<float>(), got.ptr<float>(), rows, cols, op == OpType::GlobalMaxPool,
                    nullptr);
        check_near(want[0], got, 1e-5);  // float sums in a tree, the reference's in double
      }
}

TEST_CASE("batch_norm on the emulated device matches the BatchNormalization reference") {
  const Shape shapes[] = {{2, 3, 7, 5}, {1, 4, 33}, {3, 2}, {2, 5, 1, 769}};
  uint32_t seed = 30;
  for (const Shape& xs : shapes) {
    CAPTURE(shape_str(xs));
    const int64_t C = xs[1];
    Tensor x = test::random_f32(xs, seed++, -3.0f, 3.0f);
    Tensor scale = test::random_f32({C}, seed++, 0.5f, 2.0f), b = test::random_f32({C}, seed++);
    Tensor mean = test::random_f32({C}, seed++), var = test::random_f32({C}, seed++, 0.1f, 3.0f);
    Node n = plain_node(OpType::BatchNormalization);
    n.attrs.set("epsilon", 1e-3);
    const test::OpRun want =
        test::op_run(n, {&x, &scale, &b, &mean, &var}, nullptr, false, 1, true);
    Tensor got = Tensor::empty(DType::F32, xs);
    const int64_t inner = x.numel() / (xs[0] * C);
    batch_norm(x.ptr<float>(), scale.ptr<float>(), b.ptr<float>(), mean.ptr<float>(),
               var.ptr<float>(), got.ptr<float>(), xs[0], C, inner, 1e-3f, nullptr);
    check_near(want[0], got, 1e-5);
  }
}
