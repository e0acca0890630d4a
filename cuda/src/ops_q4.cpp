// CUDA adapter of Q4MatMul (int4 weights, float A): W4A16 on tensor cores (q4_gemm.cu), A
// rounded to fp16 (precision fp32 or fp16) or bf16 (precision bf16), W dequantized to the same
// type, fp32 sums; from M = kQ4DequantMinM (not deterministic) W is dequantized into scratch
// and cuBLASLt's 16-bit GEMM runs instead. Codes, scales and offsets must be constants
// (repacked once at load by q4_prepare) or feeds (repacked on the host each run). Any N, K (the
// packing pads them) and group; falls back to the CPU where a weight (code * scale + offset)
// would overflow fp16. The f32_rows input (prompt rows the CPU keeps in f32) is not read: every
// row is rounded to 16 bits here.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "cuda/kernels/gemm_epilogue.h"
#include "cuda/kernels/q4_gemm.h"
#include "cuda/src/cublaslt.h"
#include "cuda/src/gemm_plan.h"
#include "cuda/src/ops.h"
#include "cuda/src/q4_pack.h"
#include "ember/dtype.h"
#include "ops/op_util.h"

namespace ember::cuda {
namespace {

struct Q4Attrs {
  int64_t n, k, group;
};
Q4Attrs q4_attrs(const Node& node) {
  return {node.attrs.get_int("n", 0), node.attrs.get_int("k", 0), node.attrs.get_int("group", 32)};
}

int act_code(FusedAct act) {
  switch (act) {
    case FusedAct::None: return 0;
    case FusedAct::Relu: return 1;
    case FusedAct::Gelu: return 2;
    case FusedAct::GeluTanh: return 3;
  }
  return 0;
}

// EMBER_CUDA_Q4_KERNEL=stream: decode (M <= 16) on the stream kernel instead of the small one.
// Read at every call, so a benchmark can time both in one process (check_quant.sh does);
// opt-in until a device run has timed it.
bool q4_stream_wanted() {
  const char* e = std::getenv("EMBER_CUDA_Q4_KERNEL");
  return e && std::strcmp(e, "stream") == 0;
}

// Prefill-sized M: W dequantized into 16-bit scratch, then cuBLASLt's 16-bit GEMM with the
// bias in its epilogue (q4_use_dequant_gemm). False where cuBLASLt is missing or has no
// algorithm for the call: the caller runs the mma kernels instead.
bool run_dequant_gemm(const KernelCtx& ctx, const void* const w[4], int64_t m, int64_t n,
                      int64_t k, int64_t group, bool bf16, int act) {
  std::string error;
  if (!cublaslt_load("", &error)) return false;
  void* s = stream(ctx);
  Scratch w16(ctx, (size_t)(n * k * 2)), a16(ctx, (size_t)(m * k * 2));
  q4_dequantize(static_cast<const int32_t*>(w[1]), static_cast<const uint16_t*>(w[2]),
                static_cast<const uint16_t*>(w[3]), w16.data(), n, k, group, bf16, s);
  gemm_round_16(ctx.input(0).ptr<float>(), a16.data(), m * k, bf16, s);
  check_launch("[Q4MatMul] dequantize and round");
  GemmPlan p;  // D [m, n] = A16 [m, k] @ W16^T, W16 stored [n, k]
  p.m = m, p.n = n, p.k = k, p.trans_b = true, p.lda = k, p.ldb = k, p.ldd = n;
  LtOperands ops;
  ops.a = a16.data();
  ops.b = w16.data();
  ops.ab_type = bf16 ? lt::kR16BF : lt::kR16F;
  ops.d = ctx.output(0).ptr<float>();
  const float* bias = ctx.has_input(4) ? ctx.input(4).ptr<float>() : nullptr;
  std::optional<Scratch> ws;
  auto workspace = [&](size_t bytes) {
    ws.emplace(ctx, bytes);
    return ws->data();
  };
  if (bias) {  // cuBLASLt's BIAS epilogue where it has one, else added after with the act
    GemmPlan pb = p;
    pb.c = GemmC::Bias, pb.beta = 1.0f, pb.c_rs = 0, pb.c_cs = 1;
    LtOperands ob = ops;
    ob.c = bias;
    if (cublaslt_matmul(pb, ob, options(ctx), workspace, s, "Q4MatMul")) bias = nullptr;
    else if (!cublaslt_matmul(p, ops, options(ctx), workspace, s, "Q4MatMul")) return false;
  } else if (!cublaslt_matmul(p, ops, options(ctx), workspace, s, "Q4MatMul")) {
    return false;
  }
  q4_bias_act(ops.d, bias, m, n, act, s);
  return true;
}

float param_value(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F16 ? f16_to_f32(t.ptr<uint16_t>()[i]) : t.ptr<float>()[i];
}

// Every weight code * scale + offset (code 0..15) and both params finite in fp16 (bf16 has
// more range; the packed params are fp16 either way).
bool params_fit_f16(const Tensor& scales, const Tensor& offsets) {
  constexpr float kMax = 65504.0f;
  for (int64_t i = 0; i < scales.numel(); i++) {
    const float s = param_value(scales, i), o = param_value(offsets, i);
    if (!(std::fabs(s) <= kMax && std::fabs(o) <= kMax && std::fabs(15.0f * s) + std::fabs(o) <= kMax))
      return false;
  }
  return true;
}

}  // namespace

bool q4matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  const Q4Attrs at = q4_attrs(ctx.node);
  if (ctx.in[0].dtype != DType::F32 || at.k <= 0 || at.n < 0 || at.group < 32 || at.group % 32)
    return false;
  // The weights need a host copy to repack: constants (at load) or feeds (per run).
  const Tensor *codes = ctx.value(1), *scales = ctx.value(2), *offsets = ctx.value(3);
  if (!codes || !scales || !offsets || scales->dtype() != offsets->dtype() ||
      scales->numel() != offsets->numel())
    return false;
  if (!params_fit_f16(*scales, *offsets)) return false;
  const int64_t m = shape_numel(ctx.in[0].shape) / at.k;
  const Q4Launch plan = q4_launch(m, at.n, at.k, 1, options.deterministic);
  return plan.grid_y <= 65535 && plan.grid_x <= 0x7fffffff && m <= 0x7fffffff;
}

