// Quantization op references (cpp/src/ops/ops_quant.cpp) checked directly: round half to even,
// saturation (infinities and NaN included), per-axis and blocked scale indexing, the per-row
// 1-D zero point onnx.reference cannot express, MatMulNBits against a hand-decoded Q4G weight,
// and the shape-inference errors (kind Model) an untrusted file can provoke.
#include <cmath>
#include <cstring>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "runtime/cost.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;

namespace {

template <class T>
Tensor make(DType dt, const Shape& s, const std::vector<T>& v) {
  Tensor t = Tensor::empty(dt, s);
  REQUIRE((size_t)t.numel() == v.size());
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(T));
  return t;
}

Tensor f32(const Shape& s, const std::vector<float>& v) { return make(DType::F32, s, v); }
Tensor u8(const Shape& s, const std::vector<uint8_t>& v) { return make(DType::U8, s, v); }
Tensor i8(const Shape& s, const std::vector<int8_t>& v) { return make(DType::I8, s, v); }

template <class T>
std::vector<T> values(const Tensor& t) {
  return std::vector<T>(t.ptr<T>(), t.ptr<T>() + t.numel());
}

test::OpRun run(Node n, const std::vector<const Tensor*>& in) {
  return test::op_run(std::move(n), in, nullptr, false, 1, true);
}

std::optional<ErrorKind> fails(Node n, const std::vector<const Tensor*>& in) {
  return test::error_of([&] { run(n, in); });
}

}  // namespace

TEST_CASE("QuantizeLinear: round half to even, saturation at both ends, NaN") {
  Node n = test::node(OpType::QuantizeLinear);
  Tensor x = f32({8}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -127.5f});
  Tensor s = f32({}, {1.0f}), z = i8({}, {0});
  CHECK(values<int8_t>(run(n, {&x, &s, &z})[0]) ==
        std::vector<int8_t>{0, 2, 2, 0, -2, -2, 126, -128});
  // uint8 with zero point 128: far values, infinities saturate; NaN gives the minimum.
  Tensor far = f32({6}, {1e9f, -1e9f, INFINITY, -INFINITY, NAN, 3e38f});
  Tensor z8 = u8({}, {128});
  CHECK(values<uint8_t>(run(n, {&far, &s, &z8})[0]) ==
        std::vector<uint8_t>{255, 0, 255, 0, 0, 255});
  // No zero point: uint8, or output_dtype's type.
  Tensor neg = f32({3}, {-3.0f, 3.4f, 300.0f});
  test::OpRun r = run(n, {&neg, &s});
  CHECK(r.types[0].dtype == DType::U8);
  CHECK(values<uint8_t>(r[0]) == std::vector<uint8_t>{0, 3, 255});
  Node n16 = test::node(OpType::QuantizeLinear);
  n16.attrs.set("output_dtype", int64_t(5));
  Tensor big = f32({3}, {-40000.0f, 12345.5f, 40000.0f});
  r = run(n16, {&big, &s});
  CHECK(r.types[0].dtype == DType::I16);
  CHECK(values<int16_t>(r[0]) == std::vector<int16_t>{-32768, 12346, 32767});
}

TEST_CASE("QuantizeLinear / DequantizeLinear: per-axis and blocked scales") {
  // x [2, 3]; per axis 1 (the default): scales [3], zero points [3].
  Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor s = f32({3}, {1.0f, 2.0f, 4.0f}), z = u8({3}, {10, 20, 30});
  Node q = test::node(OpType::QuantizeLinear);
  CHECK(values<uint8_t>(run(q, {&x, &s, &z})[0]) == std::vector<uint8_t>{11, 21, 31, 14, 22, 32});
  // Blocked along axis 1, block 2: scales [2, 2] (the second block is partial).
  Node qb = test::node(OpType::QuantizeLinear);
  qb.attrs.set("axis", int64_t(1));
  qb.attrs.set("block_size", int64_t(2));
  Tensor sb = f32({2, 2}, {1.0f, 0.5f, 2.0f, 0.25f});
  CHECK(values<uint8_t>(run(qb, {&x, &sb})[0]) == std::vector<uint8_t>{1, 2, 6, 2, 2, 24});
  // Dequantize per axis 0 (negative axis -2), int8.
  Node d = test::node(OpType::DequantizeLinear);
  d.attrs.set("axis", int64_t(-2));
  Tensor xi = i8({2, 3}, {-128, 0, 127, 5, 6, 7});
  Tensor ds = f32({2}, {0.5f, 2.0f}), dz = i8({2}, {-128, 5});
  test::OpRun r = run(d, {&xi, &ds, &dz});
  CHECK(r.types[0].dtype == DType::F32);
  CHECK(values<float>(r[0]) == std::vector<float>{0.0f, 64.0f, 127.5f, 0.0f, 2.0f, 4.0f});
}

