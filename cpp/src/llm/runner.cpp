#include "llm/runner.h"

#include <algorithm>
#include <chrono>
#include <unordered_set>

namespace ember::llm {

namespace {

int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

Tensor vec_tensor(const std::vector<int32_t>& v, int64_t padded, int32_t pad) {
  Tensor t = Tensor::empty(DType::I32, {padded});
  int32_t* p = t.ptr<int32_t>();
  std::copy(v.begin(), v.end(), p);
  std::fill(p + v.size(), p + padded, pad);
  return t;
}

// The device of `session` when it runs the step graph's PagedAttention (asked at one token, the
// caches' dtype and shape): the caches then live there. Null for a CPU session or a device
// without the kernel (PagedAttention stays on the CPU with host caches).
std::shared_ptr<Device> paged_attention_device(const Session& session, DType kv_dtype,
                                               const Shape& cache) {
  if (session.device_name() == "cpu") return nullptr;
  std::shared_ptr<Device> device = device_find(session.device_name());
  for (const Node& n : session.graph().nodes) {
    if (!device || n.op != OpType::PagedAttention) continue;
    const int64_t hq = n.attrs.get_int("num_heads", 0), d = n.attrs.get_int("head_dim", 0);
    InferCtx ctx{n, {}, {}};
    const TensorType kv{DType::F32, {1, cache[2] * d}};
    ctx.in = {{DType::F32, {1, hq * d}}, kv, kv, {kv_dtype, cache}, {kv_dtype, cache},
              {DType::I64, {1}}, {DType::I32, {2}}, {DType::I32, {1}}, {DType::I32, {1, 1}}};
    ctx.values.assign(ctx.in.size(), nullptr);
    return device->find_kernel(ctx, session.options().device_options).fn ? device : nullptr;
  }
  return nullptr;
}

}  // namespace

LlmRunner::LlmRunner(Session* session, const RunnerConfig& config)
    : session_(session), config_(config), scheduler_(config.scheduler) {
  EMBER_CHECK(config.num_layers > 0 && config.num_kv_heads > 0 && config.head_dim > 0 &&
                  config.vocab_size > 0,
              Input, "[llm] runner: layers, kv heads, head_dim and vocab must be positive");
  EMBER_CHECK(config.kv_dtype == DType::F16 || config.kv_dtype == DType::F32, Input,
              "[llm] kv_dtype must be f16 or f32, not ", dtype_name(config.kv_dtype));
  const SchedulerConfig& s = config.scheduler;
  const Shape shape = {s.num_blocks, s.block_size, config.num_kv_heads, config.head_dim};
  kv_device_ = paged_attention_device(*session, config.kv_dtype, shape);
  for (int32_t l = 0; l < config.num_layers; l++) {
    // Zeroed: a padded block-table entry may point at any block, and attention must never
    // read uninitialised (possibly NaN) memory even where its weight is zero.
    if (kv_device_) {
      k_cache_.push_back(session->device_zeros(config.kv_dtype, shape));
      v_cache_.push_back(session->device_zeros(config.kv_dtype, shape));
    } else {
      k_cache_.push_back(Tensor::zeros(config.kv_dtype, shape));
      v_cache_.push_back(Tensor::zeros(config.kv_dtype, shape));
    }
  }
  // The caches are the graph's last 2 x layers inputs (feeds_for's order).
  feed_on_device_.assign(session->graph().inputs.size(), 0);
  if (kv_device_)
    std::fill(feed_on_device_.end() - 2 * config.num_layers, feed_on_device_.end(), 1);
  totals_.num_blocks = s.num_blocks;
  std::lock_guard<std::mutex> lock(step_mu_);
  publish_locked();
}

LlmRunner::~LlmRunner() { stop(); }

void LlmRunner::add_request(int64_t id, std::vector<int32_t> prompt, const SamplingParams& params) {
  check_sampling_params(params);
  const SchedulerConfig& s = config_.scheduler;
  EMBER_CHECK(!prompt.empty(), Input, "[llm] request ", id, ": the prompt is empty");
  EMBER_CHECK((int64_t)prompt.size() < s.max_model_len, Input, "[llm] request ", id, ": the prompt has ",
              prompt.size(), " tokens; max_model_len is ", s.max_model_len,
              " (it must leave room for at least one generated token)");
  for (int32_t t : prompt)
    EMBER_CHECK(t >= 0 && t < config_.vocab_size, Input, "[llm] request ", id, ": token id ", t,
                " is outside the vocabulary [0, ", config_.vocab_size, ")");
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_add_.push_back({id, std::move(prompt), params, Clock::now()});
  }
  cv_work_.notify_one();
}

