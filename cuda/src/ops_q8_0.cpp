// CUDA adapters of the GGUF Q8_0 ops (q8_0.cu): Q8MatMul (reference ref_q8matmul) with its
// int16 activations in step scratch, and Q8Gather (reference cpu::q8gather) whose indices are
// checked on the host as the CPU checks them (their host copy, or read back).
#include <string>

#include "cuda/kernels/q8_0.h"
#include "cuda/src/ops.h"

namespace ember::cuda {
namespace {

int act_of(const Node& node) {
  const std::string a = node.attrs.get_string("activation", "none");
  return a == "relu" ? 1 : a == "gelu" ? 2 : a == "gelu_tanh" ? 3 : 0;
}

}  // namespace

bool q8_0_matmul_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  const std::string a = ctx.node.attrs.get_string("activation", "none");
  return a == "none" || a == "relu" || a == "gelu" || a == "gelu_tanh";
}

void q8_0_matmul_cuda(const KernelCtx& ctx) {
  const int64_t n = ctx.node.attrs.get_int("n", 0), k = ctx.node.attrs.get_int("k", 0);
  const int64_t m = ctx.input(0).numel() / k, nb = (k + 31) / 32;
  if (m == 0 || n == 0) return;
  Scratch q(ctx, (size_t)(m * nb * 32 * 2)), d(ctx, (size_t)(m * nb * 4));
  q8_0_matmul(ctx.input(0).ptr<float>(), ctx.input(1).ptr<int8_t>(), ctx.input(2).ptr<float>(),
              ctx.has_input(3) ? ctx.input(3).ptr<float>() : nullptr, ctx.output(0).ptr<float>(),
              q.as<int16_t>(), d.as<float>(), m, n, k, act_of(ctx.node), stream(ctx));
  check_launch("[Q8MatMul] Q8_0 matmul kernels");
}

bool q8_0_gather_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) { return true; }

void q8_0_gather_cuda(const KernelCtx& ctx) {
  const Tensor& idx = ctx.input(2);
  const int64_t rows = ctx.input(0).dim(0), k = ctx.node.attrs.get_int("k", 0);
  const bool i64 = idx.dtype() == DType::I64;
  // The indices on the host: their copy when they are a feed or a constant (token ids), else
  // read back from the device (a synchronisation; computed indices are rare here).
  const Tensor* host = host_input(ctx, 2);
  Tensor back;
  if (!host) {
    back = Tensor::empty(idx.dtype(), idx.shape());
    read_back(ctx, back.data(), idx.data(), idx.nbytes());
    host = &back;
  }
  for (int64_t i = 0; i < host->numel(); i++) {
    const int64_t v = i64 ? host->ptr<int64_t>()[i] : host->ptr<int32_t>()[i];
    EMBER_CHECK(v >= -rows && v < rows, Input, "[Q8Gather] node '", ctx.node.name, "': index ", v,
                " is outside [", -rows, ", ", rows, ")");
  }
  q8_0_gather(ctx.input(0).ptr<int8_t>(), ctx.input(1).ptr<float>(), idx.data(), i64,
              ctx.output(0).ptr<float>(), rows, idx.numel(), k, stream(ctx));
  check_launch("[Q8Gather] Q8_0 gather kernel");
}

}  // namespace ember::cuda
