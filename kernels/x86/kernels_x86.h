// x86 kernels: raw-pointer functions compiled for one ISA each (*_avx2.cpp: -mavx2 -mfma
// -mf16c), and the baseline-compiled drivers that call them (KernelCtx in, threads on the
// shared pool). Only drivers are registered in cpp/src/runtime/registry.cpp; each ISA function
// has its scalar reference in the OpDef row of its op, and tests compare the two.
#pragma once
#include <cstdint>

#include "ember/op.h"

namespace ember::cpu {

// ---- GEMM micro-kernels (gemm_f32_avx2.cpp; driver in kernels/generic/gemm_f32.cpp) ----

// ---- elementwise and normalisation (elementwise_avx2.cpp; drivers in elementwise_x86.cpp) ----

}  // namespace ember::cpu
