// Sampler (sampler.h): penalties, log-softmax, greedy / temperature / top-k / top-p / min-p.
// The float scratch holds the penalized logits [vocab], then per-token counts for the output
// penalties and, reusing that half, candidate token ids stored as exact float values (every id
// is below 2^24), so one caller-owned buffer serves both without per-call allocations.
// The reference is the spec in sampler.h; tests/cpp/test_llm_sampler.cpp checks this lazy
// version against a full-sort implementation of it.
#include "llm/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "ember/error.h"
#include "kernels/generic/kernels_generic.h"

namespace ember::llm {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int32_t kMaxHead = 256;

// The finite tokens of x by descending logit, ties to the lower id, sorted lazily. The
// constructor finds the `head` best values with a small heap (blocks of eight tokens that
// cannot enter it are skipped with one vector compare), lists the tokens at or above the
// worst of them and sorts those. Reading past them lists the other finite tokens once, in
// value buckets over [floor, that threshold) (a counting sort, stable in id order; everything
// below floor shares the last bucket), and sorts bucket after bucket as ranks are read, a
// large bucket in doubling chunks. A peaked distribution costs a few O(vocab) passes; reading
// every rank of a flat one sorts only small buckets.
class Descending {
 public:
  struct Before {  // a before b: higher logit, then lower id
    const float* x;
    bool operator()(float a, float b) const {
      const int32_t i = (int32_t)a, j = (int32_t)b;
      return x[i] > x[j] || (x[i] == x[j] && i < j);
    }
  };

  Descending(const float* x, int32_t vocab, float* ids, int32_t head, float floor)
      : x_(x), ids_(ids), vocab_(vocab), floor_(floor) {
    float heap[kMaxHead];  // min-heap of the best values so far
    const auto gt = std::greater<float>();
    int32_t h = 0, i = 0;
    head = std::clamp(head, 1, kMaxHead);
    for (; i < vocab && h < head; ++i)
      if (x[i] != kNegInf) heap[h++] = x[i], std::push_heap(heap, heap + h, gt);
    auto enter = [&](float v) {
      if (h < head || !(v > heap[0])) return;
      std::pop_heap(heap, heap + h, gt);
      heap[h - 1] = v;
      std::push_heap(heap, heap + h, gt);
    };
    for (; i < vocab && i % 8; ++i) enter(x[i]);
    for (; i + 8 <= vocab; i += 8) {
      bool any = false;
      for (int32_t l = 0; l < 8; ++l) any |= x[i + l] > heap[0];
      if (any)
        for (int32_t l = 0; l < 8; ++l) enter(x[i + l]);
    }
    for (; i < vocab; ++i) enter(x[i]);
    tau_ = h < head ? kNegInf : heap[0];  // tokens at or above it come first

    for (int32_t j = 0; j < vocab; ++j) n_ += x[j] != kNegInf;
    int32_t j = 0;
    for (; j + 8 <= vocab; j += 8) {
      bool any = false;
      for (int32_t l = 0; l < 8; ++l) any |= x[j + l] >= tau_;
      if (any)
        for (int32_t l = 0; l < 8; ++l)
          if (in_head(x[j + l])) ids[listed_++] = (float)(j + l);
    }
    for (; j < vocab; ++j)
      if (in_head(x[j])) ids[listed_++] = (float)j;
    std::sort(ids, ids + listed_, Before{x});
    sorted_ = listed_;
  }
  int32_t size() const { return n_; }
  int32_t num_sorted() const { return sorted_; }
  int32_t at(int32_t r) {
    if (r >= sorted_) grow(r + 1);
    return (int32_t)ids_[r];
  }

 private:
  static constexpr int32_t kBuckets = 2048;
  bool in_head(float v) const { return v >= tau_ && v != kNegInf; }

