// Quant block formats (kernels/common/quant.h): sizes, trait table, byte layout, bit-exact
// agreement with gguf-py's quantizers (ggml's reference), round-trip error bounds on random
// data, and rejection of bad sizes and values.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/error.h"
#include "kernels/common/quant.h"

using namespace ember;

namespace {

std::vector<float> rand_floats(int64_t n, int kind, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.5f, 2.0f);
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; i++) {
    switch (kind) {
      case 0: x[i] = normal(rng); break;                               // centred
      case 1: x[i] = uni(rng); break;                                  // all positive
      case 2: x[i] = -uni(rng) * 100.0f; break;                        // all negative, large
      case 3: x[i] = normal(rng) * (i % 50 == 7 ? 100.0f : 1.0f); break;  // outliers
      default: x[i] = normal(rng) * 1e-3f; break;                      // small
    }
  }
  return x;
}

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); i++) out[i] = (uint8_t)std::stoi(s.substr(2 * i, 2), nullptr, 16);
  return out;
}

float block_amax(const float* x, int n) {
  float a = 0.0f;
  for (int j = 0; j < n; j++) a = std::max(a, std::fabs(x[j]));
  return a;
}

}  // namespace

TEST_CASE("quant: block sizes and trait table") {
  CHECK(sizeof(block_q8_0) == 34);
  CHECK(sizeof(block_q4_0) == 18);
  CHECK(sizeof(block_q4_1) == 20);
  CHECK(offsetof(block_q4_1, m) == 2);
  CHECK(offsetof(block_q4_1, qs) == 4);

  struct Row { DType t; int64_t block, bytes; };
  for (Row r : {Row{DType::Q8_0, 32, 34}, Row{DType::Q4_0, 32, 18}, Row{DType::Q4_1, 32, 20}}) {
    const QuantTraits& q = quant_traits(r.t);
    CHECK(q.dtype == r.t);
    CHECK(q.block_size == r.block);
    CHECK(q.block_bytes == r.bytes);
    CHECK(q.act_dtype == DType::Q8_0);
    CHECK((q.to_float != nullptr));
    CHECK((q.from_float != nullptr));
    CHECK(dtype_info(r.t).is_quant);
    CHECK(quant_row_bytes(r.t, 4096) == 128 * r.bytes);
    CHECK(quant_row_bytes(r.t, 0) == 0);
    CHECK_THROWS_AS(quant_row_bytes(r.t, 4095), Error);
  }
  const QuantTraits& g = quant_traits(DType::Q4G);
  CHECK(g.block_size == 0);
  CHECK(g.act_dtype == DType::Q8_0);
  CHECK((g.to_float == nullptr));
  CHECK_THROWS_AS(quant_row_bytes(DType::Q4G, 64), Error);
  CHECK_THROWS_AS(quant_traits(DType::F32), Error);
  CHECK_THROWS_AS(quant_traits(DType::Count), Error);
  // Every quant dtype has a row; no other dtype does.
  for (int i = 0; i < (int)DType::Count; i++) {
    DType t = (DType)i;
    if (dtype_info(t).is_quant) CHECK(quant_traits(t).dtype == t);
    else CHECK_THROWS_AS(quant_traits(t), Error);
  }
}

