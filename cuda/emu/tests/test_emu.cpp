// The emulated device itself (cuda/emu/emu.h): barriers, warps overtaking each other between
// them, shuffles, atomics, mma.sync and ldmatrix against fragment tables written here from the
// PTX ISA, cp.async landing only at its wait, and the errors (deadlock, misalignment, shared
// memory over the limit, __trap).
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/kernels/intrinsics.cuh"
#include "doctest/doctest.h"

using namespace ember::cuda;
using ember::cuda::emu::EmuError;

namespace {

// PTX m16n8k16 tables: lane = 4 g + c.
int a_row(int lane, int reg) { return lane / 4 + 8 * (reg % 2); }
int a_col(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * (reg / 2); }
int b_k(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * reg; }
int c_row(int lane, int r) { return lane / 4 + 8 * (r / 2); }
int c_col(int lane, int r) { return 2 * (lane % 4) + r % 2; }

__global__ void block_sum_kernel(const float* x, float* out) {
  __shared__ float part[256];
  part[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
  for (int s = 128; s > 0; s >>= 1) {
    __syncthreads();
    if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

__global__ void shuffle_kernel(const int* x, int* sum, int* bcast) {
  int v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  sum[threadIdx.x] = v;
  bcast[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 5 + threadIdx.x / 32);
}

template <class H>
__global__ void mma_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  const int lane = threadIdx.x;
  uint32_t af[4], bf[2];
  for (int r = 0; r < 4; r++)
    af[r] = a[a_row(lane, r) * 16 + a_col(lane, r, 0)] |
            (uint32_t)a[a_row(lane, r) * 16 + a_col(lane, r, 1)] << 16;
  for (int r = 0; r < 2; r++)
    bf[r] = b[b_k(lane, r, 0) * 8 + lane / 4] | (uint32_t)b[b_k(lane, r, 1) * 8 + lane / 4] << 16;
  float acc[4];
  for (int r = 0; r < 4; r++) acc[r] = c[c_row(lane, r) * 8 + c_col(lane, r)];
  mma_m16n8k16(H{}, acc, af, bf[0], bf[1]);
  for (int r = 0; r < 4; r++) d[c_row(lane, r) * 8 + c_col(lane, r)] = acc[r];
}

template <bool TRANS>
__global__ void ldmatrix_kernel(const uint16_t* m, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[4][8][8];
  for (int i = threadIdx.x; i < 256; i += 32) s[i / 64][i / 8 % 8][i % 8] = m[i];
  __syncwarp();
  uint32_t r[4];
  const int lane = threadIdx.x;
  if (TRANS)
    ldmatrix_x4_trans(r, &s[lane / 8][lane % 8][0]);
  else
    ldmatrix_x4(r, &s[lane / 8][lane % 8][0]);
  for (int i = 0; i < 4; i++) out[lane * 4 + i] = r[i];
}

__global__ void cp_async_kernel(const float* src, float* before, float* after) {
  EMBER_DYNAMIC_SMEM(float, s, 16);
  cp_async16(s + 4 * threadIdx.x, src + 4 * threadIdx.x);
  cp_async_commit();
  cp_async16(s + 128 + 4 * threadIdx.x, src + 4 * threadIdx.x, 8);  // 2 floats read, 2 zeroed
  cp_async_commit();
  before[threadIdx.x] = s[4 * threadIdx.x];
  cp_async_wait<1>();
  after[threadIdx.x] = s[4 * threadIdx.x];
  before[32 + threadIdx.x] = s[128 + 4 * threadIdx.x + 3];
  cp_async_wait<0>();
  after[32 + threadIdx.x] = s[128 + 4 * threadIdx.x + 3];
}

// Each warp reads its neighbour's slot, then rewrites its own: without the barrier between,
// a warp that runs ahead overwrites a slot its neighbour has yet to read.
template <bool BARRIER>
__global__ void neighbour_kernel(int* out) {  // [gridDim.x * blockDim.x]
  __shared__ int slot[4];
  const int w = threadIdx.x / 32, warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) slot[w] = w;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = slot[(w + 1) % warps];
  if (BARRIER) __syncthreads();
  if (threadIdx.x % 32 == 0) slot[w] = 100 + w;
}

__global__ void atomics_kernel(int* count,                 // [1]
                               unsigned long long* first,  // [1]
                               float* sum,                 // [1]
                               int* top) {                 // [1]
  atomicAdd(count, 1);
  atomicCAS(first, 0ull, (unsigned long long)(blockIdx.x * blockDim.x + threadIdx.x + 1));
  atomicAdd(sum, 0.5f);
  atomicMax(top, (int)(threadIdx.x * 7 % 61));
}

__global__ void divergent_kernel() {
  if (threadIdx.x % 32 < 16)
    __syncwarp();
  else
    __syncthreads();
}

__global__ void misaligned_kernel(const float* src) {
  __shared__ __align__(16) float s[8];
  cp_async16(s, src + 1);
  cp_async_commit();
  cp_async_wait<0>();
}

__global__ void trap_kernel(int* out) {
  __syncthreads();
  if (threadIdx.x == 3) __trap();
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void big_smem_kernel(int* out) {
  EMBER_DYNAMIC_SMEM(int, s, 16);
  s[threadIdx.x] = (int)threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = s[31 - threadIdx.x];
}

}  // namespace

TEST_CASE("emu: __syncthreads and static shared memory, block by block") {
  std::vector<float> x(3 * 256), out(3);
  for (size_t i = 0; i < x.size(); i++) x[i] = (float)(i % 17);
  EMBER_LAUNCH(block_sum_kernel, 3, 256, 0, nullptr)(x.data(), out.data());
  for (int b = 0; b < 3; b++) {
    float want = 0;
    for (int i = 0; i < 256; i++) want += x[b * 256 + i];
    CHECK(out[b] == want);
  }
}

TEST_CASE("emu: shuffles") {
  std::vector<int> x(64), sum(64), bcast(64);
  for (int i = 0; i < 64; i++) x[i] = i * i;
  EMBER_LAUNCH(shuffle_kernel, 1, 64, 0, nullptr)(x.data(), sum.data(), bcast.data());
  int w0 = 0, w1 = 0;
  for (int i = 0; i < 32; i++) w0 += x[i], w1 += x[32 + i];
  for (int i = 0; i < 64; i++) {
    CHECK(sum[i] == (i < 32 ? w0 : w1));
    CHECK(bcast[i] == (i < 32 ? x[5] : x[32 + 6]));
  }
}

TEST_CASE_TEMPLATE("emu: mma.sync m16n8k16 is D = A B + C", H, __half, __nv_bfloat16) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  auto bits = [](float v) {
    if constexpr (std::is_same_v<H, __half>)
      return __half_as_ushort(__float2half_rn(v));
    else
      return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  };
  auto value = [](uint16_t b) {
    if constexpr (std::is_same_v<H, __half>)
      return __half2float(__ushort_as_half(b));
    else
      return __bfloat162float(__ushort_as_bfloat16(b));
  };
  std::vector<uint16_t> a(256), b(128);
  std::vector<float> c(128), d(128);
  for (auto& v : a) v = bits(dist(gen));
  for (auto& v : b) v = bits(dist(gen));
  for (auto& v : c) v = dist(gen);
  EMBER_LAUNCH(mma_kernel<H>, 1, 32, 0, nullptr)(a.data(), b.data(), c.data(), d.data());
  double worst = 0;
  for (int i = 0; i < 16; i++)
    for (int j = 0; j < 8; j++) {
      double want = c[i * 8 + j];
      for (int k = 0; k < 16; k++) want += (double)value(a[i * 16 + k]) * value(b[k * 8 + j]);
      worst = std::max(worst, std::fabs(d[i * 8 + j] - want));
    }
  CHECK(worst < 1e-4);
}

TEST_CASE("emu: ldmatrix x4 and x4.trans") {
  std::vector<uint16_t> m(256);
  for (int i = 0; i < 256; i++) m[i] = (uint16_t)(1000 + i);
  std::vector<uint32_t> plain(128), trans(128);
  EMBER_LAUNCH(ldmatrix_kernel<false>, 1, 32, 0, nullptr)(m.data(), plain.data());
  EMBER_LAUNCH(ldmatrix_kernel<true>, 1, 32, 0, nullptr)(m.data(), trans.data());
  auto at = [&](int mat, int r, int c) { return (uint32_t)m[mat * 64 + r * 8 + c]; };
  for (int lane = 0; lane < 32; lane++)
    for (int i = 0; i < 4; i++) {
      const int g = lane / 4, c = lane % 4;
      CHECK(plain[lane * 4 + i] == (at(i, g, 2 * c) | at(i, g, 2 * c + 1) << 16));
      CHECK(trans[lane * 4 + i] == (at(i, 2 * c, g) | at(i, 2 * c + 1, g) << 16));
    }
}

TEST_CASE("emu: cp.async lands at the wait that covers it, src-size zero-fills") {
  std::vector<float> src(128), before(64), after(64);
  for (int i = 0; i < 128; i++) src[i] = (float)i + 0.5f;
  EMBER_LAUNCH(cp_async_kernel, 1, 32, 256 * sizeof(float), nullptr)(src.data(), before.data(),
                                                                     after.data());
  for (int t = 0; t < 32; t++) {
    CHECK(std::isnan(before[t]));  // shared memory starts as NaN bytes
    CHECK(after[t] == src[4 * t]);
    CHECK(std::isnan(before[32 + t]));
    CHECK(after[32 + t] == 0.0f);
  }
}

TEST_CASE("emu: warps overtake each other between barriers, both ways") {
  // Blocks 0 and 1 run their warps in opposite orders: a missing barrier shows in one of them.
  std::vector<int> out(2 * 128);
  auto* racy = neighbour_kernel<false>;
  auto* safe = neighbour_kernel<true>;
  EMBER_LAUNCH(safe, 2, 128, 0, nullptr)(out.data());
  for (int i = 0; i < 256; i++) CHECK(out[i] == (i % 128 / 32 + 1) % 4);
  EMBER_LAUNCH(racy, 2, 128, 0, nullptr)(out.data());
  int wrong[2] = {0, 0};
  for (int i = 0; i < 256; i++) wrong[i / 128] += out[i] != (i % 128 / 32 + 1) % 4;
  CHECK(wrong[0] > 0);
  CHECK(wrong[1] > 0);
}

TEST_CASE("emu: atomics return the old value and see every thread") {
  int count = 0, top = -1;
  unsigned long long first = 0;
  float sum = 0.0f;
  EMBER_LAUNCH(atomics_kernel, 3, 96, 0, nullptr)(&count, &first, &sum, &top);
  CHECK(count == 3 * 96);
  CHECK(first == 1);  // the first thread to run, and the only one to swap
  CHECK(sum == 0.5f * 3 * 96);
  CHECK(top == 60);
}

TEST_CASE("emu: deadlocks, misaligned copies, traps and oversized shared memory are errors") {
  CHECK_THROWS_WITH_AS(EMBER_LAUNCH(divergent_kernel, 1, 64, 0, nullptr)(),
                       doctest::Contains("deadlock"), EmuError);
  std::vector<float> src(16);
  CHECK_THROWS_WITH_AS(EMBER_LAUNCH(misaligned_kernel, 1, 32, 0, nullptr)(src.data()),
                       doctest::Contains("aligned"), EmuError);
  std::vector<int> out(64, 0);
  CHECK_THROWS_WITH_AS(EMBER_LAUNCH(trap_kernel, 2, 64, 0, nullptr)(out.data()),
                       doctest::Contains("__trap"), EmuError);
  for (int v : out) CHECK(v == 0);  // the block stopped at its barrier
  CHECK_THROWS_WITH_AS(EMBER_LAUNCH(big_smem_kernel, 1, 32, 64 * 1024, nullptr)(out.data()),
                       doctest::Contains("dynamic shared memory"), EmuError);
  cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
  EMBER_LAUNCH(big_smem_kernel, 1, 32, 64 * 1024, nullptr)(out.data());
  for (int t = 0; t < 32; t++) CHECK(out[t] == 31 - t);
}
