// Sampler: one token from one row of logits. A pure function of the logits, the sampling
// params, the sequence's token history and its Rng; no state of its own, safe to call for
// different sequences from different threads (each with its own scratch and Rng).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "llm/request.h"

namespace ember::llm {

// Input error ("[sampling] ...") for values outside the ranges documented in SamplingParams:
// temperature >= 0, top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, repetition_penalty > 0,
// finite penalties, max_tokens >= 1, stop ids >= 0, logprobs >= -1.
void check_sampling_params(const SamplingParams& p);

// Order: NaN logits count as -inf (+inf is an Internal error); repetition penalty over the
// distinct tokens of history (prompt + output); presence and frequency penalties over
// history[num_prompt:]; then
//   *logprob = log_softmax of these penalized logits at the chosen token: before temperature
//              and the top-k / top-p / min-p filters (computed only when logprob is non-null);
//   *top     = the min(p.logprobs, finite tokens) best tokens by that logprob, ties to the
//              lower id (filled when p.logprobs > 0 and top is non-null; cleared otherwise).
// Greedy (temperature 0 or top_k 1): the argmax, lowest id on ties; the Rng is not used.
// Otherwise logits / temperature, keep top_k, then the smallest prefix (by descending
// probability, ties to the lower id) whose renormalized mass reaches top_p, then drop tokens
// with probability < min_p * the highest; draw u = rng.uniform() once and invert the CDF of
// the kept tokens in that same order. Weights are exp((logit - max) / T) in float (the
// kernels' vectorised exp), sums in double; a token whose weight underflows to 0 is never
// drawn. Candidates are sorted lazily (sampler.cpp), so a peaked distribution costs O(vocab)
// rather than O(vocab log vocab).
// `scratch` is reused across calls to avoid allocations (grown to 2 * vocab floats). Internal
// error when every logit is -inf or NaN; Input error for a history token outside [0, vocab).
int32_t sample_token(const float* logits, int32_t vocab, const SamplingParams& p,
                     const std::vector<int32_t>& history, int32_t num_prompt, Rng& rng,
                     float* logprob, std::vector<std::pair<int32_t, float>>* top,
                     std::vector<float>* scratch);

}  // namespace ember::llm
