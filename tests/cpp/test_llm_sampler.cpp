// LLM sampler: greedy, logprobs, penalties, temperature / top-k / top-p / min-p against a
// full-sort reference written from the spec in sampler.h, and the Rng's pinned sequence.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "ember/error.h"
#include "llm/sampler.h"

using namespace ember;
using namespace ember::llm;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_logits(int32_t vocab, Rng& rng, double scale) {
  std::vector<float> x(vocab);
  for (float& v : x) v = (float)((rng.uniform() * 2 - 1) * scale);
  return x;
}

std::vector<double> log_softmax(const std::vector<float>& x) {
  double m = -INFINITY, s = 0;
  for (float v : x) m = std::max(m, (double)v);
  for (float v : x) s += std::exp(v - m);
  std::vector<double> out;
  for (float v : x) out.push_back(v - m - std::log(s));
  return out;
}

// The spec, directly: a full sort, double precision. `x` is already penalized.
int32_t reference_sample(const std::vector<float>& x, const SamplingParams& p, double u) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < (int32_t)x.size(); ++i)
    if (x[i] != -kInf) ids.push_back(i);
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  if (p.temperature == 0 || p.top_k == 1) return ids[0];
  std::vector<double> w;
  for (int32_t id : ids) w.push_back(std::exp((x[id] - x[ids[0]]) / (double)p.temperature));
  size_t len = p.top_k > 0 ? std::min<size_t>(p.top_k, ids.size()) : ids.size();
  if (p.top_p < 1) {
    double mass = 0, cum = 0;
    for (size_t r = 0; r < len; ++r) mass += w[r];
    size_t r = 0;
    while (r < len && cum < p.top_p * mass) cum += w[r++];
    len = r;
  }
  if (p.min_p > 0) {
    size_t r = 1;
    while (r < len && w[r] >= p.min_p * w[0]) ++r;
    len = r;
  }
  double total = 0, cum = 0;
  for (size_t r = 0; r < len; ++r) total += w[r];
  for (size_t r = 0; r < len; ++r)
    if (u * total < (cum += w[r])) return ids[r];
  return ids[len - 1];
}

int32_t sample(const std::vector<float>& x, const SamplingParams& p, Rng& rng,
               float* logprob = nullptr, std::vector<std::pair<int32_t, float>>* top = nullptr,
               const std::vector<int32_t>& history = {}, int32_t num_prompt = 0) {
  std::vector<float> scratch;
  return sample_token(x.data(), (int32_t)x.size(), p, history, num_prompt, rng, logprob, top,
                      &scratch);
}

SamplingParams temp(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

}  // namespace

TEST_CASE("llm sampler: Rng is xoshiro256** seeded by splitmix64, pinned") {
  Rng r(42);
  CHECK(r.next() == 0x15780b2e0c2ec716ull);
  CHECK(r.next() == 0x6104d9866d113a7eull);
  Rng a(7), b(7);
  for (int i = 0; i < 100; ++i) {
    const uint64_t bits = a.next();
    const double u = b.uniform();
    CHECK(u == (double)(bits >> 11) * 0x1.0p-53);
    CHECK(u >= 0.0);
    CHECK(u < 1.0);
  }
  CHECK(Rng(1).next() != Rng(2).next());
}

TEST_CASE("llm sampler: greedy takes the argmax, the lower id on ties, and leaves the Rng") {
  std::vector<float> x = {0.5f, 3.0f, -1.0f, 3.0f, NAN, 2.0f};
  Rng rng(1);
  const uint64_t before = Rng(rng).next();
  CHECK(sample(x, temp(0), rng) == 1);
  SamplingParams k1 = temp(1.5f);
  k1.top_k = 1;
  CHECK(sample(x, k1, rng) == 1);
  CHECK(rng.next() == before);
  x[1] = NAN;  // NaN is -inf
  CHECK(sample(x, temp(0), rng) == 3);
}

