// Rope and PagedAttention (spec: cpp/src/ops/ops_llm.cpp; kernels/generic/llm_kernels.cpp,
// kernels/x86/llm_kernels_avx2.cpp): both against double references (f32/f16 caches, GQA, odd
// block sizes, shuffled block tables, mixed prefill/decode, padding, unwritten tokens); AVX2 vs
// generic, threads, chunking and batching bit for bit; metadata and shape errors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/dtype.h"
#include "kernels/generic/llm_kernels.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#include "op_test_util.h"
#include "runtime/cost.h"
#include "runtime/registry.h"

using namespace ember;
using ember::test::op_run;

namespace {

Tensor rnd(const Shape& s, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(DType::F32, s);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = u(rng);
  return t;
}

template <class T>
Tensor ints(const std::vector<T>& v, Shape shape = {}) {
  Tensor t = Tensor::empty(sizeof(T) == 8 ? DType::I64 : DType::I32,
                           shape.empty() ? Shape{(int64_t)v.size()} : shape);
  std::copy(v.begin(), v.end(), t.ptr<T>());
  return t;
}

// Rows [a, b) of a tensor, copied.
Tensor rows(const Tensor& t, int64_t a, int64_t b) {
  Shape s = t.shape();
  s[0] = b - a;
  Tensor r = Tensor::empty(t.dtype(), s);
  const size_t row = t.nbytes() / t.dim(0);
  if (b > a) std::memcpy(r.data(), (const char*)t.data() + a * row, (b - a) * row);
  return r;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

struct Seq {
  int before = 0, n = 0;  // context before the step, new tokens
  bool cached = false;    // the new tokens' k, v are already in the cache: slot -1, garbage k, v
};

// One PagedAttention step and each sequence's k, v history (the reference's view).
struct Step {
  int64_t D = 0, Hq = 0, Hkv = 0, BS = 0;
  bool f16 = false;
  double scale = 0;  // 0: the default 1/sqrt(D)
  std::vector<Seq> seqs;
  std::vector<std::vector<float>> kh, vh;  // [len, Hkv * D] per sequence
  std::vector<std::vector<int32_t>> table;
  Tensor q, k, v, kc, vc, slots, qs, lens, bt;
  Tensor kc_after, vc_after;  // the caches once the step's k, v are written
  int len(size_t s) const { return seqs[s].before + seqs[s].n; }
  int64_t slot(size_t s, int p) const { return (int64_t)table[s][p / BS] * BS + p % BS; }
};

void store(Tensor& cache, int64_t i, float x) {
  if (cache.dtype() == DType::F16) cache.ptr<uint16_t>()[i] = f32_to_f16(x);
  else cache.ptr<float>()[i] = x;
}

// Stores position p of sequence s into a cache pair.
void put(const Step& st, Tensor& kc, Tensor& vc, size_t s, int p) {
  const int64_t row = st.Hkv * st.D, off = st.slot(s, p) * row;
  for (int64_t i = 0; i < row; i++) {
    store(kc, off + i, st.kh[s][p * row + i]);
    store(vc, off + i, st.vh[s][p * row + i]);
  }
}

// Blocks handed out from a shuffled list (non-contiguous ids, 3 spare), unused table entries
// -1, every cache slot first filled with large garbage; `pad` padding tokens (slot -1) at the end.
Step make_step(bool f16, int64_t D, int64_t G, int64_t Hkv, int64_t BS,
               const std::vector<Seq>& seqs, int pad, uint32_t seed) {
  std::mt19937 rng(seed);
  Step st;
  st.D = D, st.Hq = G * Hkv, st.Hkv = Hkv, st.BS = BS, st.f16 = f16, st.seqs = seqs;
  const int64_t S = (int64_t)seqs.size(), row = Hkv * D;
  std::vector<int64_t> nbs;  // blocks of each sequence
  for (int64_t s = 0; s < S; s++) nbs.push_back((st.len(s) + BS - 1) / BS);
  const int64_t NB = std::accumulate(nbs.begin(), nbs.end(), int64_t{3}),
                MB = 1 + *std::max_element(nbs.begin(), nbs.end());
  std::vector<int32_t> ids(NB), bt(S * MB, -1);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  for (int64_t s = 0, next = 0; s < S; s++) {
    const int64_t nb = nbs[s];
    st.table.emplace_back(ids.begin() + next, ids.begin() + next + nb);
    std::copy(st.table[s].begin(), st.table[s].end(), bt.begin() + s * MB);
    next += nb;
    for (auto* h : {&st.kh, &st.vh}) {
      Tensor t = rnd({st.len(s) * row}, rng);
      h->emplace_back(t.ptr<float>(), t.ptr<float>() + t.numel());
    }
  }
  const Shape cs{NB, BS, Hkv, D};
  Tensor junk = rnd(cs, rng, -30.0f, 30.0f);
  st.kc = Tensor::empty(f16 ? DType::F16 : DType::F32, cs);
  for (int64_t i = 0; i < junk.numel(); i++) store(st.kc, i, junk.ptr<float>()[i]);
  st.vc = st.kc.clone();
  st.kc_after = st.kc.clone(), st.vc_after = st.vc.clone();
  for (int64_t s = 0; s < S; s++)
    for (int p = 0; p < st.len(s); p++) {
      put(st, st.kc_after, st.vc_after, s, p);
      if (p < seqs[s].before || seqs[s].cached) put(st, st.kc, st.vc, s, p);
    }
  int64_t T = pad;
  for (const Seq& q : seqs) T += q.n;
  st.q = rnd({T, st.Hq * D}, rng, -2.0f, 2.0f);
  st.k = rnd({T, row}, rng, -30.0f, 30.0f);
  st.v = rnd({T, row}, rng, -30.0f, 30.0f);
  std::vector<int64_t> slots(T, -1);
  std::vector<int32_t> qs{0}, lens;
  for (int64_t s = 0; s < S; s++) {
    for (int i = 0; i < seqs[s].n && !seqs[s].cached; i++) {
      const int64_t t = qs.back() + i, p = seqs[s].before + i;
      slots[t] = st.slot(s, (int)p);
      std::copy_n(&st.kh[s][p * row], row, st.k.ptr<float>() + t * row);
      std::copy_n(&st.vh[s][p * row], row, st.v.ptr<float>() + t * row);
    }
    qs.push_back(qs.back() + seqs[s].n);
    lens.push_back(st.len(s));
  }
  st.slots = ints(slots), st.qs = ints(qs), st.lens = ints(lens), st.bt = ints(bt, {S, MB});
  return st;
}

// Sequence s's new tokens [a, b) as a step of its own: same history, block table and caches.
Step sub(const Step& st, size_t s, int a, int b) {
  Step o = st;
  const int64_t t0 = st.qs.ptr<int32_t>()[s] + a;
  o.seqs = {{st.seqs[s].before + a, b - a, st.seqs[s].cached}};
  o.kh = {st.kh[s]}, o.vh = {st.vh[s]}, o.table = {st.table[s]};
  const int64_t t1 = t0 + b - a;
  o.q = rows(st.q, t0, t1), o.k = rows(st.k, t0, t1), o.v = rows(st.v, t0, t1);
  o.slots = rows(st.slots, t0, t1), o.bt = rows(st.bt, s, s + 1);
  o.qs = ints(std::vector<int32_t>{0, b - a}), o.lens = ints(std::vector<int32_t>{o.len(0)});
  return o;
}

Node pa_node(const Step& st) {
  Node n = test::node(OpType::PagedAttention);
  n.attrs.set("num_heads", st.Hq);
  n.attrs.set("num_kv_heads", st.Hkv);
  n.attrs.set("head_dim", st.D);
  if (st.scale != 0) n.attrs.set("scale", st.scale);
  return n;
}

std::vector<const Tensor*> pa_inputs(const Step& st, const Tensor& kc, const Tensor& vc) {
  return {&st.q, &st.k, &st.v, &kc, &vc, &st.slots, &st.qs, &st.lens, &st.bt};
}

// Runs `fn` with the caches kc, vc (written in place); the output starts as NaN, so rows the
// kernel leaves unwritten show.
Tensor pa_call(const Step& st, Tensor& kc, Tensor& vc, KernelFn fn, int threads) {
  Node n = pa_node(st);
  n.inputs = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  Tensor y = Tensor::empty(DType::F32, st.q.shape());
  std::fill(y.ptr<float>(), y.ptr<float>() + y.numel(), NAN);
  KernelCtx ctx{n, pa_inputs(st, kc, vc), {&y}, threads};
  fn(ctx);
  return y;
}

struct PaOut { Tensor y, kc, vc; };
PaOut pa_run(const Step& st, KernelFn fn, int threads) {
  PaOut o{Tensor(), st.kc.clone(), st.vc.clone()};
  o.y = pa_call(st, o.kc, o.vc, fn, threads);
  return o;
}

struct NamedPA { std::string name; KernelFn fn; };
// The PagedAttention kernels this CPU runs at head_dim D.
std::vector<NamedPA> pa_kernels(int64_t D) {
  std::vector<NamedPA> ks = {{"generic", cpu::paged_attention_f32}};
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2 && D % 8 == 0) ks.push_back({"avx2", cpu::paged_attention_f32_avx2});
#endif
  return ks;
}

// Causal attention in double, over each sequence's history (rounded to f16 for an f16 cache):
// y, and the size of each output's terms, sum_j w_j |v_j[d]| / l (what its rounding scales with).
struct PaRef { std::vector<double> y, mag; };
PaRef pa_reference(const Step& st) {
  const int64_t D = st.D, G = st.Hq / st.Hkv, row = st.Hkv * D, qrow = st.Hq * D;
  const double scale = st.scale != 0 ? st.scale : 1.0 / std::sqrt((double)D);
  auto r = [&](float x) -> double { return st.f16 ? f16_to_f32(f32_to_f16(x)) : x; };
  PaRef y{std::vector<double>(st.q.numel(), 0.0), std::vector<double>(st.q.numel(), 0.0)};
  for (size_t s = 0, t = 0; s < st.seqs.size(); s++)
    for (int i = 0; i < st.seqs[s].n; i++, t++) {
      const int p = st.seqs[s].before + i;
      for (int64_t h = 0; h < st.Hq; h++) {
        const float* q = st.q.ptr<float>() + t * qrow + h * D;
        const int64_t kv = (h / G) * D;
        std::vector<double> w(p + 1);
        double m = -INFINITY, l = 0;
        for (int j = 0; j <= p; j++) {
          double dot = 0;
          for (int64_t d = 0; d < D; d++) dot += (double)q[d] * r(st.kh[s][j * row + kv + d]);
          w[j] = dot * scale;
          m = std::max(m, w[j]);
        }
        for (double& x : w) l += x = std::exp(x - m);
        for (int64_t d = 0; d < D; d++) {
          double acc = 0, mag = 0;
          for (int j = 0; j <= p; j++) {
            const double vj = r(st.vh[s][j * row + kv + d]);
            acc += w[j] * vj, mag += w[j] * std::fabs(vj);
          }
          y.y[t * qrow + h * D + d] = acc / l;
          y.mag[t * qrow + h * D + d] = mag / l;
        }
      }
    }
  return y;
}

// Rows of real tokens within `tol` of the reference, relative to the size of their terms;
// padding rows exactly 0.
void check_pa(const Step& st, const Tensor& y, const PaRef& ref, double tol) {
  REQUIRE(y.shape() == st.q.shape());
  const int64_t real = st.qs.ptr<int32_t>()[st.seqs.size()] * st.Hq * st.D;
  for (int64_t i = 0; i < y.numel(); i++) {
    const double x = y.ptr<float>()[i];
    if (i < real ? std::fabs(x - ref.y[i]) <= tol * ref.mag[i] : x == 0.0) continue;
    FAIL_CHECK("element ", i, " (token ", i / (st.Hq * st.D), "): ", x, " vs ", ref.y[i]);
    return;
  }
}

// The message of the ember::Error `f` throws, which must be of `kind`; "no error" when none.
std::string error_text(const std::function<void()>& f, ErrorKind kind) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.kind() == kind);
    return e.what();
  }
  return "no error";
}

