// Launchers of the data-movement kernels (movement.cu). Data moves as raw units of the
// element size (1, 2, 4, 8 bytes; copies widen to 16 where alignment allows), so every
// element dtype works. Plain C++: the plan structs are filled on the host (movement_plan.h)
// and passed by value to the kernels. Every launcher returns at once (no sync) and launches
// nothing for empty work.
#pragma once
#include <cstdint>

namespace ember::cuda {

constexpr int kMoveMaxDims = 8;

// A copy of a box: element idx (row-major over `shape`) moves from
// src + sum(idx[d] * src_stride[d]) to dst + sum(idx[d] * dst_stride[d]), in elements.
// src strides may be 0 (Expand, Tile) or negative (Slice with negative steps).
struct StridedPlan {
  int rank = 0;
  int64_t shape[kMoveMaxDims] = {};
  int64_t src_stride[kMoveMaxDims] = {};
  int64_t dst_stride[kMoveMaxDims] = {};
};

// GatherElements: output (and indices) of `shape`; output element idx reads
// x[sum_{d != axis} idx[d] * x_stride[d] + indices[idx] * x_stride[axis]].
struct GatherElementsPlan {
  int rank = 0;
  int axis = 0;
  int64_t shape[kMoveMaxDims] = {};
  int64_t x_stride[kMoveMaxDims] = {};
  int64_t axis_dim = 0;
};

// Constant Pad: output element idx reads input idx - begin where that is inside in_shape,
// else the constant. begin may be negative (a crop).
struct PadPlan {
  int rank = 0;
  int64_t out_shape[kMoveMaxDims] = {};
  int64_t in_shape[kMoveMaxDims] = {};
  int64_t begin[kMoveMaxDims] = {};
};

// Device-to-device copy of `bytes` (Reshape, Flatten, Squeeze, Unsqueeze, Identity).
void movement_copy(void* dst, const void* src, int64_t bytes, void* stream);

// Transpose, Slice, Expand, Tile, Concat, Split: the box copy of `plan` (collapsed). Picks the
// shared-memory tiled kernel where the plan moves the innermost dim, else the strided one.
void movement_strided_copy(void* dst,        // dst_stride layout
                           const void* src,  // src_stride layout, already offset to the box start
                           const StridedPlan& plan, int elem_bytes, void* stream);

// Gather: y[o, j, k] = x[o, idx[j] (+dim if negative), k]. An index outside [-dim, dim) is
// skipped and, when err is non-null, recorded: err[0] = 1, err[1] = the index (as bits).
void movement_gather(void* y,              // [outer, n, inner]
                     const void* x,        // [outer, dim, inner]
                     const void* indices,  // [n] int64 or int32
                     bool indices_i64, int64_t outer, int64_t dim, int64_t inner, int64_t n,
                     int elem_bytes, unsigned long long* err,  // [2], zeroed by the launcher
                     void* stream);

// GatherElements, same error convention as movement_gather.
void movement_gather_elements(void* y,              // plan.shape
                              const void* x,        // strides plan.x_stride
                              const void* indices,  // plan.shape, int64 or int32
                              bool indices_i64, const GatherElementsPlan& plan, int elem_bytes,
                              unsigned long long* err,  // [2], zeroed by the launcher
                              void* stream);

// Constant-mode Pad; value null means zero.
void movement_pad_constant(void* y,            // plan.out_shape
                           const void* x,      // plan.in_shape
                           const void* value,  // [1] or nullptr
                           const PadPlan& plan, int elem_bytes, void* stream);

// Trilu: keeps column j of row i where upper ? j >= i + k : j <= i + k, else writes zero.
void movement_trilu(void* y,        // [batch, m, n]
                    const void* x,  // [batch, m, n]
                    int64_t batch, int64_t m, int64_t n, int64_t k, bool upper, int elem_bytes,
                    void* stream);

// Rope (cpp/src/ops/ops_llm.cpp): rotates pairs (2i, 2i+1) when interleaved, else
// (i, i + rot_half), i < rot_half, by pos * inv_freq[i]; dims past 2 * rot_half are copied.
void movement_rope_f32(float* y,               // [tokens, heads * head_dim]
                       const float* x,         // [tokens, heads * head_dim]
                       const void* positions,  // [tokens] int64 or int32
                       bool positions_i64,
                       const float* inv_freq,  // [rot_half]
                       int64_t tokens, int64_t heads, int64_t head_dim, int64_t rot_half,
                       bool interleaved, void* stream);

}  // namespace ember::cuda
