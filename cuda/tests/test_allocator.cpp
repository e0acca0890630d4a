// The caching allocator's policy on a fake raw allocator (host memory, a byte budget).
#include <cstdlib>
#include <map>

#include "cuda/src/allocator.h"
#include "doctest/doctest.h"

using ember::cuda::CachingAllocator;

namespace {

struct Budget {
  size_t left;
  std::map<void*, size_t> live;
  CachingAllocator make() {
    return CachingAllocator(
        [this](size_t n) -> void* {
          if (n > left) return nullptr;
          left -= n;
          void* p = std::malloc(n);
          live[p] = n;
          return p;
        },
        [this](void* p) {
          left += live.at(p);
          live.erase(p);
          std::free(p);
        });
  }
};

}  // namespace

TEST_CASE("caching allocator: rounding") {
  CHECK(CachingAllocator::round_size(0) == 512);
  CHECK(CachingAllocator::round_size(1) == 512);
  CHECK(CachingAllocator::round_size(513) == 1024);
  CHECK(CachingAllocator::round_size((1u << 20) - 1) == (1u << 20));
  CHECK(CachingAllocator::round_size(1u << 20) == (2u << 20));
  CHECK(CachingAllocator::round_size((2u << 20) + 1) == (4u << 20));
}

TEST_CASE("caching allocator: reuse, size limits and stats") {
  Budget b{1u << 30, {}};
  {
    CachingAllocator a = b.make();
    void* p = a.alloc(1000);
    a.free(p);
    CHECK(a.alloc(900) == p);  // same rounded size: a hit
    void* q = a.alloc(100);    // a 512-byte block is not served by a cached 1024 one in use
    CHECK(q != p);
    a.free(p);
    a.free(q);
    void* big = a.alloc(4000);  // 4096 > 2 x 1024: no cached block fits
    CHECK(big != p);
    CHECK(a.stats().hits == 1);
    CHECK(a.stats().raw_allocs == 3);
    CHECK(a.stats().in_use == 4096);
    CHECK(a.stats().cached == 1024 + 512);
    a.free(big);
    a.free(big);  // a second free is ignored
    CHECK(a.stats().cached == 1024 + 512 + 4096);
    a.release_cached();
    CHECK(a.stats().cached == 0);
    CHECK(b.live.empty());
  }
  CHECK(b.live.empty());
}

TEST_CASE("caching allocator: out of memory releases the cache, then fails") {
  Budget b{8u << 20, {}};
  CachingAllocator a = b.make();
  void* p = a.alloc(6u << 20);
  REQUIRE(p);
  a.free(p);                      // cached, still counted against the budget
  void* q = a.alloc(3u << 20);    // rounds to 4 MiB: the cached 6 MiB block is within 2x
  CHECK(q == p);
  a.free(q);
  void* r = a.alloc(2u << 20);    // 2 MiB: the 6 MiB block is more than twice: raw alloc
  REQUIRE(r);
  a.free(r);
  void* s = a.alloc(7u << 20);    // 8 MiB rounded: only fits after the cache is released
  CHECK(s != nullptr);
  CHECK(a.stats().cached == 0);
  CHECK(a.alloc(1u << 20) == nullptr);  // budget gone, nothing cached
  a.free(s);
}