// Shape inference of `n` on `in` fails with a ModelError whose message holds `says`.
void infer_fails(const Node& n, const std::vector<const Tensor*>& in, const char* says) {
  const std::string msg =
      error_text([&] { op_run(n, in, nullptr, false, 1, true); }, ErrorKind::Model);
  INFO(msg);
  CHECK(msg.find(says) != std::string::npos);
}

Node rope_node(int64_t heads, int64_t dim, int interleaved) {
  Node n = test::node(OpType::Rope);
  n.attrs.set("num_heads", heads);
  n.attrs.set("head_dim", dim);
  if (interleaved >= 0) n.attrs.set("interleaved", (int64_t)interleaved);
  return n;
}

}  // namespace

TEST_CASE("llm ops paged attention matches a double reference over the paged cache") {
  // A fresh prefill, a decode, a prefill chunk after earlier context, a sequence with no new
  // token, a decode whose k, v are already cached (slot -1), and 3 padding tokens.
  const std::vector<Seq> batch = {{0, 7}, {13, 1}, {20, 6}, {9, 0}, {33, 1, true}};
  int combo = 0;
  for (bool f16 : {false, true})
    for (int64_t D : {8, 64, 80, 12})
      for (int64_t G : {1, 3, 4})
        for (int64_t BS : {1, 16, 5}) {
          const int64_t Hkv = 1 + combo++ % 2;
          INFO("f16 ", f16, " D ", D, " G ", G, " Hkv ", Hkv, " BS ", BS);
          Step st = make_step(f16, D, G, Hkv, BS, batch, 3, combo);
          if (combo % 4 == 0) st.scale = 0.3;
          const PaRef ref = pa_reference(st);
          // The op as a session runs it: inference, then OpDef's reference kernel.
          Tensor kc = st.kc.clone(), vc = st.vc.clone();
          test::OpRun r = op_run(pa_node(st), pa_inputs(st, kc, vc), nullptr, false, 2, true);
          REQUIRE(r.types[0].shape == st.q.shape());
          check_pa(st, r[0], ref, 1e-5);
          for (const NamedPA& k : pa_kernels(D))
            for (int threads : {1, 2}) {
              INFO(k.name, ", threads ", threads);
              PaOut o = pa_run(st, k.fn, threads);
              check_pa(st, o.y, ref, 1e-5);
              // Each new k, v in its slot, nothing else written (slot -1 tokens included).
              CHECK(same_bits(o.kc, st.kc_after));
              CHECK(same_bits(o.vc, st.vc_after));
            }
        }
}

