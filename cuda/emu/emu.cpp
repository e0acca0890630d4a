// The emulation's scheduler (cuda/emu/emu.h): a block's threads are ucontext fibers, run a warp
// at a time (lanes in order) until each reaches a barrier or returns; a barrier opens when
// every live thread of its scope (block, or warp) waits at one. Nothing else switches threads,
// so a run is deterministic, and a state where no barrier can open is a reported deadlock.
#include "cuda/emu/emu.h"

#include <ucontext.h>

#include <algorithm>
#include <array>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/emu/intrinsics_emu.h"

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace ember::cuda::emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // sm_90's opt-in limit per block
constexpr size_t kDefaultDynamicSmem = 48 * 1024;

enum class State { Ready, AtBlock, AtWarp, Done };

struct Copy {
  void* dst;
  const void* src;
  int size, src_bytes;
};

struct Fiber {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  State state = State::Ready;
  bool started = false;                   // resumed at least once (has frames to unwind)
  std::vector<Copy> open;                 // cp.async since the last commit
  std::deque<std::vector<Copy>> pending;  // committed groups, oldest first
};

struct BlockRun {
  ucontext_t sched{};
  std::vector<Fiber> fibers;
  int cur = 0;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
  std::vector<std::array<unsigned char, 64>> slots;  // [threads] warp exchange
  std::vector<unsigned char> smem;
};

thread_local BlockRun* g_run = nullptr;
thread_local BlockOrder g_block_order = BlockOrder::Forward;
std::map<const void*, int>& max_smem() {
  static std::map<const void*, int> m;
  return m;
}

BlockRun& run() {
  if (!g_run) throw EmuError("a device intrinsic was called outside an emulated launch");
  return *g_run;
}

void set_thread_index(int tid) {
  threadIdx =
      make_uint3(tid % blockDim.x, tid / blockDim.x % blockDim.y, tid / (blockDim.x * blockDim.y));
}