TEST_CASE("llm sampler: logprob is log_softmax before temperature; top-n ordered") {
  Rng gen(3);
  std::vector<float> x = random_logits(1000, gen, 6.0);
  x[10] = x[20] = 9.0f;  // a tie at the top: lower id first
  x[30] = -kInf;
  const std::vector<double> ref = log_softmax(x);
  for (float t : {0.0f, 0.7f, 2.0f}) {
    SamplingParams p = temp(t);
    p.logprobs = 5;
    Rng rng(11);
    float lp = 0;
    std::vector<std::pair<int32_t, float>> top;
    const int32_t tok = sample(x, p, rng, &lp, &top);
    CHECK(lp == doctest::Approx(ref[tok]).epsilon(1e-5));
    REQUIRE(top.size() == 5);
    CHECK(top[0].first == 10);
    CHECK(top[1].first == 20);
    std::vector<int32_t> order(1000);
    for (int32_t i = 0; i < 1000; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
    for (int r = 0; r < 5; ++r) {
      CHECK(top[r].first == order[r]);
      CHECK(top[r].second == doctest::Approx(ref[order[r]]).epsilon(1e-5));
    }
  }
  SamplingParams p = temp(0);
  p.logprobs = 0;
  std::vector<std::pair<int32_t, float>> top = {{1, 1.0f}};
  Rng rng(1);
  sample(x, p, rng, nullptr, &top);
  CHECK(top.empty());
  p.logprobs = 5000;  // capped at the tokens with a finite logit
  sample(x, p, rng, nullptr, &top);
  CHECK(top.size() == 999);
  double lowest = 0;
  for (double v : ref) lowest = std::isfinite(v) ? std::min(lowest, v) : lowest;
  CHECK(top.back().second == doctest::Approx(lowest).epsilon(1e-5));
}

TEST_CASE("llm sampler: penalties change the logits as specified") {
  const std::vector<float> x = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
  const std::vector<int32_t> history = {0, 1, 1, 3, 3, 5};  // prompt {0, 1, 1}, output {3, 3, 5}
  SamplingParams p = temp(0);
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.logprobs = 6;
  // repetition on {0, 1, 3, 5}: 2/2, -1*2, 3/2, 1/2; then output counts 3:2, 5:1.
  const std::vector<float> expected = {1.0f, -2.0f, 0.5f, 1.5f - 0.5f - 0.5f, -2.0f,
                                       0.5f - 0.25f - 0.5f};
  const std::vector<double> ref = log_softmax(expected);
  Rng rng(1);
  float lp = 0;
  std::vector<std::pair<int32_t, float>> top;
  CHECK(sample(x, p, rng, &lp, &top, history, 3) == 0);
  CHECK(lp == doctest::Approx(ref[0]).epsilon(1e-6));
  REQUIRE(top.size() == 6);
  for (auto [tok, v] : top) CHECK(v == doctest::Approx(ref[tok]).epsilon(1e-6));
  CHECK(top[1].first == 2);  // 0.5 ties 0.5 (token 3): the lower id first
  CHECK(top[2].first == 3);
  // Without the penalties token 3 wins.
  CHECK(sample(x, temp(0), rng, nullptr, nullptr, history, 3) == 3);
}

TEST_CASE("llm sampler: temperature sampling frequencies follow the softmax") {
  const std::vector<float> x = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f, 1.5f, -0.5f, 0.25f};
  const float t = 0.7f;
  std::vector<float> scaled;
  for (float v : x) scaled.push_back(v / t);
  const std::vector<double> lp = log_softmax(scaled);
  const int n = 40000;
  std::vector<int> count(x.size(), 0);
  Rng rng(2024);
  std::vector<float> scratch;
  for (int i = 0; i < n; ++i)
    ++count[sample_token(x.data(), 8, temp(t), {}, 0, rng, nullptr, nullptr, &scratch)];
  double chi2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = n * std::exp(lp[i]);
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  CHECK(chi2 < 30.0);  // 7 degrees of freedom: p < 1e-4 above 29.9
}

