// Conv and ConvTranspose (cpp/src/ops/ops_conv.cpp) and the fast f32 Conv
// (kernels/generic/conv_f32.cpp): fast against reference on odd shapes (im2col, 1x1,
// depthwise, groups, dilation, stride, SAME pads), hand-computed values, shape inference
// and hostile attributes.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "op_test_util.h"
#include "ops/op_util.h"

using namespace ember;
using ember::test::error_of;
using ember::test::op_run;

namespace {

Tensor conv_random(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

Tensor conv_f32_of(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, s);
  REQUIRE((int64_t)v.size() == t.numel());
  std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

Node conv_node(OpType op, std::vector<std::pair<std::string, AttrValue>> attrs) {
  Node n = ember::test::node(op);
  for (auto& [k, v] : attrs) n.attrs.set(k, v);
  return n;
}

void check_fast_matches_ref(const Node& n, const Shape& xs, const Shape& ws, bool bias) {
  Tensor x = conv_random(xs, 1), w = conv_random(ws, 2);
  Tensor b = conv_random({ws[0]}, 3);
  std::vector<const Tensor*> in = {&x, &w};
  if (bias) in.push_back(&b);
  auto ref = op_run(n, in, nullptr, false, 1, true);
  auto fast = op_run(n, in, nullptr, true, 3, true);
  REQUIRE(ref[0].shape() == fast[0].shape());
  for (int64_t i = 0; i < ref[0].numel(); i++)
    REQUIRE(fast[0].ptr<float>()[i] == doctest::Approx(ref[0].ptr<float>()[i]).epsilon(1e-4));
}

}  // namespace

TEST_CASE("conv: fast f32 matches the reference") {
  using V = std::vector<int64_t>;
  // im2col, 2-D, pads, stride, bias
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{1, 1, 1, 1}}, {"strides", V{2, 2}}}),
                         {3, 3, 13, 7}, {8, 3, 3, 3}, true);
  // 1x1 (no im2col), groups
  check_fast_matches_ref(conv_node(OpType::Conv, {{"group", int64_t(2)}}), {2, 8, 7, 13},
                         {6, 4, 1, 1}, true);
  // depthwise, dilation, SAME_LOWER
  check_fast_matches_ref(
      conv_node(OpType::Conv, {{"group", int64_t(8)}, {"dilations", V{2, 2}},
                               {"auto_pad", std::string("SAME_LOWER")}}),
      {1, 8, 13, 7}, {8, 1, 3, 3}, true);
  // 1-D and 3-D
  check_fast_matches_ref(conv_node(OpType::Conv, {{"auto_pad", std::string("SAME_UPPER")}}),
                         {3, 3, 13}, {8, 3, 4}, false);
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{0, 1, 1, 1, 0, 1}}}), {1, 3, 5, 7, 3},
                         {4, 3, 2, 3, 3}, true);
}

// Patch matrices over 2^18 floats are packed straight into the GEMM panels (PatchPanels), not
// im2col'd: odd output rows that straddle the 16-wide panels and sgemm's column blocks, pads
// on both sides, stride and dilation in each dim, groups, batch 2, 1-D.
TEST_CASE("conv: fast f32 matches the reference, patches packed into panels") {
  using V = std::vector<int64_t>;
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{1, 1, 1, 1}}}), {1, 13, 61, 67},
                         {5, 13, 3, 3}, true);
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{2, 1, 0, 3}}, {"strides", V{1, 2}},
                                                  {"dilations", V{2, 1}}}),
                         {2, 9, 83, 91}, {7, 9, 3, 5}, false);
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{3, 3, 3, 3}}, {"strides", V{2, 2}}}),
                         {1, 3, 229, 227}, {8, 3, 7, 7}, true);
  check_fast_matches_ref(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"pads", V{0, 2, 1, 0}},
                                                  {"strides", V{2, 1}}}),
                         {1, 20, 97, 101}, {6, 10, 3, 3}, true);
  check_fast_matches_ref(conv_node(OpType::Conv, {{"pads", V{2, 2}}}), {1, 40, 7001}, {3, 40, 5},
                         true);
}

TEST_CASE("conv: hand-computed values") {
  // 1-D [1,1,4] * [1,1,2], pad 1 each side: [x0, x0+x1, x1+x2, x2+x3, x3] with w = [1, 1].
  Tensor x = conv_f32_of({1, 1, 4}, {1, 2, 3, 4});
  Tensor w = conv_f32_of({1, 1, 2}, {1, 1});
  auto r = op_run(conv_node(OpType::Conv, {{"pads", std::vector<int64_t>{1, 1}}}), {&x, &w},
                  nullptr, false, 1, true);
  CHECK(r[0].shape() == Shape{1, 1, 5});
  std::vector<float> want = {1, 3, 5, 7, 4};
  for (int i = 0; i < 5; i++) CHECK(r[0].ptr<float>()[i] == want[i]);
  // ConvTranspose stride 2, [1,1,3] with w [1,1,2] = [1, 10]: y[2i] += x[i], y[2i+1] += 10 x[i].
  Tensor xt = conv_f32_of({1, 1, 3}, {1, 2, 3});
  Tensor wt = conv_f32_of({1, 1, 2}, {1, 10});
  auto t = op_run(conv_node(OpType::ConvTranspose, {{"strides", std::vector<int64_t>{2}}}),
                  {&xt, &wt}, nullptr, false, 1, true);
  CHECK(t[0].shape() == Shape{1, 1, 6});
  std::vector<float> want_t = {1, 10, 2, 20, 3, 30};
  for (int i = 0; i < 6; i++) CHECK(t[0].ptr<float>()[i] == want_t[i]);
}

