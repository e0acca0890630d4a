// LLM runtime core without a model: BlockPool, KVCacheManager and Scheduler. A fake model
// writes each step's tokens into a fake KV cache through slot_mapping and reads every sampling
// sequence's context back through its block table, so a wrong slot, block table or prefix hit
// shows up as a wrong context and a different output.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ember/error.h"
#include "llm/block_pool.h"
#include "llm/kv_cache_manager.h"
#include "llm/scheduler.h"

using namespace ember;
using namespace ember::llm;

namespace {

template <class F>
void expect_error(F&& f, ErrorKind kind, const std::string& part) {
  try {
    f();
    FAIL("no error; expected one containing: " << part);
  } catch (const Error& e) {
    CHECK(e.kind() == kind);
    CHECK_MESSAGE(std::string(e.what()).find(part) != std::string::npos, e.what());
  }
}

void check_seq(const ScheduledSeq& q, int64_t id, int32_t num_tokens, int32_t start, bool sample) {
  CHECK(q.id == id);
  CHECK(q.num_tokens == num_tokens);
  CHECK(q.start_pos == start);
  CHECK(q.sample == sample);
}

std::vector<int32_t> iota(int32_t n, int32_t first) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

// The fake model's next token: a hash of the whole context, never 0 (tests use 0 as stop id).
int32_t next_token(const std::vector<int32_t>& ctx) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : ctx) h = (h ^ (uint32_t)t) * 1099511628211ull;
  return 1 + (int32_t)(h % 89);
}

SamplingParams greedy(int32_t max_tokens, std::vector<int32_t> stop = {}) {
  SamplingParams p;
  p.max_tokens = max_tokens;
  p.stop_token_ids = std::move(stop);
  p.has_seed = true;
  return p;
}

// Every field of the plan against the scheduler's own view of the requests.
void check_plan(const StepPlan& plan, Scheduler& s) {
  const SchedulerConfig& c = s.config();
  const int32_t bs = c.block_size, S = plan.num_seqs();
  REQUIRE(plan.query_start.size() == (size_t)S + 1);
  REQUIRE(plan.seq_lens.size() == (size_t)S);
  REQUIRE(plan.block_tables.size() == (size_t)S * plan.max_blocks_per_seq);
  CHECK(plan.max_blocks_per_seq == (c.max_model_len + bs - 1) / bs);
  CHECK(plan.num_tokens() <= c.max_num_batched_tokens);
  CHECK(S <= c.max_num_seqs);
  CHECK(plan.positions.size() == plan.token_ids.size());
  CHECK(plan.slot_mapping.size() == plan.token_ids.size());
  CHECK(plan.prompt_rows.size() == plan.token_ids.size());
  std::set<int64_t> slots;
  std::vector<int32_t> logits;
  for (int32_t i = 0; i < S; ++i) {
    const ScheduledSeq& q = plan.seqs[i];
    const std::vector<int32_t>& toks = s.tokens(q.id);
    CHECK(q.num_tokens >= 1);
    CHECK(plan.query_start[i + 1] - plan.query_start[i] == q.num_tokens);
    CHECK(plan.seq_lens[i] == q.start_pos + q.num_tokens);
    CHECK(q.sample == (plan.seq_lens[i] == (int32_t)toks.size()));
    for (int32_t j = 0; j < q.num_tokens; ++j) {
      const int32_t t = plan.query_start[i] + j, pos = q.start_pos + j;
      CHECK(plan.positions[t] == pos);
      CHECK(plan.token_ids[t] == toks[pos]);
      CHECK(plan.prompt_rows[t] == (pos < s.num_prompt_tokens(q.id) ? 1 : 0));
      const int32_t block = plan.block_tables[(size_t)i * plan.max_blocks_per_seq + pos / bs];
      CHECK(plan.slot_mapping[t] == (int64_t)block * bs + pos % bs);
      CHECK(slots.insert(plan.slot_mapping[t]).second);
    }
    if (q.sample) logits.push_back(plan.query_start[i + 1] - 1);
  }
  CHECK(plan.logits_indices == logits);
}