TEST_CASE("DynamicQuantizeLinear matches onnx.reference's float32 steps") {
  Node n = test::node(OpType::DynamicQuantizeLinear, 3);
  Tensor x = f32({6}, {0.0f, 2.0f, -3.0f, 4.0f, 1.3f, -0.2f});
  test::OpRun r = run(n, {&x});
  CHECK(values<uint8_t>(r[0]) == std::vector<uint8_t>{109, 182, 0, 255, 156, 102});
  uint32_t bits;
  std::memcpy(&bits, r[1].data(), 4);
  CHECK(bits == 1021370593u);  // 7 / 255 in float32
  CHECK(values<uint8_t>(r[2]) == std::vector<uint8_t>{109});
  // All zero: scale 1 / 255, zero point 0.
  Tensor zero = f32({2}, {0.0f, 0.0f});
  r = run(n, {&zero});
  CHECK(values<float>(r[1])[0] == 1.0f / 255.0f);
  CHECK(values<uint8_t>(r[0]) == std::vector<uint8_t>{0, 0});
}

TEST_CASE("MatMulInteger: 1-D per-row a_zero_point and per-column b_zero_point") {
  // A [2, 3] - [1, 2] per row; B [3, 2] - [3, 0] per column.
  Tensor a = u8({2, 3}, {1, 2, 3, 4, 5, 6}), b = u8({3, 2}, {3, 1, 4, 1, 5, 1});
  Tensor za = u8({2}, {1, 2}), zb = u8({2}, {3, 0});
  Node n = test::node(OpType::MatMulInteger);
  test::OpRun r = run(n, {&a, &b, &za, &zb});
  // rows (0, 1, 2) and (2, 3, 4); columns (0, 1, 2) and (1, 1, 1)
  CHECK(r.types[0].shape == Shape{2, 2});
  CHECK(values<int32_t>(r[0]) == std::vector<int32_t>{5, 3, 11, 9});
  // Zero points of the wrong type or shape are model errors.
  Tensor zs = i8({2}, {1, 2}), z3 = u8({3}, {1, 2, 3});
  CHECK(fails(n, {&a, &b, &zs}) == ErrorKind::Model);
  CHECK(fails(n, {&a, &b, &z3}) == ErrorKind::Model);
  CHECK(fails(n, {&a, &b, nullptr, &z3}) == ErrorKind::Model);
}

TEST_CASE("QLinearMatMul requantizes with round half to even and saturates") {
  // C = [[2, 5], [-2, -5]] from A [2, 1] @ B [1, 2]; multiplier 1 * 1 / 2 = 0.5, zero point 1.
  Tensor a = i8({2, 1}, {1, -1}), b = i8({1, 2}, {2, 5});
  Tensor one = f32({}, {1.0f}), two = f32({}, {2.0f}), z = i8({}, {0}), zy = i8({}, {1});
  Node n = test::node(OpType::QLinearMatMul);
  test::OpRun r = run(n, {&a, &one, &z, &b, &one, &z, &two, &zy});
  // rint(C * 0.5 + 1): 2, 3.5 -> 4, 0, -1.5 -> -2
  CHECK(values<int8_t>(r[0]) == std::vector<int8_t>{2, 4, 0, -2});
  Tensor big = i8({1, 2}, {127, -128});
  Tensor a2 = i8({2, 1}, {127, -128});
  r = run(n, {&a2, &one, &z, &big, &one, &z, &two, &zy});
  CHECK(values<int8_t>(r[0]) == std::vector<int8_t>{127, -128, -128, 127});
  Tensor s3 = f32({3}, {1, 1, 1});
  CHECK(fails(n, {&a, &one, &z, &b, &s3, &z, &two, &zy}) == ErrorKind::Model);  // N is 2
  CHECK(fails(n, {&a, &one, &z, &b, &one, &z, &s3, &zy}) == ErrorKind::Model);  // y per tensor
}

