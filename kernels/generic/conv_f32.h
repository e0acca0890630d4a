// Conv geometry (shared by the references in cpp/src/ops/ops_conv.cpp and the fast kernel)
// and the generic f32 Conv kernel (kernels/generic/conv_f32.cpp).
#pragma once
#include "ember/op.h"
#include "kernels/generic/kernels_generic.h"

namespace ember {

// Conv / ConvTranspose geometry with the spatial dims padded to three (leading dims of 1,
// stride 1, no pad), so one loop nest serves 1-D, 2-D and 3-D.
struct ConvGeom {
  int nsp = 0;                          // spatial dims in the model (1..3)
  int64_t N = 0, C = 0, M = 0, G = 1;   // batch, input channels, output channels, groups
  int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, out[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, dil[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};           // leading pad; negative for some ConvTranspose outputs
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
};

// Checks X [N, C, spatial...], W (Conv: [M, C/group, k...]; ConvTranspose: [C, M/group, k...])
// and every attribute of ctx.node (overflow-checked); fails via ctx. Defined in ops_conv.cpp.
ConvGeom conv_geom(const InferCtx& ctx, const Shape& x, const Shape& w, bool transpose);

}  // namespace ember

namespace ember::cpu {

// Conv, f32: depthwise (group == C == M) runs a direct kernel over (batch, channel) planes;
// otherwise sgemm per (batch, group) with input patches packed straight into its B panels (im2col
// for patch matrices up to 2^18 floats; X read in place for 1x1, stride 1, no pad).
bool conv_f32_supports(const InferCtx& ctx);  // C/group x kernel taps stays under 2^28
void conv_f32(const KernelCtx& ctx);
// The GEMMs on `micro`; `act` (optional: FusedConv's relu) applied in place to each finished
// output row after the bias.
void conv_f32_with(const KernelCtx& ctx, const GemmMicro& micro,
                   void (*act)(const float* x, float* y, int64_t n) = nullptr);

}  // namespace ember::cpu