// Expected bytes from gguf-py 0.19 (gguf.quants.quantize), which mirrors ggml's reference
// quantizers, on x[i] = (((i * 7919 + 13) % 1999) - 1000 + (i / 32 == 3 ? 3000 : 0)) / 317.
TEST_CASE("quant: bit-exact against ggml's reference quantizers") {
  std::vector<float> x(128);
  for (int i = 0; i < 128; i++)
    x[i] = (float)((i * 7919 + 13) % 1999 - 1000 + (i / 32 == 3 ? 3000 : 0)) / 317.0f;
  struct Case { DType t; const char* hex; };
  const Case cases[] = {
      {DType::Q8_0,
       "4c2681786e645a50473d33291f150b01f8eee4dad0c6bcb2a99f958b81786e645a505026463c32281f150b01"
       "f7ede3dad0c6bcb2a89f958b81776d63594f463c32281e1455260a01f7ede3d9d0c6bcb2a89e958b81766c62"
       "594f453b31281e140a00f6ede3d93d2e5552504d4b484643417f7d7a787573706e6b696664615f5c5a575552"
       "504d4b48"},
      {DType::Q4_0,
       "3f36606f5f4e4e3d2c2c1b1b0af9f9e8e7d744362c2c1b1b0af9f9e8e7d7c6c6b5b4a4934936f9e8e7d7c6c6"
       "b5a4a49392827171606f30be13131323232324242430303030313131"},
      {DType::Q4_1,
       "7a363fc2605f5e4e4d3d2c2b1b1a0af9e8e8d7d7783644c22c2b1b1a0af9e8e8d7d7c6b5b5a4a493783649c2"
       "e8e8d7d7c6b5b5a4a49382827171605f78365046b5a4a49382827171605f5e4e4d3d2c2b"},
  };
  for (const Case& c : cases) {
    CAPTURE(dtype_name(c.t));
    std::vector<uint8_t> want = from_hex(c.hex);
    const QuantTraits& q = quant_traits(c.t);
    REQUIRE((int64_t)want.size() == quant_row_bytes(c.t, 128));
    std::vector<uint8_t> got(want.size(), 0xAA);
    q.from_float(x.data(), got.data(), 128);
    CHECK(got == want);
  }
}

TEST_CASE("quant: q8_0 round trip bound") {
  for (int kind = 0; kind < 5; kind++) {
    CAPTURE(kind);
    const int64_t n = 32 * 37;
    std::vector<float> x = rand_floats(n, kind, 100 + kind), y(n);
    std::vector<block_q8_0> b(n / 32);
    q8_0_from_float(x.data(), b.data(), n);
    q8_0_to_float(b.data(), y.data(), n);
    for (int64_t bi = 0; bi < n / 32; bi++) {
      const float* xb = x.data() + bi * 32;
      float amax = block_amax(xb, 32);
      float d = amax / 127.0f, d16 = f16_to_f32(b[bi].d);
      int qmax = 0;
      for (int j = 0; j < 32; j++) {
        int q = b[bi].qs[j];
        qmax = std::max(qmax, std::abs(q));
        float bound = d / 2 + std::abs(q) * std::fabs(d16 - d) + 1e-6f * amax;
        if (!(std::fabs(xb[j] - y[bi * 32 + j]) <= bound)) {
          FAIL_CHECK("block ", bi, " elem ", j, ": x=", xb[j], " dq=", y[bi * 32 + j], " bound=", bound);
        }
      }
      CHECK(qmax == 127);  // the largest magnitude uses the full range
    }
  }
}

TEST_CASE("quant: q4_0 round trip bound") {
  for (int kind = 0; kind < 5; kind++) {
    CAPTURE(kind);
    const int64_t n = 32 * 37;
    std::vector<float> x = rand_floats(n, kind, 200 + kind), y(n);
    std::vector<block_q4_0> b(n / 32);
    q4_0_from_float(x.data(), b.data(), n);
    q4_0_to_float(b.data(), y.data(), n);
    for (int64_t bi = 0; bi < n / 32; bi++) {
      const float* xb = x.data() + bi * 32;
      float vmax = 0.0f;
      for (int j = 0; j < 32; j++) if (std::fabs(vmax) < std::fabs(xb[j])) vmax = xb[j];
      float d = std::fabs(vmax / -8.0f), d16 = std::fabs(f16_to_f32(b[bi].d));
      bool has_zero_code = false;
      for (int j = 0; j < 32; j++) {
        int q = q4_block_get(b[bi].qs, j);
        has_zero_code |= q == 0;
        // Code 15 may be a clamp of +8: the side opposite vmax reaches only 7 * d.
        float bound = (q == 15 ? d : d / 2) + std::abs(q - 8) * std::fabs(d16 - d) +
                      1e-6f * std::fabs(vmax);
        if (!(std::fabs(xb[j] - y[bi * 32 + j]) <= bound)) {
          FAIL_CHECK("block ", bi, " elem ", j, ": x=", xb[j], " dq=", y[bi * 32 + j], " bound=", bound);
        }
      }
      CHECK(has_zero_code);  // vmax maps onto code 0
    }
  }
}