TEST_CASE("ConvInteger / QLinearConv: zero points, per-channel scales, shape errors") {
  // 1-D: x [1, 1, 4], w [2, 1, 2]; zero points x 1, w [0, 1].
  Tensor x = u8({1, 1, 4}, {1, 2, 3, 4}), w = u8({2, 1, 2}, {1, 1, 2, 3});
  Tensor xz = u8({}, {1}), wz = u8({2}, {0, 1});
  Node c = test::node(OpType::ConvInteger);
  test::OpRun r = run(c, {&x, &w, &xz, &wz});
  CHECK(r.types[0].shape == Shape{1, 2, 3});
  CHECK(values<int32_t>(r[0]) == std::vector<int32_t>{1, 3, 5, 2, 5, 8});
  Tensor xz2 = u8({2}, {1, 1}), wz3 = u8({3}, {0, 1, 2});
  CHECK(fails(c, {&x, &w, &xz2}) == ErrorKind::Model);
  CHECK(fails(c, {&x, &w, &xz, &wz3}) == ErrorKind::Model);
  // QLinearConv with w_scale per channel [1, 0.5], y_scale 1, y_zp 0: round half even.
  Node q = test::node(OpType::QLinearConv);
  Tensor one = f32({}, {1.0f}), ws = f32({2}, {1.0f, 0.5f}), yz = u8({}, {0});
  r = run(q, {&x, &one, &xz, &w, &ws, &wz, &one, &yz});
  CHECK(values<uint8_t>(r[0]) == std::vector<uint8_t>{1, 3, 5, 1, 2, 4});  // 2.5 -> 2
  Tensor ws3 = f32({3}, {1, 1, 1}), bias = make(DType::I32, {2}, std::vector<int32_t>{-10, 300});
  r = run(q, {&x, &one, &xz, &w, &ws, &wz, &one, &yz, &bias});
  CHECK(values<uint8_t>(r[0]) == std::vector<uint8_t>{0, 0, 0, 151, 152, 154});
  CHECK(fails(q, {&x, &one, &xz, &w, &ws3, &wz, &one, &yz}) == ErrorKind::Model);
}

