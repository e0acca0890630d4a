// fuse_conv_packed: Conv (2-D, group 1, constant f32 weights and bias; not a 1x1 stride-1
// unpadded one, whose X the GEMM reads in place) [-> Relu] -> FusedConv (ops_fused_conv.cpp),
// the Relu in its epilogue. Weights are packed at load (conv_packed_weights_f32) for the
// swapped-role GEMM where the CPU's kernel reads patches in place (`gathers`: AVX-512) or the
// layer is wide; elsewhere the node keeps Conv's weights and runs Conv's GEMM. Runs after
// fuse_conv_winograd: the 3x3 stride-1 convs it takes stay Winograd.
#include "graph/fuse.h"
#include "graph/fuse_util.h"
#include "kernels/generic/conv_packed_f32.h"
#include "ops/op_util.h"

namespace ember {

using namespace fuse;

namespace {

// Output channels from which the swapped-role GEMM wins where it packs its patches per call
// (no GemmMicro::taps2): each patch value then feeds 256 or more FMAs, and the weights
// (>= 1 MB in ResNet-18) stream once. One thread, ResNet-18's stride-2 convs
// (tests/cpp/test_fused_conv.cpp "bench"): 64 -> 128 channels 0.84 ms swapped vs 0.63
// Conv's; 128 -> 256 0.67 vs 0.71; 256 -> 512 0.71 vs 0.85; the 7x7 stem (64) 1.6 vs 1.5.
// Reading patches in place (AVX-512), the swapped GEMM won on all four and the stem.
constexpr int64_t kMinPanelChannels = 256;

// 1x1, stride 1, no padding: Conv's kernel reads X in place as its GEMM's B (no patches).
bool pointwise(const Attrs& at, const Tensor& w) {
  std::string auto_pad = at.get_string("auto_pad", "NOTSET");
  return w.dim(2) == 1 && w.dim(3) == 1 && all_equal(at, "strides", 1) &&
         (auto_pad != "NOTSET" || all_equal(at, "pads", 0));
}

}  // namespace

int fuse_conv_packed(Graph& g, bool gathers) {
  Rewriter rw(g);
  const Uses& uses = rw.uses;
  for (size_t ci = 0; ci < g.nodes.size(); ci++) {
    const Node& conv = g.nodes[ci];
    if (conv.op != OpType::Conv || conv.inputs.size() < 2 || conv.outputs.size() != 1) continue;
    const Attrs& at = conv.attrs;
    if (at.has("precision") || at.get_int("group", 1) != 1) continue;
    const Tensor* w = constant(g, conv.inputs[1]);
    if (!w || w->dtype() != DType::F32 || w->shape().size() != 4 || pointwise(at, *w)) continue;
    const int64_t M = w->dim(0), K = w->dim(1) * w->dim(2) * w->dim(3);
    const std::vector<int64_t> kernel{w->dim(2), w->dim(3)};  // w is freed below
    if (M == 0 || K == 0 || K > (int64_t(1) << 28)) continue;  // conv_f32_supports' limit
    const bool has_bias = conv.inputs.size() > 2 && conv.inputs[2] >= 0;
    if (has_bias && !f32_vector_constant(g, conv.inputs[2], M)) continue;
    std::vector<int> absorbed = {(int)ci};
    int y = conv.outputs[0];
    std::string act = "none";
    int r = uses.single_reader(y);
    if (r >= 0 && g.nodes[r].op == OpType::Relu && rw.free({r})) {
      absorbed.push_back(r);
      y = g.nodes[r].outputs[0];
      act = "relu";
    }
    const int w_id = conv.inputs[1];
    int wid = w_id;
    if (gathers || M >= kMinPanelChannels) {
      Tensor wp = Tensor::empty(DType::F32, {ceil_div(M, cpu::kConvPanel), K, cpu::kConvPanel});
      cpu::conv_packed_weights_f32(w->ptr<float>(), M, K, wp.ptr<float>());
      wid = add_packed_weights(g, uses, w_id, "/packed", std::move(wp));
    }
    Node f;
    f.op = OpType::FusedConv;
    f.name = g.nodes[ci].name;
    f.inputs = {g.nodes[ci].inputs[0], wid};
    if (has_bias) f.inputs.push_back(g.nodes[ci].inputs[2]);
    f.outputs = {y};
    f.attrs = g.nodes[ci].attrs;
    f.attrs.set("m", M);
    f.attrs.set("kernel_shape", kernel);
    f.attrs.set("activation", act);
    rw.replace(absorbed, std::move(f));
  }
  return rw.finish();
}

}  // namespace ember