TEST_CASE("quant: q4_1 round trip bound") {
  for (int kind = 0; kind < 5; kind++) {
    CAPTURE(kind);
    const int64_t n = 32 * 37;
    std::vector<float> x = rand_floats(n, kind, 300 + kind), y(n);
    std::vector<block_q4_1> b(n / 32);
    q4_1_from_float(x.data(), b.data(), n);
    q4_1_to_float(b.data(), y.data(), n);
    for (int64_t bi = 0; bi < n / 32; bi++) {
      const float* xb = x.data() + bi * 32;
      float vmin = xb[0], vmax = xb[0];
      for (int j = 0; j < 32; j++) vmin = std::min(vmin, xb[j]), vmax = std::max(vmax, xb[j]);
      float d = (vmax - vmin) / 15.0f, d16 = f16_to_f32(b[bi].d), m16 = f16_to_f32(b[bi].m);
      for (int j = 0; j < 32; j++) {
        int q = q4_block_get(b[bi].qs, j);
        float bound = d / 2 + q * std::fabs(d16 - d) + std::fabs(m16 - vmin) +
                      1e-6f * std::max(std::fabs(vmin), std::fabs(vmax));
        if (!(std::fabs(xb[j] - y[bi * 32 + j]) <= bound)) {
          FAIL_CHECK("block ", bi, " elem ", j, ": x=", xb[j], " dq=", y[bi * 32 + j], " bound=", bound);
        }
      }
    }
  }
}

TEST_CASE("quant: known blocks (zeros, constants, one outlier)") {
  std::vector<float> x(32, 0.0f), y(32, 1.0f);
  SUBCASE("all zeros") {
    block_q8_0 a;
    q8_0_from_float(x.data(), &a, 32);
    CHECK(a.d == 0);
    for (int j = 0; j < 32; j++) CHECK(a.qs[j] == 0);
    block_q4_0 b;
    q4_0_from_float(x.data(), &b, 32);
    CHECK(b.d == 0x8000);  // 0 / -8 = -0, as in ggml
    for (int j = 0; j < 16; j++) CHECK(b.qs[j] == 0x88);  // code 8 is zero
    block_q4_1 c;
    q4_1_from_float(x.data(), &c, 32);
    CHECK(c.d == 0);
    CHECK(c.m == 0);
    for (int j = 0; j < 16; j++) CHECK(c.qs[j] == 0x00);
    q8_0_to_float(&a, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 0.0f);
    q4_0_to_float(&b, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 0.0f);
    q4_1_to_float(&c, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 0.0f);
  }
  SUBCASE("all equal") {
    std::fill(x.begin(), x.end(), 3.0f);
    block_q4_0 b;
    q4_0_from_float(x.data(), &b, 32);
    CHECK(f16_to_f32(b.d) == -0.375f);  // 3 / -8, exact in f16
    for (int j = 0; j < 16; j++) CHECK(b.qs[j] == 0x00);
    q4_0_to_float(&b, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 3.0f);
    block_q4_1 c;
    q4_1_from_float(x.data(), &c, 32);
    CHECK(c.d == 0);
    CHECK(f16_to_f32(c.m) == 3.0f);
    q4_1_to_float(&c, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 3.0f);
    block_q8_0 a;
    q8_0_from_float(x.data(), &a, 32);
    for (int j = 0; j < 32; j++) CHECK(a.qs[j] == 127);
    q8_0_to_float(&a, y.data(), 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == doctest::Approx(3.0).epsilon(1e-3));
  }
  SUBCASE("one huge outlier") {
    for (int j = 0; j < 32; j++) x[j] = 0.01f * (j % 5 - 2);
    x[17] = -1000.0f;
    block_q4_0 b;
    q4_0_from_float(x.data(), &b, 32);
    CHECK(f16_to_f32(b.d) == 125.0f);
    for (int j = 0; j < 32; j++) CHECK(q4_block_get(b.qs, j) == (j == 17 ? 0 : 8));
    q4_0_to_float(&b, y.data(), 32);
    CHECK(y[17] == -1000.0f);
    block_q8_0 a;
    q8_0_from_float(x.data(), &a, 32);
    for (int j = 0; j < 32; j++) CHECK(a.qs[j] == (j == 17 ? -127 : 0));
    block_q4_1 c;
    q4_1_from_float(x.data(), &c, 32);
    CHECK(f16_to_f32(c.m) == -1000.0f);
    for (int j = 0; j < 32; j++) CHECK(q4_block_get(c.qs, j) == (j == 17 ? 0 : 15));
  }
}