void LlmRunner::cancel(const std::vector<int64_t>& ids) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_cancel_.insert(pending_cancel_.end(), ids.begin(), ids.end());
  }
  cv_work_.notify_one();
}

bool LlmRunner::has_unfinished() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pending_add_.empty() || !pending_cancel_.empty()) return true;
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  return published_unfinished_;
}

std::vector<SeqOutput> LlmRunner::step() {
  std::lock_guard<std::mutex> lock(step_mu_);
  return step_locked();
}

std::vector<SeqOutput> LlmRunner::step_locked() {
  std::vector<SeqOutput> out;
  StepPlan plan;
  bool plan_out = false;
  try {
    run_step(out, plan, plan_out);
  } catch (const std::exception& e) {
    // A failed step cannot be resumed: every live request ends with the error (the runner
    // stays usable for new ones).
    std::vector<int64_t> ids(live_.begin(), live_.end());
    std::sort(ids.begin(), ids.end());
    scheduler_.finish_requests(ids);
    if (plan_out) scheduler_.update_from_output(plan, {});
    arrived_.clear();
    queued_.clear();
    for (int64_t id : ids) {
      SeqOutput o;
      o.id = id;
      o.finished = true;
      o.finish_reason = std::string("error: ") + e.what();
      out.push_back(std::move(o));
    }
    live_.clear();
  }
  publish_locked();
  return out;
}

void LlmRunner::run_step(std::vector<SeqOutput>& out, StepPlan& plan, bool& plan_out) {
  std::vector<Pending> adds;
  std::vector<int64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds.swap(pending_add_);
    cancels.swap(pending_cancel_);
  }
  // Cancellations first, so a cancelled request queued in the same breath never runs.
  std::unordered_set<int64_t> cancelled(cancels.begin(), cancels.end());
  for (Pending& p : adds) {
    if (cancelled.count(p.id)) {
      SeqOutput o;
      o.id = p.id;
      o.finished = true;
      o.finish_reason = "abort";
      out.push_back(std::move(o));
      continue;
    }
    try {
      scheduler_.add_request(p.id, std::move(p.prompt), p.params);
      live_.insert(p.id);
      arrived_[p.id] = p.arrived;
      totals_.prompt_tokens += (int64_t)scheduler_.num_prompt_tokens(p.id);
    } catch (const Error& e) {
      // Validated in add_request; what only the scheduler knows (a duplicate id, more KV than
      // the pool holds) fails this request alone.
      SeqOutput o;
      o.id = p.id;
      o.finished = true;
      o.finish_reason = std::string("error: ") + e.what();
      out.push_back(std::move(o));
    }
  }
  for (int64_t id : cancels) {
    if (!live_.erase(id)) continue;
    arrived_.erase(id);
    queued_.erase(id);
    scheduler_.finish_requests({id});
    SeqOutput o;
    o.id = id;
    o.finished = true;
    o.finish_reason = "abort";
    out.push_back(std::move(o));
  }

  plan = scheduler_.schedule();
  if (plan.num_seqs() == 0) return;
  const Clock::time_point started = Clock::now();
  for (const ScheduledSeq& s : plan.seqs) {
    auto it = arrived_.find(s.id);
    if (it == arrived_.end()) continue;
    queued_[s.id] = std::chrono::duration<double>(started - it->second).count();
    arrived_.erase(it);
  }
  plan_out = true;
  std::vector<Tensor> result = session_->run_positional(feeds_for(plan), feed_on_device_);
  const Tensor& logits = result.at(0);  // [R padded, vocab]
  const int32_t vocab = config_.vocab_size;
  EMBER_CHECK(logits.rank() == 2 && logits.dim(1) == vocab &&
                  logits.dim(0) >= (int64_t)plan.logits_indices.size(),
              Internal, "[llm] the step graph returned logits ", shape_str(logits.shape()));
  std::vector<SeqOutput> sampled;
  int64_t row = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    if (!s.sample) continue;
    SeqOutput o;
    o.id = s.id;
    const SamplingParams& p = scheduler_.params(s.id);
    o.token = sample_token(logits.ptr<float>() + row * vocab, vocab, p, scheduler_.tokens(s.id),
                           scheduler_.num_prompt_tokens(s.id), scheduler_.rng(s.id),
                           p.logprobs >= 0 ? &o.logprob : nullptr, &o.top, &scratch_);
    sampled.push_back(std::move(o));
    row++;
  }
  plan_out = false;
  std::vector<SeqOutput> done = scheduler_.update_from_output(plan, sampled);
  totals_.steps++;
  totals_.generated_tokens += (int64_t)done.size();
  for (SeqOutput& o : done) {
    auto q = queued_.find(o.id);
    if (q != queued_.end()) {
      o.queued_s = q->second;
      queued_.erase(q);
    }
    if (o.finished) live_.erase(o.id);
    out.push_back(std::move(o));
  }
}