TEST_CASE("llm ops paged attention: the profiler's cost counts the keys each query attends to") {
  // Token i of a sequence's n new tokens, after `before` cached ones, attends to before + i + 1
  // keys; the cost reads query_start and seq_lens from the run.
  const std::vector<Seq> batch = {{0, 7}, {13, 1}, {20, 6}, {9, 0}, {33, 1, true}};
  const int64_t D = 8, G = 3, Hkv = 2;
  Step st = make_step(false, D, G, Hkv, 5, batch, 3, 11);
  double keys = 0, context = 0;
  for (const Seq& q : batch) {
    for (int i = 0; i < q.n; i++) keys += q.before + i + 1;
    context += q.before + q.n;
  }
  Tensor kc = st.kc.clone(), vc = st.vc.clone();
  Node n = pa_node(st);
  Tensor y = Tensor::empty(DType::F32, st.q.shape());
  KernelCtx ctx{n, pa_inputs(st, kc, vc), {&y}, 1};
  const NodeCost c = node_cost(ctx);
  CHECK(c.flops == (double)st.Hq * keys * (4 * D + 5));
  const double T = (double)st.q.shape()[0], row = (double)(Hkv * D);
  const double small = (double)(st.slots.nbytes() + st.qs.nbytes() + st.lens.nbytes() + st.bt.nbytes());
  CHECK(c.bytes == 4 * (2 * T * st.Hq * D + 2 * T * row) + small + 2 * row * 4 * (context + T));
}

