// elementwise.cu run on the emulated device through the real adapters
// (cuda/src/ops_elementwise.cpp) against the ops' references: binary ops in f32 (flat with and
// without 4-wide loads, scalar operands, strided broadcasts), i64 and bool; every unary op on
// the vector path and the scalar tail; Clip, Where, Cast between all six types, SwiGLU, the
// reductions (a block per output and a thread per output), Softmax / LogSoftmax (warp rows,
// block rows, middle axes) and LayerNormalization / RMSNormalization. NaN, infinities and
// signed zeros in the inputs. Integer and bool outputs byte for byte, floats to a few ulps
// (device libm against the reference's double maths).
#include "cuda/kernels/elementwise.cu"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "doctest/doctest.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::cuda;

namespace {

const float kInf = std::numeric_limits<float>::infinity();

// Special values over the first elements of an F32 tensor.
void add_specials(Tensor& t) {
  const float v[] = {NAN, kInf, -kInf, 0.0f, -0.0f, 1e-40f, 3e38f, -1.0f};
  for (int64_t i = 0; i < t.numel() && i < 8; i++) t.ptr<float>()[i] = v[i];
}

// The adapter's outputs against the reference's: floats to `tol`, the rest byte for byte but
// for 16-bit NaN payloads.
void check_op(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn, SupportsFn ok,
              double tol) {
  AdapterRun r = run_adapter(n, in, fn, ok);
  for (size_t i = 0; i < r.want.size(); i++) {
    if (r.want[i].dtype() == DType::F32)
      check_near(r.want[i], r.got[i], tol);
    else
      check_same(r.want[i], r.got[i], true);
  }
}

}  // namespace

TEST_CASE("elementwise on the emulated device: binary ops") {
  // 1030: the 4-wide path with a tail of 2; 3: too short for it; scalars on either side;
  // [3, 1, 5] x [1, 4, 5] and [2, 3, 4] x [4]: strided broadcasts.
  const std::pair<Shape, Shape> shapes[] = {{{1030}, {1030}},       {{3}, {3}},
                                            {{}, {7, 33}},          {{7, 33}, {1}},
                                            {{3, 1, 5}, {1, 4, 5}}, {{2, 3, 4}, {4}}};
  const OpType f32_ops[] = {OpType::Add,     OpType::Sub,         OpType::Mul,
                            OpType::Div,     OpType::Pow,         OpType::Min,
                            OpType::Max,     OpType::Equal,       OpType::Less,
                            OpType::Greater, OpType::LessOrEqual, OpType::GreaterOrEqual};
  uint32_t seed = 1;
  for (const auto& [sa, sb] : shapes) {
    CAPTURE(shape_str(sa));
    CAPTURE(shape_str(sb));
    Tensor a = random_of(DType::F32, sa, seed++), b = random_of(DType::F32, sb, seed++);
    add_specials(a);
    for (int64_t i = 0; i < b.numel(); i += 3) b.ptr<float>()[i] = a.ptr<float>()[i % a.numel()];
    for (OpType op : f32_ops) {
      CAPTURE(std::string(op_name(op)));
      check_op(test::node(op), {&a, &b}, binary_cuda, binary_cuda_supports, 1e-6);
    }
    Tensor ia = random_of(DType::I64, sa, seed++), ib = random_of(DType::I64, sb, seed++);
    for (int64_t i = 0; i < ib.numel(); i += 3)  // some equal pairs for the comparisons
      ib.ptr<int64_t>()[i] = ia.ptr<int64_t>()[i % ia.numel()];
    for (OpType op : {OpType::Add, OpType::Sub, OpType::Mul, OpType::Equal, OpType::Less,
                      OpType::GreaterOrEqual}) {
      CAPTURE(std::string(op_name(op)));
      check_op(test::node(op), {&ia, &ib}, binary_cuda, binary_cuda_supports, 0);
    }
    Tensor ba = random_of(DType::Bool, sa, seed++), bb = random_of(DType::Bool, sb, seed++);
    for (OpType op : {OpType::And, OpType::Or, OpType::Xor}) {
      CAPTURE(std::string(op_name(op)));
      check_op(test::node(op), {&ba, &bb}, binary_cuda, binary_cuda_supports, 0);
    }
  }
}

