// The PTX the kernels use through inline asm, one wrapper each, and the launch syntax:
// mma.sync m16n8k16 (fp16, bf16), ldmatrix x4 (and .trans), cp.async and its groups. Under
// the CPU emulation (EMBER_CUDA_EMU, cuda/emu/emu.h) each has a C++ version built from the PTX
// ISA's fragment tables, so the same kernel source runs in CI without a GPU.
//
// m16n8k16 fragments (PTX ISA "Matrix Fragments for mma.m16n8k16"), lane = 4 g + c, each
// 32-bit register two 16-bit values, lower index in the low half:
//   A 16x16: a0 (row g, cols 2c, 2c+1), a1 (g + 8, 2c..), a2 (g, 2c + 8..), a3 (g + 8, 2c + 8..)
//   B 16x8:  b0 (k 2c, 2c+1; n g), b1 (k 2c + 8, 2c + 9; n g)
//   C 16x8 fp32: c0, c1 (row g, cols 2c, 2c+1), c2, c3 (g + 8, same cols)
// ldmatrix .x4: lanes 8i .. 8i + 7 give the 16-byte rows of matrix i; register i gets matrix
// i's (row g, cols 2c, 2c+1), or with .trans (rows 2c, 2c+1; col g).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#ifdef EMBER_CUDA_EMU
#include "cuda/emu/intrinsics_emu.h"
#else

namespace ember::cuda {

// d += a b (fp32 accumulation); the first argument picks the 16-bit type.
__device__ __forceinline__ void mma_m16n8k16(__half, float d[4], const uint32_t a[4], uint32_t b0,
                                             uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_m16n8k16(__nv_bfloat16, float d[4], const uint32_t a[4],
                                             uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"((uint32_t)__cvta_generic_to_shared(row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"((uint32_t)__cvta_generic_to_shared(row))
               : "memory");
}

// 16 bytes from global src to shared dst, bypassing L1: the first src_bytes read, the rest 0.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :
               : "r"((uint32_t)__cvta_generic_to_shared(dst)), "l"(src), "r"(src_bytes)
               : "memory");
}
// 4 bytes from global src to shared dst (through L1: .cg takes 16-byte copies only).
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;"
               :
               : "r"((uint32_t)__cvta_generic_to_shared(dst)), "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
// Waits until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

}  // namespace ember::cuda

#define EMBER_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
// Dynamic shared memory of a kernel: `type name[]`, aligned to `align` bytes.
#define EMBER_DYNAMIC_SMEM(type, name, align) extern __shared__ __align__(align) type name[]

#endif  // EMBER_CUDA_EMU
