// Host tests of the cuBLASLt GEMM path: the plans MatMul and Gemm shapes become (gemm_plan.h),
// checked field by field and end to end (the column-major call emulated on the CPU against the
// ops' reference kernels), and loading cuBLASLt (cublaslt.h). No GPU needed; the test that opens
// a real libcublasLt.so.13 is skipped where none is found ($EMBER_CUBLASLT or the loader path).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "cuda/src/cublaslt.h"
#include "cuda/src/gemm_plan.h"
#include "cuda/src/ops.h"
#include "cuda/tests/gemm_test_util.h"
#include "doctest/doctest.h"
#include "ember/op.h"

using namespace ember;
using namespace ember::cuda;

namespace {

GemmPlan matmul(const Shape& a, const Shape& b) {
  std::optional<GemmPlan> p = gemm_plan_matmul(a, b);
  REQUIRE(p.has_value());
  return *p;
}

GemmPlan gemm(const Shape& a, const Shape& b, const Shape* c, bool ta = false, bool tb = false,
              double alpha = 1, double beta = 1, bool bias = true) {
  std::optional<GemmPlan> p = gemm_plan_gemm(a, b, c, ta, tb, alpha, beta, bias);
  REQUIRE(p.has_value());
  return *p;
}

}  // namespace

TEST_CASE("gemm_plan: MatMul 2-D, folded batches, 1-D operands") {
  GemmPlan p = matmul({3, 4}, {4, 5});
  CHECK((p.m == 3 && p.n == 5 && p.k == 4 && p.batch == 1));
  CHECK((p.lda == 4 && p.ldb == 5 && p.ldd == 5 && !p.trans_a && !p.trans_b));
  CHECK((p.c == GemmC::None && p.alpha == 1 && p.beta == 0));

  p = matmul({2, 7, 3, 4}, {4, 5});  // B shared: A's batch folds into m
  CHECK((p.m == 42 && p.batch == 1 && p.stride_a == 0 && p.stride_d == 0));
  p = matmul({2, 3, 4}, {1, 1, 4, 5});  // B's batch dims all 1: still one GEMM
  CHECK((p.m == 6 && p.batch == 1));

  p = matmul({4}, {4, 5});  // [K] @ [K, N] -> [N]
  CHECK((p.m == 1 && p.n == 5 && p.k == 4 && p.lda == 4));
  p = matmul({2, 3, 4}, {4});  // [.., M, K] @ [K] -> [.., M]: N == 1, B's ld 1
  CHECK((p.m == 6 && p.n == 1 && p.ldb == 1 && p.ldd == 1));
  p = matmul({4}, {4});
  CHECK((p.m == 1 && p.n == 1 && p.k == 4));
}

TEST_CASE("gemm_plan: MatMul strided batches") {
  GemmPlan p = matmul({2, 3, 4}, {2, 4, 5});
  CHECK((p.batch == 2 && p.m == 3 && p.stride_a == 12 && p.stride_b == 20 && p.stride_d == 15));
  p = matmul({1, 2, 3, 4}, {2, 4, 5});  // equal after left-padding
  CHECK((p.batch == 2 && p.stride_a == 12));
  p = matmul({3, 4}, {6, 4, 5});  // one A for every B: stride 0
  CHECK((p.batch == 6 && p.stride_a == 0 && p.stride_b == 20 && p.stride_d == 15));
  p = matmul({4}, {2, 3, 4, 5});  // [K] against batched B: m 1
  CHECK((p.batch == 6 && p.m == 1 && p.stride_a == 0 && p.stride_d == 5));
}

TEST_CASE("gemm_plan: MatMul empty and rejected shapes") {
  GemmPlan p = matmul({2, 0, 4}, {4, 5});
  CHECK(p.m == 0);
  p = matmul({3, 0}, {0, 5});
  CHECK((p.k == 0 && p.m == 3 && p.n == 5));
  p = matmul({0, 3, 4}, {0, 4, 5});
  CHECK(p.batch == 0);
  CHECK_FALSE(gemm_plan_matmul({2, 1, 3, 4}, {1, 5, 4, 6}));  // two-sided broadcast
  CHECK_FALSE(gemm_plan_matmul({2, 3, 4}, {3, 4, 5}));        // (infer rejects it too)
  CHECK_FALSE(gemm_plan_matmul({3, 4}, {5, 6}));              // K differs
  CHECK_FALSE(gemm_plan_matmul({}, {4, 5}));                  // rank 0
  CHECK_FALSE(gemm_plan_matmul({int64_t(1) << 31, 4}, {4, 5}));  // m past int32
  CHECK_FALSE(gemm_plan_matmul({3, int64_t(1) << 31}, {int64_t(1) << 31, 5}));
}