TEST_CASE("llm ops paged attention: AVX2 and generic, 1 and 2 threads give the same bits") {
  if (pa_kernels(8).size() == 1) MESSAGE("no AVX2 kernel on this CPU: only threads compared");
  // Enough work (> 2 * 64k flops) for the driver to split the items over 2 threads.
  const std::vector<Seq> batch = {{0, 48}, {50, 1}, {17, 8}, {3, 1}, {40, 1, true}};
  const int64_t Gs[] = {1, 3, 4}, BSs[] = {16, 5, 1};
  int combo = 0;
  for (bool f16 : {false, true})
    for (int64_t D : {8, 64, 80, 12}) {
      const int64_t G = Gs[combo % 3], BS = BSs[combo / 3 % 3];
      INFO("f16 ", f16, " D ", D, " G ", G, " BS ", BS);
      Step st = make_step(f16, D, G, 2, BS, batch, 2, 100 + combo++);
      PaOut ref = pa_run(st, cpu::paged_attention_f32, 1);
      for (const NamedPA& k : pa_kernels(D))
        for (int threads : {1, 2}) {
          INFO(k.name, ", threads ", threads);
          PaOut o = pa_run(st, k.fn, threads);
          CHECK(same_bits(o.y, ref.y));
          CHECK(same_bits(o.kc, ref.kc));
          CHECK(same_bits(o.vc, ref.vc));
        }
      // The registry picks the AVX2 kernel exactly where it runs.
      Node n = pa_node(st);
      std::vector<TensorType> types;
      for (const Tensor* t : pa_inputs(st, st.kc, st.vc)) types.push_back({t->dtype(), t->shape()});
      InferCtx ictx{n, types, std::vector<const Tensor*>(types.size(), nullptr)};
      const KernelEntry* e = cpu_kernel_find(ictx, cpu_isa());
      REQUIRE(e != nullptr);
      const bool avx2 = pa_kernels(D).size() == 2;
      CHECK(std::string(e->name) == (avx2 ? "paged_attention_f32_avx2" : "paged_attention_f32"));
    }
}