struct FakeModel {
  std::vector<int32_t> kv;
  explicit FakeModel(const SchedulerConfig& c) : kv((size_t)c.num_blocks * c.block_size, -1) {}

  std::vector<SeqOutput> run(const StepPlan& plan, Scheduler& s) {
    const int32_t bs = s.config().block_size;
    for (int32_t t = 0; t < plan.num_tokens(); ++t) kv[plan.slot_mapping[t]] = plan.token_ids[t];
    std::vector<SeqOutput> out;
    for (int32_t i = 0; i < plan.num_seqs(); ++i) {
      if (!plan.seqs[i].sample) continue;
      std::vector<int32_t> ctx;
      for (int32_t pos = 0; pos < plan.seq_lens[i]; ++pos) {
        const int32_t block = plan.block_tables[(size_t)i * plan.max_blocks_per_seq + pos / bs];
        ctx.push_back(kv[(size_t)block * bs + pos % bs]);
      }
      CHECK(ctx == s.tokens(plan.seqs[i].id));  // the cache holds exactly the known tokens
      out.push_back({plan.seqs[i].id, next_token(ctx), 0.0f, {}, false, ""});
    }
    return out;
  }
};

struct Req { int64_t id; std::vector<int32_t> prompt; SamplingParams params; };
struct Result {
  std::vector<int32_t> tokens;
  std::string reason;
  bool operator==(const Result&) const = default;
};
struct Stats { int64_t preemptions = 0, hit_tokens = 0; };

// Adds one request per step (so prefills meet decodes) and runs until everything finished.
std::map<int64_t, Result> run_all(const SchedulerConfig& c, const std::vector<Req>& reqs,
                                  Stats* stats = nullptr) {
  Scheduler s(c);
  FakeModel model(c);
  std::map<int64_t, Result> results;
  size_t added = 0;
  for (int step = 0; step < 5000 && (added < reqs.size() || s.has_unfinished()); ++step) {
    if (added < reqs.size()) {
      const Req& r = reqs[added++];
      s.add_request(r.id, r.prompt, r.params);
    }
    StepPlan plan = s.schedule();
    check_plan(plan, s);
    for (const SeqOutput& o : s.update_from_output(plan, model.run(plan, s))) {
      results[o.id].tokens.push_back(o.token);
      if (o.finished) results[o.id].reason = o.finish_reason;
    }
  }
  CHECK_FALSE(s.has_unfinished());
  CHECK(s.num_free_blocks() == c.num_blocks);
  if (stats) *stats = {s.num_preemptions(), s.kv().prefix_hit_tokens()};
  return results;
}

// What a request should produce: the fake model applied to its growing context.
Result reference(const Req& r, int32_t max_model_len) {
  Result out;
  std::vector<int32_t> ctx = r.prompt;
  while (true) {
    const int32_t t = next_token(ctx);
    ctx.push_back(t);
    out.tokens.push_back(t);
    const auto& stop = r.params.stop_token_ids;
    if (std::find(stop.begin(), stop.end(), t) != stop.end()) return out.reason = "stop", out;
    if ((int32_t)out.tokens.size() >= r.params.max_tokens ||
        (int32_t)ctx.size() >= max_model_len)
      return out.reason = "length", out;
  }
}

}  // namespace

