// paged_attention.cu on the emulated device (cuda/emu/emu.h) against the CPU reference
// (cpu::paged_attention_f32): a batch mixing a prefill chunk over a cached prefix, decode
// tokens whose context spans several 128-key chunks and cache blocks, grouped-query heads and
// a padding token; f32 and f16 caches. The caches' new rows must match bit for bit. Contexts
// cut into parts (PagedSplit) give the same bits whether one block walks them or a block per
// part stores its state and the last merges them.
#include "cuda/kernels/paged_attention.cu"

#include <cmath>
#include <random>
#include <vector>

#include "cuda/src/ops.h"
#include "doctest/doctest.h"
#include "ember/error.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::cuda;

namespace {

struct Batch {
  std::vector<int32_t> query_start, seq_lens, tables;  // tables [seqs, max_blocks]
  std::vector<int64_t> slots;
  int64_t max_blocks;
};

// Sequences of news[s] new tokens ending at seq_lens[s], then one padding token. Blocks of
// `bs` slots handed out in a scrambled order (7 is prime to the block counts used), so the
// table is followed, not assumed.
Batch make_batch(int64_t blocks, int64_t bs, const std::vector<int32_t>& news,
                 const std::vector<int32_t>& lens, int64_t max_blocks) {
  Batch b;
  const int seqs = (int)news.size();
  b.query_start = {0};
  for (int32_t n : news) b.query_start.push_back(b.query_start.back() + n);
  b.seq_lens = lens;
  b.max_blocks = max_blocks;
  b.tables.assign(seqs * b.max_blocks, 0);
  int64_t next = 0;
  auto take = [&] { return (int32_t)((next++ * 7) % blocks); };
  for (int s = 0; s < seqs; s++)
    for (int64_t j = 0; j < (b.seq_lens[s] + bs - 1) / bs; j++)
      b.tables[s * b.max_blocks + j] = take();
  for (int s = 0; s < seqs; s++)
    for (int32_t t = b.query_start[s]; t < b.query_start[s + 1]; t++) {
      const int64_t pos =
          b.seq_lens[s] - (b.query_start[s + 1] - b.query_start[s]) + (t - b.query_start[s]);
      b.slots.push_back(b.tables[s * b.max_blocks + pos / bs] * bs + pos % bs);
    }
  b.slots.push_back(-1);  // the padding token writes nothing
  return b;
}

// seq 0: 5 new tokens after 3 cached; seq 1: 1 new token after 299 (3 chunks, 19 blocks);
// seq 2: 1 new token, nothing cached; then one padding token. Block size 16.
Batch make_batch(int64_t blocks, int64_t bs) {
  return make_batch(blocks, bs, {5, 1, 1}, {8, 300, 1}, 20);
}

Tensor random(DType dt, const Shape& s, std::mt19937& gen) {
  std::normal_distribution<float> dist;
  Tensor t = Tensor::empty(dt, s);
  for (int64_t i = 0; i < t.numel(); i++) {
    if (dt == DType::F16)
      t.ptr<uint16_t>()[i] = f32_to_f16(dist(gen));
    else
      t.ptr<float>()[i] = dist(gen);
  }
  return t;
}

Node paged_node(int64_t heads, int64_t kv_heads, int64_t dim) {
  Node node = test::node(OpType::PagedAttention);
  node.attrs.set("num_heads", heads);
  node.attrs.set("num_kv_heads", kv_heads);
  node.attrs.set("head_dim", dim);
  return node;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.dtype(), t.shape());
  std::memcpy(c.data(), t.data(), t.nbytes());
  return c;
}

// Random q, k, v and caches for batch b, the CPU reference's output (`want`) with its own copies
// of the caches (kc_ref, vc_ref: the new rows written), and the kernel's arguments over the
// originals (y left to the caller).
struct Inputs {
  Tensor q, k, v, kc, vc, kc_ref, vc_ref, want;
  PagedArgs args;
};