TEST_CASE("elementwise on the emulated device: unary ops, Clip") {
  struct U {
    OpType op;
    const char* attr;  // a float attribute, or the Gelu approximation
    double value;
  };
  const U ops[] = {{OpType::Sqrt, nullptr, 0},          {OpType::Exp, nullptr, 0},
                   {OpType::Log, nullptr, 0},           {OpType::Neg, nullptr, 0},
                   {OpType::Abs, nullptr, 0},           {OpType::Reciprocal, nullptr, 0},
                   {OpType::Erf, nullptr, 0},           {OpType::Tanh, nullptr, 0},
                   {OpType::Sigmoid, nullptr, 0},       {OpType::Relu, nullptr, 0},
                   {OpType::Gelu, nullptr, 0},          {OpType::Gelu, "tanh", 0},
                   {OpType::Softplus, nullptr, 0},      {OpType::Sin, nullptr, 0},
                   {OpType::Cos, nullptr, 0},           {OpType::LeakyRelu, "alpha", 0.07},
                   {OpType::HardSigmoid, "alpha", 0.3}, {OpType::HardSwish, nullptr, 0},
                   {OpType::Elu, "alpha", 0.8}};
  uint32_t seed = 100;
  for (const Shape& s : {Shape{1030}, Shape{3}, Shape{5, 7}}) {
    Tensor x = test::random_f32(s, seed++, -6.0f, 6.0f);
    add_specials(x);
    for (const U& u : ops) {
      CAPTURE(std::string(op_name(u.op)));
      CAPTURE(shape_str(s));
      Node n = test::node(u.op);
      if (u.attr && std::string(u.attr) == "tanh")
        n.attrs.set("approximate", std::string("tanh"));
      else if (u.attr)
        n.attrs.set(u.attr, u.value);
      check_op(n, {&x}, unary_cuda, unary_cuda_supports, 2e-6);
    }
    Tensor lo = test::random_f32({}, seed++, -1.0f, 0.0f), hi = test::random_f32({}, seed++);
    Tensor nan = Tensor::empty(DType::F32, {});
    nan.ptr<float>()[0] = NAN;
    check_op(test::node(OpType::Clip), {&x, &lo, &hi}, clip_cuda, clip_cuda_supports, 0);
    check_op(test::node(OpType::Clip), {&x, &lo}, clip_cuda, clip_cuda_supports, 0);
    check_op(test::node(OpType::Clip), {&x, nullptr, &hi}, clip_cuda, clip_cuda_supports, 0);
    check_op(test::node(OpType::Clip), {&x, &nan, &hi}, clip_cuda, clip_cuda_supports, 0);
  }
}

TEST_CASE("elementwise on the emulated device: Where, Cast, SwiGLU") {
  uint32_t seed = 200;
  for (DType t : {DType::U8, DType::F16, DType::F32, DType::I64}) {
    CAPTURE(std::string(dtype_name(t)));
    Tensor c = random_of(DType::Bool, {3, 1, 5}, seed++);
    Tensor x = random_of(t, {1, 4, 5}, seed++), y = random_of(t, {5}, seed++);
    check_op(test::node(OpType::Where), {&c, &x, &y}, where_cuda, where_cuda_supports, 0);
  }
  // Cast between every pair of F32, F16, BF16, I64, I32 and Bool (`to` codes).
  const std::pair<DType, int64_t> types[] = {{DType::F32, 1}, {DType::F16, 10}, {DType::BF16, 16},
                                             {DType::I64, 7}, {DType::I32, 6},  {DType::Bool, 9}};
  Tensor f = test::random_f32({37}, seed++, -70000.0f, 70000.0f);
  add_specials(f);
  f.ptr<float>()[8] = 3e9f;  // past int32
  f.ptr<float>()[9] = -2.5f;
  f.ptr<float>()[10] = 0.5f;
  for (const auto& [from, from_code] : types) {
    // The sources: f cast to `from` by the reference (so 16-bit and integer sources are real).
    Node to_src = test::node(OpType::Cast);
    to_src.attrs.set("to", from_code);
    const Tensor src = test::op_run(to_src, {&f}, nullptr, false, 1, true)[0];
    for (const auto& [to, to_code] : types) {
      CAPTURE(std::string(dtype_name(from)));
      CAPTURE(std::string(dtype_name(to)));
      Node n = test::node(OpType::Cast);
      n.attrs.set("to", to_code);
      check_op(n, {&src}, cast_cuda, cast_cuda_supports, 0);
    }
  }
  for (const Shape& s : {Shape{3, 74}, Shape{1, 2}, Shape{2, 5, 1030}}) {
    CAPTURE(shape_str(s));
    Tensor x = test::random_f32(s, seed++, -5.0f, 5.0f);
    check_op(test::node(OpType::SwiGLU), {&x}, swiglu_cuda, swiglu_cuda_supports, 2e-6);
  }
}

