// Per-request structs shared by the LLM scheduler, the sampler and the step runner: sampling
// parameters, the per-request random generator, and what a step hands back per sequence.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ember::llm {

struct SamplingParams {
  float temperature = 0.0f;          // 0: greedy
  int32_t top_k = 0;                 // 0: off
  float top_p = 1.0f;                // 1: off
  float min_p = 0.0f;                // 0: off
  float repetition_penalty = 1.0f;   // HF, prompt + output tokens: logit > 0 ? logit/p : logit*p
  float presence_penalty = 0.0f;     // OpenAI, output tokens: logit -= penalty once per token seen
  float frequency_penalty = 0.0f;    // OpenAI, over output tokens: logit -= count * penalty
  uint64_t seed = 0;
  bool has_seed = false;             // false: Scheduler::add_request draws one and sets it
  int32_t max_tokens = 16;           // generated tokens, >= 1
  std::vector<int32_t> stop_token_ids;  // include EOS when the caller wants it
  int32_t logprobs = -1;             // -1: none; 0: the chosen token's; n > 0: also the top n
};

// xoshiro256** seeded through splitmix64: fully specified, so a seed gives the same tokens on
// every platform (std:: distributions are implementation-defined, hence unused).
struct Rng {
  explicit Rng(uint64_t seed) {
    for (uint64_t& w : s) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      w = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  // [0, 1) with 53 random bits.
  double uniform() { return (double)(next() >> 11) * 0x1.0p-53; }

  uint64_t s[4];

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
};

struct FinishedSeq {
  int64_t id;
  std::string finish_reason;  // "stop" | "length" | "abort"
};

// One sampled token of one sequence. The runner fills id/token/logprob/top; the scheduler's
// update_from_output returns it with finished/finish_reason set.
struct SeqOutput {
  int64_t id = 0;
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first
  bool finished = false;
  std::string finish_reason;  // "" | "stop" | "length"
  // On a request's first token only: seconds from add_request to the start of the step that
  // first scheduled it (its queue time); -1 otherwise.
  double queued_s = -1.0;
};

}  // namespace ember::llm