TEST_CASE("gemm_plan: Gemm transposes and C") {
  GemmPlan p = gemm({3, 4}, {4, 5}, nullptr);
  CHECK((p.m == 3 && p.n == 5 && p.k == 4 && p.c == GemmC::None && p.beta == 0));
  p = gemm({4, 3}, {5, 4}, nullptr, true, true, 0.5, 2);
  CHECK((p.m == 3 && p.n == 5 && p.k == 4 && p.trans_a && p.trans_b));
  CHECK((p.lda == 3 && p.ldb == 4 && p.ldd == 5 && p.alpha == 0.5f && p.beta == 0));

  Shape row{5}, row2{1, 5}, full{3, 5}, col{3, 1}, scalar{}, one{1};
  p = gemm({3, 4}, {4, 5}, &row);
  CHECK((p.c == GemmC::Bias && p.c_rs == 0 && p.c_cs == 1 && p.beta == 1));
  CHECK(gemm_lt_args(p).beta == 0);  // the epilogue adds C; D is not read
  CHECK(gemm_lt_args(gemm({3, 4}, {4, 5}, &row, false, false, 2, 0.5)).beta == 0.5f);
  CHECK(gemm({3, 4}, {4, 5}, &row2).c == GemmC::Bias);
  CHECK(gemm({3, 4}, {4, 5}, &row, false, false, 1, 0.5).c == GemmC::Broadcast);  // beta != 1
  CHECK(gemm({3, 4}, {4, 5}, &row, false, false, 1, 1, false).c == GemmC::Broadcast);
  p = gemm({3, 4}, {4, 5}, &full, false, false, 2, 3);
  CHECK((p.c == GemmC::Full && p.c_rs == 5 && p.c_cs == 1 && p.beta == 3));
  p = gemm({3, 4}, {4, 5}, &col);
  CHECK((p.c == GemmC::Broadcast && p.c_rs == 1 && p.c_cs == 0));
  p = gemm({3, 4}, {4, 5}, &scalar);
  CHECK((p.c == GemmC::Broadcast && p.c_rs == 0 && p.c_cs == 0));
  CHECK(gemm({3, 4}, {4, 5}, &one).c == GemmC::Broadcast);
  CHECK(gemm({1, 4}, {4, 5}, &row).c == GemmC::Full);  // m == 1: the row is all of C
  p = gemm({3, 4}, {4, 5}, &full, false, false, 1, 0);  // beta 0: C is not read
  CHECK((p.c == GemmC::None && p.beta == 0));

  Shape bad_rows{2, 5}, rank3{1, 3, 5};
  CHECK_FALSE(gemm_plan_gemm({3, 4}, {4, 5}, &bad_rows, false, false, 1, 1));
  CHECK_FALSE(gemm_plan_gemm({3, 4}, {4, 5}, &rank3, false, false, 1, 1));
  CHECK_FALSE(gemm_plan_gemm({2, 3, 4}, {4, 5}, nullptr, false, false, 1, 1));
  CHECK_FALSE(gemm_plan_gemm({3, 4}, {5, 4}, nullptr, false, false, 1, 1));  // needs transB
}

