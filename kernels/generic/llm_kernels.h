// Kernels of the LLM ops Rope and PagedAttention (specification: cpp/src/ops/ops_llm.cpp).
// Generic versions here (llm_kernels.cpp) are the references; ISA versions follow the same
// float order (kernels/x86/llm_kernels_avx2.cpp).
#pragma once
#include <cstdint>
#include <string>

#include "ember/op.h"

namespace ember::cpu {

struct RopeArgs {
  const float* x = nullptr;          // [tokens, heads * head_dim]
  float* y = nullptr;                // [tokens, heads * head_dim]
  const int64_t* positions = nullptr;  // [tokens]
  const float* inv_freq = nullptr;   // [rot_half]
  int64_t tokens = 0, heads = 0, head_dim = 0, rot_half = 0;
  bool interleaved = false;
};
void rope_f32(const RopeArgs& a);

// PagedAttention's exp (every kernel computes exactly this, so the ISA paths agree bit for
// bit): for x <= 0, x < kExpMin -> 0; n = nearbyint(x * log2(e)); r = fma(n, -ln2_hi, x);
// r = fma(n, -ln2_lo, r); p = Horner over kExpPoly with fma, from the highest power down to
// p = fma(p, r, 1); result p * 2^n. Within 2 ulp of expf on [-87, 0]. NaN stays NaN.
constexpr float kExpMin = -87.0f;
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpLn2Hi = 0.693145751953125f;
constexpr float kExpLn2Lo = 1.42860682030941723e-06f;
constexpr float kExpPoly[6] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f};
float attention_exp(float x);  // the scalar definition (llm_kernels.cpp)

// SwiGLU rows: y[r, i] = (g * sigmoid(g)) * u with g = x[r, i], u = x[r, F + i], x [rows, 2F],
// y [rows, F]; `sigmoid` is the ISA's Sigmoid row function, so the bits equal the unfused
// Mul(Mul(g, Sigmoid(g)), u). The driver runs rows on the shared pool.
using SigmoidRowFn = void (*)(const float* x, float* y, int64_t n);
void swiglu_with(const KernelCtx& ctx, SigmoidRowFn sigmoid);
void swiglu_f32(const KernelCtx& ctx);  // Isa::Generic
#if defined(__x86_64__)
void swiglu_f32_avx2(const KernelCtx& ctx);  // Isa::Avx2 (llm_kernels_x86.cpp)
#endif

struct PagedAttentionArgs {
  const float* q = nullptr;          // [tokens, heads * head_dim]
  const float* k = nullptr;          // [tokens, kv_heads * head_dim]
  const float* v = nullptr;          // [tokens, kv_heads * head_dim]
  void* k_cache = nullptr;           // [blocks, block_size, kv_heads, head_dim] f32 or f16
  void* v_cache = nullptr;
  bool cache_f16 = false;
  const int64_t* slots = nullptr;    // [tokens]
  const int32_t* query_start = nullptr;  // [seqs + 1]
  const int32_t* seq_lens = nullptr;     // [seqs]
  const int32_t* block_tables = nullptr; // [seqs, max_blocks]
  float* y = nullptr;                // [tokens, heads * head_dim]
  int64_t tokens = 0, seqs = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t blocks = 0, block_size = 0, max_blocks = 0;
  float scale = 1.0f;
};
// f32 -> f16 for an f16 cache's rows: y[i] = f32_to_f16(x[i]) (dtype.h: round to nearest
// even, overflow to inf, one quiet NaN), bit for bit on every ISA.
using F16RowFn = void (*)(const float* x, uint16_t* y, int64_t n);
void f16_row(const float* x, uint16_t* y, int64_t n);
// Writes every token's k and v into its cache slot (slot -1: skipped).
void paged_attention_write_kv(const PagedAttentionArgs& a, F16RowFn to_f16 = f16_row);
// One work item: the outputs of kv head `kvh`'s query heads for token t of sequence s, whose
// context is positions [0, ctx). scores [heads / kv_heads, ctx] and out [heads / kv_heads,
// head_dim] are scratch.
using PagedAttentionItemFn = void (*)(const PagedAttentionArgs& a, int64_t t, int64_t kvh,
                                      int64_t s, int64_t ctx, float* scores, float* out);
void paged_attention_item(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                          int64_t ctx, float* scores, float* out);
// Work items [begin, end), item = token * kv_heads + kv_head (padding tokens get zeros).
void paged_attention_run(const PagedAttentionArgs& a, int64_t begin, int64_t end,
                         PagedAttentionItemFn item);
// A tile of nt consecutive query tokens t0.. of sequence s (token i's context: [0, ctx0 + i)),
// kv head kvh: the tokens share each K/V row read from the cache. scores [nt * G, ctx0 + nt - 1]
// and out [nt * G, head_dim] are scratch (G = heads / kv_heads).
using PagedAttentionTileFn = void (*)(const PagedAttentionArgs& a, int64_t t0, int64_t nt,
                                      int64_t kvh, int64_t s, int64_t ctx0, float* scores,
                                      float* out);
constexpr int64_t kPagedAttentionTile = 4;  // query tokens per tile
// The same driver over tiles of up to kPagedAttentionTile tokens (a prefill chunk's tokens
// share the f16 -> f32 conversion of their common context).
void paged_attention_tiled_with(const KernelCtx& ctx, PagedAttentionTileFn tile,
                                F16RowFn to_f16 = f16_row);

// The node's attributes, sizes and tensor pointers (wherever the tensors live), unchecked.
PagedAttentionArgs paged_attention_fill(const KernelCtx& ctx);
// Checks the step metadata in `a` (slots, query_start, seq_lens, block_tables and the sizes;
// untrusted: InputError naming the node `who` and the bad slot, offset or block id). The CUDA
// kernel checks the host copies of the same feeds with it.
void paged_attention_check(const PagedAttentionArgs& a, const std::string& who);
// The PagedAttention driver: checks the step metadata (untrusted: InputError naming the bad
// slot, offset or block id), writes the new k, v, then runs `item` over (token, kv head) on
// the shared pool.
void paged_attention_with(const KernelCtx& ctx, PagedAttentionItemFn item);
void paged_attention_f32(const KernelCtx& ctx);       // Isa::Generic (the reference)
#if defined(__x86_64__)
void paged_attention_f32_avx2(const KernelCtx& ctx);  // Isa::Avx2 (llm_kernels_x86.cpp)
bool paged_attention_avx2_supports(const InferCtx& ctx);  // head_dim a multiple of 8
// AVX2 + FMA + F16C (llm_kernels_avx2.cpp); head_dim a multiple of 8. Same bits as the generic.
void paged_attention_item_avx2(const PagedAttentionArgs& a, int64_t t, int64_t kvh, int64_t s,
                               int64_t ctx, float* scores, float* out);
void paged_attention_tile_avx2(const PagedAttentionArgs& a, int64_t t0, int64_t nt, int64_t kvh,
                               int64_t s, int64_t ctx0, float* scores, float* out);
void f16_row_avx2(const float* x, uint16_t* y, int64_t n);  // F16C; NaN blocks take f16_row
#endif

}  // namespace ember::cpu