void q4matmul_cuda(const KernelCtx& ctx) {
  const Q4Attrs at = q4_attrs(ctx.node);
  const Tensor& a = ctx.input(0);
  const int64_t m = a.numel() / at.k;
  if (m == 0 || at.n == 0) return;
  void* s = stream(ctx);
  const std::string what = str_cat("[Q4MatMul] node '", ctx.node.name, "'");
  // Packed weights: as prepared at load, else repacked here from the host copy.
  const void* w[4] = {};
  std::unique_ptr<Scratch> repacked[4];
  for (int i = 1; i <= 3; i++) {
    if (q4_is_packed(ctx.input(i), i, at.n, at.k, at.group)) {
      w[i] = ctx.input(i).data();
      continue;
    }
    const Tensor* host = host_input(ctx, i);
    if (!host) fail(ErrorKind::Internal, what, ": input ", i, " is neither packed nor on the host");
    Tensor packed = q4_prepare(ctx.node, i, *host);
    repacked[i] = std::make_unique<Scratch>(ctx, packed.nbytes());
    ctx.device->copy_to_device(repacked[i]->data(), packed.data(), packed.nbytes());
    w[i] = repacked[i]->data();
  }
  const DeviceOptions& opt = options(ctx);
  const bool bf16 = opt.precision == Precision::BF16;
  const int act = act_code(fused_activation(nullptr, ctx.node));
  if (q4_use_dequant_gemm(m, opt.deterministic) &&
      run_dequant_gemm(ctx, w, m, at.n, at.k, at.group, bf16, act)) {
    check_launch(what.c_str());
    return;
  }
  const Q4Launch plan =
      q4_launch(m, at.n, at.k, q4_multiprocessors(), opt.deterministic, q4_stream_wanted());
  // The small and stream kernels convert A themselves; the large one reads it as fragments.
  std::unique_ptr<Scratch> a_frag;
  if (!plan.small) {
    a_frag = std::make_unique<Scratch>(ctx, (size_t)(q4_padded_m(m) * q4_padded_k(at.k) * 2));
    q4_convert_a(a.ptr<float>(), a_frag->data(), m, at.k, bf16, s);
  }
  std::unique_ptr<Scratch> partial;
  int* counters = nullptr;
  if (plan.splits > 1) {
    partial = std::make_unique<Scratch>(ctx, (size_t)(plan.splits * m * at.n * 4));
    counters = tile_counters(ctx, plan.grid_x * plan.grid_y);
  }
  q4_gemm(a.ptr<float>(), a_frag ? a_frag->data() : nullptr, static_cast<const int32_t*>(w[1]),
          static_cast<const uint16_t*>(w[2]), static_cast<const uint16_t*>(w[3]),
          ctx.has_input(4) ? ctx.input(4).ptr<float>() : nullptr, ctx.output(0).ptr<float>(),
          partial ? partial->as<float>() : nullptr, counters, m, at.n, at.k, at.group, act, bf16,
          plan, s);
  check_launch(what.c_str());
}

}  // namespace ember::cuda