TEST_CASE("elementwise on the emulated device: reductions") {
  struct Case {
    Shape x;
    std::vector<int64_t> axes;
    int64_t keepdims;
  };
  // Long rows (a block per output), many short or strided ones (a thread per output), all
  // axes, a middle axis, and no axes with noop_with_empty_axes unset (everything).
  const Case cases[] = {{{3, 1030}, {1}, 1},    {{2, 9, 33}, {2}, 0}, {{40, 7}, {0}, 1},
                        {{4, 5, 6}, {0, 2}, 0}, {{2, 3, 5}, {1}, 1},  {{7, 33}, {}, 0},
                        {{5, 2000}, {-1}, 0}};
  uint32_t seed = 300;
  for (const Case& c : cases)
    for (OpType op : {OpType::ReduceSum, OpType::ReduceMean, OpType::ReduceMax}) {
      CAPTURE(std::string(op_name(op)));
      CAPTURE(shape_str(c.x));
      Tensor x = random_of(DType::F32, c.x, seed++);
      if (op == OpType::ReduceMax) x.ptr<float>()[x.numel() / 2] = NAN;
      Node n = test::node(op);
      n.attrs.set("keepdims", c.keepdims);
      Tensor axes = ints(DType::I64, {(int64_t)c.axes.size()}, c.axes);
      if (c.axes.empty())
        check_op(n, {&x}, reduce_cuda, reduce_cuda_supports, 1e-6);
      else
        check_op(n, {&x, &axes}, reduce_cuda, reduce_cuda_supports, 1e-6);
    }
}

TEST_CASE("elementwise on the emulated device: Softmax, LayerNormalization, RMSNormalization") {
  uint32_t seed = 400;
  // Rows up to 1024 take a warp (8 a block), longer ones a block; axis 1 of [2, 7, 5] is a
  // middle axis (a thread per column).
  const std::pair<Shape, int64_t> softmax[] = {
      {{9, 33}, -1}, {{3, 1}, -1}, {{2, 1500}, 1}, {{2, 7, 5}, 1}, {{1030}, 0}};
  for (const auto& [s, axis] : softmax)
    for (OpType op : {OpType::Softmax, OpType::LogSoftmax}) {
      CAPTURE(std::string(op_name(op)));
      CAPTURE(shape_str(s));
      Tensor x = test::random_f32(s, seed++, -8.0f, 8.0f);
      Node n = test::node(op);
      n.attrs.set("axis", axis);
      check_op(n, {&x}, softmax_cuda, softmax_cuda_supports, 2e-6);
    }
  struct Norm {
    Shape x;
    int64_t axis;
    bool scale_scalar, bias;
  };
  const Norm norms[] = {{{9, 33}, -1, false, true},
                        {{3, 1500}, -1, false, false},
                        {{2, 3, 40}, 1, false, true},
                        {{4, 7}, -1, true, true},
                        {{1, 1}, -1, false, true}};
  for (const Norm& c : norms) {
    CAPTURE(shape_str(c.x));
    CAPTURE(c.axis);
    Tensor x = test::random_f32(c.x, seed++, -3.0f, 5.0f);
    Shape ps(c.x.begin() + (c.axis < 0 ? c.axis + (int64_t)c.x.size() : c.axis), c.x.end());
    if (c.scale_scalar) ps = {1};
    Tensor scale = test::random_f32(ps, seed++, 0.5f, 1.5f), bias = test::random_f32(ps, seed++);
    Node ln = test::node(OpType::LayerNormalization);
    ln.attrs.set("axis", c.axis);
    ln.attrs.set("epsilon", 1e-5);
    if (c.bias)
      check_op(ln, {&x, &scale, &bias}, layer_norm_cuda, layer_norm_cuda_supports, 1e-6);
    else
      check_op(ln, {&x, &scale}, layer_norm_cuda, layer_norm_cuda_supports, 1e-6);
    Node rn = test::node(OpType::RMSNormalization);
    rn.attrs.set("axis", c.axis);
    rn.attrs.set("epsilon", 1e-5);
    check_op(rn, {&x, &scale}, rms_norm_cuda, rms_norm_cuda_supports, 1e-6);
  }
}

TEST_CASE("elementwise on the emulated device: grid-stride loops past grid_for's cap") {
  // grid_for caps a launch at 132 SMs * 8 blocks * 2 = 2112 blocks of 256 threads (540672):
  // past that, threads take a second step (for the 4-wide paths, past 4 times that).
  Tensor a = random_of(DType::F32, {700, 1001}, 5), b = random_of(DType::F32, {1001}, 6);
  check_op(test::node(OpType::Add), {&a, &b}, binary_cuda, binary_cuda_supports, 1e-6);
  Tensor v = random_of(DType::F32, {2200003}, 7);
  check_op(test::node(OpType::Neg), {&v}, unary_cuda, unary_cuda_supports, 0);
  check_op(test::node(OpType::Mul), {&v, &v}, binary_cuda, binary_cuda_supports, 0);
  Tensor c = random_of(DType::Bool, {700, 1}, 8);
  check_op(test::node(OpType::Where), {&c, &a, &b}, where_cuda, where_cuda_supports, 0);
  Node cast = test::node(OpType::Cast);
  cast.attrs.set("to", int64_t(10));
  check_op(cast, {&a}, cast_cuda, cast_cuda_supports, 0);
  Tensor g = random_of(DType::F32, {600, 2002}, 9);
  check_op(test::node(OpType::SwiGLU), {&g}, swiglu_cuda, swiglu_cuda_supports, 2e-6);
}
