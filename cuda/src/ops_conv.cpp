// CUDA adapters of Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool and
// BatchNormalization, f32. Conv (1-D or 2-D, any group, stride, dilation, pads, auto_pad as the
// core's conv_geom resolves them) takes the path conv_plan picks (conv_plan.h): depthwise convs
// run a direct kernel; the rest go to cuDNN where it loads and takes them (run_cudnn), else are
// strided-batched cuBLASLt GEMMs (cublaslt_matmul, in the DeviceOptions precision; at fp16 /
// bf16 on 16-bit copies of W and X or 16-bit cols) on X itself (1x1, stride 1, no pad) or on
// im2col chunks in a bounded scratch. The bias is written into Y first and the GEMMs add onto
// it (beta 1). 3-D convs and pools, other dtypes, MaxPool's Indices output run on the CPU.
// References: cpp/src/ops/ops_conv.cpp, ops_pool.cpp, ops_nn.cpp.
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

#include "cuda/kernels/conv.h"
#include "cuda/kernels/gemm_epilogue.h"
#include "cuda/src/backend.h"
#include "cuda/src/conv_plan.h"
#include "cuda/src/cublaslt.h"
#include "cuda/src/cudnn.h"
#include "cuda/src/ops.h"
#include "kernels/generic/conv_f32.h"
#include "ops/pool_geom.h"

