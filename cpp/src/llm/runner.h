// LlmRunner: the LLM step loop. It owns the paged KV cache (one k and one v tensor per layer)
// and a Scheduler, and drives a compiled step graph (python/ember/llm/build.py documents its
// inputs): schedule -> feeds -> Session::run -> sample -> update_from_output.
//
// Two ways to drive it: step() from the caller's thread, or start() a loop thread that steps
// while there is work; callers then add requests and poll() outputs from any thread (the
// Python side releases the GIL around both). add_request / cancel may come from any thread:
// they are queued and applied between steps.
//
// Step shapes are bucketed so that a few compiled plans serve every step: the token count is
// padded to a power of two (padding tokens write no KV and belong to no sequence), the
// sequence count is always max_num_seqs (empty sequences), and the logits rows to a power of
// two. No kernel lets padding or the batch change a row's result (batch invariance).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ember/device.h"
#include "ember/session.h"
#include "llm/sampler.h"
#include "llm/scheduler.h"

namespace ember::llm {

struct RunnerConfig {
  SchedulerConfig scheduler;
  int32_t num_layers = 0, num_kv_heads = 0, head_dim = 0, vocab_size = 0;
  DType kv_dtype = DType::F16;  // F16 or F32
};

struct RunnerStats {
  int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0, preemptions = 0;
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  int32_t running = 0, waiting = 0, num_blocks = 0, free_blocks = 0;
  double kv_usage = 0;
};

class LlmRunner {
 public:
  // `session` runs the step graph; it must outlive the runner.
  LlmRunner(Session* session, const RunnerConfig& config);
  ~LlmRunner();
  LlmRunner(const LlmRunner&) = delete;
  LlmRunner& operator=(const LlmRunner&) = delete;

  // Validates at once (InputError: bad params, prompt too long, ...), then queues. Ids are the
  // caller's; a finished id may be reused.
  void add_request(int64_t id, std::vector<int32_t> prompt, const SamplingParams& params);
  // Cancels requests (unknown or finished ids are ignored); their blocks are freed before the
  // next step and each gets a final output with finish_reason "abort".
  void cancel(const std::vector<int64_t>& ids);

  // One step on the calling thread; returns its outputs (also those of cancellations and
  // failures: finish_reason "abort" or "error: <message>").
  std::vector<SeqOutput> step();
  // Requests queued, or left unfinished by the last step (never waits for a running step).
  bool has_unfinished();

  // The loop thread: steps while there is work, queues outputs for poll().
  void start();
  void stop();  // joins the loop thread; requests stay queued
  // Outputs produced since the last poll; waits up to timeout_ms for at least one (0: no
  // wait). A step that fails ends every live request with finish_reason "error: <message>".
  std::vector<SeqOutput> poll(int64_t timeout_ms);

  RunnerStats stats();  // as of the last step (never waits for a running step)
  // Whether the KV caches live in the session's device memory (its device runs PagedAttention).
  bool kv_on_device() const { return kv_device_ != nullptr; }
  const RunnerConfig& config() const { return config_; }

 private:
  void apply_pending();                         // holds mu_
  std::vector<SeqOutput> step_locked();         // holds step_mu_
  void publish_locked();                        // holds step_mu_: the snapshot below
  void run_step(std::vector<SeqOutput>& out, StepPlan& plan, bool& plan_out);
  std::vector<Tensor> feeds_for(const StepPlan& plan);
  void loop();

  Session* session_;
  RunnerConfig config_;
  std::vector<Tensor> k_cache_, v_cache_;  // [layers] of [blocks, block_size, kv_heads, head_dim]
  // The caches live in the memory of the session's device when it runs PagedAttention (the
  // node writes them in place, so they are feeds bound there); else in host memory.
  std::shared_ptr<Device> kv_device_;
  std::vector<uint8_t> feed_on_device_;  // per graph input: a cache in device memory
  Scheduler scheduler_;                      // touched only under step_mu_
  std::vector<float> scratch_;
  RunnerStats totals_;

  std::mutex step_mu_;  // one step at a time
  // stats() and has_unfinished() read this snapshot, made after every step: taking step_mu_
  // instead starved them (the loop thread takes it again at once, and std::mutex is not fair),
  // so llm_stats() could wait out a whole generation.
  std::mutex stats_mu_;
  RunnerStats published_;
  bool published_unfinished_ = false;
  std::mutex mu_;       // pending requests, cancellations, outputs
  std::condition_variable cv_work_, cv_out_;
  using Clock = std::chrono::steady_clock;
  struct Pending {
    int64_t id;
    std::vector<int32_t> prompt;
    SamplingParams params;
    Clock::time_point arrived;
  };
  std::vector<Pending> pending_add_;
  std::vector<int64_t> pending_cancel_;
  std::deque<SeqOutput> outputs_;
  std::unordered_set<int64_t> live_;         // added to the scheduler, not finished (step_mu_)
  // Queue times (step_mu_): arrival of live requests not yet scheduled, then the measured
  // wait until their first token goes out.
  std::unordered_map<int64_t, Clock::time_point> arrived_;
  std::unordered_map<int64_t, double> queued_;
  bool stop_ = false;
  bool work_left_ = false;
  std::thread thread_;
};

}  // namespace ember::llm