TEST_CASE("llm block_pool: allocation order, release order, hash eviction") {
  BlockPool pool(4);
  std::vector<int32_t> a;
  pool.allocate(2, &a);
  CHECK(a == std::vector<int32_t>{0, 1});
  CHECK(pool.num_free() == 2);
  CHECK(pool.ref_count(0) == 1);
  CHECK(pool.set_hash(1, 111));
  CHECK_FALSE(pool.set_hash(0, 111));  // the hash already names block 1
  CHECK_FALSE(pool.set_hash(1, 222));  // block 1 already has a hash
  const uint64_t gen1 = pool.generation(1);
  pool.release(a);
  // Released from the back: hashed block 1 joins the tail, unhashed block 0 the head.
  CHECK(pool.free_list() == std::vector<int32_t>{0, 2, 3, 1});
  CHECK(pool.find(111) == 1);  // free but still cached
  pool.take(1);                // a prefix hit revives it
  CHECK(pool.free_list() == std::vector<int32_t>{0, 2, 3});
  CHECK(pool.ref_count(1) == 1);
  pool.take(1);
  CHECK(pool.ref_count(1) == 2);
  pool.release({1});
  CHECK(pool.free_list() == std::vector<int32_t>{0, 2, 3});
  pool.release({1});
  CHECK(pool.free_list() == std::vector<int32_t>{0, 2, 3, 1});
  std::vector<int32_t> b;
  pool.allocate(4, &b);
  CHECK(b == std::vector<int32_t>{0, 2, 3, 1});
  CHECK(pool.find(111) == -1);  // allocating evicted the hash
  CHECK_FALSE(pool.has_hash(1));
  CHECK(pool.generation(1) == gen1 + 1);
  expect_error([&] { pool.allocate(1, &b); }, ErrorKind::Internal, "[block_pool]");
  pool.release(b);
  expect_error([&] { pool.release({2}); }, ErrorKind::Internal, "released more than taken");
  expect_error([] { BlockPool p(0); }, ErrorKind::Input, "[block_pool] num_blocks");
}

TEST_CASE("llm kv_cache: a repeated prompt hits the same blocks, capped below its last token") {
  KVCacheManager kv(16, 4, true);
  const std::vector<int32_t> prompt = iota(12, 100);  // three full blocks
  PrefixHit none = kv.find_cached_prefix(prompt);
  CHECK(none.num_tokens == 0);
  REQUIRE(kv.allocate_slots(1, 12, &none));
  const std::vector<int32_t> blocks = kv.blocks(1);
  REQUIRE(blocks.size() == 3);
  kv.cache_blocks(1, prompt, 7);  // one full computed block so far
  CHECK(kv.find_cached_prefix(prompt).num_tokens == 4);
  kv.cache_blocks(1, prompt, 12);
  kv.free(1);
  CHECK(kv.num_free_blocks() == 16);

  PrefixHit hit = kv.find_cached_prefix(prompt);  // 12 tokens: only 2 blocks, token 11 computes
  CHECK(hit.num_tokens == 8);
  CHECK(hit.blocks == std::vector<int32_t>{blocks[0], blocks[1]});
  std::vector<int32_t> longer = prompt;
  longer.push_back(7);
  CHECK(kv.find_cached_prefix(longer).blocks == blocks);
  std::vector<int32_t> diverged = prompt;
  diverged[5] = 0;  // second block differs: only the first is shared
  CHECK(kv.find_cached_prefix(diverged).num_tokens == 4);

  REQUIRE(kv.allocate_slots(2, 13, &hit));
  CHECK(kv.blocks(2).size() == 4);
  CHECK(std::equal(hit.blocks.begin(), hit.blocks.end(), kv.blocks(2).begin()));
  CHECK(kv.num_free_blocks() == 12);
  CHECK(kv.prefix_query_tokens() == 24);
  CHECK(kv.prefix_hit_tokens() == 8);
  CHECK(kv.usage() == doctest::Approx(0.25));
  CHECK_FALSE(kv.allocate_slots(3, 13 * 4));  // more than the free blocks: nothing taken
  CHECK(kv.num_free_blocks() == 12);
  CHECK(kv.blocks(3).empty());
  kv.free(2);
  kv.free(42);  // unknown: ignored
  CHECK(kv.num_free_blocks() == 16);

  // Requests 3 and 4 compute the same first block in one step: 3's copy is registered, and
  // 4's next blocks are chained to it, so a later lookup still finds all three.
  REQUIRE(kv.allocate_slots(3, 4));
  REQUIRE(kv.allocate_slots(4, 12));
  kv.cache_blocks(3, iota(4, 0), 4);
  kv.cache_blocks(4, iota(12, 0), 12);
  const std::vector<int32_t> b3 = kv.blocks(3), b4 = kv.blocks(4);
  CHECK(kv.find_cached_prefix(iota(13, 0)).blocks == std::vector<int32_t>{b3[0], b4[1], b4[2]});
  kv.free(3);
  kv.free(4);

  KVCacheManager off(16, 4, false);
  REQUIRE(off.allocate_slots(1, 12));
  off.cache_blocks(1, prompt, 12);
  off.free(1);
  CHECK(off.find_cached_prefix(longer).num_tokens == 0);
}

