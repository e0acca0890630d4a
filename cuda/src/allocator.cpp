#include "cuda/src/allocator.h"

#include <algorithm>

namespace ember::cuda {

size_t CachingAllocator::round_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = 2u << 20, kLargeFrom = 1u << 20;
  bytes = std::max<size_t>(bytes, 1);
  size_t unit = bytes < kLargeFrom ? kSmall : kLarge;
  return (bytes + unit - 1) / unit * unit;
}

void* CachingAllocator::alloc(size_t bytes) {
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= 2 * size) {
    void* p = it->second;
    size_t got = it->first;
    free_.erase(it);
    stats_.cached -= got;
    stats_.in_use += got;
    stats_.hits++;
    live_[p] = got;
    return p;
  }
  void* p = raw_alloc_(size);
  if (!p && !free_.empty()) {  // out of memory: give the cache back and try once more
    for (auto& [s, q] : free_) {
      raw_free_(q);
      stats_.raw_frees++;
    }
    free_.clear();
    stats_.cached = 0;
    p = raw_alloc_(size);
  }
  if (!p) return nullptr;
  stats_.raw_allocs++;
  stats_.in_use += size;
  stats_.peak = std::max(stats_.peak, stats_.in_use + stats_.cached);
  live_[p] = size;
  return p;
}

void CachingAllocator::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return;
  size_t size = it->second;
  live_.erase(it);
  stats_.in_use -= size;
  stats_.cached += size;
  free_.emplace(size, p);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [s, p] : free_) {
    raw_free_(p);
    stats_.raw_frees++;
  }
  free_.clear();
  stats_.cached = 0;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace ember::cuda