TEST_CASE("llm ops paged attention: chunked prefill and batching change no bit") {
  uint32_t seed = 200;
  for (bool f16 : {false, true})
    for (int64_t D : {64, 12})
      for (const NamedPA& k : pa_kernels(D)) {
        INFO("f16 ", f16, " D ", D, " ", k.name);
        // Sequence 1 is prefilled in one call of 37 tokens, batched with two others.
        Step full = make_step(f16, D, 3, 2, 5, {{3, 2}, {0, 37}, {11, 1}}, 2, seed++);
        const int32_t* qs = full.qs.ptr<int32_t>();
        PaOut whole = pa_run(full, k.fn, 2);
        // Each sequence alone in its own call: the same bits for its tokens.
        for (size_t s = 0; s < full.seqs.size(); s++) {
          PaOut o = pa_run(sub(full, s, 0, full.seqs[s].n), k.fn, 1);
          CHECK(same_bits(o.y, rows(whole.y, qs[s], qs[s + 1])));
        }
        // Sequence 1 in chunks of 10, 1, 15, 11 on one cache, each call writing its chunk's
        // k, v and reading the earlier chunks' from the cache.
        Tensor kc = full.kc.clone(), vc = full.vc.clone();
        const int cuts[] = {0, 10, 11, 26, 37};
        for (int c = 0; c < 4; c++) {
          INFO("chunk ", c);
          Tensor y = pa_call(sub(full, 1, cuts[c], cuts[c + 1]), kc, vc, k.fn, c % 2 + 1);
          CHECK(same_bits(y, rows(whole.y, qs[1] + cuts[c], qs[1] + cuts[c + 1])));
        }
      }
}