TEST_CASE("llm scheduler: chunked prefill across steps, every field by hand") {
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 8, c.max_num_batched_tokens = 5, c.max_model_len = 16;
  Scheduler s(c);
  s.add_request(7, iota(10, 100), greedy(3));
  StepPlan p = s.schedule();
  REQUIRE(p.num_seqs() == 1);
  check_seq(p.seqs[0], 7, 5, 0, false);
  CHECK(p.token_ids == iota(5, 100));
  CHECK(p.positions == iota(5, 0));
  CHECK(p.slot_mapping == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(p.query_start == std::vector<int32_t>{0, 5});
  CHECK(p.seq_lens == std::vector<int32_t>{5});
  CHECK(p.max_blocks_per_seq == 4);
  CHECK(p.block_tables == std::vector<int32_t>{0, 1, 0, 0});
  CHECK(p.logits_indices.empty());
  CHECK(s.update_from_output(p, {}).empty());

  p = s.schedule();
  REQUIRE(p.num_seqs() == 1);
  check_seq(p.seqs[0], 7, 5, 5, true);
  CHECK(p.token_ids == iota(5, 105));
  CHECK(p.positions == iota(5, 5));
  CHECK(p.slot_mapping == std::vector<int64_t>{5, 6, 7, 8, 9});
  CHECK(p.seq_lens == std::vector<int32_t>{10});
  CHECK(p.block_tables == std::vector<int32_t>{0, 1, 2, 0});
  CHECK(p.logits_indices == std::vector<int32_t>{4});
  std::vector<SeqOutput> out = s.update_from_output(p, {{7, 55, -0.5f, {}, false, ""}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].token == 55);
  CHECK(out[0].logprob == -0.5f);
  CHECK_FALSE(out[0].finished);

  p = s.schedule();  // decode
  REQUIRE(p.num_seqs() == 1);
  check_seq(p.seqs[0], 7, 1, 10, true);
  CHECK(p.token_ids == std::vector<int32_t>{55});
  CHECK(p.slot_mapping == std::vector<int64_t>{10});
  CHECK(p.seq_lens == std::vector<int32_t>{11});
  CHECK(p.logits_indices == std::vector<int32_t>{0});
  CHECK(s.tokens(7).size() == 11);
  CHECK(s.num_prompt_tokens(7) == 10);
}

TEST_CASE("llm scheduler: a step mixes a decode and a prefill chunk") {
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 8, c.max_num_batched_tokens = 5, c.max_model_len = 16;
  Scheduler s(c);
  s.add_request(1, {9, 8, 7}, greedy(4));
  StepPlan p = s.schedule();
  CHECK(p.logits_indices == std::vector<int32_t>{2});
  s.update_from_output(p, {{1, 6, 0.0f, {}, false, ""}});
  s.add_request(2, iota(6, 20), greedy(4));
  p = s.schedule();
  REQUIRE(p.num_seqs() == 2);
  check_seq(p.seqs[0], 1, 1, 3, true);
  check_seq(p.seqs[1], 2, 4, 0, false);  // the budget left after the decode
  CHECK(p.token_ids == std::vector<int32_t>{6, 20, 21, 22, 23});
  CHECK(p.positions == std::vector<int32_t>{3, 0, 1, 2, 3});
  CHECK(p.slot_mapping == std::vector<int64_t>{3, 4, 5, 6, 7});
  CHECK(p.query_start == std::vector<int32_t>{0, 1, 5});
  CHECK(p.seq_lens == std::vector<int32_t>{4, 4});
  CHECK(p.block_tables == std::vector<int32_t>{0, 0, 0, 0, 1, 0, 0, 0});
  CHECK(p.logits_indices == std::vector<int32_t>{0});
  CHECK(s.num_running() == 2);
  expect_error([&] { s.schedule(); }, ErrorKind::Internal, "before update_from_output");
  expect_error([&] { s.update_from_output(p, {}); }, ErrorKind::Input, "0 sampled tokens");
  expect_error([&] { s.update_from_output(p, {{2, 5, 0.0f, {}, false, ""}}); }, ErrorKind::Input,
               "the plan samples request 1");
}

TEST_CASE("llm scheduler: KV exhaustion preempts, and outputs match an ample pool") {
  std::vector<Req> reqs;
  for (int64_t id = 0; id < 12; ++id) {
    std::vector<int32_t> prompt = iota(3 + (int32_t)(id * 7) % 23, 300);  // shared prefixes
    prompt.back() = 1000 + (int32_t)id;
    SamplingParams p = greedy(5 + (int32_t)(id * 5) % 17);
    if (id % 3 == 0) p.stop_token_ids = {7, 11};
    reqs.push_back({id, prompt, p});
  }
  SchedulerConfig c;
  c.block_size = 4, c.max_num_seqs = 6, c.max_num_batched_tokens = 16, c.max_model_len = 40;
  std::map<int64_t, Result> expected;
  for (const Req& r : reqs) expected[r.id] = reference(r, c.max_model_len);
  for (bool caching : {true, false}) {
    c.enable_prefix_caching = caching;
    c.num_blocks = 200;
    Stats ample, tight;
    CHECK(run_all(c, reqs, &ample) == expected);
    CHECK(ample.preemptions == 0);
    c.num_blocks = 11;
    CHECK(run_all(c, reqs, &tight) == expected);
    CHECK(tight.preemptions > 0);
    CHECK((tight.hit_tokens > 0) == caching);
  }

  // Random configs, pools barely larger than the largest request, prompts sharing prefixes.
  Rng g(12345);
  Stats total;
  for (int trial = 0; trial < 150; ++trial) {
    c.block_size = 1 + (int32_t)(g.next() % 8);
    c.max_model_len = 8 + (int32_t)(g.next() % 60);
    c.max_num_seqs = 1 + (int32_t)(g.next() % 8);
    c.max_num_batched_tokens = 1 + (int32_t)(g.next() % 40);
    c.enable_prefix_caching = g.next() % 4 != 0;
    std::vector<Req> rs;
    int32_t most = 1;
    const int64_t num_requests = 1 + (int64_t)(g.next() % 15);
    for (int64_t id = 0; id < num_requests; ++id) {
      std::vector<int32_t> prompt(1 + g.next() % c.max_model_len);
      const int32_t family = (int32_t)(g.next() % 3) * 100;
      for (size_t j = 0; j < prompt.size(); ++j)
        prompt[j] = g.next() % 4 ? family + (int32_t)j % 13 : (int32_t)(g.next() % 90);
      SamplingParams p = greedy(1 + (int32_t)(g.next() % 20));
      if (g.next() % 3 == 0) p.stop_token_ids = {(int32_t)(1 + g.next() % 89)};
      const int32_t kv = std::min((int32_t)prompt.size() + p.max_tokens - 1, c.max_model_len);
      most = std::max(most, (kv + c.block_size - 1) / c.block_size);
      rs.push_back({id, prompt, p});
    }
    c.num_blocks = most + (int32_t)(g.next() % 4);
    std::map<int64_t, Result> want;
    for (const Req& r : rs) want[r.id] = reference(r, c.max_model_len);
    Stats st;
    CHECK_MESSAGE(run_all(c, rs, &st) == want, "trial ", trial);
    total.preemptions += st.preemptions, total.hit_tokens += st.hit_tokens;
  }
  CHECK(total.preemptions > 100);
  CHECK(total.hit_tokens > 1000);
}

TEST_CASE("llm scheduler: a repeated prompt reuses cached blocks and computes its last token") {
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 8, c.max_num_batched_tokens = 64, c.max_model_len = 32;
  Scheduler s(c);
  FakeModel model(c);
  s.add_request(1, iota(9, 50), greedy(1));
  StepPlan p = s.schedule();
  const std::vector<int32_t> first_blocks(p.block_tables.begin(), p.block_tables.begin() + 3);
  CHECK(s.update_from_output(p, model.run(p, s))[0].finish_reason == "length");
  s.add_request(2, iota(9, 50), greedy(2));
  p = s.schedule();
  REQUIRE(p.num_seqs() == 1);
  check_seq(p.seqs[0], 2, 1, 8, true);
  CHECK(std::equal(first_blocks.begin(), first_blocks.begin() + 2, p.block_tables.begin()));
  CHECK(s.kv().prefix_hit_tokens() == 8);
  check_plan(p, s);
  s.update_from_output(p, model.run(p, s));
}

TEST_CASE("llm scheduler: only prompt blocks are cached, generated tokens are never hit") {
  // Request 1: a 6-token prompt and 6 generated tokens fill blocks 0-2 (block size 4); block 1
  // holds 2 prompt and 2 generated tokens, block 2 only generated ones. Request 2's prompt is
  // all 12 of them: it may hit block 0 only, and computes the rest as prompt tokens.
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 16, c.max_num_batched_tokens = 64, c.max_model_len = 32;
  Scheduler s(c);
  FakeModel model(c);
  s.add_request(1, iota(6, 50), greedy(6));
  std::vector<int32_t> all;
  while (s.has_unfinished()) {
    StepPlan p = s.schedule();
    check_plan(p, s);
    if (all.empty()) all = s.tokens(1);
    for (const SeqOutput& o : s.update_from_output(p, model.run(p, s))) all.push_back(o.token);
  }
  REQUIRE(all.size() == 12);
  s.add_request(2, all, greedy(1));
  StepPlan p = s.schedule();
  REQUIRE(p.num_seqs() == 1);
  check_seq(p.seqs[0], 2, 8, 4, true);  // block 0 hit, tokens 4..11 computed
  for (uint8_t f : p.prompt_rows) CHECK(f == 1);
  CHECK(s.kv().prefix_hit_tokens() == 4);
  check_plan(p, s);
  s.update_from_output(p, model.run(p, s));
}

TEST_CASE("llm scheduler: cancellation frees blocks at once") {
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 16, c.max_num_batched_tokens = 64;
  Scheduler s(c);
  FakeModel model(c);
  s.add_request(1, iota(10, 1), greedy(8));
  s.add_request(2, iota(6, 1), greedy(8));
  s.add_request(3, iota(6, 1), greedy(8));
  StepPlan p = s.schedule();
  s.update_from_output(p, model.run(p, s));
  CHECK(s.num_free_blocks() < 16);
  s.finish_requests({1, 99});
  CHECK(s.num_running() == 2);
  p = s.schedule();
  std::vector<SeqOutput> sampled = model.run(p, s);
  s.finish_requests({2});  // while the plan is out: update_from_output skips it
  std::vector<SeqOutput> out = s.update_from_output(p, sampled);
  REQUIRE(out.size() == 1);
  CHECK(out[0].id == 3);
  p = s.schedule();  // a failed step: the runner finishes everything, then discards the plan
  s.finish_requests({3});
  CHECK(s.update_from_output(p, {}).empty());
  CHECK(s.schedule().num_seqs() == 0);
  CHECK(s.num_free_blocks() == 16);
  CHECK_FALSE(s.has_unfinished());
  s.add_request(4, {1}, greedy(1));  // waiting requests cancel too
  s.finish_requests({4});
  CHECK(s.num_waiting() == 0);
  expect_error([&] { s.tokens(4); }, ErrorKind::Input, "unknown request id 4");
}

TEST_CASE("llm scheduler: finish reasons stop, max_tokens and max_model_len") {
  SchedulerConfig c;
  c.block_size = 4, c.num_blocks = 16, c.max_num_batched_tokens = 64, c.max_model_len = 12;
  std::vector<Req> reqs = {{1, iota(4, 1), greedy(3)}, {2, iota(8, 1), greedy(100)},
                           {3, iota(12, 1), greedy(100)}, {4, iota(5, 1), greedy(100)}};
  // Request 4 stops at its second token, whatever the fake model makes it.
  std::vector<int32_t> ctx = reqs[3].prompt;
  ctx.push_back(next_token(ctx));
  reqs[3].params.stop_token_ids = {next_token(ctx)};
  std::map<int64_t, Result> got = run_all(c, reqs);
  CHECK(got[1].tokens.size() == 3);
  CHECK(got[1].reason == "length");
  CHECK(got[2].tokens.size() == 4);  // 8 + 4 = max_model_len
  CHECK(got[2].reason == "length");
  CHECK(got[3].tokens.size() == 1);  // a prompt of max_model_len still yields one token
  CHECK(got[3].reason == "length");
  CHECK(got[4].tokens.size() == 2);  // the stop token is returned
  CHECK(got[4].tokens.back() == reqs[3].params.stop_token_ids[0]);
  CHECK(got[4].reason == "stop");
}

TEST_CASE("llm scheduler: config and add_request validation") {
  SchedulerConfig c;
  expect_error([&] { Scheduler s(c); }, ErrorKind::Input, "[scheduler] num_blocks");
  c.num_blocks = 4, c.block_size = 0;
  expect_error([&] { Scheduler s(c); }, ErrorKind::Input, "block_size must be >= 1, got 0");
  c.block_size = 4, c.max_num_batched_tokens = 0;
  expect_error([&] { Scheduler s(c); }, ErrorKind::Input, "max_num_batched_tokens");
  c.max_num_batched_tokens = 8, c.max_num_seqs = 0;
  expect_error([&] { Scheduler s(c); }, ErrorKind::Input, "max_num_seqs");
  c.max_num_seqs = 2, c.max_model_len = 0;
  expect_error([&] { Scheduler s(c); }, ErrorKind::Input, "max_model_len");
  c.max_model_len = 20;
  Scheduler s(c);
  s.add_request(1, {1, 2}, greedy(2));
  expect_error([&] { s.add_request(1, {1}, greedy(2)); }, ErrorKind::Input, "already in use");
  expect_error([&] { s.add_request(2, {}, greedy(2)); }, ErrorKind::Input, "empty");
  expect_error([&] { s.add_request(2, {1, -3}, greedy(2)); }, ErrorKind::Input, "is -3");
  expect_error([&] { s.add_request(2, iota(21, 0), greedy(1)); }, ErrorKind::Input,
               "21 tokens, longer than max_model_len 20");
  expect_error([&] { s.add_request(2, iota(10, 0), greedy(8)); }, ErrorKind::Input,
               "need 5 KV blocks of 4 tokens, the pool has 4");
  s.add_request(2, iota(10, 0), greedy(7));  // 16 tokens of KV: fits exactly
  SamplingParams bad = greedy(2);
  bad.top_p = 0;
  expect_error([&] { s.add_request(3, {1}, bad); }, ErrorKind::Input, "[sampling] top_p");
  expect_error([&] { s.add_request(3, {1}, greedy(0)); }, ErrorKind::Input, "max_tokens");
  SamplingParams unseeded;
  s.add_request(3, {1}, unseeded);
  CHECK(s.params(3).has_seed);
  Rng copy(s.params(3).seed);
  CHECK(copy.next() == s.rng(3).next());
  expect_error([&] { s.params(9); }, ErrorKind::Input, "unknown request id 9");
  c.num_blocks = 64;
  Scheduler busy(c);  // max_num_seqs 2 bounds admission
  for (int64_t id = 0; id < 3; ++id) busy.add_request(id, {1, 2}, greedy(2));
  CHECK(busy.schedule().num_seqs() == 2);
  CHECK(busy.num_waiting() == 1);
}
