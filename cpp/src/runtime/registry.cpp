// CPU kernel registry: every fast CPU kernel, one line each, best first within an op.
// A node runs the first entry whose op and dtype match, whose ISA this CPU has, and whose
// `supports` (if any) accepts the node; otherwise its OpDef reference kernel.
#include "runtime/registry.h"

#include <cstdlib>
#include <cstring>

#include "kernels/generic/kernels_generic.h"

namespace ember {
namespace {

using namespace cpu;

const KernelEntry kCpuKernels[] = {
    // ---- linalg ----
    // ---- elementwise ----
    // ---- data movement ----
    {OpType::Count, DType::Count, Isa::Generic, nullptr, "end"},
};

}  // namespace

const char* isa_name(Isa isa) {
  static const char* names[] = {"generic", "avx2", "avx512", "neon"};
  return names[(int)isa];
}

Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::Generic;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      best = Isa::Avx512;
#elif defined(__aarch64__)
    best = Isa::Neon;
#endif
    if (const char* env = std::getenv("EMBER_CPU_ISA")) {
      for (int i = 0; i < (int)Isa::Count; i++) {
        if (std::strcmp(env, isa_name((Isa)i)) == 0 && i < (int)best) best = (Isa)i;
      }
    }
    return best;
  }();
  return isa;
}

const KernelEntry* cpu_kernel_find(const InferCtx& ctx, Isa max_isa) {
  DType dtype = ctx.num_inputs() > 0 ? ctx.in[0].dtype : DType::Count;
  for (const KernelEntry& e : kCpuKernels) {
    if (e.fn == nullptr || e.op != ctx.node.op || e.dtype != dtype || e.isa > max_isa) continue;
    if (e.supports && !e.supports(ctx)) continue;
    return &e;
  }
  return nullptr;
}

}  // namespace ember