TEST_CASE("llm ops paged attention refuses bad step metadata with an InputError") {
  // T = 5 (one padding), S = 2, seq_lens {5, 6}, block size 4, 3 table columns, 7 blocks.
  const Step st = make_step(false, 8, 2, 1, 4, {{2, 3}, {5, 1}}, 1, 7);
  auto with = [&](Tensor Step::*f, int64_t i, int64_t value) {
    Step b = st;
    b.*f = (st.*f).clone();
    if ((b.*f).dtype() == DType::I64) (b.*f).ptr<int64_t>()[i] = value;
    else (b.*f).ptr<int32_t>()[i] = (int32_t)value;
    return b;
  };
  const std::pair<Step, const char*> bad[] = {
      {with(&Step::slots, 1, 28), "slot_mapping[1] = 28 is outside the cache's 28 slots"},
      {with(&Step::slots, 0, -2), "slot_mapping[0] = -2"},
      {with(&Step::qs, 0, 1), "query_start[0] is 1, not 0"},
      {with(&Step::qs, 1, 5), "query_start is not increasing within 5 tokens at sequence 1"},
      {with(&Step::qs, 2, 6), "query_start is not increasing within 5 tokens at sequence 1"},
      {with(&Step::lens, 0, 2), "seq_lens[0] = 2 is below its 3 new tokens"},
      {with(&Step::lens, 1, 13), "seq_lens[1] = 13 is below its 1 new tokens or past its block "
                                 "table (12 slots)"},
      {with(&Step::bt, 4, 7), "block_tables[1, 1] = 7 is outside [0, 7)"},
      {with(&Step::bt, 0, -1), "block_tables[0, 0] = -1"},
  };
  for (const auto& [step, says] : bad)
    for (const NamedPA& k : pa_kernels(st.D)) {
      INFO(says, " (", k.name, ")");
      Tensor kc = step.kc.clone(), vc = step.vc.clone();
      const std::string msg =
          error_text([&] { pa_call(step, kc, vc, k.fn, 2); }, ErrorKind::Input);
      CHECK(msg.find(says) != std::string::npos);
      CHECK(msg.find("[PagedAttention] node 'n'") != std::string::npos);
      CHECK(same_bits(kc, st.kc));  // checked before any cache write
    }
  CHECK(same_bits(pa_run(st, cpu::paged_attention_f32, 1).kc, st.kc_after));  // the valid step
}

TEST_CASE("llm ops paged attention shape inference errors") {
  const Step st = make_step(false, 8, 2, 2, 4, {{2, 3}}, 0, 9);  // Hq 4, Hkv 2, T 3, S 1
  const Node n = pa_node(st);
  Node gqa = n, big = n;
  gqa.attrs.set("num_kv_heads", int64_t{3});  // does not divide 4
  big.attrs.set("head_dim", int64_t{2048});
  auto has = [&](const Node& node, int i, const Tensor& t, const char* says) {
    std::vector<const Tensor*> in = pa_inputs(st, st.kc, st.vc);
    in[i] = &t;
    infer_fails(node, in, says);
  };
  const Shape kcs = st.kc.shape();
  has(n, 0, Tensor::zeros(DType::F16, {3, 32}), "q must be float32 [T, 32]");
  has(n, 0, Tensor::zeros(DType::F32, {3, 24}), "q must be float32 [T, 32]");
  has(n, 1, Tensor::zeros(DType::F32, {3, 24}), "k must be float32 [3, 16]");
  has(n, 2, Tensor::zeros(DType::F16, {3, 16}), "v must be float32 [3, 16]");
  has(n, 3, Tensor::zeros(DType::I8, kcs), "k_cache must be float32/float16");
  has(n, 3, Tensor::zeros(DType::F32, {kcs[0], 4, 2, 16}), "k_cache must be");
  has(n, 3, Tensor::zeros(DType::F32, {kcs[0], 4, 16}), "k_cache must be");
  has(n, 4, Tensor::zeros(DType::F16, kcs), "v_cache must be float32");
  has(n, 5, Tensor::zeros(DType::I32, {3}), "slot_mapping must be int64 [3]");
  has(n, 6, Tensor::zeros(DType::I64, {2}), "query_start must be int32");
  has(n, 6, Tensor::zeros(DType::I32, {0}), "query_start must be int32");
  has(n, 7, Tensor::zeros(DType::I32, {2}), "seq_lens must be int32 [1]");
  has(n, 8, Tensor::zeros(DType::I32, {3}), "block_tables must be int32 [1, max_blocks]");
  has(n, 8, Tensor::zeros(DType::I32, {2, 3}), "block_tables must be int32 [1, max_blocks]");
  has(gqa, 0, st.q, "num_kv_heads must divide num_heads");
  has(big, 0, st.q, "head_dim at most 1024");
}

