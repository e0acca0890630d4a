// Generic (portable C++, auto-vectorised) fast CPU kernels, multithreaded on the shared pool.
// Each has its scalar reference in the OpDef row of its op (cpp/src/ops/); tests compare them.
// Registered in cpp/src/runtime/registry.cpp.
#pragma once
#include "ember/op.h"

namespace ember::cpu {

// ---- linalg (kernels/generic/gemm_f32.cpp, norm_f32.cpp) ----
// ---- elementwise (kernels/generic/elementwise_f32.cpp) ----
// ---- data movement (kernels/generic/movement.cpp) ----

}  // namespace ember::cpu
