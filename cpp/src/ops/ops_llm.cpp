// LLM ops emitted by the model builders (python/ember/llm/build.py).
//
// Rope: rotary position embedding of q or k, per token.
//   0 x         f32 [T, H * D]
//   1 positions i32 | i64 [T]
//   2 inv_freq  f32 [R / 2], R <= D the rotated dims (the builder folds the config's rope
//               scaling variant into this table)
//   attrs num_heads H, head_dim D, interleaved (1: pairs (2i, 2i+1), GGUF's llama order;
//   0: pairs (i, i + R/2), the Hugging Face / NeoX order). Output f32 [T, H * D]:
//   a = (float)pos * inv_freq[i] (one float product), c = cos(a), s = sin(a) (float),
//   y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c; dims past R are copied.
//
// SwiGLU: the gated MLP's activation on a merged gate/up projection.
//   0 x f32 [..., 2F] (gate in the first half, up in the second). Output f32 [..., F]:
//   y = (g * sigmoid(g)) * u, with the Sigmoid op's kernel on each path: bit-identical to the
//   unfused Split -> Sigmoid -> Mul -> Mul it replaces.
//
// PagedAttention: causal grouped-query attention over a paged KV cache (stateful: writes it).
//   0 q            f32 [T, Hq * D]     the step's tokens, sequences concatenated
//   1 k, 2 v       f32 [T, Hkv * D]
//   3 k_cache      f32 | f16 [NB, BS, Hkv, D]   written in place, then read
//   4 v_cache      same
//   5 slot_mapping i64 [T]       cache slot (block * BS + offset) of each token; -1: not written
//   6 query_start  i32 [S + 1]   token offsets of each sequence in T (tokens past query_start[S]
//                                are padding: their output is 0)
//   7 seq_lens     i32 [S]       context length of each sequence after this step
//   8 block_tables i32 [S, MB]   block ids of each sequence's context, in order
//   attrs num_heads Hq, num_kv_heads Hkv (divides Hq), head_dim D, scale (default 1/sqrt(D)).
//   Output f32 [T, Hq * D]. Every new k, v is written first; then query token i of sequence s
//   (position p = seq_lens[s] - n_s + i) attends to cache positions 0..p. Exact float order:
//   score_j = dot8(q, k_j) * scale (dot8: 8 lanes over d % 8, then sum8), m = max score,
//   w_j = attention_exp(score_j - m) (kernels/generic/llm_kernels.h), l = sum_j w_j in order of j, y[d] = (sum_j w_j * v_j[d]) / l.
//   It depends only on the context, never on chunking or on the other sequences of the batch.
//   The CUDA kernel (cuda/kernels/paged_attention.cu) keeps that independence but not this
//   float order (lane-strided dots, expf, an online softmax over 128-key chunks). Two tokens
//   of one step mapped to one slot: the CPU keeps the later write, the GPU either.
#include <cmath>
#include <vector>

#include "kernels/generic/llm_kernels.h"
#include "ops/op_util.h"