TEST_CASE("llm ops rope matches a double reference") {
  const int64_t T = 7, H = 3;
  const std::vector<int64_t> pos = {0, 1, 7, 511, 4097, 8000, 32767};
  std::mt19937 rng(5);
  for (int64_t D : {16, 64})
    for (int64_t R : {D, D - 6})
      for (int inter : {0, 1})
        for (bool i64 : {false, true}) {
          INFO("D ", D, " R ", R, " interleaved ", inter, " int64 positions ", i64);
          Tensor x = rnd({T, H * D}, rng), f = Tensor::empty(DType::F32, {R / 2});
          float* inv = f.ptr<float>();
          for (int64_t i = 0; i < R / 2; i++) inv[i] = (float)std::pow(1e4, -2.0 * i / R);
          Tensor p = i64 ? ints(pos) : ints(std::vector<int32_t>(pos.begin(), pos.end()));
          test::OpRun r = op_run(rope_node(H, D, inter), {&x, &p, &f}, nullptr, false, 1, true);
          REQUIRE(r[0].shape() == x.shape());
          const float *xs = x.ptr<float>(), *ys = r[0].ptr<float>();
          for (int64_t t = 0; t < T; t++)
            for (int64_t o = t * H * D; o < (t + 1) * H * D; o += D) {  // each head
              for (int64_t i = 0; i < R / 2; i++) {
                const int64_t i0 = inter ? 2 * i : i, i1 = inter ? 2 * i + 1 : i + R / 2;
                const double a = (float)pos[t] * inv[i], c = std::cos(a), s = std::sin(a);
                const double x0 = xs[o + i0], x1 = xs[o + i1];
                const double tol = 1e-5 * (std::fabs(x0) + std::fabs(x1));
                INFO("token ", t, " pair ", i);
                CHECK(std::fabs(ys[o + i0] - (x0 * c - x1 * s)) <= tol);
                CHECK(std::fabs(ys[o + i1] - (x0 * s + x1 * c)) <= tol);
              }
              CHECK(std::memcmp(ys + o + R, xs + o + R, (D - R) * 4) == 0);  // copied past R
            }
          if (inter == 0) {  // interleaved absent means 0
            test::OpRun r0 = op_run(rope_node(H, D, -1), {&x, &p, &f}, nullptr, false, 1, true);
            CHECK(same_bits(r0[0], r[0]));
          }
        }
}

TEST_CASE("llm ops rope shape inference errors") {
  std::mt19937 rng(6);
  const Tensor x = rnd({2, 32}, rng), p = ints(std::vector<int64_t>{3, 4}), f = rnd({4}, rng);
  const Tensor fpos = rnd({2}, rng), short_pos = ints(std::vector<int64_t>{3}),
               long_f = rnd({9}, rng), no_f = rnd({0}, rng);
  op_run(rope_node(2, 16, 1), {&x, &p, &f}, nullptr, false, 1, true);  // valid
  infer_fails(rope_node(2, 15, 1), {&x, &p, &f}, "head_dim = 15");
  infer_fails(rope_node(4, 16, 1), {&x, &p, &f}, "x must be float32 [T, 64]");
  infer_fails(rope_node(2, 16, 1), {&x, &fpos, &f}, "positions must be int32/int64 [2]");
  infer_fails(rope_node(2, 16, 1), {&x, &short_pos, &f}, "positions must be int32/int64 [2]");
  const char* bad_freq = "inv_freq must be float32 [R / 2] with 0 < R <= head_dim 16";
  infer_fails(rope_node(2, 16, 1), {&x, &p, &long_f}, bad_freq);
  infer_fails(rope_node(2, 16, 1), {&x, &p, &no_f}, bad_freq);
  infer_fails(rope_node(2, 16, 2), {&x, &p, &f}, "'interleaved' must be");
}

