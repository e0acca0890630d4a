// A caching device allocator: cudaMalloc and cudaFree synchronise the device and cost tens
// of microseconds, so freed blocks are kept by size and handed out again. Every block is used
// on one stream (the device's), so a block freed after its last launch is safe to reuse for
// any later launch: stream order does the rest. Host logic only (raw alloc/free are
// injected), tested without a GPU in cuda/tests/test_allocator.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ember::cuda {

struct AllocatorStats {
  size_t in_use = 0;      // bytes handed out (rounded sizes)
  size_t cached = 0;      // bytes held free for reuse
  size_t peak = 0;        // most in_use + cached held at once
  int64_t raw_allocs = 0, raw_frees = 0, hits = 0;
};

class CachingAllocator {
 public:
  // raw_alloc returns nullptr when the device is out of memory.
  CachingAllocator(std::function<void*(size_t)> raw_alloc, std::function<void(void*)> raw_free)
      : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}
  ~CachingAllocator() { release_cached(); }

  // Sizes round up to 512 B below 1 MiB and to 2 MiB above, so blocks are reused across
  // nearby sizes. A cached block serves a request when it is at most twice its size.
  static size_t round_size(size_t bytes);
  // A block of at least `bytes` (256-byte aligned as cudaMalloc gives); nullptr when even
  // after returning every cached block to the device there is no room.
  void* alloc(size_t bytes);
  void free(void* p);
  // Returns every cached block to the device.
  void release_cached();
  AllocatorStats stats() const;

 private:
  std::function<void*(size_t)> raw_alloc_;
  std::function<void(void*)> raw_free_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;            // rounded size -> cached block
  std::unordered_map<void*, size_t> live_;       // handed-out block -> rounded size
  AllocatorStats stats_;
};

}  // namespace ember::cuda
