// q8_0.cu on the emulated device (cuda/emu/emu.h) against the CPU references, bit for bit:
// Q8MatMul (ref_q8matmul: int16 activations per 32-block, exact int lanes, fma order, sum8)
// on K past a block, N not a multiple of 4, zero and non-finite blocks, bias and relu; gelu
// within an ulp (double maths on each side). Q8Gather with negative indices.
#include "cuda/kernels/q8_0.cu"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "doctest/doctest.h"
#include "ember/op.h"
#include "ember/tensor.h"

using namespace ember;
using namespace ember::cuda;

namespace {

struct Table {
  Tensor codes, scales;
};

Table random_table(int64_t rows, int64_t k, std::mt19937& gen) {
  const int64_t nb = (k + 31) / 32;
  Table t{Tensor::empty(DType::I8, {rows, nb, 32}), Tensor::empty(DType::F32, {rows, nb})};
  std::uniform_int_distribution<int> code(-127, 127);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  for (int64_t i = 0; i < t.codes.numel(); i++) t.codes.ptr<int8_t>()[i] = (int8_t)code(gen);
  for (int64_t i = 0; i < t.scales.numel(); i++) t.scales.ptr<float>()[i] = scale(gen);
  return t;
}

Node q8_node(OpType op, int64_t n, int64_t k, const char* act) {
  Node node;
  node.op = op;
  node.name = "q8";
  if (op == OpType::Q8MatMul) {
    node.attrs.set("n", n);
    node.attrs.set("activation", std::string(act));
  }
  node.attrs.set("k", k);
  return node;
}

// Max |y - want| in ulps of want (0: the same bits; NaN where want is NaN counts as equal).
int64_t max_ulps(const Tensor& want, const std::vector<float>& y) {
  int64_t worst = 0;
  for (int64_t i = 0; i < want.numel(); i++) {
    const float w = want.ptr<float>()[i];
    if (std::isnan(w) && std::isnan(y[i])) continue;
    int32_t a, b;
    std::memcpy(&a, &w, 4);
    std::memcpy(&b, &y[i], 4);
    worst = std::max<int64_t>(worst, std::llabs((int64_t)a - b));
  }
  return worst;
}

void check_matmul(int64_t m, int64_t n, int64_t k, const char* act, bool bias, int64_t ulps) {
  std::mt19937 gen(7 + m * 31 + n);
  Table w = random_table(n, k, gen);
  const int64_t nb = (k + 31) / 32;
  Tensor a = Tensor::empty(DType::F32, {m, k});
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int64_t i = 0; i < a.numel(); i++) a.ptr<float>()[i] = dist(gen);
  if (m > 1) {
    for (int64_t j = 0; j < std::min<int64_t>(k, 32); j++)
      a.ptr<float>()[k + j] = 0.0f;        // a zero block
    a.ptr<float>()[m * k - 1] = INFINITY;  // the last row's last block: NaN outputs
  }
  Tensor b = Tensor::empty(DType::F32, {n});
  for (int64_t i = 0; i < n; i++) b.ptr<float>()[i] = dist(gen);
  Tensor want = Tensor::empty(DType::F32, {m, n});
  Node node = q8_node(OpType::Q8MatMul, n, k, act);
  std::vector<const Tensor*> ins = {&a, &w.codes, &w.scales};
  if (bias) ins.push_back(&b);
  KernelCtx kctx{node, ins, {&want}};
  op_def(OpType::Q8MatMul).reference(kctx);

  std::vector<float> y(m * n, 12345.0f), d(m * nb);
  std::vector<int16_t> q(m * nb * 32);
  const int code = std::string(act) == "relu" ? 1 : std::string(act) == "gelu" ? 2 : 0;
  q8_0_matmul(a.ptr<float>(), w.codes.ptr<int8_t>(), w.scales.ptr<float>(),
              bias ? b.ptr<float>() : nullptr, y.data(), q.data(), d.data(), m, n, k, code,
              nullptr);
  CHECK(max_ulps(want, y) <= ulps);
}

}  // namespace

TEST_CASE("Q8MatMul on the emulated device equals the reference bit for bit") {
  check_matmul(1, 7, 576, "none", false, 0);
  check_matmul(3, 70, 100, "none", true, 0);  // K past a block, a zero and a non-finite block
  check_matmul(2, 33, 64, "relu", true, 0);
  check_matmul(2, 9, 40, "gelu", false, 1);
}

TEST_CASE("Q8Gather on the emulated device equals the reference") {
  std::mt19937 gen(11);
  const int64_t rows = 50, k = 70;
  Table t = random_table(rows, k, gen);
  std::vector<int64_t> idx = {0, 49, -1, 7, -50, 23};
  Tensor ids = Tensor::borrow(DType::I64, {(int64_t)idx.size()}, idx.data());
  Tensor want = Tensor::empty(DType::F32, {(int64_t)idx.size(), k});
  Node node = q8_node(OpType::Q8Gather, 0, k, "none");
  KernelCtx kctx{node, {&t.codes, &t.scales, &ids}, {&want}};
  op_def(OpType::Q8Gather).reference(kctx);
  std::vector<float> y(idx.size() * k, NAN);
  q8_0_gather(t.codes.ptr<int8_t>(), t.scales.ptr<float>(), idx.data(), true, y.data(), rows,
              (int64_t)idx.size(), k, nullptr);
  CHECK(max_ulps(want, y) == 0);
}

TEST_CASE("Q8_0 adapters on the emulated device: indices checked on the host or read back") {
  std::mt19937 gen(17);
  const int64_t rows = 40, k = 64;
  Table t = random_table(rows, k, gen);
  Tensor a = test::random_f32({3, k}, 5, -2.0f, 2.0f);
  Node mm = q8_node(OpType::Q8MatMul, rows, k, "relu");
  AdapterRun r =
      run_adapter(mm, {&a, &t.codes, &t.scales}, q8_0_matmul_cuda, q8_0_matmul_cuda_supports);
  CHECK(std::memcmp(r.want[0].data(), r.got[0].data(), r.want[0].nbytes()) == 0);

  Node g = q8_node(OpType::Q8Gather, 0, k, "none");
  Tensor ids = ints(DType::I32, {4}, {3, -1, 39, 0});
  r = run_adapter(g, {&t.codes, &t.scales, &ids}, q8_0_gather_cuda, q8_0_gather_cuda_supports);
  CHECK(std::memcmp(r.want[0].data(), r.got[0].data(), r.want[0].nbytes()) == 0);
  // Computed indices (no host copy): read back, then checked as the CPU checks them.
  Tensor out = Tensor::empty(DType::F32, {4, k});
  g.inputs = {0, 1, 2};
  g.outputs = {3};
  DeviceOptions opt;
  KernelCtx kc{g, {&t.codes, &t.scales, &ids}, {&out}, 1};
  kc.device_options = &opt;
  kc.host_in = {&t.codes, &t.scales, nullptr};
  q8_0_gather_cuda(kc);
  CHECK(std::memcmp(out.data(), r.want[0].data(), out.nbytes()) == 0);
  Tensor bad = ints(DType::I32, {4}, {3, 40, 0, 0});
  KernelCtx kb{g, {&t.codes, &t.scales, &bad}, {&out}, 1};
  kb.device_options = &opt;
  kb.host_in = {&t.codes, &t.scales, nullptr};
  CHECK_THROWS_WITH_AS(q8_0_gather_cuda(kb), doctest::Contains("index 40 is outside"), Error);
}