TEST_CASE("quant: nibble order of q4_0 and q4_1") {
  // code(j) = j for j < 16, 31 - j for j >= 16: byte i = code(i) | code(i + 16) << 4.
  std::vector<float> x(32);
  for (int j = 0; j < 32; j++) x[j] = (float)((j < 16 ? j : 31 - j) - 8);  // d = -8 / -8 = 1
  block_q4_0 b;
  q4_0_from_float(x.data(), &b, 32);
  CHECK(f16_to_f32(b.d) == 1.0f);
  for (int i = 0; i < 16; i++) CHECK(b.qs[i] == (uint8_t)(i | (15 - i) << 4));
  for (int j = 0; j < 32; j++) CHECK(q4_block_get(b.qs, j) == (j < 16 ? j : 31 - j));

  for (int j = 0; j < 32; j++) x[j] = (float)(j < 16 ? j : 31 - j) * 0.5f + 2.0f;  // d 0.5, m 2
  block_q4_1 c;
  q4_1_from_float(x.data(), &c, 32);
  CHECK(f16_to_f32(c.d) == 0.5f);
  CHECK(f16_to_f32(c.m) == 2.0f);
  for (int i = 0; i < 16; i++) CHECK(c.qs[i] == (uint8_t)(i | (15 - i) << 4));
  std::vector<float> y(32);
  q4_1_to_float(&c, y.data(), 32);
  for (int j = 0; j < 32; j++) CHECK(y[j] == x[j]);
}

TEST_CASE("quant: bad sizes and values are errors") {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> buf(1024);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    CAPTURE(dtype_name(t));
    const QuantTraits& q = quant_traits(t);
    for (int64_t n : {1, 31, 33, 63, -32}) {
      CHECK_THROWS_AS(q.from_float(x.data(), buf.data(), n), Error);
      CHECK_THROWS_AS(q.to_float(buf.data(), x.data(), n), Error);
    }
    CHECK_NOTHROW(q.from_float(x.data(), buf.data(), 0));
    std::vector<float> bad = x;
    bad[40] = NAN;
    CHECK_THROWS_AS(q.from_float(bad.data(), buf.data(), 64), Error);
    bad[40] = INFINITY;
    CHECK_THROWS_AS(q.from_float(bad.data(), buf.data(), 64), Error);
    bad[40] = 1e30f;  // finite, but the block scale overflows f16
    CHECK_THROWS_AS(q.from_float(bad.data(), buf.data(), 64), Error);
    try {
      q.from_float(x.data(), buf.data(), 33);
    } catch (const Error& e) {
      CHECK(std::string(e.what()).rfind("[quant]", 0) == 0);
      CHECK(e.kind() == ErrorKind::Model);
    }
  }
}

