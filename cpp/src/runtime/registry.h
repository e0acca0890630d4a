// The CPU kernel registry: one table (registry.cpp), one line per fast kernel. The planner
// asks for the best kernel for a node at its plan-time types; nodes without one run their
// OpDef reference kernel.
#pragma once
#include "ember/op.h"

namespace ember {

enum class Isa : uint8_t { Generic, Avx2, Avx512, Neon, Count };

const char* isa_name(Isa isa);
// Best ISA this CPU supports (cpuid with the OS check on x86, HWCAP on ARM), lowered by
// EMBER_CPU_ISA when set.
Isa cpu_isa();

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
