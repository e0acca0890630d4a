// Recurrent and selection ops (cpp/src/ops/ops_rnn.cpp): what onnx.reference cannot check
// (LSTM/GRU sequence_lens, clip, input_forget), TopK ties and the error paths.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "op_test_util.h"
#include "ops/op_util.h"

using namespace ember;
using namespace ember::test;

namespace {

Tensor rnd(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

Tensor i64s(const Shape& s, const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty(DType::I64, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 8);
  return t;
}

Tensor i32s(const Shape& s, const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::I32, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

OpRun run_ref(const Node& n, const std::vector<const Tensor*>& in) {
  return op_run(n, in, nullptr, false, 1, true);
}

float at(const Tensor& t, int64_t i) { return t.ptr<float>()[i]; }

}  // namespace

TEST_CASE("rnn: TopK keeps the lower index on ties and checks K") {
  Node n = node(OpType::TopK, 2);
  Tensor x = Tensor::empty(DType::F32, {5});
  float v[5] = {1, 3, 3, 2, 3};
  std::memcpy(x.data(), v, sizeof v);
  Tensor k = i64s({1}, {3});
  OpRun r = run_ref(n, {&x, &k});
  CHECK(r[1].ptr<int64_t>()[0] == 1);
  CHECK(r[1].ptr<int64_t>()[1] == 2);
  CHECK(r[1].ptr<int64_t>()[2] == 4);
  Tensor big = i64s({1}, {6});
  CHECK(error_of([&] { run_ref(n, {&x, &big}); }) == ErrorKind::Model);
  Tensor neg = i64s({1}, {-1});
  CHECK(error_of([&] { run_ref(n, {&x, &neg}); }) == ErrorKind::Model);
  CHECK(error_of([&] { op_run(n, {&x, &k}, nullptr, false, 1, false); }) == ErrorKind::Model);
}

TEST_CASE("rnn: LSTM/GRU sequence_lens stop each batch row and zero the tail of Y") {
  const int64_t S = 4, B = 2, I = 3, H = 5;
  for (int gates : {4, 3}) {
    OpType op = gates == 4 ? OpType::LSTM : OpType::GRU;
    for (const char* dir : {"forward", "reverse"}) {
      Node n = node(op, gates == 4 ? 3 : 2);
      n.attrs.set("direction", std::string(dir));
      Tensor x = rnd({S, B, I}, 1), w = rnd({1, gates * H, I}, 2), r = rnd({1, gates * H, H}, 3);
      Tensor bias = rnd({1, 2 * gates * H}, 4);
      Tensor lens = i32s({B}, {4, 2});
      OpRun full = run_ref(n, {&x, &w, &r, &bias});
      OpRun part = run_ref(n, {&x, &w, &r, &bias, &lens});
      // Row 0 runs the whole sequence: same as without lens.
      for (int64_t j = 0; j < H; j++) CHECK(at(part[1], j) == at(full[1], j));
      // Row 1 runs its first 2 steps only: same as running X[:2] alone.
      Tensor x2 = Tensor::empty(DType::F32, {2, B, I});
      std::memcpy(x2.data(), x.data(), (size_t)(2 * B * I) * 4);
      OpRun short_run = run_ref(n, {&x2, &w, &r, &bias});
      for (int64_t j = 0; j < H; j++) CHECK(at(part[1], H + j) == doctest::Approx(at(short_run[1], H + j)));
      for (int64_t t = 2; t < S; t++)
        for (int64_t j = 0; j < H; j++) CHECK(at(part[0], (t * B + 1) * H + j) == 0.0f);
      Tensor bad = i32s({B}, {5, 1});
      CHECK(error_of([&] { run_ref(n, {&x, &w, &r, &bias, &bad}); }) == ErrorKind::Input);
    }
  }
}

TEST_CASE("rnn: LSTM clip and input_forget") {
  const int64_t S = 3, B = 2, I = 3, H = 4;
  Tensor x = rnd({S, B, I}, 5), w = rnd({1, 4 * H, I}, 6), r = rnd({1, 4 * H, H}, 7);
  for (int64_t i = 0; i < x.numel(); i++) x.ptr<float>()[i] *= 10;
  Node n = node(OpType::LSTM, 3);
  OpRun plain = run_ref(n, {&x, &w, &r});
  n.attrs.set("clip", 1e9);
  OpRun loose = run_ref(n, {&x, &w, &r});
  for (int64_t i = 0; i < plain[0].numel(); i++) CHECK(at(loose[0], i) == at(plain[0], i));
  n.attrs.set("clip", 0.01);
  OpRun tight = run_ref(n, {&x, &w, &r});
  // Pre-activations in [-0.01, 0.01]: first step c = sig(~0)*tanh(~0) is tiny.
  for (int64_t j = 0; j < H; j++) CHECK(std::fabs(at(tight[0], j)) < 0.01f);
  n.attrs.set("clip", -1.0);
  CHECK(error_of([&] { run_ref(n, {&x, &w, &r}); }) == ErrorKind::Model);

  // input_forget with a zero weight on the i gate: i = f = 0.5 whatever the input.
  Node m = node(OpType::LSTM, 3);
  m.attrs.set("input_forget", int64_t(1));
  Tensor w0 = Tensor::zeros(DType::F32, {1, 4 * H, I}), r0 = Tensor::zeros(DType::F32, {1, 4 * H, H});
  OpRun f = run_ref(m, {&x, &w0, &r0});
  // c = 0.5*c + 0.5*tanh(0) = 0 and h = 0.5*tanh(0) = 0; now give the c gate an input.
  for (int64_t j = 0; j < H; j++) CHECK(at(f[2], j) == 0.0f);
  Tensor wc = Tensor::zeros(DType::F32, {1, 4 * H, I});
  for (int64_t j = 0; j < H; j++) wc.ptr<float>()[(3 * H + j) * I] = 1.0f;
  Tensor x1 = Tensor::empty(DType::F32, {1, 1, I});
  for (int64_t i = 0; i < I; i++) x1.ptr<float>()[i] = 1.0f;
  OpRun g = run_ref(m, {&x1, &wc, &r0});
  // i = 0.5, f = 1 - i = 0.5, c = 0.5 * tanh(1).
  for (int64_t j = 0; j < H; j++) CHECK(at(g[2], j) == doctest::Approx(0.5 * std::tanh(1.0)));
}

TEST_CASE("rnn: LSTM/GRU refuse bad shapes and attributes") {
  Tensor x = rnd({2, 1, 3}, 8), w = rnd({1, 16, 3}, 9), r = rnd({1, 16, 4}, 10);
  Node n = node(OpType::LSTM, 3);
  Tensor rbad = rnd({1, 15, 4}, 11);
  CHECK(error_of([&] { run_ref(n, {&x, &w, &rbad}); }) == ErrorKind::Model);
  Tensor wbad = rnd({1, 16, 2}, 12);
  CHECK(error_of([&] { run_ref(n, {&x, &wbad, &r}); }) == ErrorKind::Model);
  n.attrs.set("direction", std::string("sideways"));
  CHECK(error_of([&] { run_ref(n, {&x, &w, &r}); }) == ErrorKind::Model);
  Node m = node(OpType::LSTM, 3);
  m.attrs.set("hidden_size", int64_t(5));
  CHECK(error_of([&] { run_ref(m, {&x, &w, &r}); }) == ErrorKind::Model);
  Node g = node(OpType::GRU, 2);
  g.attrs.set("linear_before_reset", int64_t(2));
  Tensor wg = rnd({1, 12, 3}, 13), rg = rnd({1, 12, 4}, 14);
  CHECK(error_of([&] { run_ref(g, {&x, &wg, &rg}); }) == ErrorKind::Model);
}

namespace {

Tensor f32s(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::empty(DType::F32, s);
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * 4);
  return t;
}

}  // namespace

TEST_CASE("rnn: Resize nearest and linear on a small grid") {
  Tensor x = f32s({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor sc = f32s({4}, {1, 1, 2, 2});
  Node n = node(OpType::Resize);
  OpRun r = run_ref(n, {&x, nullptr, &sc});
  REQUIRE(r[0].shape() == Shape{1, 1, 4, 4});
  const float want_nearest[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
  for (int i = 0; i < 16; i++) CHECK(at(r[0], i) == want_nearest[i]);
  n.attrs.set("mode", std::string("linear"));
  OpRun l = run_ref(n, {&x, nullptr, &sc});
  // half_pixel: row 0 samples x = -0.25 (clamped: 1), 0.25 (1.25), 0.75 (1.75), 1.25 (2).
  const float want_row0[4] = {1.0f, 1.25f, 1.75f, 2.0f};
  for (int i = 0; i < 4; i++) CHECK(at(l[0], i) == doctest::Approx(want_row0[i]));
}

TEST_CASE("rnn: Resize refuses hostile scales and sizes") {
  Tensor x = rnd({1, 1, 3, 3}, 20);
  Node n = node(OpType::Resize);
  auto err = [&](const Node& nd, const Tensor* scales, const Tensor* sizes) {
    return error_of([&] { run_ref(nd, {&x, nullptr, scales, sizes}); });
  };
  Tensor neg = f32s({4}, {1, 1, -2, 2});
  CHECK(err(n, &neg, nullptr) == ErrorKind::Model);
  Tensor nan = f32s({4}, {1, 1, NAN, 2});
  CHECK(err(n, &nan, nullptr) == ErrorKind::Model);
  Tensor huge = f32s({4}, {1, 1, 1e30f, 1e30f});
  CHECK(err(n, &huge, nullptr) == ErrorKind::Model);
  Tensor short_scales = f32s({2}, {2, 2});
  CHECK(err(n, &short_scales, nullptr) == ErrorKind::Model);
  Tensor sz = i64s({4}, {1, 1, 5, 5});
  Tensor ok_scales = f32s({4}, {1, 1, 2, 2});
  CHECK(err(n, &ok_scales, &sz) == ErrorKind::Model);  // both given
  CHECK(err(n, nullptr, nullptr) == ErrorKind::Model);  // neither
  Tensor big = i64s({4}, {1, 1, int64_t(1) << 40, int64_t(1) << 40});
  CHECK(err(n, nullptr, &big) == ErrorKind::Model);
  Tensor zero = i64s({4}, {1, 1, 0, 5});
  CHECK(err(n, nullptr, &zero) == ErrorKind::Model);
  Node aa = node(OpType::Resize);
  aa.attrs.set("antialias", int64_t(1));  // nearest + antialias
  CHECK(err(aa, &ok_scales, nullptr) == ErrorKind::Model);
  Node crop = node(OpType::Resize);
  crop.attrs.set("coordinate_transformation_mode", std::string("tf_crop_and_resize"));
  CHECK(err(crop, &ok_scales, nullptr) == ErrorKind::Model);  // needs sizes
  Node ax = node(OpType::Resize);
  ax.attrs.set("axes", std::vector<int64_t>{2, 2});
  Tensor two = f32s({2}, {2, 2});
  CHECK(err(ax, &two, nullptr) == ErrorKind::Model);
  Node mode = node(OpType::Resize);
  mode.attrs.set("mode", std::string("bicubic"));
  CHECK(err(mode, &ok_scales, nullptr) == ErrorKind::Model);
  // scales unknown at plan time
  CHECK(error_of([&] { op_run(n, {&x, nullptr, &ok_scales}, nullptr, false, 1, false); }) ==
        ErrorKind::Model);
}

TEST_CASE("rnn: LSTM/GRU activations attribute") {
  const int64_t S = 3, B = 2, I = 3, H = 4;
  Tensor x = rnd({S, B, I}, 30), w = rnd({1, 4 * H, I}, 31), r = rnd({1, 4 * H, H}, 32);
  Node plain = node(OpType::LSTM, 3);
  Node named = node(OpType::LSTM, 3);
  named.attrs.set("activations", std::string("Sigmoid,Tanh,Tanh"));
  OpRun a = run_ref(plain, {&x, &w, &r}), b = run_ref(named, {&x, &w, &r});
  for (int64_t i = 0; i < a[0].numel(); i++) CHECK(at(a[0], i) == at(b[0], i));
  // Relu as g and h: with zero weights on every gate but c, c = 0.5 * relu(W_c x) >= 0.
  Node relu = node(OpType::LSTM, 3);
  relu.attrs.set("activations", std::string("Sigmoid,Relu,Relu"));
  Tensor wc = Tensor::zeros(DType::F32, {1, 4 * H, I});
  for (int64_t j = 0; j < H; j++) wc.ptr<float>()[(3 * H + j) * I] = j % 2 ? 1.0f : -1.0f;
  Tensor r0 = Tensor::zeros(DType::F32, {1, 4 * H, H});
  Tensor x1 = Tensor::empty(DType::F32, {1, 1, I});
  for (int64_t i = 0; i < I; i++) x1.ptr<float>()[i] = 2.0f;
  OpRun c = run_ref(relu, {&x1, &wc, &r0});
  for (int64_t j = 0; j < H; j++) {
    float cj = j % 2 ? 0.5f * 2.0f : 0.0f;
    CHECK(at(c[2], j) == doctest::Approx(cj));
    CHECK(at(c[1], j) == doctest::Approx(0.5f * cj));  // o = 0.5, h = relu(c)
  }
  Node bad = node(OpType::LSTM, 3);
  bad.attrs.set("activations", std::string("Sigmoid,Tanh,Elu"));
  CHECK(error_of([&] { run_ref(bad, {&x, &w, &r}); }) == ErrorKind::Model);
  Node count = node(OpType::LSTM, 3);
  count.attrs.set("activations", std::string("Sigmoid,Tanh"));
  CHECK(error_of([&] { run_ref(count, {&x, &w, &r}); }) == ErrorKind::Model);
  Node gru = node(OpType::GRU, 2);
  gru.attrs.set("activations", std::string("Sigmoid,Tanh"));
  Tensor wg = rnd({1, 3 * H, I}, 33), rg = rnd({1, 3 * H, H}, 34);
  OpRun g1 = run_ref(gru, {&x, &wg, &rg}), g0 = run_ref(node(OpType::GRU, 2), {&x, &wg, &rg});
  for (int64_t i = 0; i < g0[0].numel(); i++) CHECK(at(g1[0], i) == at(g0[0], i));
}