TEST_CASE("gemm_plan: column-major arguments and a new m") {
  // D^T [n, m] = B^T A^T: cuBLASLt's A is our B, as stored.
  LtGemmArgs g = gemm_lt_args(matmul({2, 3, 4}, {2, 4, 5}));
  CHECK((!g.trans_a && g.a_rows == 5 && g.a_cols == 4 && g.lda == 5));
  CHECK((!g.trans_b && g.b_rows == 4 && g.b_cols == 3 && g.ldb == 4));
  CHECK((g.d_rows == 5 && g.d_cols == 3 && g.ldd == 5));
  CHECK((g.batch == 2 && g.stride_a == 20 && g.stride_b == 12 && g.stride_d == 15));
  g = gemm_lt_args(gemm({4, 3}, {5, 4}, nullptr, true, true));
  CHECK((g.trans_a && g.a_rows == 4 && g.a_cols == 5 && g.lda == 4));
  CHECK((g.trans_b && g.b_rows == 3 && g.b_cols == 4 && g.ldb == 3));

  GemmPlan q = gemm_plan_with_m(gemm({4, 3}, {4, 5}, nullptr, true), kLtDeterministicM);
  CHECK((q.m == kLtDeterministicM && q.lda == kLtDeterministicM && q.k == 4));
  q = gemm_plan_with_m(matmul({2, 3, 4}, {2, 4, 5}), 7);
  CHECK((q.stride_a == 28 && q.stride_b == 20 && q.stride_d == 35));
  q = gemm_plan_with_m(matmul({3, 4}, {6, 4, 5}), 7);
  CHECK((q.stride_a == 0 && q.stride_d == 35));
  CHECK(kLtDeterministicM % 2 == 1);
}

TEST_CASE("gemm_plan: emulated cuBLASLt call matches the MatMul and Gemm references") {
  check_gemm_reference_cases(gemm_fill_c_host);
}

// ---- loading cuBLASLt -----------------------------------------------------------------------

TEST_CASE("cublaslt: candidate paths in order") {
  std::vector<std::string> p = cublaslt_candidates("/x/libcublasLt.so.13", "/env/lib.so");
  REQUIRE(p.size() == 5);
  CHECK(p[0] == "/x/libcublasLt.so.13");
  CHECK(p[1] == "/env/lib.so");
  CHECK(p[2] == "libcublasLt.so.13");
  CHECK(p[3] == "libcublasLt.so");
  CHECK(p[4] == "/usr/local/cuda/lib64/libcublasLt.so.13");
  CHECK(cublaslt_candidates("", nullptr).size() == 3);
  CHECK(cublaslt_candidates("", "").size() == 3);
}

TEST_CASE("cublaslt: a missing library fails naming every path and the fix") {
  lt::Api api;
  std::string error;
  CHECK_FALSE(cublaslt_open({"/nonexistent/libcublasLt.so.13", "/nonexistent/other.so"}, &api,
                            &error));
  CHECK(error.rfind("[cublaslt] ", 0) == 0);
  CHECK(error.find("/nonexistent/libcublasLt.so.13") != std::string::npos);
  CHECK(error.find("/nonexistent/other.so") != std::string::npos);
  CHECK(error.find("pip install nvidia-cublas") != std::string::npos);
  CHECK(error.find("EMBER_CUBLASLT") != std::string::npos);
  CHECK(api.lib == nullptr);

  // A library that loads but is not cuBLASLt.
  CHECK_FALSE(cublaslt_open({"libm.so.6"}, &api, &error));
  CHECK(error.find("no symbol cublasLtCreate") != std::string::npos);

  // Process-wide: fails the same way unless a real cuBLASLt is on the other candidate paths.
  if (!cublaslt_load("/nonexistent/explicit/libcublasLt.so.13", &error)) {
    CHECK(error.find("/nonexistent/explicit/libcublasLt.so.13") != std::string::npos);
    CHECK(error.find("libcublasLt.so.13:") != std::string::npos);
    CHECK(error.find("/usr/local/cuda/lib64/libcublasLt.so.13") != std::string::npos);
    CHECK_THROWS_WITH_AS(cublaslt_api(), doctest::Contains("pip install nvidia-cublas"),
                         ember::Error);
  } else {
    CHECK(!cublaslt_api().path.empty());
  }
}