namespace ember::cuda {
namespace {

bool all_f32(const InferCtx& ctx) {
  for (int i = 0; i < ctx.num_inputs(); i++)
    if (ctx.has(i) && ctx.in[i].dtype != DType::F32) return false;
  return true;
}

// The conv's geometry and plan; nullopt where the GPU cannot run it.
std::optional<std::pair<Conv2d, ConvPlan>> conv_node_plan(const InferCtx& ctx, const Shape& x,
                                                          const Shape& w) {
  ConvGeom geom = conv_geom(ctx, x, w, false);
  Conv2d g;
  ConvPlan plan;
  if (!conv2d_from(geom, &g) || !conv_plan(g, kConvColsBytes, &plan)) return std::nullopt;
  return std::make_pair(g, plan);
}

GemmPlan gemm_of(const ConvGemmCall& c, bool accumulate) {
  GemmPlan p;
  p.m = c.m;
  p.n = c.n;
  p.k = c.k;
  p.batch = c.batch;
  p.lda = c.k;
  p.ldb = c.ldb;
  p.ldd = c.ldd;
  p.stride_a = c.stride_a;
  p.stride_b = c.stride_b;
  p.stride_d = c.stride_d;
  // With a bias, Y already holds it: cuBLASLt's C is D, added with beta 1.
  p.beta = accumulate ? 1.0f : 0.0f;
  p.c = accumulate ? GemmC::Broadcast : GemmC::None;
  return p;
}

// At fp16 / bf16 the GEMMs take 16-bit operands (cublaslt.h, lt_input_type): W rounded at
// load when a constant (weight_prepare_*), else once per run; im2col writing 16-bit cols (half
// the bytes of F32 cols, so always); a 1x1 conv's X rounded whole where that pays
// (lt_rounding_pays, or W already 16-bit; else F32 operands throughout).
struct ConvOperands {
  int type = lt::kR32F;
  size_t elem = sizeof(float);
  const void* w = nullptr;
  const void* x = nullptr;  // the 1x1 path's B
  std::optional<Scratch> w16, x16;
};
void conv_operands(const KernelCtx& ctx, const ConvPlan& plan, const Tensor& x, const Tensor& w,
                   ConvOperands* o) {
  o->w = w.data();
  o->x = x.ptr<const float>();
  o->type = lt_input_type(options(ctx).precision);
  const bool w_ready = w.dtype() != DType::F32;  // rounded at load (weight_prepare_*)
  if (!w_ready && plan.path == ConvPath::Gemm1x1 &&
      !lt_rounding_pays(w.shape()[0], x.numel() / x.shape()[1]))
    o->type = lt::kR32F;
  if (o->type == lt::kR32F) return;
  o->elem = 2;
  const bool bf16 = o->type == lt::kR16BF;
  if (!w_ready) {
    o->w16.emplace(ctx, (size_t)w.numel() * 2);
    gemm_round_16(w.ptr<const float>(), o->w16->data(), w.numel(), bf16, stream(ctx));
    o->w = o->w16->data();
  }
  if (plan.path == ConvPath::Gemm1x1) {
    o->x16.emplace(ctx, (size_t)x.numel() * 2);
    gemm_round_16(x.ptr<const float>(), o->x16->data(), x.numel(), bf16, stream(ctx));
    o->x = o->x16->data();
  }
  check_launch("[Conv] gemm_round_16");
}

const void* at(const void* base, int64_t elems, size_t elem) {
  return static_cast<const char*>(base) + elems * (int64_t)elem;
}

// EMBER_CUDA_CONV=im2col: Conv never takes cuDNN (check.sh runs the conv tests both ways).
bool conv_force_im2col() {
  static const bool force = [] {
    const char* e = std::getenv("EMBER_CUDA_CONV");
    return e && std::string(e) == "im2col";
  }();
  return force;
}

// cuDNN where it loaded and takes the conv. Not in deterministic runs: its algorithm choice
// varies with the batch. F32: FMA math (no TF32), the bias written into Y first (beta 1);
// fp16 / bf16: X rounded, W as rounded at load, Y in 16 bits, then back to F32 with the bias.
bool run_cudnn(const KernelCtx& ctx, const Conv2d& g, const Tensor& x, const Tensor& w,
               const float* bias, float* y) {
  const DeviceOptions& o = options(ctx);
  if (o.deterministic || conv_force_im2col() || !cudnn_load("", nullptr)) return false;
  DnnConv c{g.N, g.C, g.H, g.W, g.M, g.G, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw,
            g.OH, g.OW};
  const int type = lt_input_type(o.precision);
  c.type = type == lt::kR16F ? dnn::kHalf : type == lt::kR16BF ? dnn::kBFloat16 : dnn::kFloat;
  c.math = c.type == dnn::kFloat ? dnn::kFmaMath : dnn::kTensorOpMath;
  CudnnConv call(*cudnn_api(), c);
  if (!call.refused().empty()) return false;  // before any rounding
  std::optional<Scratch> ws, x16, w16, y16;
  auto workspace = [&](size_t bytes) {
    ws.emplace(ctx, bytes);
    return ws->data();
  };
  const int ordinal = static_cast<CudaDevice*>(ctx.device)->ordinal();
  std::string why;
  if (c.type == dnn::kFloat) {
    if (w.dtype() != DType::F32) return false;
    if (bias) conv_bias_fill(y, bias, g.N, g.M, g.P(), stream(ctx));
    return call.forward(x.data(), w.data(), y, bias ? 1.0f : 0.0f, kLtWorkspaceBytes, workspace,
                        stream(ctx), ordinal, &why);
  }
  const bool bf16 = c.type == dnn::kBFloat16;
  x16.emplace(ctx, (size_t)x.numel() * 2);
  gemm_round_16(x.ptr<const float>(), x16->data(), x.numel(), bf16, stream(ctx));
  const void* w_data = w.data();
  if (w.dtype() == DType::F32) {
    w16.emplace(ctx, (size_t)w.numel() * 2);
    gemm_round_16(w.ptr<const float>(), w16->data(), w.numel(), bf16, stream(ctx));
    w_data = w16->data();
  }
  check_launch("[Conv] gemm_round_16");
  y16.emplace(ctx, (size_t)(g.N * g.M * g.P()) * 2);
  if (!call.forward(x16->data(), w_data, y16->data(), 0.0f, kLtWorkspaceBytes, workspace,
                    stream(ctx), ordinal, &why))
    return false;
  conv_finish_16(y16->data(), bias, y, g.N, g.M, g.P(), bf16, stream(ctx));
  check_launch("[Conv] conv_finish_16");
  return true;
}

void run_gemms(const KernelCtx& ctx, const Conv2d& g, const ConvPlan& plan, const Tensor& x,
               const Tensor& w, const float* bias, float* y) {
  if (bias) {
    conv_bias_fill(y, bias, g.N, g.M, g.P(), stream(ctx));
    check_launch("[Conv] conv_bias_fill");
  }
  ConvOperands in;
  conv_operands(ctx, plan, x, w, &in);
  const int cols_type = in.type == lt::kR16F ? 1 : in.type == lt::kR16BF ? 2 : 0;
  std::optional<Scratch> cols;
  if (plan.path == ConvPath::Im2col) cols.emplace(ctx, (size_t)plan.cols_elems * in.elem);
  // One workspace for every call, regrown when a call wants more.
  std::optional<Scratch> ws;
  size_t ws_bytes = 0;
  auto workspace = [&](size_t bytes) {
    if (!ws || bytes > ws_bytes) {
      ws.reset();
      ws.emplace(ctx, bytes);
      ws_bytes = bytes;
    }
    return ws->data();
  };
  for (int64_t n0 = 0; n0 < g.N; n0 += plan.nb) {
    for (int64_t p0 = 0; p0 < g.P(); p0 += plan.pc) {
      int64_t nb = std::min(plan.nb, g.N - n0), pc = std::min(plan.pc, g.P() - p0);
      const void* b = in.x;  // 1x1: X [N, C, H*W] is its own cols, and the only chunk
      if (cols) {
        conv_im2col(x.ptr<const float>(), cols->data(), g, n0, nb, p0, pc, cols_type, stream(ctx));
        check_launch("[Conv] conv_im2col");
        b = cols->data();
      }
      for (const ConvGemmCall& c : conv_gemm_calls(g, n0, nb, p0, pc)) {
        LtOperands ops;
        ops.a = at(in.w, c.a_off, in.elem);
        ops.b = at(b, c.b_off, in.elem);
        ops.ab_type = in.type;
        ops.d = y + c.d_off;
        if (!cublaslt_matmul(gemm_of(c, bias != nullptr), ops, options(ctx), workspace, stream(ctx),
                             "Conv"))
          fail(ErrorKind::Internal, "[Conv] node '", ctx.node.name,
               "': cuBLASLt has no algorithm for m=", c.m, ", n=", c.n, ", k=", c.k,
               ", batch=", c.batch);
      }
    }
  }
}

}  // namespace

// ---- Conv -------------------------------------------------------------------------------------

bool conv_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  if (!all_f32(ctx) || !ctx.has(0) || !ctx.has(1)) return false;
  return conv_node_plan(ctx, ctx.in[0].shape, ctx.in[1].shape).has_value();
}