  void list_tail() {
    float lo = tau_;
    for (int32_t i = 0; i < vocab_; ++i)
      if (x_[i] != kNegInf) lo = std::min(lo, x_[i]);
    lo = std::max(lo, floor_);
    float scale = (float)kBuckets / (tau_ - lo);
    if (!(tau_ > lo) || !std::isfinite(scale)) scale = 0;
    auto bucket = [&](float v) {
      const float d = (tau_ - v) * scale;  // >= 0, non-decreasing as v falls
      return d < (float)kBuckets ? (int32_t)d : kBuckets;
    };
    std::fill(end_, end_ + kBuckets + 1, 0);
    for (int32_t i = 0; i < vocab_; ++i)
      if (x_[i] != kNegInf && !in_head(x_[i])) ++end_[bucket(x_[i])];
    int32_t pos = listed_;
    for (int32_t b = 0; b <= kBuckets; ++b) pos += end_[b], end_[b] = pos - end_[b];  // starts
    for (int32_t i = 0; i < vocab_; ++i)
      if (x_[i] != kNegInf && !in_head(x_[i])) ids_[end_[bucket(x_[i])]++] = (float)i;
    listed_ = n_;  // end_[b] is now the end of bucket b
  }

  void grow(int32_t count) {
    if (listed_ < n_) list_tail();
    while (sorted_ < count) {
      while (end_[bucket_] <= sorted_) ++bucket_;
      const int32_t e = end_[bucket_];
      const int32_t end = std::min(e, std::max({count, sorted_ + 64, 2 * sorted_}));
      if (end == e) {
        std::sort(ids_ + sorted_, ids_ + e, Before{x_});
      } else if ((int64_t)(end - sorted_) * 16 < e - sorted_) {
        std::partial_sort(ids_ + sorted_, ids_ + end, ids_ + e, Before{x_});
      } else {
        std::nth_element(ids_ + sorted_, ids_ + end, ids_ + e, Before{x_});
        std::sort(ids_ + sorted_, ids_ + end, Before{x_});
      }
      sorted_ = end;
    }
  }

