// KVCacheManager (kv_cache_manager.h): block lists per request, exact prefix-cache hits.
#include "llm/kv_cache_manager.h"

#include <algorithm>
#include <cstring>

#include "ember/error.h"

namespace ember::llm {
namespace {

constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;  // parent hash of a request's first block

uint64_t mix64(uint64_t z) {  // splitmix64's finalizer: a bijection with full avalanche
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

KVCacheManager::KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : pool_(num_blocks), block_size_(block_size), caching_(enable_prefix_caching) {
  EMBER_CHECK(block_size >= 1, Input, "[kv_cache] block_size must be >= 1, got ", block_size);
  if (caching_) {
    block_tokens_.resize((size_t)num_blocks * block_size);
    block_parent_.assign(num_blocks, -1);
    block_parent_gen_.assign(num_blocks, 0);
  }
}

uint64_t KVCacheManager::block_hash(uint64_t parent, const int32_t* tokens) const {
  uint64_t h = mix64(parent ^ 0x3c6ef372fe94f82bull);
  for (int32_t i = 0; i < block_size_; ++i)
    h = mix64(h + 0x9e3779b97f4a7c15ull * ((uint64_t)(uint32_t)tokens[i] + 1));
  return h;
}

bool KVCacheManager::same_block(int32_t b, const int32_t* tokens, int32_t parent,
                                uint64_t parent_gen) const {
  return block_parent_[b] == parent && block_parent_gen_[b] == parent_gen &&
         std::memcmp(&block_tokens_[(size_t)b * block_size_], tokens,
                     sizeof(int32_t) * block_size_) == 0;
}

PrefixHit KVCacheManager::find_cached_prefix(const std::vector<int32_t>& tokens) const {
  PrefixHit hit;
  hit.num_query_tokens = (int32_t)tokens.size();
  if (!caching_ || tokens.empty()) return hit;
  const int32_t max_blocks = ((int32_t)tokens.size() - 1) / block_size_;
  uint64_t h = kRootHash;
  int32_t parent = -1;
  uint64_t parent_gen = 0;
  for (int32_t k = 0; k < max_blocks; ++k) {
    const int32_t* t = tokens.data() + (size_t)k * block_size_;
    h = block_hash(h, t);
    const int32_t b = pool_.find(h);
    if (b < 0 || !same_block(b, t, parent, parent_gen)) break;
    hit.blocks.push_back(b);
    hit.last_hash = h;
    parent = b;
    parent_gen = pool_.generation(b);
  }
  hit.num_tokens = (int32_t)hit.blocks.size() * block_size_;
  return hit;
}

bool KVCacheManager::allocate_slots(int64_t id, int32_t num_tokens, const PrefixHit* hit) {
  auto it = reqs_.find(id);
  const bool fresh = it == reqs_.end();
  const bool use_hit = fresh && hit && !hit->blocks.empty();
  const int32_t have = fresh ? (use_hit ? (int32_t)hit->blocks.size() : 0)
                             : (int32_t)it->second.blocks.size();
  const int32_t need = (num_tokens + block_size_ - 1) / block_size_;
  const int32_t add = std::max(0, need - have);
  // Cached blocks that are free count against the free list once taken.
  int32_t revived = 0;
  if (use_hit)
    for (int32_t b : hit->blocks) revived += pool_.ref_count(b) == 0;
  if (add + revived > pool_.num_free()) return false;

  if (fresh) {
    Entry e;
    if (use_hit) {
      // Take the hit first so allocate() cannot evict one of its blocks.
      for (int32_t b : hit->blocks) pool_.take(b);
      e.blocks = hit->blocks;
      e.num_hashed = (int32_t)hit->blocks.size();
      e.chain = hit->last_hash;
      e.parent = hit->blocks.back();
      e.parent_gen = pool_.generation(e.parent);
    }
    if (hit && caching_) {
      query_tokens_ += hit->num_query_tokens;
      hit_tokens_ += use_hit ? hit->num_tokens : 0;
    }
    it = reqs_.emplace(id, std::move(e)).first;
  }
  pool_.allocate(add, &it->second.blocks);
  return true;
}

void KVCacheManager::cache_blocks(int64_t id, const std::vector<int32_t>& tokens,
                                  int32_t num_computed) {
  if (!caching_) return;
  auto it = reqs_.find(id);
  if (it == reqs_.end()) return;
  Entry& e = it->second;
  const int32_t full = std::min(num_computed / block_size_, (int32_t)e.blocks.size());
  EMBER_CHECK(full * block_size_ <= (int32_t)tokens.size(), Internal, "[kv_cache] request ", id,
              " has ", tokens.size(), " tokens, ", num_computed, " computed");
  for (int32_t k = e.num_hashed; k < full; ++k) {
    const int32_t* t = tokens.data() + (size_t)k * block_size_;
    const uint64_t h = block_hash(e.num_hashed ? e.chain : kRootHash, t);
    const int32_t b = e.blocks[k];
    int32_t known = pool_.find(h);
    if (known >= 0 && !same_block(known, t, e.parent, e.parent_gen)) {
      known = b;  // a hash collision: b stays unregistered, so its children are never hit
    } else if (known < 0) {
      pool_.set_hash(b, h);
      std::memcpy(&block_tokens_[(size_t)b * block_size_], t, sizeof(int32_t) * block_size_);
      block_parent_[b] = e.parent;
      block_parent_gen_[b] = e.parent_gen;
      known = b;
    }
    // `known` may be another request's copy of this block (both computed it in the same
    // step): chain the children to the registered copy so they can be hit through it.
    e.parent = known;
    e.parent_gen = pool_.generation(known);
    e.chain = h;
    e.num_hashed = k + 1;
  }
}

void KVCacheManager::free(int64_t id) {
  auto it = reqs_.find(id);
  if (it == reqs_.end()) return;
  pool_.release(it->second.blocks);
  reqs_.erase(it);
}

const std::vector<int32_t>& KVCacheManager::blocks(int64_t id) const {
  static const std::vector<int32_t> none;
  auto it = reqs_.find(id);
  return it == reqs_.end() ? none : it->second.blocks;
}

}  // namespace ember::llm