TEST_CASE("cublaslt: a real libcublasLt.so.13 has every entry point") {
  lt::Api api;
  std::string error;
  if (!cublaslt_open(cublaslt_candidates("", std::getenv("EMBER_CUBLASLT")), &api, &error)) {
    MESSAGE("skipped: no libcublasLt.so.13 here (set EMBER_CUBLASLT to one to run this)");
    return;
  }
  MESSAGE("opened ", api.path, ", version ", api.version);
  CHECK(api.version / 10000 == 13);
  bool all = api.create && api.matmul && api.matmul_algo_get_heuristic && api.matrix_layout_create;
  CHECK(all);
  CHECK(std::strcmp(api.get_status_name(lt::kSuccess), "CUBLAS_STATUS_SUCCESS") == 0);
  CHECK(cublaslt_status_str(api, lt::kNotSupported).rfind("CUBLAS_STATUS_NOT_SUPPORTED (", 0) == 0);
}

TEST_CASE("cublaslt: a real library accepts every descriptor attribute ember sets") {
  lt::Api api;
  std::string error;
  if (!cublaslt_open(cublaslt_candidates("", std::getenv("EMBER_CUBLASLT")), &api, &error)) {
    MESSAGE("skipped: no libcublasLt.so.13 here (set EMBER_CUBLASLT to one to run this)");
    return;
  }
  Shape row{5};
  const std::vector<GemmPlan> plans = {
      matmul({3, 4}, {4, 5}),    matmul({2, 3, 4}, {2, 4, 5}), matmul({3, 4}, {6, 4, 5}),
      matmul({2, 3, 4}, {4}),    gemm({4, 3}, {5, 4}, nullptr, true, true, 0.5, 0),
      gemm({3, 4}, {4, 5}, &row),
  };
  const float* bias = reinterpret_cast<const float*>(uintptr_t(0x10000));  // stored, not read
  for (const GemmPlan& p : plans) {
    for (Precision prec : {Precision::F32, Precision::F16, Precision::BF16}) {
      for (bool det : {false, true}) {
        CAPTURE(p.m);
        CAPTURE(p.batch);
        CAPTURE(det);
        DeviceOptions o{prec, det};
        bool invariant = false;
        CHECK_NOTHROW(invariant = cublaslt_describe(api, p, bias, o));
        // And with A and B rounded to the precision's 16-bit type, as MatMul and Gemm run.
        CHECK_NOTHROW(cublaslt_describe(api, p, bias, o, lt_input_type(prec)));
        // The flag exists in the 13.10 header these values come from; older 13.x refuse it.
        if (det && api.version >= 131000) CHECK(invariant);
        if (!det) CHECK_FALSE(invariant);
      }
    }
  }
}

TEST_CASE("weight_prepare: input 1 rounded to f16 / bf16 at load, a depthwise W and others kept") {
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  Tensor w = Tensor::empty(DType::F32, {5, 3, 3, 3});
  for (int64_t i = 0; i < w.numel(); i++) w.ptr<float>()[i] = dist(gen);
  w.ptr<float>()[0] = 1e6f;      // past fp16's range: inf, as the device's rounding gives
  w.ptr<float>()[1] = 1.0e-6f;   // fp16 subnormal
  for (OpType op : {OpType::MatMul, OpType::Gemm, OpType::Conv}) {
    Node node;
    node.op = op;
    Tensor h = weight_prepare_f16(node, 1, w), b = weight_prepare_bf16(node, 1, w);
    REQUIRE(h.dtype() == DType::F16);
    REQUIRE(b.dtype() == DType::BF16);
    CHECK(h.shape() == w.shape());
    for (int64_t i = 0; i < w.numel(); i++) {
      CHECK(static_cast<const uint16_t*>(h.data())[i] == f32_to_f16(w.ptr<float>()[i]));
      CHECK(static_cast<const uint16_t*>(b.data())[i] == f32_to_bf16(w.ptr<float>()[i]));
    }
    CHECK_FALSE(weight_prepare_f16(node, 0, w).defined());  // A
    CHECK_FALSE(weight_prepare_f16(node, 2, w).defined());  // C / bias
  }
  Node conv;
  conv.op = OpType::Conv;
  Tensor depthwise = Tensor::zeros(DType::F32, {8, 1, 3, 3});  // the direct fp32 kernel's
  CHECK_FALSE(weight_prepare_f16(conv, 1, depthwise).defined());
  CHECK_FALSE(weight_prepare_bf16(conv, 1, depthwise).defined());
  Tensor ints = Tensor::zeros(DType::I32, {4, 4});
  CHECK_FALSE(weight_prepare_f16(conv, 1, ints).defined());
}