namespace ember {
namespace {

void check_type(const InferCtx& ctx, int i, const char* what, DType dt, const Shape& shape) {
  if (ctx.in[i].dtype != dt || ctx.in[i].shape != shape)
    ctx.fail(what, " must be ", dtype_name(dt), " ", shape_str(shape), ", got ",
             dtype_name(ctx.in[i].dtype), " ", shape_str(ctx.in[i].shape));
}

std::vector<TensorType> infer_rope(const InferCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  int64_t h = at.get_int("num_heads", -1), d = at.get_int("head_dim", -1);
  if (h <= 0 || d <= 0 || d % 2) ctx.fail("invalid num_heads = ", h, ", head_dim = ", d);
  const TensorType& x = ctx.in[0];
  if (x.dtype != DType::F32 || x.shape.size() != 2 || x.shape[1] != h * d)
    ctx.fail("x must be float32 [T, ", h * d, "], got ", dtype_name(x.dtype), " ", shape_str(x.shape));
  const TensorType& p = ctx.in[1];
  if ((p.dtype != DType::I64 && p.dtype != DType::I32) || p.shape != Shape{x.shape[0]})
    ctx.fail("positions must be int32/int64 [", x.shape[0], "], got ", dtype_name(p.dtype), " ",
             shape_str(p.shape));
  const TensorType& f = ctx.in[2];
  if (f.dtype != DType::F32 || f.shape.size() != 1 || f.shape[0] <= 0 || 2 * f.shape[0] > d)
    ctx.fail("inv_freq must be float32 [R / 2] with 0 < R <= head_dim ", d, ", got ",
             dtype_name(f.dtype), " ", shape_str(f.shape));
  return one(DType::F32, x.shape);
}

void run_rope(const KernelCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  cpu::RopeArgs a;
  a.x = ctx.input(0).ptr<float>();
  a.y = ctx.output(0).ptr<float>();
  a.tokens = ctx.input(0).dim(0);
  a.heads = at.get_int("num_heads", 0);
  a.head_dim = at.get_int("head_dim", 0);
  a.inv_freq = ctx.input(2).ptr<float>();
  a.rot_half = ctx.input(2).numel();
  a.interleaved = at.get_int("interleaved", 0) != 0;
  std::vector<int64_t> pos = tensor_to_i64_vector(ctx.input(1));
  a.positions = pos.data();
  cpu::rope_f32(a);
}

std::vector<TensorType> infer_paged_attention(const InferCtx& ctx) {
  const Attrs& at = ctx.node.attrs;
  int64_t hq = at.get_int("num_heads", -1), hkv = at.get_int("num_kv_heads", -1),
          d = at.get_int("head_dim", -1);
  if (hq <= 0 || hkv <= 0 || d <= 0 || d > 1024 || hq % hkv)
    ctx.fail("invalid num_heads = ", hq, ", num_kv_heads = ", hkv, ", head_dim = ", d,
             " (num_kv_heads must divide num_heads; head_dim at most 1024)");
  const TensorType& q = ctx.in[0];
  if (q.dtype != DType::F32 || q.shape.size() != 2 || q.shape[1] != hq * d)
    ctx.fail("q must be float32 [T, ", hq * d, "], got ", dtype_name(q.dtype), " ", shape_str(q.shape));
  const int64_t t = q.shape[0];
  check_type(ctx, 1, "k", DType::F32, {t, hkv * d});
  check_type(ctx, 2, "v", DType::F32, {t, hkv * d});
  const TensorType& kc = ctx.in[3];
  if ((kc.dtype != DType::F32 && kc.dtype != DType::F16) || kc.shape.size() != 4 ||
      kc.shape[2] != hkv || kc.shape[3] != d)
    ctx.fail("k_cache must be float32/float16 [blocks, block_size, ", hkv, ", ", d, "], got ",
             dtype_name(kc.dtype), " ", shape_str(kc.shape));
  check_type(ctx, 4, "v_cache", kc.dtype, kc.shape);
  check_type(ctx, 5, "slot_mapping", DType::I64, {t});
  const TensorType& qs = ctx.in[6];
  if (qs.dtype != DType::I32 || qs.shape.size() != 1 || qs.shape[0] < 1)
    ctx.fail("query_start must be int32 [S + 1], got ", dtype_name(qs.dtype), " ", shape_str(qs.shape));
  const int64_t s = qs.shape[0] - 1;
  check_type(ctx, 7, "seq_lens", DType::I32, {s});
  const TensorType& bt = ctx.in[8];
  if (bt.dtype != DType::I32 || bt.shape.size() != 2 || bt.shape[0] != s)
    ctx.fail("block_tables must be int32 [", s, ", max_blocks], got ", dtype_name(bt.dtype), " ",
             shape_str(bt.shape));
  return one(DType::F32, q.shape);
}



std::vector<TensorType> infer_swiglu(const InferCtx& ctx) {
  const TensorType& x = ctx.in[0];
  if (x.dtype != DType::F32 || x.shape.empty() || x.shape.back() % 2)
    ctx.fail("x must be float32 [..., 2F], got ", dtype_name(x.dtype), " ", shape_str(x.shape));
  Shape out = x.shape;
  out.back() /= 2;
  return one(DType::F32, out);
}

const OpDef kOps[] = {
    {OpType::Rope, "Rope", 3, 3, 1, 1, kOpFused,
     {{"num_heads", AttrKind::Int, true},
      {"head_dim", AttrKind::Int, true},
      {"interleaved", AttrKind::Bool}},
     infer_rope, run_rope},
    {OpType::PagedAttention, "PagedAttention", 9, 9, 1, 1, kOpStateful | kOpFused,
     {{"num_heads", AttrKind::Int, true},
      {"num_kv_heads", AttrKind::Int, true},
      {"head_dim", AttrKind::Int, true},
      {"scale", AttrKind::Float}},
     infer_paged_attention, cpu::paged_attention_f32, (1u << 3) | (1u << 4)},
    {OpType::SwiGLU, "SwiGLU", 1, 1, 1, 1, kOpFused, {}, infer_swiglu, cpu::swiglu_f32},
};

}  // namespace

std::span<const OpDef> op_defs_llm() { return kOps; }

}  // namespace ember