  const float* x_;
  float* ids_;
  int32_t vocab_, n_ = 0, listed_ = 0, sorted_ = 0, bucket_ = 0;
  float tau_ = kNegInf, floor_;
  int32_t end_[kBuckets + 1];
};

// sum_i exp((x[i] - m) * inv_t) with the kernels' vectorised exp (<= 2 ulp, exp(-inf) = 0,
// as the per-token weights): the float weights summed in eight double lanes.
double sum_exp(const float* x, int32_t vocab, float m, float inv_t) {
  constexpr int32_t kChunk = 256;
  float t[kChunk];
  double s = 0;
  for (int32_t i0 = 0; i0 < vocab; i0 += kChunk) {
    const int32_t len = std::min(kChunk, vocab - i0);
    for (int32_t j = 0; j < len; ++j) t[j] = (x[i0 + j] - m) * inv_t;
    cpu::exp_f32_array(t, t, len);
    std::fill(t + len, t + kChunk, 0.0f);
    double lanes[8] = {};
    for (int32_t j = 0; j < kChunk; j += 8)
      for (int32_t l = 0; l < 8; ++l) lanes[l] += t[j + l];
    for (double v : lanes) s += v;
  }
  return s;
}

// max of x [vocab] (no NaN) in eight lanes, so that it vectorises.
float max_of(const float* x, int32_t vocab) {
  float lanes[8];
  std::fill(lanes, lanes + 8, kNegInf);
  int32_t i = 0;
  for (; i + 8 <= vocab; i += 8)
    for (int32_t l = 0; l < 8; ++l) lanes[l] = lanes[l] > x[i + l] ? lanes[l] : x[i + l];
  float m = kNegInf;
  for (; i < vocab; ++i) m = m > x[i] ? m : x[i];
  for (float v : lanes) m = m > v ? m : v;
  return m;
}

// Logits after NaN -> -inf and the penalties, into x [vocab]; aux [vocab] is scratch.
void penalized_logits(const float* logits, int32_t vocab, const SamplingParams& p,
                      const std::vector<int32_t>& history, int32_t num_prompt, float* x,
                      float* aux) {
  for (int32_t i = 0; i < vocab; ++i) x[i] = logits[i] != logits[i] ? kNegInf : logits[i];
  for (int32_t t : history)
    EMBER_CHECK(t >= 0 && t < vocab, Input, "[sampler] history token ", t,
                " is outside the vocabulary [0, ", vocab, ")");
  if (p.repetition_penalty != 1.0f) {
    // From the input logits, so a token repeated in history is penalized once.
    const float rp = p.repetition_penalty;
    for (int32_t t : history) {
      const float v = logits[t] != logits[t] ? kNegInf : logits[t];
      x[t] = v > 0 ? v / rp : v * rp;
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    const size_t first = (size_t)std::clamp<int64_t>(num_prompt, 0, (int64_t)history.size());
    for (size_t i = first; i < history.size(); ++i) aux[history[i]] = 0;
    for (size_t i = first; i < history.size(); ++i) aux[history[i]] += 1;
    for (size_t i = first; i < history.size(); ++i) {
      const int32_t t = history[i];
      if (aux[t] > 0) x[t] -= aux[t] * p.frequency_penalty + p.presence_penalty;
      aux[t] = 0;  // each distinct token once
    }
  }
}

}  // namespace

void check_sampling_params(const SamplingParams& p) {
  EMBER_CHECK(std::isfinite(p.temperature) && p.temperature >= 0, Input,
              "[sampling] temperature must be finite and >= 0, got ", p.temperature);
  EMBER_CHECK(p.top_k >= 0, Input, "[sampling] top_k must be >= 0 (0: off), got ", p.top_k);
  EMBER_CHECK(p.top_p > 0 && p.top_p <= 1, Input, "[sampling] top_p must be in (0, 1], got ",
              p.top_p);
  EMBER_CHECK(p.min_p >= 0 && p.min_p <= 1, Input, "[sampling] min_p must be in [0, 1], got ",
              p.min_p);
  EMBER_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0, Input,
              "[sampling] repetition_penalty must be finite and > 0, got ", p.repetition_penalty);
  EMBER_CHECK(std::isfinite(p.presence_penalty) && std::isfinite(p.frequency_penalty), Input,
              "[sampling] presence_penalty and frequency_penalty must be finite, got ",
              p.presence_penalty, " and ", p.frequency_penalty);
  EMBER_CHECK(p.max_tokens >= 1, Input, "[sampling] max_tokens must be >= 1, got ", p.max_tokens);
  for (int32_t t : p.stop_token_ids)
    EMBER_CHECK(t >= 0, Input, "[sampling] stop token ids must be >= 0, got ", t);
  EMBER_CHECK(p.logprobs >= -1, Input, "[sampling] logprobs must be >= -1 (-1: none), got ",
              p.logprobs);
}

