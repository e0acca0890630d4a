// KVCacheManager: each request's block list over a BlockPool, and automatic prefix caching.
//
// Prefix cache: a full block whose tokens have been computed is registered under
// hash(parent's hash, its block_size token ids). A lookup walks a new request's full blocks
// along that chain. Hits are exact, not probabilistic: a candidate block must hold the same
// tokens and must have been registered under the very block (and block generation) the lookup
// matched one step earlier, so a hash collision can only cost a hit, never give a wrong one.
// Not thread-safe: the step runner serializes every call.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "llm/block_pool.h"

namespace ember::llm {

// A cached prefix of a new request, from find_cached_prefix(); passed to allocate_slots().
struct PrefixHit {
  std::vector<int32_t> blocks;  // the matched blocks, in order
  int32_t num_tokens = 0;       // blocks.size() * block_size
  int32_t num_query_tokens = 0; // the request's known tokens when looked up (stats)
  uint64_t last_hash = 0;       // chain hash of the last matched block
};

class KVCacheManager {
 public:
  KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);

  // The longest cached run of full blocks at the start of `tokens`, capped at
  // floor((tokens.size() - 1) / block_size) blocks: the last known token is always computed,
  // so the step that reaches it has logits. Changes nothing (the blocks are taken by
  // allocate_slots). Empty when prefix caching is off.
  PrefixHit find_cached_prefix(const std::vector<int32_t>& tokens) const;

  // Grows request `id`'s block list to hold its first `num_tokens` tokens. A request without
  // blocks starts from `hit` (its prefix-cache hit, may be null). False when the pool lacks the
  // blocks; nothing is allocated or taken then.
  bool allocate_slots(int64_t id, int32_t num_tokens, const PrefixHit* hit = nullptr);

  // Registers the hashes of request `id`'s blocks that are full within its first `num_computed`
  // tokens (computed, so their KV is in the cache) and not registered yet.
  void cache_blocks(int64_t id, const std::vector<int32_t>& tokens, int32_t num_computed);

  // Returns the request's blocks to the pool; full hashed blocks stay cached until evicted.
  // Unknown ids are ignored.
  void free(int64_t id);

  // The request's block ids (empty for an unknown id).
  const std::vector<int32_t>& blocks(int64_t id) const;

  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t num_free_blocks() const { return pool_.num_free(); }
  // Fraction of blocks referenced by requests (cached-but-free blocks count as free).
  double usage() const { return 1.0 - (double)pool_.num_free() / pool_.num_blocks(); }
  int64_t prefix_query_tokens() const { return query_tokens_; }
  int64_t prefix_hit_tokens() const { return hit_tokens_; }
  const BlockPool& pool() const { return pool_; }

 private:
  struct Entry {
    std::vector<int32_t> blocks;
    int32_t num_hashed = 0;  // leading blocks registered (or matched) in the prefix cache
    uint64_t chain = 0;      // chain hash of block num_hashed - 1
    int32_t parent = -1;     // block the cache knows for that position, -1 before the first
    uint64_t parent_gen = 0;
  };
  uint64_t block_hash(uint64_t parent, const int32_t* tokens) const;
  bool same_block(int32_t b, const int32_t* tokens, int32_t parent, uint64_t parent_gen) const;

  BlockPool pool_;
  int32_t block_size_;
  bool caching_;
  std::unordered_map<int64_t, Entry> reqs_;
  // Per hashed block: its tokens [num_blocks * block_size] and the (block, generation) it was
  // registered under, which make a hit exact.
  std::vector<int32_t> block_tokens_;
  std::vector<int32_t> block_parent_;
  std::vector<uint64_t> block_parent_gen_;
  int64_t query_tokens_ = 0, hit_tokens_ = 0;
};

}  // namespace ember::llm