TEST_CASE("llm ops swiglu equals the unfused Sigmoid and Mul kernels bit for bit") {
  // The fused op must give the bits of Mul(Mul(g, Sigmoid(g)), u) run with the same ISA's
  // Sigmoid kernel, on odd widths, extreme values (overflowing exp, NaN, +-inf) and 1/2 threads.
  std::mt19937 rng(31);
  struct Path { KernelFn swiglu, sigmoid; };
  std::vector<Path> paths = {{cpu::swiglu_f32, op_def(OpType::Sigmoid).reference}};
  if (const KernelEntry* e = [] {
        Node n = test::node(OpType::Sigmoid);
        n.inputs = {0};
        std::vector<TensorType> t = {{DType::F32, {4}}};
        InferCtx ictx{n, t, {nullptr}};
        return cpu_kernel_find(ictx, Isa::Generic);
      }())
    paths[0].sigmoid = e->fn;  // the generic Sigmoid kernel the unfused graph would run
#if defined(__x86_64__)
  if (cpu_isa() >= Isa::Avx2) paths.push_back({cpu::swiglu_f32_avx2, cpu::sigmoid_f32_avx2});
#endif
  for (const Path& path : paths)
    for (int64_t F : {1, 7, 8, 33, 1536})
      for (int64_t rows : {1, 5})
        for (int threads : {1, 2}) {
          INFO("F ", F, " rows ", rows, " threads ", threads);
          Tensor x = rnd({rows, 2 * F}, rng);
          float* xp = x.ptr<float>();
          for (float v : {100.0f, -100.0f, 1e30f, -1e30f, NAN, INFINITY, -INFINITY, 0.0f})
            xp[std::uniform_int_distribution<int64_t>(0, rows * 2 * F - 1)(rng)] = v * 0.5f;
          test::OpRun r = op_run(test::node(OpType::SwiGLU), {&x}, path.swiglu, false, threads, true);
          REQUIRE(r[0].shape() == Shape{rows, F});
          for (int64_t m = 0; m < rows; m++) {
            Tensor g = Tensor::empty(DType::F32, {F});
            std::copy(xp + m * 2 * F, xp + m * 2 * F + F, g.ptr<float>());
            test::OpRun s = op_run(test::node(OpType::Sigmoid), {&g}, path.sigmoid, false, 1, true);
            for (int64_t i = 0; i < F; i++) {
              const float want = (g.ptr<float>()[i] * s[0].ptr<float>()[i]) * xp[m * 2 * F + F + i];
              const float got = r[0].ptr<float>()[m * F + i];
              CHECK((std::memcmp(&want, &got, 4) == 0 || (std::isnan(want) && std::isnan(got))));
            }
          }
        }
  Tensor odd = rnd({2, 5}, rng);
  CHECK(test::error_of([&] { op_run(test::node(OpType::SwiGLU), {&odd}, nullptr, false, 1, true); }) ==
        ErrorKind::Model);
}

#if defined(__x86_64__)
TEST_CASE("llm ops f16 cache rows: the F16C writer equals f32_to_f16 bit for bit") {
  if (cpu_isa() < Isa::Avx2) return;
  std::vector<float> x;
  // Every rounding boundary class: subnormal halves, the smallest normal, ties, the overflow
  // edge, infinities, zeros, NaNs with payloads, then random floats of every magnitude.
  for (float v : {0.0f, -0.0f, 5.96e-8f, 2.98e-8f, 2.99e-8f, -6.1e-5f, 6.1035156e-5f, 65504.0f,
                  65519.99f, 65520.0f, -65520.0f, 1e10f, INFINITY, -INFINITY, 1.00048828125f,
                  1.000732421875f, 2049.0f, 2051.0f})
    x.push_back(v);
  for (uint32_t bits : {0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x7fbfffffu, 0x00000001u}) {
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; i++) {
    uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(i % 3 ? std::ldexp((float)(rng() % 100000) / 7.0f, (int)(rng() % 50) - 40) : f);
  }
  for (size_t n : {x.size(), (size_t)13, (size_t)8, (size_t)1}) {
    std::vector<uint16_t> a(n, 1), b(n, 2);
    cpu::f16_row(x.data(), a.data(), (int64_t)n);
    cpu::f16_row_avx2(x.data(), b.data(), (int64_t)n);
    CHECK(a == b);
  }
}
#endif