// ---- Q4G ------------------------------------------------------------------------------------

namespace {

struct Q4G {
  std::vector<uint8_t> q, zp;
  std::vector<float> scales;
};

Q4G q4g_run(const std::vector<float>& w, int64_t n, int64_t k, int64_t g, bool has_zp) {
  Q4G r;
  r.q.assign(n * q4g_row_bytes(k, g), 0xEE);
  r.zp.assign(n * q4g_zp_row_bytes(k, g), 0xEE);
  r.scales.assign(n * q4g_groups(k, g), -1.0f);
  q4g_quantize(w.data(), n, k, g, has_zp, r.q.data(), r.scales.data(), has_zp ? r.zp.data() : nullptr);
  return r;
}

}  // namespace

TEST_CASE("quant: q4g layout helpers") {
  CHECK(q4g_groups(4096, 128) == 32);
  CHECK(q4g_groups(576, 128) == 5);
  CHECK(q4g_row_bytes(576, 128) == 320);  // padded to 5 whole groups
  CHECK(q4g_zp_row_bytes(576, 128) == 3);
  CHECK(q4g_zp_row_bytes(4096, 128) == 16);
  uint8_t row[2] = {0x21, 0x43};
  CHECK(q4g_get_q(row, 0) == 1);
  CHECK(q4g_get_q(row, 1) == 2);
  CHECK(q4g_get_q(row, 2) == 3);
  CHECK(q4g_get_q(row, 3) == 4);
  CHECK(q4g_get_zp(row, 1) == 2);
  CHECK(q4g_get_zp(nullptr, 5) == 8);
  CHECK_THROWS_AS(q4g_check(1, 64, 16), Error);
  CHECK_THROWS_AS(q4g_check(1, 64, 48), Error);
  CHECK_THROWS_AS(q4g_check(1, 64, 0), Error);
  CHECK_THROWS_AS(q4g_check(1, 0, 32), Error);
  CHECK_THROWS_AS(q4g_check(-1, 64, 32), Error);
  CHECK_NOTHROW(q4g_check(3, 100, 64));
  CHECK_NOTHROW(q4g_check(3, 576, 576));  // one group per row (per-channel)
}

TEST_CASE("quant: q4g round trip bound") {
  for (int64_t g : {32, 64, 128}) {
    for (int64_t k : {256, 576, 100}) {
      for (bool has_zp : {true, false}) {
        for (int kind : {0, 1, 3}) {
          CAPTURE(g); CAPTURE(k); CAPTURE(has_zp); CAPTURE(kind);
          const int64_t n = 5, groups = q4g_groups(k, g);
          std::vector<float> w = rand_floats(n * k, kind, (uint32_t)(g * 7 + k + kind)), y(n * k);
          Q4G r = q4g_run(w, n, k, g, has_zp);
          q4g_dequantize(r.q.data(), r.scales.data(), has_zp ? r.zp.data() : nullptr, n, k, g, y.data());
          for (int64_t row = 0; row < n; row++) {
            const uint8_t* qr = r.q.data() + row * q4g_row_bytes(k, g);
            const uint8_t* zr = has_zp ? r.zp.data() + row * q4g_zp_row_bytes(k, g) : nullptr;
            for (int64_t j = 0; j < k; j++) {
              int64_t gi = j / g;
              float s = std::fabs(r.scales[row * groups + gi]);
              int code = q4g_get_q(qr, j);
              float bound = (!has_zp && code == 15 ? s : s / 2) + 1e-5f * 16 * s;
              float err = std::fabs(w[row * k + j] - y[row * k + j]);
              if (!(err <= bound))
                FAIL_CHECK("row ", row, " k ", j, ": x=", w[row * k + j], " dq=", y[row * k + j], " bound=", bound);
            }
            // Padding codes of a partial last group equal its zero point (decode to 0).
            for (int64_t j = k; j < groups * g; j++)
              CHECK(q4g_get_q(qr, j) == q4g_get_zp(zr, groups - 1));
          }
        }
      }
    }
  }
}

