// Launch shapes shared by the grid-stride kernels (conv.cu, movement.cu): 256 threads a block,
// at most 2^20 blocks; the loops cover the rest and count in int64 (2^20 * 256 = 2^28 steps).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ember::cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

inline int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return (int)(b < kMaxBlocks ? b : kMaxBlocks);
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace ember::cuda