Inputs make_inputs(Batch& b, int64_t heads, int64_t kv_heads, int64_t dim, DType cache,
                   int64_t blocks, int64_t bs, std::mt19937& gen) {
  const int64_t tokens = (int64_t)b.slots.size(), seqs = (int64_t)b.seq_lens.size();
  Inputs in;
  in.q = random(DType::F32, {tokens, heads * dim}, gen);
  in.k = random(DType::F32, {tokens, kv_heads * dim}, gen);
  in.v = random(DType::F32, {tokens, kv_heads * dim}, gen);
  in.kc = random(cache, {blocks, bs, kv_heads, dim}, gen);
  in.vc = random(cache, {blocks, bs, kv_heads, dim}, gen);
  Tensor slots = Tensor::borrow(DType::I64, {tokens}, b.slots.data());
  Tensor starts = Tensor::borrow(DType::I32, {seqs + 1}, b.query_start.data());
  Tensor lens = Tensor::borrow(DType::I32, {seqs}, b.seq_lens.data());
  Tensor tables = Tensor::borrow(DType::I32, {seqs, b.max_blocks}, b.tables.data());
  in.kc_ref = clone(in.kc), in.vc_ref = clone(in.vc);
  in.want = Tensor::empty(DType::F32, in.q.shape());
  const Node node = paged_node(heads, kv_heads, dim);
  std::vector<const Tensor*> ins = {&in.q,      &in.k,   &in.v,  &in.kc_ref, &in.vc_ref,
                                    &slots,     &starts, &lens,  &tables};
  KernelCtx kctx{node, ins, {&in.want}};
  op_def(OpType::PagedAttention).reference(kctx);

  PagedArgs& a = in.args;
  a.q = in.q.ptr<float>(), a.k = in.k.ptr<float>(), a.v = in.v.ptr<float>();
  a.k_cache = in.kc.data(), a.v_cache = in.vc.data(), a.cache_f16 = cache == DType::F16;
  a.slots = b.slots.data(), a.query_start = b.query_start.data(), a.seq_lens = b.seq_lens.data();
  a.block_tables = b.tables.data();
  a.tokens = tokens, a.seqs = seqs, a.heads = heads, a.kv_heads = kv_heads, a.head_dim = dim;
  a.blocks = blocks, a.block_size = bs, a.max_blocks = b.max_blocks;
  a.scale = 1.0f / std::sqrt((float)dim);
  return in;
}

// Every way of running the case: the default split, and 128-key parts walked by one block or
// spread over blocks (seq 1's 300 keys: 3 parts).
struct SplitRun {
  const char* name;
  int64_t part_keys;
  bool spread;
};
constexpr SplitRun kSplits[] = {{"default", kPagedPartKeys, false},
                                {"128-key parts, walked", 128, false},
                                {"128-key parts, spread", 128, true}};

