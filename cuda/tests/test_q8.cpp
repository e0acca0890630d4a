// Host tests of QMatMul's CUDA path (ops_q8.cpp): the weight repacking (q8_pack.h) round-trips
// on odd N and K, the scratch plan, and the device algorithm emulated on the CPU (codes stored
// as q - off, sums over the repacked rows, + (off - zp) * colsum, then the epilogue) against
// the op's reference kernel bit for bit in every a_mode; with a real libcublasLt.so.13
// ($EMBER_CUBLASLT), the int8 descriptors are accepted. No GPU needed.
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/src/cublaslt.h"
#include "cuda/src/q8_pack.h"
#include "cuda/tests/q8_test_util.h"
#include "doctest/doctest.h"
#include "ember/op.h"

using namespace ember;
using namespace ember::cuda;

namespace {

float max_keep(float v, float m) { return v > m ? v : m; }
float min_keep(float v, float m) { return v < m ? v : m; }

// What q8_gemm.cu computes, step by step in the same float operations.
std::vector<float> emulate(const Node& node, const std::vector<float>& a, int64_t m, int64_t k,
                           const int8_t* packed, const Q8Layout& l, const std::vector<float>& ws,
                           const std::vector<float>* bias, float a_scale, int zp, bool zp_signed) {
  Q8Mode mode = q8_mode(node);
  float s = a_scale;
  int qmin = zp_signed ? -128 : 0, qmax = zp_signed ? 127 : 255, off = zp_signed ? 0 : 128;
  if (mode == Q8Mode::TensorU8) {
    float lo = 0, hi = 0;
    for (float v : a) lo = min_keep(v, lo), hi = max_keep(v, hi);
    s = (hi == lo ? 1.0f : hi - lo) / 255.0f;
    float z = max_keep(min_keep(0.0f - lo / s, 255.0f), 0.0f);
    zp = (int)std::nearbyint(z);
  }
  const int32_t* colsum = reinterpret_cast<const int32_t*>(packed + l.colsum_offset());
  std::vector<float> y(m * l.n);
  std::vector<int8_t> codes(l.k_pad);
  for (int64_t r = 0; r < m; r++) {
    const float* x = a.data() + r * k;
    float sm = s;
    std::fill(codes.begin(), codes.end(), 0);
    if (mode == Q8Mode::Token) {
      float amax = 0;
      for (int64_t i = 0; i < k; i++) amax = max_keep(std::fabs(x[i]), amax);
      sm = amax / 127.0f;
      sm = sm < FLT_MIN ? FLT_MIN : sm;
      for (int64_t i = 0; i < k; i++)
        codes[i] = (int8_t)min_keep(max_keep(std::nearbyint(x[i] / sm) + 0.0f, -127.0f), 127.0f);
    } else {
      for (int64_t i = 0; i < k; i++) {
        float q = min_keep(max_keep(std::nearbyint(x[i] / sm) + (float)zp, (float)qmin), (float)qmax);
        codes[i] = (int8_t)((int)q - off);
      }
    }
    for (int64_t j = 0; j < l.n; j++) {
      int32_t acc = 0;
      for (int64_t i = 0; i < l.k_pad; i++) acc += codes[i] * packed[j * l.k_pad + i];
      if (mode != Q8Mode::Token) acc = (int32_t)((uint32_t)acc + (uint32_t)(off - zp) * (uint32_t)colsum[j]);
      volatile float v = (float)acc * sm;  // volatile: no contraction, as __fmul_rn
      volatile float v2 = v * ws[j];
      float o = v2;
      if (bias) o = o + (*bias)[j];
      y[r * l.n + j] = (node.attrs.get_string("activation", "none") == "relu" && o < 0) ? 0.0f : o;
    }
  }
  return y;
}

}  // namespace

TEST_CASE("q8: layouts pad N and K to 16") {
  Q8Layout l = q8_layout(5125, 769);
  CHECK(l.n_pad == 5136);
  CHECK(l.k_pad == 784);
  CHECK(l.colsum_offset() % 256 == 0);
  CHECK(l.bytes() == 5136 * 784 + 4 * 5136);
  CHECK(q8_layout(16, 16).k_pad == 16);
  CHECK(q8_layout(0, 0).bytes() == 0);
  // Wp's second dim (ceil(K / 2)) gives the same k_pad as K for odd K.
  for (int64_t k : {1, 15, 17, 31, 769}) CHECK(q8_layout(1, 2 * ((k + 1) / 2)).k_pad == q8_layout(1, k).k_pad);
}

