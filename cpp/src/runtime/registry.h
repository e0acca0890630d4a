// The CPU kernel registry: one table (registry.cpp), one line per fast kernel. The planner
// asks for the best kernel for a node at its plan-time types; nodes without one run their
// OpDef reference kernel.
#pragma once
#include "ember/op.h"

namespace ember {

// x86 levels: Avx2 = AVX2 + FMA + F16C; Avx512 = AVX-512 F/BW/VL/DQ with VNNI (Ice Lake,
// Zen 4 and later; Skylake-X, without VNNI, takes the Avx2 rows); Avx512Bf16 adds AVX512_BF16
// (Cooper Lake, Sapphire Rapids, Zen 4 and later). Each level implies the ones below it.
enum class Isa : uint8_t { Generic, Avx2, Avx512, Avx512Bf16, Neon, Count };

const char* isa_name(Isa isa);
// Best ISA this CPU supports (cpuid with the OS check on x86, HWCAP on ARM), lowered by
// EMBER_CPU_ISA when set.
Isa cpu_isa();
// Whether cpu_isa() has bf16 dot products with fp32 accumulation, which precision="bf16" uses
// (x86: Avx512Bf16; levels of other CPU families never count).
bool cpu_bf16_dot();

struct KernelEntry {
  OpType op;
  DType dtype;           // dtype of input 0
  Isa isa;               // lowest ISA it needs
  KernelFn fn;
  const char* name;
  // Optional: whether the kernel handles this node at these types and shapes.
  bool (*supports)(const InferCtx& ctx) = nullptr;
};

// nullptr where no registered kernel applies (the caller uses the OpDef reference).
const KernelEntry* cpu_kernel_find(const InferCtx& ctx, Isa max_isa);

}  // namespace ember
