// QConv (cpp/src/ops/ops_qconv.cpp) and its kernels (kernels/generic/conv_i8.h): each path
// against the scalar reference on odd shapes (1-D/2-D, strides, pads, dilations, odd C *
// kernel), uint8 and int8 zero points, saturating inputs, bias and activations; shape errors.
#include <random>
#include <vector>

#include "doctest/doctest.h"
#include "ember/op.h"
#include "kernels/generic/conv_i8.h"
#include "op_test_util.h"
#include "runtime/registry.h"

using namespace ember;

namespace {

struct QConvCase {
  Shape x, w;  // X [N, C, in...], W [M, C, k...]
  std::vector<int64_t> strides, pads, dilations;
};

Tensor random_tensor(DType dt, const Shape& s, std::mt19937& rng, float lo, float hi) {
  Tensor t = Tensor::empty(dt, s);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); i++) {
    if (dt == DType::F32) t.ptr<float>()[i] = u(rng);
    else t.ptr<int8_t>()[i] = (int8_t)std::lround(u(rng));
  }
  return t;
}

Node qconv_node(const QConvCase& c, const char* act) {
  Node n = test::node(OpType::QConv);
  n.attrs.set("w_shape", std::vector<int64_t>(c.w.begin(), c.w.end()));
  if (!c.strides.empty()) n.attrs.set("strides", c.strides);
  if (!c.pads.empty()) n.attrs.set("pads", c.pads);
  if (!c.dilations.empty()) n.attrs.set("dilations", c.dilations);
  n.attrs.set("activation", std::string(act));
  return n;
}

std::vector<std::pair<const char*, KernelFn>> qconv_kernels() {
  std::vector<std::pair<const char*, KernelFn>> ks = {{"qconv_i8", cpu::qconv_i8}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) ks.push_back({"qconv_i8_avx2", cpu::qconv_i8_avx2});
  if (cpu_isa() >= Isa::Avx512) ks.push_back({"qconv_i8_avx512", cpu::qconv_i8_avx512});
#endif
  return ks;
}

}  // namespace