TEST_CASE("Quantize/Dequantize shape inference refuses what an untrusted file can say") {
  Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6}), s = f32({}, {1.0f});
  Tensor s2 = f32({2}, {1, 1}), s23 = f32({2, 3}, {1, 1, 1, 1, 1, 1});
  Node q = test::node(OpType::QuantizeLinear);
  CHECK(fails(q, {&x, &s2}) == ErrorKind::Model);   // per axis 1 needs [3]
  CHECK(fails(q, {&x, &s23}) == ErrorKind::Model);  // rank 2 without block_size
  Node qa = test::node(OpType::QuantizeLinear);
  qa.attrs.set("axis", int64_t(2));
  Tensor s3 = f32({3}, {1, 1, 1});
  CHECK(fails(qa, {&x, &s3}) == ErrorKind::Model);  // axis out of range
  Node qb = test::node(OpType::QuantizeLinear);
  qb.attrs.set("block_size", int64_t(2));
  Tensor s22 = f32({2, 2}, {1, 1, 1, 1}), s21 = f32({2, 1}, {1, 1});
  CHECK(run(qb, {&x, &s22}).types[0].shape == Shape{2, 3});
  CHECK(fails(qb, {&x, &s21}) == ErrorKind::Model);  // ceil(3 / 2) is 2 blocks
  Tensor z2 = u8({2, 1}, {1, 1});
  CHECK(fails(qb, {&x, &s22, &z2}) == ErrorKind::Model);  // zero point not the scale's shape
  Node qo = test::node(OpType::QuantizeLinear);
  qo.attrs.set("output_dtype", int64_t(3));
  Tensor zu = u8({}, {0});
  CHECK(fails(qo, {&x, &s, &zu}) == ErrorKind::Model);  // int8 named, uint8 zero point
  qo.attrs.set("output_dtype", int64_t(22));             // INT4: no ember dtype
  CHECK(fails(qo, {&x, &s}) == ErrorKind::Model);
  Node qs = test::node(OpType::QuantizeLinear);
  qs.attrs.set("saturate", int64_t(2));  // a flag: 0 or 1
  CHECK(fails(qs, {&x, &s}) == ErrorKind::Model);
  Node d = test::node(OpType::DequantizeLinear);
  Tensor xi = i8({2}, {1, 2}), zu2 = u8({}, {0});
  CHECK(fails(d, {&xi, &s, &zu2}) == ErrorKind::Model);  // zero point type differs from x
  CHECK(fails(d, {&x, &s}) == ErrorKind::Model);          // float x
}

TEST_CASE("MatMulNBits: B decodes as Q4G (low nibble first), partial last block, bias") {
  // N = 2, K = 40, block 32: 2 blocks of 16 bytes per row; zero points one byte per row.
  const int64_t N = 2, K = 40, bs = 32;
  std::vector<uint8_t> q(N * 2 * 16), zp = {0x53, 0x08};  // row 0: zp 3 then 5; row 1: 8, 0
  for (size_t i = 0; i < q.size(); i++) q[i] = (uint8_t)(i * 37 + 11);
  std::vector<float> sc = {0.5f, -0.25f, 2.0f, 1.0f}, bias = {1.0f, -1.0f};
  std::vector<float> a(3 * K);
  for (size_t i = 0; i < a.size(); i++) a[i] = (float)((int)(i % 7) - 3) * 0.5f;
  Tensor ta = f32({3, K}, a), tb = make(DType::U8, {N, 2, 16}, q), ts = f32({N, 2}, sc);
  Tensor tz = u8({N, 1}, zp), tbias = f32({N}, bias);
  Node n = test::node(OpType::MatMulNBits);
  n.attrs.set("K", K);
  n.attrs.set("N", N);
  n.attrs.set("bits", int64_t(4));
  n.attrs.set("block_size", bs);
  test::OpRun r = run(n, {&ta, &tb, &ts, &tz, nullptr, &tbias});
  CHECK(r.types[0].shape == Shape{3, N});
  std::vector<float> got = values<float>(r[0]);
  for (int64_t m = 0; m < 3; m++) {
    for (int64_t c = 0; c < N; c++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        int64_t g = k / bs;
        uint8_t byte = q[c * 32 + k / 2];  // row c: blocks of 16 bytes, back to back
        int code = k % 2 ? byte >> 4 : byte & 15;
        int z = g % 2 ? zp[c] >> 4 : zp[c] & 15;
        acc += a[m * K + k] * ((float)(code - z) * sc[c * 2 + g]);
      }
      CHECK(got[m * N + c] == acc + bias[c]);
    }
  }
}