std::vector<Tensor> LlmRunner::feeds_for(const StepPlan& plan) {
  const SchedulerConfig& sc = config_.scheduler;
  const int64_t T = pow2_at_least(plan.num_tokens());
  const int64_t S = std::max<int64_t>(sc.max_num_seqs, plan.num_seqs());
  const int64_t R = pow2_at_least(std::max<int64_t>(1, (int64_t)plan.logits_indices.size()));
  const int64_t MB = plan.max_blocks_per_seq;
  std::vector<Tensor> feeds;
  feeds.push_back(vec_tensor(plan.token_ids, T, 0));
  feeds.push_back(vec_tensor(plan.positions, T, 0));
  Tensor slots = Tensor::empty(DType::I64, {T});
  std::copy(plan.slot_mapping.begin(), plan.slot_mapping.end(), slots.ptr<int64_t>());
  std::fill(slots.ptr<int64_t>() + plan.num_tokens(), slots.ptr<int64_t>() + T, -1);
  feeds.push_back(slots);
  feeds.push_back(vec_tensor(plan.query_start, S + 1, plan.num_tokens()));
  feeds.push_back(vec_tensor(plan.seq_lens, S, 0));
  Tensor tables = Tensor::zeros(DType::I32, {S, MB});
  std::copy(plan.block_tables.begin(), plan.block_tables.end(), tables.ptr<int32_t>());
  feeds.push_back(tables);
  feeds.push_back(vec_tensor(plan.logits_indices, R, 0));
  // Padding rows copy the last real row's flag, so a step of one kind stays one kernel path.
  Tensor rows = Tensor::empty(DType::U8, {T});
  std::copy(plan.prompt_rows.begin(), plan.prompt_rows.end(), rows.ptr<uint8_t>());
  std::fill(rows.ptr<uint8_t>() + plan.num_tokens(), rows.ptr<uint8_t>() + T,
            plan.prompt_rows.empty() ? 0 : plan.prompt_rows.back());
  feeds.push_back(rows);
  for (int32_t l = 0; l < config_.num_layers; l++) {
    feeds.push_back(k_cache_[l]);
    feeds.push_back(v_cache_[l]);
  }
  return feeds;
}

void LlmRunner::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { loop(); });
}

void LlmRunner::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LlmRunner::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_work_.wait(lock, [&] {
        return stop_ || !pending_add_.empty() || !pending_cancel_.empty() || work_left_;
      });
      if (stop_) return;
    }
    std::vector<SeqOutput> out;
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(step_mu_);
      out = step_locked();
      more = scheduler_.has_unfinished();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      work_left_ = more;
      for (SeqOutput& o : out) outputs_.push_back(std::move(o));
    }
    cv_out_.notify_all();
  }
}

std::vector<SeqOutput> LlmRunner::poll(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (timeout_ms > 0)
    cv_out_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !outputs_.empty(); });
  std::vector<SeqOutput> out(std::make_move_iterator(outputs_.begin()),
                             std::make_move_iterator(outputs_.end()));
  outputs_.clear();
  return out;
}

void LlmRunner::publish_locked() {
  RunnerStats s = totals_;
  s.preemptions = scheduler_.num_preemptions();
  s.prefix_query_tokens = scheduler_.kv().prefix_query_tokens();
  s.prefix_hit_tokens = scheduler_.kv().prefix_hit_tokens();
  s.running = scheduler_.num_running();
  s.waiting = scheduler_.num_waiting();
  s.free_blocks = scheduler_.num_free_blocks();
  s.kv_usage = scheduler_.kv().usage();
  bool unfinished = scheduler_.has_unfinished();
  std::lock_guard<std::mutex> lock(stats_mu_);
  published_ = s;
  published_unfinished_ = unfinished;
}

RunnerStats LlmRunner::stats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return published_;
}

}  // namespace ember::llm
