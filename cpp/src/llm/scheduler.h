// Scheduler: vLLM v1-style continuous batching over a token budget (STYLE.md, DESIGN.md "LLM
// step loop lives in C++"). There are no prefill/decode phases: every sequence has known
// tokens (prompt + output so far) and computed ones, and a step computes a chunk of the
// difference for as many sequences as the budget allows. A prefill larger than the budget is
// chunked across steps; a sequence samples only in the step that reaches its last known token.
//
// Loop: plan = schedule(); run the model on plan; sample one token per plan.logits_indices;
// update_from_output(plan, sampled). When the pool runs out of blocks the most recently
// admitted running sequence is preempted by recompute: its blocks are freed and it is prefilled
// again later (prefix caching usually finds its blocks still cached); its output and rng are
// kept, so its final tokens do not change.
//
// Not thread-safe: the runner serializes every call. finish_requests and add_request belong
// between steps; a request cancelled while a plan is out is skipped by update_from_output.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "llm/kv_cache_manager.h"
#include "llm/request.h"

namespace ember::llm {

struct SchedulerConfig {
  int32_t block_size = 16;
  int32_t num_blocks = 0;  // KV blocks in the pool
  int32_t max_num_seqs = 16;
  int32_t max_num_batched_tokens = 512;
  int32_t max_model_len = 2048;
  bool enable_prefix_caching = true;
};

struct ScheduledSeq {
  int64_t id;
  int32_t num_tokens;  // tokens computed this step (a prefill chunk, or 1 for a decode)
  int32_t start_pos;   // tokens of this sequence already in the KV cache before this step
  bool sample;         // this step reaches the sequence's last known token: a token is sampled
};

// One varlen batch; everything flat, in sequence order. T = num_tokens(), S = num_seqs().
struct StepPlan {
  std::vector<ScheduledSeq> seqs;      // [S]
  std::vector<int32_t> token_ids;      // [T] the tokens computed this step, seqs concatenated
  std::vector<int32_t> positions;      // [T] start_pos + i
  std::vector<int64_t> slot_mapping;   // [T] block_id * block_size + pos % block_size
  std::vector<int32_t> query_start;    // [S + 1] offsets into T
  std::vector<int32_t> seq_lens;       // [S] context length after this step
  std::vector<int32_t> block_tables;   // [S, max_blocks_per_seq] block ids, padded with 0
  int32_t max_blocks_per_seq = 0;      // ceil(max_model_len / block_size)
  std::vector<int32_t> logits_indices; // index into T of the last token of each sampling seq
  // [T] 1 where the token is one of its request's prompt tokens, 0 where it was generated
  // (recomputed after a preemption too): the step graph's f32_rows. A token's flag, like every
  // other input of its row, never depends on what else is in the step.
  std::vector<uint8_t> prompt_rows;
  int32_t num_tokens() const { return (int32_t)token_ids.size(); }
  int32_t num_seqs() const { return (int32_t)seqs.size(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a request. Input errors: duplicate id, empty prompt, negative token id, prompt
  // longer than max_model_len, invalid sampling params, a request whose KV (prompt + max_tokens
  // - 1 tokens, at most max_model_len) needs more blocks than the pool has. Draws a seed from
  // std::random_device when params.has_seed is false (params(id) then holds it).
  void add_request(int64_t id, std::vector<int32_t> prompt, const SamplingParams& params);

  // The next step; an empty plan (no seqs) when nothing can run. Internal error when the
  // previous plan has not been through update_from_output.
  StepPlan schedule();

  // sampled[i] is the token sampled at plan.logits_indices[i]. Advances every planned
  // sequence, registers newly full blocks in the prefix cache, appends sampled tokens and
  // returns one SeqOutput per sampled sequence. A sequence finishes on a stop token ("stop";
  // the token is appended and returned), at max_tokens outputs or max_model_len tokens
  // ("length"); finished requests free their blocks and are forgotten. Requests cancelled
  // while the plan was out are skipped (with their sampled entries); when none of the plan's
  // requests is left (a runner abandoning a failed step), `sampled` is ignored.
  std::vector<SeqOutput> update_from_output(const StepPlan& plan,
                                            const std::vector<SeqOutput>& sampled);

  // Cancellation: frees blocks at once and forgets the requests; unknown ids are ignored.
  void finish_requests(const std::vector<int64_t>& ids);

  // Per-request state for the sampler; Input error for an unknown id.
  const std::vector<int32_t>& tokens(int64_t id) const;  // prompt + output so far
  int32_t num_prompt_tokens(int64_t id) const;
  SamplingParams& params(int64_t id);
  Rng& rng(int64_t id);

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int32_t num_waiting() const { return (int32_t)waiting_.size(); }
  int32_t num_running() const { return (int32_t)running_.size(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  int32_t num_free_blocks() const { return kv_.num_free_blocks(); }
  KVCacheManager& kv() { return kv_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  struct Request {
    int64_t id;
    std::vector<int32_t> tokens;  // prompt + output
    int32_t num_prompt;
    int32_t num_computed = 0;     // leading tokens whose KV is in the cache
    bool running = false;
    SamplingParams params;
    Rng rng;
  };
  Request& get(int64_t id) const;
  void preempt_last();
  void append_seq(StepPlan& plan, const Request& r, int32_t n) const;

  SchedulerConfig config_;
  KVCacheManager kv_;
  std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;
  std::deque<Request*> waiting_;
  std::vector<Request*> running_;     // admission order; preemption takes from the back
  std::vector<int64_t> in_flight_;    // ids of the last plan, until update_from_output
  int64_t num_preemptions_ = 0;
};

}  // namespace ember::llm
