// Host side of the CUDA attention kernels (cuda/kernels/attention.cu), no CUDA needed: the
// argument block from the op's geometry (batch dims merged), the choice of path and launch
// shape, and a CPU walk of the kernels' tile loop (attention_emulate) that the host tests
// compare against the reference, proving the online-softmax rescaling without a GPU.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/kernels/attention.h"
#include "ember/device.h"
#include "ops/attention_geom.h"

namespace ember::cuda {

enum class AttnPath : uint8_t { F32, F16, BF16 };

struct AttnPlan {
  bool ok = false;
  const char* why = "";      // why not, when !ok
  AttnPath path = AttnPath::F32;
  int rows = 0, keys = 0;    // query rows per block, keys per tile
  int head_pad = 0;          // tensor-core path: the kernel's head dim (D and Dv zero-padded)
  bool mma = false;          // tensor-core path: the mma.sync kernel (else the wmma one)
  int64_t q_tiles = 0;       // blocks per batch matrix, ceil(S / rows)
  int64_t blocks = 0;        // nbatch * q_tiles (a 1-D grid, a batch's blocks adjacent)
  size_t smem = 0;           // dynamic shared memory per block (bytes)
};

// The tensor-core kernel's head dim for D and Dv: the smallest of 32, 64, 80, 96, 128 holding
// both; 0 (no tensor-core path) when either is 0, not a multiple of 8, or over 128.
int attention_tc_head_pad(int64_t D, int64_t Dv);

// Fills a's sizes, row strides and batch dims from g (pointers, scale and div are the
// caller's). Batch dims of size 1 are dropped and neighbours that every operand steps through
// contiguously are merged; false when more than kAttnMaxBatchRank remain.
bool attention_args(const AttnGeom& g, AttnArgs* a);

// Which kernel runs `a` at this precision, and its launch shape. F16 / BF16 use tensor cores
// where attention_tc_head_pad allows and the shared memory fits `smem_limit` (the device's
// opt-in limit; 0: unknown, taken as 48 KiB), else the exact F32 kernel (D, Dv <= 256).
// Tensor cores run the mma.sync kernel where attn_mma_supports(a) (pointers included, when
// bound) unless EMBER_CUDA_ATTN_KERNEL is "wmma", else the
// wmma kernel.
AttnPlan attention_plan(const AttnArgs& a, Precision precision, size_t smem_limit);

// Runs the plan's tile loop on the CPU over host pointers in `a`, in fp32 (no fp16 rounding):
// blocks of plan.rows query rows, keys in tiles of plan.keys, the kernels' online softmax.
void attention_emulate(const AttnArgs& a, const AttnPlan& plan);

}  // namespace ember::cuda
