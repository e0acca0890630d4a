// QMatMul (W8A8, cpp/src/ops/ops_qmatmul.cpp) on CUDA: activations quantized on the device in
// every a_mode (token, static, tensor_u8; in rows mode AddNorm made the codes and scales), the
// weight repacked at load (q8_prepare), int32 sums from cuBLASLt's int8 GEMM (m > kQ8SmallM) or
// from q8_gemm_small (decode sizes; also where cuBLASLt has no int8 algorithm), then the
// reference's float epilogue. The sums are exact, so
// outputs match the CPU bit for bit but for the gelu activations (double maths on each side).
#include <optional>

#include "cuda/kernels/q8_gemm.h"
#include "cuda/src/cublaslt.h"
#include "cuda/src/ops.h"
#include "cuda/src/q8_pack.h"

namespace ember::cuda {
namespace {

Q8Act q8_act(const Node& node) {
  std::string a = node.attrs.get_string("activation", "none");
  if (a == "relu") return Q8Act::Relu;
  if (a == "gelu") return Q8Act::Gelu;
  if (a == "gelu_tanh") return Q8Act::GeluTanh;
  return Q8Act::None;
}

bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

}  // namespace

Tensor qmatmul_cuda_prepare(const Node& node, int input, const Tensor& host) {
  return q8_prepare(node, input, host);
}

bool qmatmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  // The weight must be known at plan time: constants arrive repacked by q8_prepare, a feed's
  // host copy is repacked per run (qmatmul_cuda); a computed weight stays on the CPU.
  if (!ctx.value(1)) return false;
  std::string act = ctx.node.attrs.get_string("activation", "none");
  if (act != "none" && act != "relu" && act != "gelu" && act != "gelu_tanh") return false;
  // int32 sums are exact whatever DeviceOptions says: precision and determinism hold as asked.
  if (q8_mode(ctx.node) == Q8Mode::Rows)  // int8 codes and their row scales, made ahead
    return ctx.in[0].dtype == DType::I8 && !ctx.in[0].shape.empty() && ctx.has(4) &&
           ctx.in[4].dtype == DType::F32;
  return ctx.in[0].dtype == DType::F32 && !ctx.in[0].shape.empty();
}

void qmatmul_cuda(const KernelCtx& ctx) {
  const Tensor& a = ctx.input(0);  // [..., K]
  Tensor& y = ctx.output(0);       // [..., N]
  const int64_t k = a.dim(-1), n = ctx.node.attrs.get_int("n", 0);
  const int64_t m = shape_numel(Shape(a.shape().begin(), a.shape().end() - 1));
  if (m == 0 || n == 0) return;
  const Q8Layout l = q8_layout(n, k);
  const Q8Mode mode = q8_mode(ctx.node);
  void* s = stream(ctx);

  // The weight: repacked at load (constants), or here from the host copy (a feed).
  const Tensor& wt = ctx.input(1);
  const int8_t* w = nullptr;
  std::optional<Scratch> w_upload;
  if (wt.rank() == 1 && wt.numel() == l.bytes()) {
    w = wt.ptr<const int8_t>();
  } else {
    const Tensor* host = host_input(ctx, 1);
    EMBER_CHECK(host, Internal, "[QMatMul] node '", ctx.node.name, "': weight ",
                shape_str(wt.shape()), " is neither repacked nor known on the host");
    Tensor packed = q8_prepare(ctx.node, 1, *host);
    w_upload.emplace(ctx, packed.nbytes());
    ctx.device->copy_to_device(w_upload->data(), packed.data(), packed.nbytes());
    w = w_upload->as<const int8_t>();
  }
  EMBER_CHECK(aligned16(w), Internal, "[QMatMul] node '", ctx.node.name,
              "': repacked weight is not 16-byte aligned");

  const bool small = q8_use_small(m, l);
  const int64_t partial = mode == Q8Mode::TensorU8 ? q8_minmax_partial_floats(a.numel()) : 0;
  const Q8Work work = q8_work(m, l, mode, partial, !small);
  Scratch scratch(ctx, (size_t)work.bytes);
  char* base = scratch.as<char>();
  auto* codes = reinterpret_cast<int8_t*>(base + work.codes);

  Q8Epilogue e;
  e.w_scale = ctx.input(2).ptr<const float>();
  e.bias = ctx.has_input(3) ? ctx.input(3).ptr<const float>() : nullptr;
  e.act = q8_act(ctx.node);
  if (mode == Q8Mode::Rows) {
    // Codes [m, k] as AddNorm wrote them: in place where rows are already k_pad long.
    if (k == l.k_pad)
      codes = const_cast<int8_t*>(a.ptr<const int8_t>());  // only read from here on
    else
      q8_pad_codes(a.ptr<const int8_t>(), codes, m, k, l.k_pad, s);
    e.row_scale = ctx.input(4).ptr<const float>();
  } else if (mode == Q8Mode::Token) {
    auto* row_scale = reinterpret_cast<float*>(base + work.row_scale);
    q8_quantize_token(a.ptr<const float>(), codes, row_scale, m, k, l.k_pad, s);
    e.row_scale = row_scale;
  } else {
    auto* params = reinterpret_cast<Q8Params*>(base + work.params);
    if (mode == Q8Mode::Static) {
      const bool has_zp = ctx.has_input(5);
      q8_params_static(ctx.input(4).ptr<const float>(), has_zp ? ctx.input(5).data() : nullptr,
                       has_zp && ctx.input(5).dtype() == DType::I8, params, s);
    } else {
      q8_params_tensor_u8(a.ptr<const float>(), a.numel(),
                          reinterpret_cast<float*>(base + work.partial), params, s);
    }
    q8_quantize_static(a.ptr<const float>(), codes, params, m, k, l.k_pad, s);
    e.params = params;
    e.colsum = reinterpret_cast<const int32_t*>(w + l.colsum_offset());
  }
  check_launch("[QMatMul] quantize");

  float* yp = y.ptr<float>();
  if (!small) {
    auto* acc = reinterpret_cast<int32_t*>(base + work.acc);
    std::optional<Scratch> ws;
    auto workspace = [&](size_t bytes) {
      ws.emplace(ctx, bytes);
      return ws->data();
    };
    if (cublaslt_matmul_i8(m, l.n_pad, l.k_pad, codes, w, acc, workspace, s, "QMatMul")) {
      q8_epilogue(acc, e, yp, m, n, l.n_pad, s);
      check_launch("[QMatMul] q8_epilogue");
      return;
    }
    // NOTE: no int8 algorithm for this shape: the dp4a kernel computes the same sums, slower.
  }
  q8_gemm_small(codes, w, e, yp, m, n, l.k_pad, s);
  check_launch("[QMatMul] q8_gemm_small");
}

}  // namespace ember::cuda
