// Scheduler (scheduler.h): token-budget scheduling, preemption by recompute, step plans.
#include "llm/scheduler.h"

#include <algorithm>
#include <random>

#include "ember/error.h"
#include "llm/sampler.h"

namespace ember::llm {
namespace {

const SchedulerConfig& checked(const SchedulerConfig& c) {
  EMBER_CHECK(c.block_size >= 1, Input, "[scheduler] block_size must be >= 1, got ", c.block_size);
  EMBER_CHECK(c.num_blocks >= 1, Input,
              "[scheduler] num_blocks (KV blocks in the pool) must be >= 1, got ", c.num_blocks);
  EMBER_CHECK(c.max_num_seqs >= 1, Input, "[scheduler] max_num_seqs must be >= 1, got ",
              c.max_num_seqs);
  EMBER_CHECK(c.max_num_batched_tokens >= 1, Input,
              "[scheduler] max_num_batched_tokens must be >= 1, got ", c.max_num_batched_tokens);
  EMBER_CHECK(c.max_model_len >= 1, Input, "[scheduler] max_model_len must be >= 1, got ",
              c.max_model_len);
  return c;
}

template <class C, class T>
void erase_one(C& c, const T& v) {
  auto it = std::find(c.begin(), c.end(), v);
  if (it != c.end()) c.erase(it);
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(checked(config)),
      kv_(config.num_blocks, config.block_size, config.enable_prefix_caching) {}

void Scheduler::add_request(int64_t id, std::vector<int32_t> prompt, const SamplingParams& params) {
  EMBER_CHECK(!requests_.count(id), Input, "[scheduler] request id ", id, " is already in use");
  EMBER_CHECK(!prompt.empty(), Input, "[scheduler] request ", id, ": the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i)
    EMBER_CHECK(prompt[i] >= 0, Input, "[scheduler] request ", id, ": prompt token ", i, " is ",
                prompt[i], ", token ids must be >= 0");
  const int64_t n = (int64_t)prompt.size();
  EMBER_CHECK(n <= config_.max_model_len, Input, "[scheduler] request ", id, ": the prompt has ",
              n, " tokens, longer than max_model_len ", config_.max_model_len);
  check_sampling_params(params);
  // The last output token is never computed, so the KV holds at most this many tokens.
  const int64_t kv_tokens = std::min<int64_t>(n + params.max_tokens - 1, config_.max_model_len);
  const int64_t need = (kv_tokens + config_.block_size - 1) / config_.block_size;
  EMBER_CHECK(need <= config_.num_blocks, Input, "[scheduler] request ", id, ": ", n,
              " prompt tokens + max_tokens ", params.max_tokens, " need ", need,
              " KV blocks of ", config_.block_size, " tokens, the pool has ", config_.num_blocks);

  auto r = std::make_unique<Request>(Request{id, std::move(prompt), (int32_t)n, 0, false, params,
                                             Rng(params.seed)});
  if (!params.has_seed) {
    std::random_device rd;
    r->params.seed = ((uint64_t)rd() << 32) ^ (uint64_t)rd();
    r->params.has_seed = true;
    r->rng = Rng(r->params.seed);
  }
  waiting_.push_back(r.get());
  requests_.emplace(id, std::move(r));
}

void Scheduler::preempt_last() {
  Request* r = running_.back();
  running_.pop_back();
  kv_.free(r->id);
  r->num_computed = 0;
  r->running = false;
  waiting_.push_front(r);
  ++num_preemptions_;
}

StepPlan Scheduler::schedule() {
  EMBER_CHECK(in_flight_.empty(), Internal,
              "[scheduler] schedule() called again before update_from_output() of the last plan");
  int32_t budget = config_.max_num_batched_tokens;
  std::vector<std::pair<Request*, int32_t>> picked;

  // Running sequences first, in admission order; when the pool is short, preempt from the back.
  bool preempted = false;
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Request* r = running_[i];
    const int32_t n = std::min((int32_t)r->tokens.size() - r->num_computed, budget);
    EMBER_CHECK(n > 0, Internal, "[scheduler] running request ", r->id, " has nothing to compute");
    bool ok = kv_.allocate_slots(r->id, r->num_computed + n);
    while (!ok) {
      const bool self = running_.back() == r;
      preempt_last();
      preempted = true;
      if (self) break;
      ok = kv_.allocate_slots(r->id, r->num_computed + n);
    }
    if (!ok) break;
    picked.emplace_back(r, n);
    budget -= n;
  }

  // Then waiting ones, FIFO. Not after a preemption: the pool is full, and the sequence just
  // preempted would only be admitted to be preempted again.
  while (!preempted && !waiting_.empty() && budget > 0 &&
         (int32_t)running_.size() < config_.max_num_seqs) {
    Request* r = waiting_.front();
    const PrefixHit hit = kv_.find_cached_prefix(r->tokens);
    const int32_t n = std::min((int32_t)r->tokens.size() - hit.num_tokens, budget);
    if (!kv_.allocate_slots(r->id, hit.num_tokens + n, &hit)) break;
    r->num_computed = hit.num_tokens;
    r->running = true;
    waiting_.pop_front();
    running_.push_back(r);
    picked.emplace_back(r, n);
    budget -= n;
  }

  StepPlan plan;
  plan.max_blocks_per_seq = (config_.max_model_len + config_.block_size - 1) / config_.block_size;
  plan.query_start.push_back(0);
  for (auto& [r, n] : picked) {
    append_seq(plan, *r, n);
    in_flight_.push_back(r->id);
  }
  return plan;
}

void Scheduler::append_seq(StepPlan& plan, const Request& r, int32_t n) const {
  const int32_t bs = config_.block_size, start = r.num_computed;
  const std::vector<int32_t>& blocks = kv_.blocks(r.id);
  const bool sample = start + n == (int32_t)r.tokens.size();
  plan.seqs.push_back({r.id, n, start, sample});
  for (int32_t pos = start; pos < start + n; ++pos) {
    plan.token_ids.push_back(r.tokens[pos]);
    plan.positions.push_back(pos);
    plan.prompt_rows.push_back(pos < r.num_prompt ? 1 : 0);
    plan.slot_mapping.push_back((int64_t)blocks[pos / bs] * bs + pos % bs);
  }
  plan.query_start.push_back(plan.query_start.back() + n);
  plan.seq_lens.push_back(start + n);
  const size_t row = plan.block_tables.size();
  plan.block_tables.resize(row + plan.max_blocks_per_seq, 0);
  std::copy(blocks.begin(), blocks.end(), plan.block_tables.begin() + row);
  if (sample) plan.logits_indices.push_back(plan.query_start.back() - 1);
}

std::vector<SeqOutput> Scheduler::update_from_output(const StepPlan& plan,
                                                     const std::vector<SeqOutput>& sampled) {
  const bool live = std::any_of(plan.seqs.begin(), plan.seqs.end(),
                                [&](const ScheduledSeq& s) { return requests_.count(s.id) > 0; });
  if (!live) {  // every request of the plan was finished meanwhile (a failed step): discard it
    in_flight_.clear();
    return {};
  }
  EMBER_CHECK(sampled.size() == plan.logits_indices.size(), Input, "[scheduler] ",
              sampled.size(), " sampled tokens for a plan that samples ",
              plan.logits_indices.size());
  size_t k = 0;
  for (const ScheduledSeq& s : plan.seqs) {  // check everything before changing anything
    if (!s.sample) continue;
    const SeqOutput& o = sampled[k++];
    EMBER_CHECK(o.id == s.id, Input, "[scheduler] sampled[", k - 1, "] is for request ", o.id,
                ", the plan samples request ", s.id, " there");
    EMBER_CHECK(o.token >= 0, Input, "[scheduler] request ", s.id, ": sampled token ", o.token);
    auto it = requests_.find(s.id);
    EMBER_CHECK(it == requests_.end() ||
                    (it->second->running && it->second->num_computed == s.start_pos),
                Internal, "[scheduler] the plan for request ", s.id, " is stale");
  }

  std::vector<SeqOutput> outputs;
  k = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    const SeqOutput* in = s.sample ? &sampled[k++] : nullptr;
    auto it = requests_.find(s.id);
    if (it == requests_.end()) continue;  // cancelled while the plan was out
    Request& r = *it->second;
    r.num_computed += s.num_tokens;
    // Only blocks of prompt tokens are cached: a lookup treats every token as a prompt token,
    // and generated ones ran the other matmul path (StepPlan::prompt_rows), so a block that
    // holds any would not give the bits a fresh computation gives.
    kv_.cache_blocks(r.id, r.tokens, std::min(r.num_computed, r.num_prompt));
    if (!in) continue;
    r.tokens.push_back(in->token);
    SeqOutput out = *in;
    const SamplingParams& p = r.params;
    const int32_t num_output = (int32_t)r.tokens.size() - r.num_prompt;
    // A stop token wins over the length limits when both apply.
    if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), in->token) !=
        p.stop_token_ids.end())
      out.finish_reason = "stop";
    else if (num_output >= p.max_tokens || (int32_t)r.tokens.size() >= config_.max_model_len)
      out.finish_reason = "length";
    out.finished = !out.finish_reason.empty();
    if (out.finished) finish_requests({r.id});
    outputs.push_back(std::move(out));
  }
  in_flight_.clear();
  return outputs;
}

void Scheduler::finish_requests(const std::vector<int64_t>& ids) {
  for (int64_t id : ids) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    Request* r = it->second.get();
    if (r->running)
      erase_one(running_, r);
    else
      erase_one(waiting_, r);
    kv_.free(id);
    erase_one(in_flight_, id);
    requests_.erase(it);
  }
}

Scheduler::Request& Scheduler::get(int64_t id) const {
  auto it = requests_.find(id);
  EMBER_CHECK(it != requests_.end(), Input, "[scheduler] unknown request id ", id);
  return *it->second;
}

const std::vector<int32_t>& Scheduler::tokens(int64_t id) const { return get(id).tokens; }
int32_t Scheduler::num_prompt_tokens(int64_t id) const { return get(id).num_prompt; }
SamplingParams& Scheduler::params(int64_t id) { return get(id).params; }
Rng& Scheduler::rng(int64_t id) { return get(id).rng; }

}  // namespace ember::llm