int32_t sample_token(const float* logits, int32_t vocab, const SamplingParams& p,
                     const std::vector<int32_t>& history, int32_t num_prompt, Rng& rng,
                     float* logprob, std::vector<std::pair<int32_t, float>>* top,
                     std::vector<float>* scratch) {
  EMBER_CHECK(vocab >= 1 && vocab <= (1 << 24), Input, "[sampler] vocab ", vocab,
              " is outside [1, 2^24]");
  if (scratch->size() < 2 * (size_t)vocab) scratch->resize(2 * (size_t)vocab);
  float* x = scratch->data();  // [vocab] penalized logits
  float* aux = x + vocab;      // [vocab] output-token counts, then candidate ids
  penalized_logits(logits, vocab, p, history, num_prompt, x, aux);

  const float m = max_of(x, vocab);
  EMBER_CHECK(m != kNegInf, Internal, "[sampler] every one of the ", vocab,
              " logits is -inf or NaN (after penalties)");
  const int32_t best = (int32_t)(std::find(x, x + vocab, m) - x);
  EMBER_CHECK(m != -kNegInf, Internal, "[sampler] the logit of token ", best,
              " is +inf (after penalties)");

  const bool greedy = p.temperature == 0 || p.top_k == 1;
  const bool want_top = top && p.logprobs > 0;
  if (top) top->clear();
  if (greedy && !want_top) {
    if (logprob) *logprob = (float)-std::log(sum_exp(x, vocab, m, 1.0f));  // x[best] == m
    return best;
  }

  // Below m - 104 T a token's weight exp((x - m) / T) is 0 in float: its rank hardly matters.
  const float inv_t = greedy ? 0.0f : 1.0f / p.temperature;
  Descending order(x, vocab, aux, std::max({64, p.top_k, want_top ? p.logprobs : 0}),
                   greedy ? kNegInf : m - 104.0f / inv_t);
  const int32_t n = order.size();
  int32_t chosen = best;
  double z_t = -1;  // sum of exp((x - m) / T) once computed
  if (!greedy) {
    // w(r) = exp((x - m) / T) of rank r, computed for a window of already sorted ranks at once.
    float wbuf[256];
    int32_t w0 = 0, w1 = 0;
    auto w = [&](int32_t r) -> double {
      if (r < w0 || r >= w1) {
        order.at(r);
        w0 = r;
        w1 = std::min(r + 256, order.num_sorted());
        for (int32_t k = w0; k < w1; ++k) wbuf[k - w0] = (x[order.at(k)] - m) * inv_t;
        cpu::exp_f32_array(wbuf, wbuf, w1 - w0);
      }
      return wbuf[r - w0];
    };
    auto mass = [&](int32_t len) {
      if (len == n) return z_t >= 0 ? z_t : (z_t = sum_exp(x, vocab, m, inv_t));
      double s = 0;
      for (int32_t r = 0; r < len; ++r) s += w(r);
      return s;
    };
    int32_t len = p.top_k > 0 ? std::min(p.top_k, n) : n;
    double kept = -1;  // mass of the first len tokens, once known
    if (p.top_p < 1.0f) {  // smallest prefix of the top-k set holding top_p of its mass
      const double target = (double)p.top_p * mass(len);
      double cum = 0;
      int32_t r = 0;
      for (double wr; r < len && cum < target && (wr = w(r)) > 0; ++r) cum += wr;
      len = r;  // zero-weight tokens dropped: they cannot be drawn
      kept = cum;
    }
    if (p.min_p > 0.0f) {  // w(0) == 1 is the highest probability
      double cum = 1;
      int32_t r = 1;
      for (double wr; r < len && (wr = w(r)) >= p.min_p; ++r) cum += wr;
      if (r < len || kept < 0) kept = cum;
      len = r;
    }
    const double u = rng.uniform() * (kept >= 0 ? kept : mass(len));
    double cum = 0;
    int32_t r = 0;
    for (double wr; r < len && (wr = w(r)) > 0; ++r)
      if (u < (cum += wr)) break;
    // r == len or a zero weight: u rounded past the last cumulative sum; take the last token
    // with a weight (w(0) == 1).
    chosen = order.at(r < len && w(r) > 0 ? r : r - 1);
    if (p.temperature != 1.0f) z_t = -1;         // not the log-softmax normalizer
  }

  if (logprob || want_top) {
    const double lse = m + std::log(z_t >= 0 ? z_t : sum_exp(x, vocab, m, 1.0f));
    if (logprob) *logprob = (float)(x[chosen] - lse);
    const int32_t count = want_top ? std::min(p.logprobs, n) : 0;
    for (int32_t r = 0; r < count; ++r) {
      const int32_t t = order.at(r);
      top->emplace_back(t, (float)(x[t] - lse));
    }
  }
  return chosen;
}

}  // namespace ember::llm