void conv_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<const float>() : nullptr;
  float* y = ctx.output(0).ptr<float>();
  InferCtx ic{ctx.node, {}, {}};
  auto planned = conv_node_plan(ic, x.shape(), w.shape());
  if (!planned)
    fail(ErrorKind::Internal, "[Conv] node '", ctx.node.name, "': no plan for X ",
         shape_str(x.shape()), ", W ", shape_str(w.shape()), " (supports() accepted it)");
  const auto& [g, plan] = *planned;
  switch (plan.path) {
    case ConvPath::Empty:
      return;
    case ConvPath::Fill:
      conv_bias_fill(y, bias, g.N, g.M, g.P(), stream(ctx));
      check_launch("[Conv] conv_bias_fill");
      return;
    case ConvPath::Direct:
      EMBER_CHECK(w.dtype() == DType::F32, Internal, "[Conv] node '", ctx.node.name,
                  "': a depthwise W was rounded at load");
      conv_direct(x.ptr<const float>(), w.ptr<const float>(), bias, y, g, stream(ctx));
      check_launch("[Conv] conv_direct");
      return;
    case ConvPath::Gemm1x1:
    case ConvPath::Im2col:
      if (run_cudnn(ctx, g, x, w, bias, y)) return;
      run_gemms(ctx, g, plan, x, w, bias, y);
      return;
  }
}

// ---- MaxPool, AveragePool ---------------------------------------------------------------------

namespace {

std::optional<Pool2d> pool_node_plan(const InferCtx& ctx, const Shape& x) {
  PoolGeom geom = pool_geom(ctx, x);
  bool is_max = ctx.node.op == OpType::MaxPool;
  bool include_pad = ctx.node.attrs.get_int("count_include_pad", 0) != 0;
  Pool2d p;
  if (!pool2d_from(geom, x[0], x[1], is_max, include_pad, &p)) return std::nullopt;
  return p;
}

}  // namespace

bool pool_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  if (ctx.in[0].dtype != DType::F32) return false;
  const Node& n = ctx.node;
  if (n.op == OpType::MaxPool && n.outputs.size() > 1 && n.outputs[1] >= 0) return false;
  return pool_node_plan(ctx, ctx.in[0].shape).has_value();
}

void pool_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  InferCtx ic{ctx.node, {{x.dtype(), x.shape()}}, {nullptr}};
  std::optional<Pool2d> p = pool_node_plan(ic, x.shape());
  if (!p)
    fail(ErrorKind::Internal, "[", op_name(ctx.node.op), "] node '", ctx.node.name,
         "': no plan for X ", shape_str(x.shape()), " (supports() accepted it)");
  pool_2d(x.ptr<const float>(), ctx.output(0).ptr<float>(), *p, stream(ctx));
  check_launch(ctx.node.op == OpType::MaxPool ? "[MaxPool] pool_2d" : "[AveragePool] pool_2d");
}

// ---- GlobalAveragePool, GlobalMaxPool ---------------------------------------------------------

bool global_pool_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  return ctx.in[0].dtype == DType::F32;
}

void global_pool_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  int64_t rows = y.numel();
  int64_t cols = rows ? x.numel() / rows : 0;
  bool is_max = ctx.node.op == OpType::GlobalMaxPool;
  pool_global(x.ptr<const float>(), y.ptr<float>(), rows, cols, is_max, stream(ctx));
  check_launch(is_max ? "[GlobalMaxPool] pool_global" : "[GlobalAveragePool] pool_global");
}

// ---- BatchNormalization -----------------------------------------------------------------------

bool batch_norm_cuda_supports(const InferCtx& ctx, const DeviceOptions& options) {
  return all_f32(ctx);
}

void batch_norm_cuda(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  int64_t n = x.dim(0), c = x.dim(1);
  int64_t inner = n * c != 0 ? x.numel() / (n * c) : 0;
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  batch_norm(x.ptr<const float>(), ctx.input(1).ptr<const float>(), ctx.input(2).ptr<const float>(),
             ctx.input(3).ptr<const float>(), ctx.input(4).ptr<const float>(),
             ctx.output(0).ptr<float>(), n, c, inner, eps, stream(ctx));
  check_launch("[BatchNormalization] batch_norm");
}

}  // namespace ember::cuda