TEST_CASE("qconv kernels match the QConv reference") {
  std::vector<QConvCase> cases = {
      {{1, 3, 9, 9}, {5, 3, 3, 3}, {}, {1, 1, 1, 1}, {}},
      {{2, 1, 8, 8}, {17, 1, 3, 3}, {2, 2}, {0, 1, 1, 0}, {}},
      {{1, 7, 11, 6}, {4, 7, 1, 1}, {}, {}, {}},
      {{1, 2, 10, 10}, {3, 2, 3, 2}, {1, 2}, {2, 2, 2, 2}, {2, 1}},
      {{3, 5, 13}, {6, 5, 4}, {3}, {1, 2}, {}},
      // many channels: pool workers quantize some of them (buffers must be the caller's)
      {{1, 48, 9, 9}, {8, 48, 3, 3}, {}, {1, 1, 1, 1}, {}},
      // Kc = 333 and M = 50: a partial 3-panel group and an odd pair count (VNNI's tails)
      {{1, 37, 7, 7}, {50, 37, 3, 3}, {}, {1, 1, 1, 1}, {}},
      // pads past the kernel (whole rows and columns of padding), dilated columns: im2row's
      // in-range tap runs [lo, hi) empty, partial on both sides, and full
      {{1, 4, 6, 7}, {5, 4, 3, 3}, {1, 2}, {3, 2, 1, 5}, {1, 3}},
      {{1, 3, 5, 4}, {6, 3, 2, 3}, {}, {0, 4, 2, 4}, {}},
      // a 7x7 stride-2 stem (7-tap rows cut by the padding), and one dilated
      {{1, 3, 15, 13}, {5, 3, 7, 7}, {2, 2}, {3, 3, 3, 3}, {}},
      {{1, 2, 12, 16}, {4, 2, 7, 7}, {1, 1}, {2, 5, 1, 4}, {1, 2}},
  };
  std::mt19937 rng(7);
  int idx = 0;
  for (const QConvCase& c : cases) {
    for (DType zt : {DType::U8, DType::I8}) {
      for (const char* act : {"none", "relu"}) {
        idx++;
        int64_t m = c.w[0], kc = c.w[1];
        for (size_t i = 2; i < c.w.size(); i++) kc *= c.w[i];
        Tensor x = random_tensor(DType::F32, c.x, rng, -4.0f, 4.0f);  // some saturate at s = 0.02
        Tensor wq = random_tensor(DType::I8, {kc, m}, rng, -128.0f, 127.0f);
        Tensor wp = Tensor::empty(DType::I8, {(m + 15) / 16, (kc + 1) / 2, 16, 2});
        cpu::qgemm_i8_pack_b(wq.ptr<int8_t>(), m, 1, kc, m, wp.ptr<int8_t>());
        Tensor ws = random_tensor(DType::F32, {m}, rng, 0.001f, 0.01f);
        Tensor b = random_tensor(DType::F32, {m}, rng, -1.0f, 1.0f);
        Tensor s = Tensor::empty(DType::F32, {});
        s.ptr<float>()[0] = 0.02f;
        Tensor zp = Tensor::empty(zt, {});
        // Zero points between and at both ends of their type.
        const int u8_zps[3] = {140, 0, 255}, i8_zps[3] = {-3, -128, 127};
        if (zt == DType::U8) zp.ptr<uint8_t>()[0] = (uint8_t)u8_zps[idx % 3];
        else zp.ptr<int8_t>()[0] = (int8_t)i8_zps[idx % 3];
        const Tensor* bias = idx % 3 ? &b : nullptr;
        Node n = qconv_node(c, act);
        test::OpRun want = test::op_run(n, {&x, &wp, &ws, bias, &s, &zp}, nullptr, false, 1, true);
        for (auto [name, fn] : qconv_kernels()) {
          for (int threads : {1, 2}) {
            CAPTURE(name);
            CAPTURE(idx);
            test::OpRun got = test::op_run(n, {&x, &wp, &ws, bias, &s, &zp}, fn, false, threads, true);
            REQUIRE(got[0].shape() == want[0].shape());
            for (int64_t i = 0; i < want[0].numel(); i++)
              REQUIRE(got[0].ptr<float>()[i] == want[0].ptr<float>()[i]);
          }
        }
      }
    }
  }
}

TEST_CASE("qconv QConv shape inference refuses what does not fit") {
  QConvCase c{{1, 3, 9, 9}, {5, 3, 3, 3}, {}, {}, {}};
  Tensor x = Tensor::zeros(DType::F32, c.x);
  Tensor ws = Tensor::zeros(DType::F32, {5});
  Tensor s = Tensor::zeros(DType::F32, {});
  Tensor zp = Tensor::zeros(DType::U8, {});
  Tensor bad_wp = Tensor::zeros(DType::I8, {1, 13, 16, 2});  // Kc = 27: ceil(27 / 2) = 14
  Node n = qconv_node(c, "none");
  auto run = [&](const Tensor& wp, const Tensor& scale) {
    test::op_run(n, {&x, &wp, &scale, nullptr, &s, &zp}, nullptr, false, 1, true);
  };
  CHECK(test::error_of([&] { run(bad_wp, ws); }) == ErrorKind::Model);
  Tensor wp = Tensor::zeros(DType::I8, {1, 14, 16, 2});
  CHECK(test::error_of([&] { run(wp, ws); }) == std::nullopt);
  Tensor bad_ws = Tensor::zeros(DType::F32, {4});
  CHECK(test::error_of([&] { run(wp, bad_ws); }) == ErrorKind::Model);
  n.attrs.set("group", int64_t(3));
  CHECK(test::error_of([&] { run(wp, ws); }) == ErrorKind::Model);
}
