// BlockPool: the KV cache's physical blocks. Ref counts, a free list in eviction order and a
// map from prefix hash to the full block that holds it (vLLM v1 layering, STYLE.md).
//
// A block with ref count 0 is free; a free block that carries a hash is still a prefix-cache
// entry until allocate() takes it for something else. The free list is doubly linked through
// block ids, so a prefix hit can take a cached block out of its middle in O(1).
// Not thread-safe: the step runner serializes every call.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace ember::llm {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return (int32_t)blocks_.size(); }
  int32_t num_free() const { return num_free_; }

  // Appends n blocks from the head of the free list to *out. Each loses its hash (evicting it
  // from the map), gets ref count 1 and a new generation. Internal error when n > num_free().
  void allocate(int32_t n, std::vector<int32_t>* out);
  // One more reference to a block (a prefix hit); a free block leaves the free list.
  void take(int32_t block);
  // Drops one reference per block, walking `blocks` from the back so a sequence's tail blocks
  // (the least likely to be shared) are evicted first. A block reaching 0 joins the tail of the
  // free list when it carries a hash, the head when it does not (it holds nothing reusable).
  void release(const std::vector<int32_t>& blocks);

  // The block registered for `hash`, or -1.
  int32_t find(uint64_t hash) const;
  // Registers a full, computed block under `hash`. False (and nothing changes) when the hash
  // already names another block or this block already has one.
  bool set_hash(int32_t block, uint64_t hash);
  bool has_hash(int32_t block) const { return blocks_[block].has_hash; }

  int32_t ref_count(int32_t block) const { return blocks_[block].ref; }
  // Bumped each time the block is allocated, so a (block, generation) pair names one content.
  uint64_t generation(int32_t block) const { return blocks_[block].gen; }
  // Free blocks from the next to be evicted to the last (tests and debugging).
  std::vector<int32_t> free_list() const;

 private:
  struct Block {
    int32_t ref = 0;
    int32_t prev = -1, next = -1;  // free-list links while ref == 0
    bool has_hash = false;
    uint64_t hash = 0;
    uint64_t gen = 0;
  };
  void unlink(int32_t b);
  void push_back(int32_t b);
  void push_front(int32_t b);

  std::vector<Block> blocks_;
  int32_t head_ = -1, tail_ = -1, num_free_ = 0;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace ember::llm
