// add_norm.cu run on the emulated device (cuda/emu/emu.h) against AddNorm's reference (Add,
// then the norm's reference, in double): every launch path (a warp per row, the float4 block
// per row, the scalar block per row for odd widths and unaligned rows, the uncached long rows),
// LayerNorm and RMSNorm, per-column and scalar scale / bias, with and without the sum output,
// with and without the quantized rows of fuse_norm_quant (against ops/quantize_rows.h).
#include "cuda/kernels/add_norm.cu"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "doctest/doctest.h"
#include "ops/quantize_rows.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::cuda;

namespace {

struct Case {
  const char* kind;
  int64_t rows, cols;
  bool bias = false, scale_scalar = false, bias_scalar = false, sum_out = false;
  int offset = 0;  // floats added to every kernel pointer: 1 leaves the rows unaligned
};

enum class Path { Warp, Vec4, Cached, Long };

// The kernel add_norm_f32 picks for the case (its launch code's test, restated).
Path path_of(const Case& c) {
  const AddNormLaunch l = add_norm_launch(c.cols);
  if (l.warp) return Path::Warp;
  if (!l.cached) return Path::Long;
  return c.cols % 4 == 0 && c.offset == 0 ? Path::Vec4 : Path::Cached;
}

void run_case(const Case& c, bool quant, std::mt19937& gen) {
  const bool rms = std::string(c.kind) == "rms";
  const double eps = 1e-5;
  Node n;
  n.op = OpType::AddNorm;
  n.outputs = c.sum_out ? std::vector<int>{100, 101} : std::vector<int>{100};
  n.attrs.set("kind", std::string(c.kind));
  n.attrs.set("axis", int64_t(-1));
  n.attrs.set("epsilon", eps);
  const Shape xs = {c.rows, c.cols};
  Tensor x = test::random_f32(xs, gen(), -3.0f, 4.0f), r = test::random_f32(xs, gen(), -2.0f, 2.0f);
  Tensor scale = test::random_f32({c.scale_scalar ? 1 : c.cols}, gen(), 0.5f, 1.5f);
  Tensor bias = test::random_f32({c.bias_scalar ? 1 : c.cols}, gen(), -1.0f, 1.0f);
  std::vector<const Tensor*> in = {&x, &r, &scale};
  if (c.bias) in.push_back(&bias);
  const test::OpRun want = test::op_run(n, in, nullptr, false, 1, true);

  // 16-byte aligned buffers (std::vector<float4>'s), then `offset` floats in.
  std::vector<float4> bx(x.numel() / 4 + 2), br(bx.size()), by(bx.size()), bs(bx.size());
  float* px = reinterpret_cast<float*>(bx.data()) + c.offset;
  float* pr = reinterpret_cast<float*>(br.data()) + c.offset;
  float* py = reinterpret_cast<float*>(by.data()) + c.offset;
  float* ps = reinterpret_cast<float*>(bs.data()) + c.offset;
  std::memcpy(px, x.data(), x.numel() * sizeof(float));
  std::memcpy(pr, r.data(), r.numel() * sizeof(float));
  for (int64_t i = 0; i < x.numel(); i++) py[i] = ps[i] = NAN;  // unwritten elements show
  // Codes `offset` bytes into a 4-byte aligned buffer; 0x55 and NaN scales where unwritten.
  std::vector<uint32_t> bq(x.numel() / 4 + 2, 0x55555555u);
  std::vector<float> qs(c.rows, NAN);
  AddNormCodes q;
  if (quant) q = {reinterpret_cast<int8_t*>(bq.data()) + c.offset, qs.data()};
  add_norm_f32(px, pr, scale.ptr<float>(), c.bias ? bias.ptr<float>() : nullptr, py,
               c.sum_out ? ps : nullptr, c.rows, c.cols, rms, c.scale_scalar, c.bias_scalar, eps,
               nullptr, q);

  // Statistics in double either way; only the order of the sums differs: a few ulps.
  check_near(want[0], Tensor::borrow(DType::F32, xs, py), 2e-6);
  // The sum is the Add's float add: the same bits.
  if (c.sum_out) check_same(want[1], Tensor::borrow(DType::F32, xs, ps));
  if (!quant) return;
  // The codes and scales of the y the device wrote, as the token mode makes them: same bits.
  Tensor codes = Tensor::empty(DType::I8, xs), scales = Tensor::empty(DType::F32, {c.rows});
  quantize_rows_token(py, c.rows, c.cols, codes.ptr<int8_t>(), scales.ptr<float>());
  check_same(codes, Tensor::borrow(DType::I8, xs, q.codes));
  check_same(scales, Tensor::borrow(DType::F32, {c.rows}, qs.data()));
}

}  // namespace