TEST_CASE("quant: q4g packing and known values") {
  // One row, K = 96, G = 32: group 0 codes j % 16 around zp, group 1 all zeros, group 2 positive.
  const int64_t k = 96, g = 32;
  std::vector<float> w(k);
  for (int j = 0; j < 32; j++) w[j] = (float)(j % 16) - 5.0f;  // range [-5, 10]: scale 1, zp 5
  for (int j = 32; j < 64; j++) w[j] = 0.0f;
  for (int j = 64; j < 96; j++) w[j] = 2.0f;                   // range [0, 2]: zp 0, code 15
  Q4G r = q4g_run(w, 1, k, g, true);
  CHECK(r.scales[0] == 1.0f);
  CHECK(r.scales[1] == 0.0f);
  CHECK(r.scales[2] == doctest::Approx(2.0 / 15));
  REQUIRE(r.zp.size() == 2);
  CHECK(r.zp[0] == (uint8_t)(5 | 8 << 4));  // group 0 low nibble, group 1 high
  CHECK((r.zp[1] & 0x0f) == 0);             // group 2 low; high nibble is padding
  for (int i = 0; i < 8; i++) CHECK(r.q[i] == (uint8_t)((2 * i) | (2 * i + 1) << 4));  // even k low
  for (int i = 16; i < 32; i++) CHECK(r.q[i] == 0x88);
  for (int i = 32; i < 48; i++) CHECK(r.q[i] == 0xff);
  std::vector<float> y(k);
  q4g_dequantize(r.q.data(), r.scales.data(), r.zp.data(), 1, k, g, y.data());
  for (int j = 0; j < 64; j++) CHECK(y[j] == w[j]);
  for (int j = 64; j < 96; j++) CHECK(y[j] == doctest::Approx(2.0));

  // Without zero points the zp defaults to 8 and the scale is symmetric.
  Q4G s = q4g_run(w, 1, k, g, false);
  CHECK(s.scales[0] == 10.0f / -8.0f);
  std::vector<float> ys(k);
  q4g_dequantize(s.q.data(), s.scales.data(), nullptr, 1, k, g, ys.data());
  CHECK(ys[15] == 10.0f);  // the largest magnitude is exact
  for (int j = 32; j < 64; j++) CHECK(ys[j] == 0.0f);
}

TEST_CASE("quant: symmetric q4g with G = 32 encodes like q4_0") {
  const int64_t n = 3, k = 256;
  std::vector<float> w = rand_floats(n * k, 0, 77);
  Q4G r = q4g_run(w, n, k, 32, false);
  std::vector<block_q4_0> b(n * k / 32);
  q4_0_from_float(w.data(), b.data(), n * k);
  for (int64_t row = 0; row < n; row++) {
    for (int64_t j = 0; j < k; j++) {
      const block_q4_0& blk = b[(row * k + j) / 32];
      CHECK(q4g_get_q(r.q.data() + row * q4g_row_bytes(k, 32), j) == q4_block_get(blk.qs, (int)(j % 32)));
    }
  }
  for (size_t i = 0; i < b.size(); i++) CHECK(f32_to_f16(r.scales[i]) == b[i].d);
}

TEST_CASE("quant: q4g rejects non-finite weights") {
  std::vector<float> w(64, 1.0f);
  w[3] = NAN;
  std::vector<uint8_t> q(32), zp(1);
  std::vector<float> s(1);
  CHECK_THROWS_AS(q4g_quantize(w.data(), 1, 64, 64, true, q.data(), s.data(), zp.data()), Error);
  CHECK_THROWS_AS(q4g_quantize(w.data(), 1, 64, 16, true, q.data(), s.data(), zp.data()), Error);
}