TEST_CASE("MatMulNBits: sizes and unsupported forms are model errors") {
  const int64_t N = 2, K = 40;
  Tensor ta = f32({1, K}, std::vector<float>(K, 1.0f));
  Tensor tb = make(DType::U8, {N, 2, 16}, std::vector<uint8_t>(64, 0x88));
  Tensor ts = f32({N * 2}, {1, 1, 1, 1}), tz = u8({N}, {0x88, 0x88});
  auto node = [&](int64_t bits, int64_t bs, int64_t k) {
    Node n = test::node(OpType::MatMulNBits);
    n.attrs.set("K", k);
    n.attrs.set("N", N);
    n.attrs.set("bits", bits);
    n.attrs.set("block_size", bs);
    return n;
  };
  CHECK(run(node(4, 32, K), {&ta, &tb, &ts, &tz}).types[0].shape == Shape{1, N});  // flat forms
  CHECK(fails(node(8, 32, K), {&ta, &tb, &ts}) == ErrorKind::Model);
  CHECK(fails(node(4, 16, K), {&ta, &tb, &ts}) == ErrorKind::Model);   // Q4G needs 32 | block
  CHECK(fails(node(4, 48, K), {&ta, &tb, &ts}) == ErrorKind::Model);   // not a power of 2
  CHECK(fails(node(4, 32, 70), {&ta, &tb, &ts}) == ErrorKind::Model);  // A is not [.., 70]
  Tensor a70 = f32({1, 70}, std::vector<float>(70, 1.0f));
  CHECK(fails(node(4, 32, 70), {&a70, &tb, &ts}) == ErrorKind::Model);  // B has 2 blocks, not 3
  Tensor tf = f32({N}, {8, 8}), ts3 = f32({N, 3}, {1, 1, 1, 1, 1, 1});
  Tensor tg = make(DType::I32, {K}, std::vector<int32_t>(K, 0));
  CHECK(fails(node(4, 32, K), {&ta, &tb, &ts, &tf}) == ErrorKind::Model);  // float zero points
  CHECK(fails(node(4, 32, K), {&ta, &tb, &ts3}) == ErrorKind::Model);
  CHECK(fails(node(4, 32, K), {&ta, &tb, &ts, nullptr, &tg}) == ErrorKind::Model);  // g_idx
  Tensor b3 = make(DType::U8, {N, 3, 16}, std::vector<uint8_t>(96, 0));
  CHECK(fails(node(4, 32, K), {&ta, &b3, &ts}) == ErrorKind::Model);
  Tensor bad_bias = f32({3}, {0, 0, 0});
  CHECK(fails(node(4, 32, K), {&ta, &tb, &ts, nullptr, nullptr, &bad_bias}) == ErrorKind::Model);
  // Huge attributes fail cleanly against the real shapes.
  CHECK(fails(node(4, 32, INT64_MAX), {&ta, &tb, &ts}) == ErrorKind::Model);
  Node huge_n = node(4, 32, K);
  huge_n.attrs.set("N", INT64_MAX);
  CHECK(fails(huge_n, {&ta, &tb, &ts}) == ErrorKind::Model);
}

TEST_CASE("cost: the integer matmuls and convolutions count their multiply-adds") {
  auto t = [](DType d, Shape s) { return TensorType{d, std::move(s)}; };
  TensorType none{}, sc = t(DType::F32, {}), z = t(DType::U8, {});
  Node qc = test::node(OpType::QLinearConv);  // W is input 3: [4, 3 / 1, 3, 3] -> 27 MACs each
  NodeCost c = node_cost(
      qc, {t(DType::U8, {1, 3, 9, 9}), sc, z, t(DType::U8, {4, 3, 3, 3}), sc, z, sc, z},
      {t(DType::U8, {1, 4, 7, 7})});
  CHECK(c.flops == 2.0 * 4 * 49 * 27);
  Node nb = test::node(OpType::MatMulNBits);  // A [5, 64] -> Y [5, 7]
  c = node_cost(nb, {t(DType::F32, {5, 64}), t(DType::U8, {7, 2, 16}), t(DType::F32, {7, 2}), none},
                {t(DType::F32, {5, 7})});
  CHECK(c.flops == 2.0 * 5 * 7 * 64);
  Node mi = test::node(OpType::MatMulInteger);
  c = node_cost(mi, {t(DType::U8, {3, 5, 33}), t(DType::I8, {33, 7})}, {t(DType::I32, {3, 5, 7})});
  CHECK(c.flops == 2.0 * 3 * 5 * 7 * 33);
  CHECK(c.bytes == 3.0 * 5 * 33 + 33 * 7 + 4.0 * 3 * 5 * 7);
}