void check_case(int64_t heads, int64_t kv_heads, int64_t dim, bool f16) {
  std::mt19937 gen(42 + dim);
  const int64_t blocks = 40, bs = 16, tokens = 8;
  const DType cdt = f16 ? DType::F16 : DType::F32;
  Batch b = make_batch(blocks, bs);
  Inputs in = make_inputs(b, heads, kv_heads, dim, cdt, blocks, bs, gen);
  PagedArgs& a = in.args;
  const Tensor &q = in.q, &want = in.want;
  std::vector<Tensor> ys;
  for (const SplitRun& run : kSplits) {
    CAPTURE(run.name);
    Tensor y = Tensor::empty(DType::F32, q.shape());
    for (int64_t i = 0; i < y.numel(); i++) y.ptr<float>()[i] = NAN;
    a.y = y.ptr<float>();
    PagedSplit split;
    split.part_keys = run.part_keys;
    std::vector<float> partial;
    std::vector<int> counters(tokens * heads, 0);
    if (run.spread) {
      split.parts = paged_parts(a, run.part_keys);
      REQUIRE(split.parts == 3);
      partial.assign(tokens * heads * split.parts * (dim + 2), NAN);
      split.partial = partial.data();
      split.counters = counters.data();
    }
    paged_attention(a, split, nullptr);
    for (int c : counters) CHECK(c == 0);  // left ready for the next launch
    if (run.spread) {  // another part's block last (the grid in reverse): the same bits
      Tensor again = Tensor::empty(DType::F32, q.shape());
      a.y = again.ptr<float>();
      emu::set_block_order(emu::BlockOrder::Reverse);
      paged_attention(a, split, nullptr);
      emu::set_block_order(emu::BlockOrder::Forward);
      CHECK(std::memcmp(again.data(), y.data(), y.nbytes()) == 0);
      for (int c : counters) CHECK(c == 0);
    }
    ys.push_back(y);
  }
  CHECK(std::memcmp(in.kc.data(), in.kc_ref.data(), in.kc.nbytes()) == 0);
  CHECK(std::memcmp(in.vc.data(), in.vc_ref.data(), in.vc.nbytes()) == 0);
  for (size_t r = 0; r < ys.size(); r++) {
    CAPTURE(kSplits[r].name);
    const Tensor& y = ys[r];
    int bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < y.numel(); i++) {
      const double w = want.ptr<float>()[i], g = y.ptr<float>()[i], err = std::fabs(g - w);
      worst = std::max(worst, err);
      bad += !(err <= 2e-5 + 1e-4 * std::fabs(w));
    }
    CAPTURE(worst);
    CHECK(bad == 0);
    for (int64_t i = 7 * heads * dim; i < 8 * heads * dim; i++) CHECK(y.ptr<float>()[i] == 0.0f);
  }
  // The same parts walked by one block or spread over blocks: the same bits.
  CHECK(std::memcmp(ys[1].data(), ys[2].data(), ys[1].nbytes()) == 0);
  if (!paged_prefill_fits(a)) {  // the tensor-core prefill asked where it cannot run: ignored
    Tensor y = Tensor::empty(DType::F32, q.shape());
    a.y = y.ptr<float>();
    PagedSplit split;
    split.prefill_rows = 2, split.prefill_tiles = 1;  // seq 0's 5 new tokens
    paged_attention(a, split, nullptr);
    CHECK(std::memcmp(ys[0].data(), y.data(), y.nbytes()) == 0);
  }
}

// Prefill chunks on tensor cores (paged_prefill_kernel) beside decode tokens: seq 0 40 new
// tokens after 70 cached (key tiles past the first); seq 1 one decode token after 299; seq 2 a
// 20-token prompt from scratch; seq 3 70 new after 5 (two query tiles, the second of 6 rows);
// a padding token. Against the CPU within fp16 rounding (Q and P rounded); the tokens left to
// the scalar kernel (seq 1, padding) the same bits as without the prefill kernel.
void check_prefill(int64_t heads, int64_t kv_heads, int64_t dim) {
  std::mt19937 gen(7 + dim);
  const int64_t blocks = 48, bs = 16;
  Batch b = make_batch(blocks, bs, {40, 1, 20, 70}, {110, 300, 20, 75}, 20);
  const int64_t tokens = (int64_t)b.slots.size();
  Inputs in = make_inputs(b, heads, kv_heads, dim, DType::F16, blocks, bs, gen);
  PagedArgs& a = in.args;
  const Tensor &q = in.q, &want = in.want;
  REQUIRE(paged_prefill_fits(a));
  Tensor y[2];
  for (int tensor_cores = 0; tensor_cores < 2; tensor_cores++) {
    y[tensor_cores] = Tensor::empty(DType::F32, q.shape());
    for (int64_t i = 0; i < q.numel(); i++) y[tensor_cores].ptr<float>()[i] = NAN;
    a.y = y[tensor_cores].ptr<float>();
    PagedSplit split;
    if (tensor_cores) {
      split.prefill_rows = kPagedPrefillMinRows;
      split.prefill_tiles = paged_prefill_tiles(a, kPagedPrefillMinRows);
      REQUIRE(split.prefill_tiles == 4);  // 1 + 1 + 2
    }
    paged_attention(a, split, nullptr);
  }
  CHECK(std::memcmp(in.kc.data(), in.kc_ref.data(), in.kc.nbytes()) == 0);
  CHECK(std::memcmp(in.vc.data(), in.vc_ref.data(), in.vc.nbytes()) == 0);
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < q.numel(); i++) {
    const double w = want.ptr<float>()[i], g = y[1].ptr<float>()[i], err = std::fabs(g - w);
    worst = std::max(worst, err);
    bad += !(err <= 4e-3 + 4e-3 * std::fabs(w));
  }
  CAPTURE(worst);
  CHECK(bad == 0);
  const int64_t row = heads * dim;  // seq 1's token (40) and the padding token (131)
  for (int64_t t : {int64_t(40), tokens - 1})
    CHECK(std::memcmp(y[0].ptr<float>() + t * row, y[1].ptr<float>() + t * row, row * 4) == 0);
}

}  // namespace