TEST_CASE("q8: repacking round-trips with zero padding and column sums") {
  std::mt19937 g(7);
  for (auto [k, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 5}, {16, 16}, {33, 17}, {769, 37}, {64, 1}}) {
    CAPTURE(k);
    CAPTURE(n);
    auto wq = random_wq(k, n, g);
    Tensor wp = cpu_packed(wq, k, n);
    Tensor packed = q8_prepare(qmatmul_node(n, "token"), 1, wp);
    Q8Layout l = q8_layout(n, k);
    REQUIRE(packed.dtype() == DType::I8);
    REQUIRE(packed.shape() == Shape{l.bytes()});
    std::vector<int8_t> back(k * n);
    q8_unpack(packed.ptr<int8_t>(), l, back.data());
    CHECK(back == wq);
    const int8_t* p = packed.ptr<int8_t>();
    bool pad_zero = true;
    for (int64_t j = 0; j < l.n_pad; j++)
      for (int64_t i = 0; i < l.k_pad; i++)
        if ((j >= n || i >= k) && p[j * l.k_pad + i] != 0) pad_zero = false;
    CHECK(pad_zero);
    const int32_t* colsum = reinterpret_cast<const int32_t*>(p + l.colsum_offset());
    for (int64_t j = 0; j < l.n_pad; j++) {
      int32_t want = 0;
      for (int64_t i = 0; j < n && i < k; i++) want += wq[i * n + j];
      CHECK(colsum[j] == want);
    }
  }
}

TEST_CASE("q8: prepare repacks only the weight, and refuses a foreign layout") {
  std::mt19937 g(1);
  Tensor wp = cpu_packed(random_wq(8, 4, g), 8, 4);
  Node node = qmatmul_node(4, "token");
  CHECK(!q8_prepare(node, 2, Tensor::zeros(DType::F32, {4})).defined());
  CHECK(q8_prepare(node, 1, wp).defined());
  CHECK_THROWS_AS(q8_prepare(qmatmul_node(40, "token"), 1, wp), ember::Error);
  CHECK_THROWS_AS(q8_prepare(node, 1, Tensor::zeros(DType::I8, {8, 4})), ember::Error);
}

TEST_CASE("q8: the scratch plan is aligned and disjoint") {
  Q8Layout l = q8_layout(5125, 769);
  for (Q8Mode mode : {Q8Mode::Token, Q8Mode::Static, Q8Mode::TensorU8}) {
    for (bool acc : {false, true}) {
      Q8Work w = q8_work(300, l, mode, 2048, acc);
      std::vector<std::pair<int64_t, int64_t>> parts = {{w.codes, 300 * l.k_pad}};
      if (mode == Q8Mode::Token) parts.push_back({w.row_scale, 4 * 300});
      else parts.push_back({w.params, 24});
      CHECK((w.row_scale >= 0) == (mode == Q8Mode::Token));
      CHECK((w.partial >= 0) == (mode == Q8Mode::TensorU8));
      CHECK((w.acc >= 0) == acc);
      if (w.partial >= 0) parts.push_back({w.partial, 4 * 2048});
      if (w.acc >= 0) parts.push_back({w.acc, 4 * 300 * l.n_pad});
      for (size_t i = 0; i < parts.size(); i++) {
        CHECK(parts[i].first % 256 == 0);
        CHECK(parts[i].first + parts[i].second <= w.bytes);
        if (i) CHECK(parts[i].first >= parts[i - 1].first + parts[i - 1].second);
      }
    }
  }
  CHECK(q8_use_small(1, l));
  CHECK(q8_use_small(kQ8SmallM, l));
  CHECK(!q8_use_small(kQ8SmallM + 1, l));
  CHECK(q8_use_small(4096, q8_layout(8, 0)));  // K == 0: cuBLASLt refuses k = 0
}

TEST_CASE("q8: the device algorithm, emulated, matches the reference bit for bit") {
  std::mt19937 g(11);
  for (const Q8Case& c : q8_cases()) {
    for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {7, 33, 17}, {5, 70, 40}}) {
      CAPTURE(c.mode);
      CAPTURE(c.zp);
      CAPTURE(c.act);
      CAPTURE(k);
      const Q8Run r = q8_run(c, m, k, n, g);
      Tensor packed = q8_prepare(r.node, 1, r.wp);
      std::vector<float> got = emulate(r.node, r.a, m, k, packed.ptr<int8_t>(), q8_layout(n, k),
                                       r.w_scale, &r.bias, r.a_scale, r.zp, c.zp_signed);
      int64_t diff = 0;
      for (int64_t i = 0; i < m * n; i++)
        if (std::memcmp(&got[i], r.y.ptr<float>() + i, 4) != 0) diff++;
      CHECK(diff == 0);
    }
  }
}

TEST_CASE("q8: a real libcublasLt accepts the int8 descriptors") {
  lt::Api api;
  std::string error;
  if (!cublaslt_open(cublaslt_candidates("", std::getenv("EMBER_CUBLASLT")), &api, &error)) {
    MESSAGE("skipped: no libcublasLt.so.13 here (set EMBER_CUBLASLT to one to run this)");
    return;
  }
  for (auto [m, n_pad, k_pad] : std::vector<std::array<int64_t, 3>>{{17, 16, 16}, {4096, 14336, 4096}, {300, 5136, 784}})
    CHECK_NOTHROW(cublaslt_describe_i8(api, m, n_pad, k_pad));
}
