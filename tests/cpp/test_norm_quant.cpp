// QMatMul's a_mode "rows" and AddNorm's quantized outputs (graph/fuse_norm_quant.cpp): shape
// inference refuses what the contract forbids, and the rows mode computes the token mode's
// output from the token mode's own codes, bit for bit (the end-to-end pass runs in
// tests/runtime/test_device_placement.py, the CUDA kernels in cuda/emu/tests).
#include <vector>

#include "doctest/doctest.h"
#include "ember/error.h"
#include "ember/op.h"
#include "ops/quantize_rows.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;

namespace {

Node qmatmul(int64_t n, const char* mode) {
  Node q;
  q.op = OpType::QMatMul;
  q.name = "q";
  q.attrs.set("n", n);
  q.attrs.set("a_mode", std::string(mode));
  return q;
}

std::string infer_error(const Node& node, std::vector<TensorType> in) {
  InferCtx ctx{node, std::move(in), {}};
  try {
    op_def(node.op).infer(ctx);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("QMatMul rows mode: int8 codes with float row scales, as the token mode makes them") {
  const int64_t m = 3, k = 40, n = 20;
  const TensorType w{DType::I8, {(n + 15) / 16, (k + 1) / 2, 16, 2}}, ws{DType::F32, {n}};
  Node rows = qmatmul(n, "rows");
  rows.inputs = {0, 1, 2, -1, 4};
  CHECK(infer_error(rows, {{DType::I8, {m, k}}, w, ws, {}, {DType::F32, {m}}}).empty());
  CHECK(infer_error(rows, {{DType::F32, {m, k}}, w, ws, {}, {DType::F32, {m}}}).find("int8") !=
        std::string::npos);
  CHECK(infer_error(rows, {{DType::I8, {m, k}}, w, ws, {}, {DType::F32, {m, 1}}})
            .find("row scales") != std::string::npos);

  // The rows mode on the token mode's codes gives the token mode's Y.
  Tensor a = test::random_f32({m, k}, 11, -3.0f, 3.0f);
  Tensor codes = Tensor::empty(DType::I8, {m, k}), scales = Tensor::empty(DType::F32, {m});
  quantize_rows_token(a.ptr<float>(), m, k, codes.ptr<int8_t>(), scales.ptr<float>());
  Tensor wp = Tensor::empty(DType::I8, w.shape);
  for (int64_t i = 0; i < wp.numel(); i++) wp.ptr<int8_t>()[i] = (int8_t)(i * 37 % 255 - 127);
  Tensor w_scale = test::random_f32({n}, 12, 0.001f, 0.01f);
  Tensor y_token = Tensor::empty(DType::F32, {m, n}), y_rows = Tensor::empty(DType::F32, {m, n});
  Node token = qmatmul(n, "token");
  KernelCtx tc{token, {&a, &wp, &w_scale}, {&y_token}};
  op_def(OpType::QMatMul).reference(tc);
  KernelCtx rc{rows, {&codes, &wp, &w_scale, nullptr, &scales}, {&y_rows}};
  op_def(OpType::QMatMul).reference(rc);
  CHECK(test::same_bits(y_token, y_rows));
}

TEST_CASE("AddNorm's quantized outputs come as a pair, from a float Y") {
  Node an;
  an.op = OpType::AddNorm;
  an.name = "an";
  an.attrs.set("kind", std::string("rms"));
  an.inputs = {0, 1, 2};
  const TensorType x{DType::F32, {2, 8}}, g{DType::F32, {8}};
  an.outputs = {10, 11, 12};
  CHECK(infer_error(an, {x, x, g}).find("together") != std::string::npos);
  an.outputs = {10, -1, 12, 13};
  InferCtx ctx{an, {x, x, g}, {}};
  std::vector<TensorType> out = op_def(OpType::AddNorm).infer(ctx);
  REQUIRE(out.size() == 4);
  CHECK(out[2].dtype == DType::I8);
  CHECK(out[2].shape == Shape{2, 8});
  CHECK(out[3].shape == Shape{2});
}