void fiber_main() {
  BlockRun& r = *g_run;
  try {
    (*r.body)();
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  r.fibers[r.cur].state = State::Done;
  swapcontext(&r.fibers[r.cur].ctx, &r.sched);
}

// Parks the running thread at a barrier. Once a thread of the block has failed, every other one
// throws at its next barrier instead, which unwinds its frames.
void wait_at(State s) {
  BlockRun& r = run();
  if (r.error) throw EmuError("another thread of the block failed");
  Fiber& f = r.fibers[r.cur];
  f.state = s;
  swapcontext(&f.ctx, &r.sched);
  if (r.error) throw EmuError("another thread of the block failed");
}

std::string describe(const BlockRun& r) {
  std::ostringstream os;
  os << "deadlock in block (" << blockIdx.x << ", " << blockIdx.y << ", " << blockIdx.z << "):";
  const char* names[] = {"ready", "__syncthreads", "warp collective", "done"};
  for (size_t t = 0; t < r.fibers.size(); t += 32) {
    os << " warp " << t / 32 << " [";
    for (size_t l = t; l < std::min(t + 32, r.fibers.size()); l++)
      os << (l > t ? " " : "") << names[(int)r.fibers[l].state][0];
    os << "]";
  }
  os << " (r ready, _ __syncthreads, w warp collective, d done)";
  return os.str();
}

// Opens the block barrier when every live thread waits at it.
bool release_block(BlockRun& r) {
  bool any_live = false;
  for (const Fiber& f : r.fibers) {
    if (f.state == State::Done) continue;
    if (f.state != State::AtBlock) return false;
    any_live = true;
  }
  for (Fiber& f : r.fibers)
    if (f.state == State::AtBlock) f.state = State::Ready;
  return any_live;
}

// Opens warp w's barrier when every live lane of it waits at one.
bool release_warp(BlockRun& r, int w) {
  const int end = std::min(32 * w + 32, (int)r.fibers.size());
  bool any_live = false;
  for (int l = 32 * w; l < end; l++) {
    if (r.fibers[l].state == State::Done) continue;
    if (r.fibers[l].state != State::AtWarp) return false;
    any_live = true;
  }
  for (int l = 32 * w; l < end; l++)
    if (r.fibers[l].state == State::AtWarp) r.fibers[l].state = State::Ready;
  return any_live;
}

void resume(BlockRun& r, int t) {
  r.cur = t;
  set_thread_index(t);
  r.fibers[t].started = true;
  swapcontext(&r.sched, &r.fibers[t].ctx);
}

// Runs warp w as far as it can go: its ready lanes to their next barrier, its collectives as
// they complete, until every lane has returned or waits at __syncthreads (or the warp is stuck).
// Whether any lane ran.
bool run_warp(BlockRun& r, int w) {
  const int end = std::min(32 * w + 32, (int)r.fibers.size());
  bool ran = false;
  do {
    for (int t = 32 * w; t < end && !r.error; t++) {
      if (r.fibers[t].state != State::Ready) continue;
      resume(r, t);
      ran = true;
    }
  } while (!r.error && release_warp(r, w));
  return ran;
}

void run_block(BlockRun& r) {
  const int n = (int)r.fibers.size(), warps = (n + 31) / 32;
  for (int t = 0; t < n; t++) {
    Fiber& f = r.fibers[t];
    f.state = State::Ready;
    f.started = false;
    f.open.clear();
    f.pending.clear();
    if (!f.stack) f.stack.reset(new char[kStackBytes]);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  // Shared memory starts as NaN bytes: a read before a write shows.
  std::fill(r.smem.begin(), r.smem.end(), (unsigned char)0xff);
  // Between two __syncthreads the warps run one at a time, each as far as it can go, first to
  // last in one phase and last to first in the next (the block index shifts the pattern), as
  // real warps may overtake each other: a missing barrier shows whichever side it guards, a
  // read before the write it needs or a write over data another warp has yet to read.
  int phase = (int)(blockIdx.x + blockIdx.y + blockIdx.z);
  for (;;) {
    bool ran = false;
    for (int k = 0; k < warps && !r.error; k++)
      ran = run_warp(r, phase % 2 ? warps - 1 - k : k) || ran;
    if (r.error) {
      // Unwind the fibers parked at barriers so their frames are destroyed (each throws there);
      // ones that never started have none.
      for (int t = 0; t < n; t++)
        if (r.fibers[t].started && r.fibers[t].state != State::Done) resume(r, t);
      std::rethrow_exception(r.error);
    }
    if (release_block(r)) {
      phase++;
      continue;
    }
    if (ran) continue;
    bool all_done = true;
    for (const Fiber& f : r.fibers) all_done = all_done && f.state == State::Done;
    if (all_done) return;
    throw EmuError(describe(r));
  }
}

}  // namespace

void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem,
              const std::function<void()>& body) {
  if (g_run) throw EmuError("a launch from inside an emulated kernel");
  const size_t threads = (size_t)block.x * block.y * block.z;
  if (threads == 0 || threads > 1024)
    throw EmuError("block of " + std::to_string(threads) + " threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw EmuError("bad grid");
  auto it = max_smem().find(kernel);
  const size_t limit = it == max_smem().end() ? kDefaultDynamicSmem : (size_t)it->second;
  if (smem > limit || smem > kMaxDynamicSmem)
    throw EmuError("launch asks for " + std::to_string(smem) +
                   " bytes of dynamic shared memory; the kernel may use " +
                   std::to_string(std::min(limit, kMaxDynamicSmem)));
  BlockRun r;
  r.body = &body;
  r.fibers.resize(threads);
  r.slots.resize(threads);
  r.smem.assign(smem, 0);
  blockDim = block;
  gridDim = grid;
  g_run = &r;
  try {
    const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t n = 0; n < blocks; n++) {
      const uint64_t i = g_block_order == BlockOrder::Forward ? n : blocks - 1 - n;
      blockIdx = make_uint3((unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y),
                            (unsigned)(i / grid.x / grid.y));
      run_block(r);
    }
  } catch (...) {
    g_run = nullptr;
    throw;
  }
  g_run = nullptr;
}

void set_block_order(BlockOrder order) { g_block_order = order; }

void block_barrier() { wait_at(State::AtBlock); }
void warp_barrier() { wait_at(State::AtWarp); }
int lane_id() { return run().cur % 32; }
unsigned char* warp_slot(int lane) {
  BlockRun& r = run();
  return r.slots[r.cur / 32 * 32 + lane].data();
}
unsigned char* dynamic_smem() {
  BlockRun& r = run();
  return r.smem.empty() ? nullptr : r.smem.data();
}

void check_aligned(const void* p, int bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % bytes)
    throw EmuError(std::string(what) + " is not " + std::to_string(bytes) + "-byte aligned");
}

void cp_async(void* dst, const void* src, int size, int src_bytes) {
  check_aligned(dst, size, "cp.async destination");
  check_aligned(src, size, "cp.async source");
  if (src_bytes < 0 || src_bytes > size) throw EmuError("cp.async src-size out of range");
  BlockRun& r = run();
  r.fibers[r.cur].open.push_back({dst, src, size, src_bytes});
}
void cp_async_commit() {
  Fiber& f = run().fibers[run().cur];
  f.pending.push_back(std::move(f.open));
  f.open.clear();
}
void cp_async_wait(int newest_pending) {
  Fiber& f = run().fibers[run().cur];
  while ((int)f.pending.size() > newest_pending) {
    for (const Copy& c : f.pending.front()) {
      std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
      std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, (size_t)(c.size - c.src_bytes));
    }
    f.pending.pop_front();
  }
}

void set_max_dynamic_smem(const void* kernel, int bytes) { max_smem()[kernel] = bytes; }

}  // namespace ember::cuda::emu

cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
// An H100/H200-like part, so plans size their grids as on the device.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; return cudaSuccess;
    default: *value = 0; return cudaErrorInvalidValue;
  }
}