TEST_CASE("add_norm on the emulated device equals the AddNorm reference") {
  std::mt19937 gen(11);
  const Case cases[] = {
      // A warp per row (<= 256 columns), 8 rows a block: 9 rows leave a block part-empty.
      {"layer", 9, 1, true},
      {"rms", 3, 7, false, true, false, true},
      {"layer", 17, 33, true, false, true, true},
      {"rms", 2, 256},
      // float4 block per row: whole float4s, aligned. 260 = 65 float4s over 64 threads (the
      // second float4 of a thread only for thread 0); 772 = 193; 4096 = 512 threads, 2 each.
      {"layer", 3, 260, true, false, false, true},
      {"rms", 3, 260, false, false, false, true},
      {"layer", 2, 772, true, true, true},
      {"rms", 5, 772, false, true},
      {"layer", 1, 4096, false},
      {"rms", 2, 4096, false, false, false, true},
      {"layer", 2, 8192, true, false, false, true},
      // Scalar block per row: widths not whole float4s, or rows not 16-byte aligned.
      {"layer", 3, 257, true, false, false, true},
      {"rms", 2, 769},
      {"layer", 2, 1030, true, false, false, false, 1},
      {"rms", 3, 772, false, false, false, true, 1},
      {"layer", 2, 8191, true, true, false, true},
      // Rows past 8192: the uncached kernel, reading s back when it writes it.
      {"layer", 2, 8197, true, false, false, true},
      {"layer", 1, 8200, true},
      {"rms", 2, 9000, false, false, false, true, 1},
      {"rms", 1, 8196},
  };
  bool seen[4] = {};
  for (const Case& c : cases) {
    CAPTURE(c.kind);
    CAPTURE(c.rows);
    CAPTURE(c.cols);
    CAPTURE(c.bias);
    CAPTURE(c.sum_out);
    CAPTURE(c.offset);
    const Path p = path_of(c);
    CAPTURE((int)p);
    seen[(int)p] = true;
    for (bool quant : {false, true}) {
      CAPTURE(quant);
      run_case(c, quant, gen);
    }
  }
  for (bool s : seen) CHECK(s);
}

TEST_CASE("add_norm on the emulated device through the AddNorm adapter") {
  // The adapter's rows and columns of a rank-3 x, its scale / bias modes (per column, [1],
  // a [1, 1, cols] broadcast), and the sum output it wires.
  struct Case {
    const char* kind;
    Shape x, scale, bias;  // bias {}: none
    int outputs;
  };
  const Case cases[] = {{"layer", {2, 3, 260}, {260}, {1, 1, 260}, 2},
                        {"layer", {3, 5, 33}, {1}, {1}, 1},
                        {"rms", {2, 2, 769}, {1, 769}, {}, 2},
                        {"rms", {1, 4, 8200}, {8200}, {}, 1}};
  uint32_t seed = 70;
  for (const Case& c : cases) {
    CAPTURE(c.kind);
    CAPTURE(shape_str(c.x));
    Node n = test::node(OpType::AddNorm, c.outputs);
    n.attrs.set("kind", std::string(c.kind));
    n.attrs.set("epsilon", 1e-6);
    Tensor x = test::random_f32(c.x, seed++, -3.0f, 3.0f), r = test::random_f32(c.x, seed++);
    Tensor scale = test::random_f32(c.scale, seed++, 0.5f, 1.5f);
    Tensor bias = test::random_f32(c.bias.empty() ? Shape{1} : c.bias, seed++);
    std::vector<const Tensor*> in = {&x, &r, &scale};
    if (!c.bias.empty()) in.push_back(&bias);
    AdapterRun run = run_adapter(n, in, add_norm_cuda, add_norm_cuda_supports);
    check_near(run.want[0], run.got[0], 2e-6);
    if (c.outputs == 2) check_same(run.want[1], run.got[1]);
  }
}