TEST_CASE("conv: shape inference and hostile attributes") {
  using V = std::vector<int64_t>;
  Tensor x = conv_random({1, 4, 7, 7}, 1), w = conv_random({6, 2, 3, 3}, 2);
  auto run = [&](Node n, const Tensor& wt) {
    return error_of([&] { op_run(n, {&x, &wt}, nullptr, false, 1, true); });
  };
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}}), w) == std::nullopt);
  CHECK(run(conv_node(OpType::Conv, {}), w) == ErrorKind::Model);  // C/group mismatch
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(0)}}), w) == ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"kernel_shape", V{3, 2}}}), w) ==
        ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"auto_pad", std::string("SAME")}}),
            w) == ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"strides", V{0, 1}}}), w) ==
        ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"pads", V{-1, 0, 0, 0}}}), w) ==
        ErrorKind::Model);
  int64_t big = int64_t(1) << 62;
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"dilations", V{big, big}}}), w) ==
        ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"pads", V{big, big, big, big}}}),
            w) == ErrorKind::Model);
  CHECK(run(conv_node(OpType::Conv, {{"group", int64_t(2)}, {"dilations", V{5, 5}}}), w) ==
        ErrorKind::Model);  // dilated kernel 11 > 7
  Tensor wt = conv_random({4, 3, 2, 2}, 3);
  CHECK(run(conv_node(OpType::ConvTranspose, {{"strides", V{big, big}}}), wt) == ErrorKind::Model);
  CHECK(run(conv_node(OpType::ConvTranspose, {{"output_padding", V{1, 1}}}), wt) ==
        ErrorKind::Model);  // not below stride 1
  CHECK(run(conv_node(OpType::ConvTranspose, {{"pads", V{9, 9, 9, 9}}}), wt) == ErrorKind::Model);
  CHECK(run(conv_node(OpType::ConvTranspose, {{"output_shape", V{9, 11}}}), wt) == std::nullopt);
}

namespace {

// t[..., lo:hi, ...] along `axis`, f32.
Tensor conv_slice(const Tensor& t, int axis, int64_t lo, int64_t hi) {
  Shape s = t.shape();
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; i++) outer *= s[i];
  for (int i = axis + 1; i < (int)s.size(); i++) inner *= s[i];
  int64_t dim = s[axis];
  s[axis] = hi - lo;
  Tensor r = Tensor::empty(DType::F32, s);
  for (int64_t o = 0; o < outer; o++)
    std::memcpy(r.ptr<float>() + o * (hi - lo) * inner, t.ptr<float>() + (o * dim + lo) * inner,
                (size_t)((hi - lo) * inner) * 4);
  return r;
}

}  // namespace

// onnx.reference (1.23) mishandles ConvTranspose groups with several channels per group (and
// their bias), so the op table cannot check them: each group must equal a group-1 op on its slice.
TEST_CASE("conv: grouped ops equal their per-group slices") {
  using V = std::vector<int64_t>;
  for (OpType op : {OpType::Conv, OpType::ConvTranspose}) {
    bool tr = op == OpType::ConvTranspose;
    int64_t G = 2, C = 4, M = 6;
    Tensor x = conv_random({3, C, 7, 5}, 4);
    Tensor w = tr ? conv_random({C, M / G, 3, 3}, 5) : conv_random({M, C / G, 3, 3}, 5);
    Tensor b = conv_random({M}, 6);
    std::vector<std::pair<std::string, AttrValue>> attrs = {
        {"strides", V{2, 1}}, {"dilations", V{1, 2}}, {"pads", V{1, 0, 2, 1}}};
    Node n = conv_node(op, attrs);
    n.attrs.set("group", G);
    auto all = op_run(n, {&x, &w, &b}, nullptr, false, 1, true);
    for (int64_t g = 0; g < G; g++) {
      Tensor xg = conv_slice(x, 1, g * C / G, (g + 1) * C / G);
      Tensor wg = tr ? conv_slice(w, 0, g * C / G, (g + 1) * C / G)
                     : conv_slice(w, 0, g * M / G, (g + 1) * M / G);
      Tensor bg = conv_slice(b, 0, g * M / G, (g + 1) * M / G);
      auto one = op_run(conv_node(op, attrs), {&xg, &wg, &bg}, nullptr, false, 1, true);
      Tensor want = conv_slice(all[0], 1, g * M / G, (g + 1) * M / G);
      REQUIRE(want.shape() == one[0].shape());
      for (int64_t i = 0; i < want.numel(); i++)
        CHECK(one[0].ptr<float>()[i] == want.ptr<float>()[i]);
    }
  }
}