TEST_CASE("llm sampler: top-k, top-p and min-p never pick an excluded token") {
  Rng gen(5);
  const std::vector<float> x = random_logits(200, gen, 4.0);
  std::vector<int32_t> order(200);
  for (int32_t i = 0; i < 200; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
  const std::vector<double> lp = log_softmax(x);
  auto allowed = [&](const SamplingParams& p) {
    std::set<int32_t> keep;
    double cum = 0;
    for (int32_t r = 0; r < 200; ++r) {
      const int32_t id = order[r];
      if (p.top_k > 0 && r >= p.top_k) break;
      if (cum >= p.top_p) break;
      if (std::exp(lp[id] - lp[order[0]]) < p.min_p) break;
      keep.insert(id);
      cum += std::exp(lp[id]);
    }
    return keep;
  };
  SamplingParams k = temp(1), tp = temp(1), mp = temp(1);
  k.top_k = 5, tp.top_p = 0.5f, mp.min_p = 0.2f;
  for (const SamplingParams& p : {k, tp, mp}) {
    const std::set<int32_t> keep = allowed(p);
    REQUIRE(keep.size() >= 2);
    std::set<int32_t> seen;
    Rng rng(9);
    for (int i = 0; i < 3000; ++i) seen.insert(sample(x, p, rng));
    CHECK(seen == keep);  // never outside, and every kept token shows up
  }
}

TEST_CASE("llm sampler: matches the full-sort reference; the same seed repeats") {
  Rng gen(77);
  int trials = 0;
  for (int32_t vocab : {1, 3, 64, 1000, 5000, 20000}) {
    for (int i = 0; i < 40; ++i, ++trials) {
      std::vector<float> x = random_logits(vocab, gen, 1.0 + 8 * gen.uniform());
      if (vocab > 3) x[gen.next() % vocab] = -kInf;
      if (i % 2)  // many ties, across the sorted head and the bucketed rest
        for (float& v : x) v = std::round(v * 4) / 4;
      SamplingParams p = temp(0.3f + 1.5f * (float)gen.uniform());
      p.top_k = i % 3 == 0 ? 0 : (int32_t)(gen.next() % 100);
      p.top_p = i % 4 == 0 ? 1.0f : (float)(0.05 + 0.95 * gen.uniform());
      p.min_p = i % 5 < 2 ? 0.0f : (float)(0.3 * gen.uniform());
      Rng rng(1000 + i), copy = rng;
      const int32_t got = sample(x, p, rng);
      CHECK_MESSAGE(got == reference_sample(x, p, copy.uniform()), "vocab ", vocab, " trial ", i);
      Rng after(1000 + i);
      if (p.top_k != 1) after.next();  // one draw per sample, none when greedy
      CHECK(rng.next() == after.next());
      Rng again(1000 + i);
      CHECK(sample(x, p, again) == got);
    }
  }
  CHECK(trials == 240);
  // Top-n through ties over the whole ranking.
  std::vector<float> tied = random_logits(3000, gen, 3.0);
  for (float& v : tied) v = std::round(v);
  std::vector<int32_t> order(3000);
  for (int32_t i = 0; i < 3000; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return tied[a] > tied[b]; });
  SamplingParams all = temp(0.9f);
  all.logprobs = 3000;
  std::vector<std::pair<int32_t, float>> top;
  Rng r1(4);
  sample(tied, all, r1, nullptr, &top);
  REQUIRE(top.size() == 3000);
  for (int32_t r = 0; r < 3000; ++r) CHECK(top[r].first == order[r]);
  // A tiny temperature leaves only the tied best tokens with a nonzero weight.
  Rng r2(8);
  std::set<int32_t> best_seen;
  for (int i = 0; i < 200; ++i) best_seen.insert(sample(tied, temp(1e-3f), r2));
  CHECK(best_seen.size() > 1);
  for (int32_t t : best_seen) CHECK(tied[t] == tied[order[0]]);
  // A seeded stream of tokens repeats; another seed gives another stream.
  std::vector<float> x = random_logits(500, gen, 2.0);
  auto stream = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sample(x, temp(1), rng));
    return out;
  };
  CHECK(stream(5) == stream(5));
  CHECK(stream(5) != stream(6));
}

TEST_CASE("llm sampler: bad logits and history raise clear errors") {
  Rng rng(1);
  auto expect = [](auto f, ErrorKind kind, const std::string& part) {
    try {
      f();
      FAIL("no error: " << part);
    } catch (const Error& e) {
      CHECK(e.kind() == kind);
      CHECK_MESSAGE(std::string(e.what()).find(part) != std::string::npos, e.what());
    }
  };
  expect([&] { sample({-kInf, NAN}, temp(1), rng); }, ErrorKind::Internal, "-inf or NaN");
  expect([&] { sample({0.0f, kInf}, temp(1), rng); }, ErrorKind::Internal, "token 1 is +inf");
  expect([&] { sample({0.0f, 1.0f}, temp(0), rng, nullptr, nullptr, {2}); }, ErrorKind::Input,
         "history token 2 is outside the vocabulary [0, 2)");
  SamplingParams bad = temp(-1);
  expect([&] { check_sampling_params(bad); }, ErrorKind::Input, "[sampling] temperature");
  bad = temp(1), bad.repetition_penalty = 0;
  expect([&] { check_sampling_params(bad); }, ErrorKind::Input, "repetition_penalty");
  bad = temp(1), bad.min_p = 1.5f;
  expect([&] { check_sampling_params(bad); }, ErrorKind::Input, "min_p");
  bad = temp(1), bad.logprobs = -2;
  expect([&] { check_sampling_params(bad); }, ErrorKind::Input, "logprobs");
}
