// fuse_norm_quant on the emulated device (cuda/emu/emu.h): AddNorm's quantized outputs (codes
// and row scales of Y, ops_add_norm.cpp) through its CUDA adapter, and QMatMul's a_mode "rows"
// reading them through its adapter (the decode-sized q8_gemm_small path), against the
// references; the rows mode's Y equals the token mode's on the same floats, bit for bit.
#include <random>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "cuda/tests/q8_test_util.h"
#include "doctest/doctest.h"
#include "ops/quantize_rows.h"

using namespace ember;
using namespace ember::cuda;

TEST_CASE("AddNorm's quantized rows feed QMatMul's rows mode on the emulated device") {
  // 64, 100: a warp per row (100: shorter than the GEMM's 16-byte padded codes); 776: float4
  // blocks; 1030: scalar blocks (not whole float4s), the paths that quantize in the same launch.
  for (int64_t k : {64, 100, 776, 1030}) {
    CAPTURE(k);
    const int64_t m = 5, n = 40;
    Tensor x = test::random_f32({m, k}, 1, -2.0f, 2.0f),
           r = test::random_f32({m, k}, 2, -2.0f, 2.0f);
    Tensor gamma = test::random_f32({k}, 3, 0.5f, 1.5f),
           beta = test::random_f32({k}, 4, -0.5f, 0.5f);
    Node an;
    an.op = OpType::AddNorm;
    an.name = "an";
    an.attrs.set("kind", std::string("layer"));
    an.attrs.set("epsilon", 1e-5);
    an.outputs = {100, 101, 102, 103};  // y, the sum, codes, scales
    AdapterRun norm =
        run_adapter(an, {&x, &r, &gamma, &beta}, add_norm_cuda, add_norm_cuda_supports);
    REQUIRE(norm.got.size() == 4);
    CHECK(std::memcmp(norm.want[1].data(), norm.got[1].data(), norm.want[1].nbytes()) == 0);
    test::check_close(norm.want[0], norm.got[0], 2e-6);
    // The codes and scales come from Y as the device computed it: quantize that on the host.
    Tensor codes = Tensor::empty(DType::I8, {m, k}), scales = Tensor::empty(DType::F32, {m});
    quantize_rows_token(norm.got[0].ptr<float>(), m, k, codes.ptr<int8_t>(), scales.ptr<float>());
    CHECK(std::memcmp(codes.data(), norm.got[2].data(), codes.nbytes()) == 0);
    CHECK(std::memcmp(scales.data(), norm.got[3].data(), scales.nbytes()) == 0);

    std::mt19937 g(7);
    Tensor wp = cpu_packed(random_wq(k, n, g), k, n);
    Tensor ws = test::random_f32({n}, 5, 0.001f, 0.02f),
           bias = test::random_f32({n}, 6, -1.0f, 1.0f);
    Node rows = qmatmul_node(n, "rows", "relu");
    const Tensor dev_w = q8_prepare(rows, 1, wp);  // the device layout, as the session binds it
    Tensor yr = Tensor::empty(DType::F32, {m, n});
    DeviceOptions opt;
    KernelCtx rc{rows, {&norm.got[2], &dev_w, &ws, &bias, &norm.got[3]}, {&yr}, 1};
    rc.device_options = &opt;
    InferCtx ic{rows, {}, rc.in};
    for (const Tensor* t : rc.in) ic.in.push_back({t->dtype(), t->shape()});
    REQUIRE(qmatmul_cuda_supports(ic, opt));
    qmatmul_cuda(rc);
    Tensor want = Tensor::empty(DType::F32, {m, n});
    KernelCtx wc{rows, {&norm.got[2], &wp, &ws, &bias, &norm.got[3]}, {&want}};
    op_def(OpType::QMatMul).reference(wc);
    CHECK(std::memcmp(want.data(), yr.data(), want.nbytes()) == 0);
    // The same sums as the token mode quantizing Y itself.
    Node token = qmatmul_node(n, "token", "relu");
    Tensor yt = Tensor::empty(DType::F32, {m, n});
    KernelCtx tc{token, {&norm.got[0], &wp, &ws, &bias}, {&yt}};
    op_def(OpType::QMatMul).reference(tc);
    CHECK(std::memcmp(yt.data(), yr.data(), yt.nbytes()) == 0);
  }
}
