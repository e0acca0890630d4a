// BlockPool (block_pool.h): ref counts, an intrusive free list, the prefix-hash map.
#include "llm/block_pool.h"

#include "ember/error.h"

namespace ember::llm {

BlockPool::BlockPool(int32_t num_blocks) {
  EMBER_CHECK(num_blocks >= 1, Input, "[block_pool] num_blocks must be >= 1, got ", num_blocks);
  blocks_.resize(num_blocks);
  for (int32_t b = 0; b < num_blocks; ++b) push_back(b);
}

void BlockPool::unlink(int32_t b) {
  Block& k = blocks_[b];
  (k.prev >= 0 ? blocks_[k.prev].next : head_) = k.next;
  (k.next >= 0 ? blocks_[k.next].prev : tail_) = k.prev;
  k.prev = k.next = -1;
  --num_free_;
}

void BlockPool::push_back(int32_t b) {
  Block& k = blocks_[b];
  k.prev = tail_;
  k.next = -1;
  (tail_ >= 0 ? blocks_[tail_].next : head_) = b;
  tail_ = b;
  ++num_free_;
}

void BlockPool::push_front(int32_t b) {
  Block& k = blocks_[b];
  k.prev = -1;
  k.next = head_;
  (head_ >= 0 ? blocks_[head_].prev : tail_) = b;
  head_ = b;
  ++num_free_;
}

void BlockPool::allocate(int32_t n, std::vector<int32_t>* out) {
  EMBER_CHECK(n >= 0 && n <= num_free_, Internal, "[block_pool] asked for ", n, " blocks, ",
              num_free_, " free");
  for (int32_t i = 0; i < n; ++i) {
    const int32_t b = head_;
    unlink(b);
    Block& k = blocks_[b];
    if (k.has_hash) {
      auto it = by_hash_.find(k.hash);
      if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
      k.has_hash = false;
    }
    k.ref = 1;
    ++k.gen;
    out->push_back(b);
  }
}

void BlockPool::take(int32_t block) {
  Block& k = blocks_[block];
  if (k.ref == 0) unlink(block);
  ++k.ref;
}

void BlockPool::release(const std::vector<int32_t>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    Block& k = blocks_[*it];
    EMBER_CHECK(k.ref > 0, Internal, "[block_pool] block ", *it, " released more than taken");
    if (--k.ref == 0) k.has_hash ? push_back(*it) : push_front(*it);
  }
}

int32_t BlockPool::find(uint64_t hash) const {
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? -1 : it->second;
}

bool BlockPool::set_hash(int32_t block, uint64_t hash) {
  Block& k = blocks_[block];
  if (k.has_hash || !by_hash_.emplace(hash, block).second) return false;
  k.has_hash = true;
  k.hash = hash;
  return true;
}

std::vector<int32_t> BlockPool::free_list() const {
  std::vector<int32_t> out;
  for (int32_t b = head_; b >= 0; b = blocks_[b].next) out.push_back(b);
  return out;
}

}  // namespace ember::llm