TEST_CASE("paged attention on the emulated device matches the CPU reference") {
  SUBCASE("f32 cache, 4 query heads over 2 kv heads, head_dim 64") { check_case(4, 2, 64, false); }
  SUBCASE("f16 cache, head_dim 40 (not a warp multiple)") { check_case(3, 1, 40, true); }
  SUBCASE("f32 cache, head_dim 256 (two output dims a thread)") { check_case(2, 2, 256, false); }
  SUBCASE("f32 cache, head_dim 30 (rows not whole float4s)") { check_case(2, 1, 30, false); }
  SUBCASE("f16 cache, head_dim 36 (rows not whole 8-half loads)") { check_case(2, 2, 36, true); }
}

TEST_CASE("paged attention adapter: metadata checked on its host copies, and required there") {
  std::mt19937 gen(3);
  const int64_t blocks = 40, bs = 16, tokens = 8, heads = 2, dim = 32;
  Batch b = make_batch(blocks, bs);
  const Shape rows{tokens, heads * dim}, cache{blocks, bs, heads, dim};
  Tensor q = random(DType::F32, rows, gen), k = random(DType::F32, rows, gen);
  Tensor v = random(DType::F32, rows, gen);
  Tensor kc = random(DType::F32, cache, gen), vc = random(DType::F32, cache, gen);
  Tensor slots = Tensor::borrow(DType::I64, {tokens}, b.slots.data());
  Tensor starts = Tensor::borrow(DType::I32, {4}, b.query_start.data());
  Tensor lens = Tensor::borrow(DType::I32, {3}, b.seq_lens.data());
  Tensor tables = Tensor::borrow(DType::I32, {3, b.max_blocks}, b.tables.data());
  Tensor y = Tensor::empty(DType::F32, q.shape());
  Node node = paged_node(heads, heads, dim);
  node.inputs = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  node.outputs = {9};
  DeviceOptions opt;
  std::vector<const Tensor*> in = {&q, &k, &v, &kc, &vc, &slots, &starts, &lens, &tables};
  KernelCtx ctx{node, in, {&y}, 1};
  ctx.device_options = &opt;
  ctx.host_in = in;
  paged_attention_cuda(ctx);  // good metadata: runs
  ctx.host_in[7] = nullptr;   // seq_lens computed on the device: refused, not trusted
  CHECK_THROWS_WITH_AS(paged_attention_cuda(ctx), doctest::Contains("must be graph inputs"), Error);
  ctx.host_in = in;
  b.tables[0] = (int32_t)blocks;  // a block id past the cache
  CHECK_THROWS_WITH_AS(paged_attention_cuda(ctx), doctest::Contains("block_tables[0, 0]"), Error);
}

TEST_CASE("paged attention's prefill on tensor cores on the emulated device") {
  SUBCASE("head_dim 64, 4 query heads over 2 kv heads") { check_prefill(4, 2, 64); }
  SUBCASE("head_dim 40 (padded to 64)") { check_prefill(2, 1, 40); }
  SUBCASE("head_dim 128") { check_prefill(2, 2, 128); }
}
