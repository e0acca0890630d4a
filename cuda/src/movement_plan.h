// Host plans of the data-movement kernels (movement.cu), and the index maths the kernels run,
// shared so host tests (cuda/tests/test_movement.cpp) check exactly what the device computes.
// Plain C++17 without CUDA headers: EMBER_HD marks the functions the kernels call too.
//
// Every box copy (Transpose, Slice, Expand, Tile, Concat, Split) is a StridedDims: output shape
// plus src/dst strides. strided_collapse drops size-1 dims and merges dims that stay adjacent on
// both sides; strided_widen then moves the contiguous innermost dim in units of up to 16 bytes.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/kernels/movement.h"

#if defined(__CUDACC__)
#define EMBER_HD __host__ __device__
#else
#define EMBER_HD
#endif

namespace ember::cuda {

// ---- strided box copies ----------------------------------------------------------------------

struct StridedDims {
  std::vector<int64_t> shape, src_stride, dst_stride;
};

inline std::vector<int64_t> move_contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

inline int64_t move_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Drops size-1 dims and merges dim d into the one before it where both strides continue
// (stride[d-1] == stride[d] * shape[d]). Empty boxes become shape {0}; one element, rank 0.
inline StridedDims strided_collapse(const StridedDims& in) {
  StridedDims out;
  if (move_numel(in.shape) == 0) return {{0}, {0}, {0}};
  for (size_t d = 0; d < in.shape.size(); d++) {
    int64_t n = in.shape[d], s = in.src_stride[d], t = in.dst_stride[d];
    if (n == 1) continue;
    if (!out.shape.empty() && out.src_stride.back() == s * n && out.dst_stride.back() == t * n) {
      out.shape.back() *= n;
      out.src_stride.back() = s;
      out.dst_stride.back() = t;
      continue;
    }
    out.shape.push_back(n);
    out.src_stride.push_back(s);
    out.dst_stride.push_back(t);
  }
  return out;
}

// Collapses `d` into a fixed-size plan; false when more than kMoveMaxDims dims remain.
inline bool strided_plan_from(const StridedDims& d, StridedPlan* p) {
  StridedDims c = strided_collapse(d);
  if ((int)c.shape.size() > kMoveMaxDims) return false;
  *p = StridedPlan{};
  p->rank = (int)c.shape.size();
  for (int k = 0; k < p->rank; k++) {
    p->shape[k] = c.shape[k];
    p->src_stride[k] = c.src_stride[k];
    p->dst_stride[k] = c.dst_stride[k];
  }
  return true;
}

inline int64_t strided_numel(const StridedPlan& p) {
  int64_t n = 1;
  for (int k = 0; k < p.rank; k++) n *= p.shape[k];
  return n;
}

// Rewrites `p` (elements of elem_bytes) into the largest unit of up to 16 bytes that the
// innermost dim (contiguous on both sides), every other stride and both pointers divide.
// Returns the unit's bytes.
inline int strided_widen(StridedPlan* p, int elem_bytes, uintptr_t dst, uintptr_t src) {
  int r = p->rank;
  if (r == 0 || p->src_stride[r - 1] != 1 || p->dst_stride[r - 1] != 1) return elem_bytes;
  for (int unit = 16; unit > elem_bytes; unit /= 2) {
    int64_t f = unit / elem_bytes;
    bool ok = p->shape[r - 1] % f == 0 && dst % unit == 0 && src % unit == 0;
    for (int k = 0; ok && k < r - 1; k++) ok = p->src_stride[k] % f == 0 && p->dst_stride[k] % f == 0;
    if (!ok) continue;
    p->shape[r - 1] /= f;
    for (int k = 0; k < r - 1; k++) {
      p->src_stride[k] /= f;
      p->dst_stride[k] /= f;
    }
    return unit;
  }
  return elem_bytes;
}

// Whether every index and partial offset of the plan fits int32 (the kernel's fast path).
inline bool strided_fits_i32(const StridedPlan& p) {
  const int64_t lim = INT32_MAX;
  int64_t n = strided_numel(p), s = 0, t = 0;
  for (int k = 0; k < p.rank; k++) {
    s += (p.shape[k] - 1) * std::llabs(p.src_stride[k]);
    t += (p.shape[k] - 1) * std::llabs(p.dst_stride[k]);
  }
  return n <= lim && s <= lim && t <= lim;
}

// Offsets of element i (row-major over p.shape), as the strided kernel computes them.
template <class I>
EMBER_HD inline void strided_offsets(const StridedPlan& p, I i, I* src, I* dst) {
  I s = 0, t = 0;
  for (int k = p.rank - 1; k >= 0; k--) {
    I n = (I)p.shape[k];
    I q = i / n;
    I r = i - q * n;
    s += r * (I)p.src_stride[k];
    t += r * (I)p.dst_stride[k];
    i = q;
  }
  *src = s;
  *dst = t;
}

// Transpose: out[i_0..] = in[...] with out dim k taken from in dim perm[k].
inline StridedDims transpose_dims(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& perm) {
  std::vector<int64_t> xs = move_contiguous_strides(in_shape);
  StridedDims d;
  for (int64_t p : perm) {
    d.shape.push_back(in_shape[p]);
    d.src_stride.push_back(xs[p]);
  }
  d.dst_stride = move_contiguous_strides(d.shape);
  return d;
}

// Expand: numpy broadcast of in_shape onto out_shape (stride 0 on broadcast dims).
inline StridedDims expand_dims(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& out_shape) {
  std::vector<int64_t> xs = move_contiguous_strides(in_shape);
  size_t off = out_shape.size() - in_shape.size();
  StridedDims d{out_shape, std::vector<int64_t>(out_shape.size(), 0), move_contiguous_strides(out_shape)};
  for (size_t k = 0; k < in_shape.size(); k++)
    d.src_stride[off + k] = in_shape[k] == 1 ? 0 : xs[k];
  return d;
}

// Tile: output dim d of size reps[d] * in[d] is the row-major pair [reps[d], in[d]] with
// source strides [0, xs[d]], so Tile is a box copy of twice the rank (then collapsed).
inline StridedDims tile_dims(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& reps) {
  std::vector<int64_t> xs = move_contiguous_strides(in_shape);
  StridedDims d;
  for (size_t k = 0; k < in_shape.size(); k++) {
    d.shape.push_back(reps[k]);
    d.src_stride.push_back(0);
    d.shape.push_back(in_shape[k]);
    d.src_stride.push_back(xs[k]);
  }
  d.dst_stride = move_contiguous_strides(d.shape);
  return d;
}

// Slice from a resolved spec (ops/op_util.h slice_resolve): per dim start, step and the output
// size. *base: offset of the first element read, in elements.
inline StridedDims slice_dims(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& start,
                              const std::vector<int64_t>& step, const std::vector<int64_t>& out_shape,
                              int64_t* base) {
  std::vector<int64_t> xs = move_contiguous_strides(in_shape);
  StridedDims d{out_shape, std::vector<int64_t>(out_shape.size()), move_contiguous_strides(out_shape)};
  *base = 0;
  for (size_t k = 0; k < in_shape.size(); k++) {
    d.src_stride[k] = step[k] * xs[k];
    if (out_shape[k] > 0) *base += start[k] * xs[k];
  }
  return d;
}

// One Concat input (block = its axis size * inner) into the output rows of `row` elements.
inline StridedDims concat_part_dims(int64_t outer, int64_t block, int64_t row) {
  return {{outer, block}, {block, 1}, {row, 1}};
}
// One Split output out of the input rows of `row` elements.
inline StridedDims split_part_dims(int64_t outer, int64_t block, int64_t row) {
  return {{outer, block}, {row, 1}, {block, 1}};
}

// The tiled kernel's view of a plan whose innermost output dim (l) is not contiguous in the
// source but another dim (p) is: 32x32 tiles read along p and written along l, both coalesced.
struct TransposeTilePlan {
  StridedPlan batch;  // the other dims
  int64_t p_size = 0, l_size = 0;
  int64_t src_l_stride = 0;  // source stride of l (p's is 1)
  int64_t dst_p_stride = 0;  // destination stride of p (l's is 1)
};

constexpr int kTileDim = 32;
constexpr int64_t kTileMinSide = 16;  // below this a tile is mostly idle: the strided kernel wins

inline bool transpose_tile_plan(const StridedPlan& p, TransposeTilePlan* t) {
  int r = p.rank;
  if (r < 2 || p.dst_stride[r - 1] != 1 || p.src_stride[r - 1] == 1) return false;
  int q = -1;
  for (int k = 0; k < r - 1; k++)
    if (p.src_stride[k] == 1) q = k;
  if (q < 0 || p.shape[q] < kTileMinSide || p.shape[r - 1] < kTileMinSide) return false;
  *t = TransposeTilePlan{};
  for (int k = 0; k < r - 1; k++) {
    if (k == q) continue;
    int b = t->batch.rank++;
    t->batch.shape[b] = p.shape[k];
    t->batch.src_stride[b] = p.src_stride[k];
    t->batch.dst_stride[b] = p.dst_stride[k];
  }
  t->p_size = p.shape[q];
  t->l_size = p.shape[r - 1];
  t->src_l_stride = p.src_stride[r - 1];
  t->dst_p_stride = p.dst_stride[q];
  return true;
}

// ---- Gather ------------------------------------------------------------------------------------

// Largest unit (<= 16 bytes) that a row of `inner` elements and both pointers divide.
inline int gather_unit(int elem_bytes, int64_t inner, uintptr_t dst, uintptr_t src) {
  for (int unit = 16; unit > elem_bytes; unit /= 2)
    if ((inner * elem_bytes) % unit == 0 && dst % unit == 0 && src % unit == 0) return unit;
  return elem_bytes;
}

// Output unit i of y [outer, n, inner] -> its source unit in x [outer, dim, inner] given the
// index v read for j = (i / inner) % n (already wrapped into [0, dim)).
template <class I>
EMBER_HD inline void gather_split(I i, I n, I inner, I* o, I* j, I* k) {
  I t = i / inner;
  *k = i - t * inner;
  *o = t / n;
  *j = t - *o * n;
}

// ---- GatherElements ----------------------------------------------------------------------------

// false when the rank passes kMoveMaxDims.
inline bool gather_elements_plan(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& ind_shape,
                                 int axis, GatherElementsPlan* p) {
  if ((int)x_shape.size() > kMoveMaxDims) return false;
  std::vector<int64_t> xs = move_contiguous_strides(x_shape);
  *p = GatherElementsPlan{};
  p->rank = (int)x_shape.size();
  p->axis = axis;
  p->axis_dim = x_shape[axis];
  for (int k = 0; k < p->rank; k++) {
    p->shape[k] = ind_shape[k];
    p->x_stride[k] = xs[k];
  }
  return true;
}

// Source offset of output element i whose (wrapped) index is v.
template <class I>
EMBER_HD inline I gather_elements_source(const GatherElementsPlan& p, I i, I v) {
  I src = 0;
  for (int k = p.rank - 1; k >= 0; k--) {
    I n = (I)p.shape[k];
    I q = i / n;
    I r = i - q * n;
    src += (k == p.axis ? v : r) * (I)p.x_stride[k];
    i = q;
  }
  return src;
}

// ---- Pad (constant mode) -----------------------------------------------------------------------

// Per-dim begin and end pads from ONNX's pads [x1_begin, x2_begin, ..., x1_end, ...] over
// `axes` (all dims when null); returns an error, empty on success.
inline std::string pad_resolve_constant(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& pads,
                                        const std::vector<int64_t>* axes_in, std::vector<int64_t>* begin,
                                        std::vector<int64_t>* out_shape) {
  int r = (int)in_shape.size();
  std::vector<int64_t> axes;
  if (axes_in) axes = *axes_in;
  else for (int d = 0; d < r; d++) axes.push_back(d);
  if (pads.size() != 2 * axes.size()) return "pads has " + std::to_string(pads.size()) + " entries for " + std::to_string(axes.size()) + " axes";
  begin->assign(r, 0);
  std::vector<int64_t> end(r, 0);
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < axes.size(); i++) {
    int64_t a = axes[i];
    if (a < -r || a >= r) return "axis " + std::to_string(a) + " out of range";
    int d = (int)(a < 0 ? a + r : a);
    if (seen[d]) return "axis " + std::to_string(a) + " appears twice";
    seen[d] = true;
    (*begin)[d] = pads[i];
    end[d] = pads[axes.size() + i];
  }
  out_shape->resize(r);
  for (int d = 0; d < r; d++) {
    (*out_shape)[d] = in_shape[d] + (*begin)[d] + end[d];
    if ((*out_shape)[d] < 0) return "pads give dim " + std::to_string(d) + " a negative size";
  }
  return {};
}

// Merges each dim that is not padded into the one before it (it only scales that dim);
// false when more than kMoveMaxDims dims remain.
inline bool pad_plan(const std::vector<int64_t>& in_shape, const std::vector<int64_t>& begin,
                     const std::vector<int64_t>& out_shape, PadPlan* p) {
  std::vector<int64_t> in, out, beg;
  for (size_t d = 0; d < in_shape.size(); d++) {
    bool plain = begin[d] == 0 && out_shape[d] == in_shape[d];
    if (plain && !in.empty()) {
      in.back() *= in_shape[d];
      out.back() *= in_shape[d];
      beg.back() *= in_shape[d];
      continue;
    }
    in.push_back(in_shape[d]);
    out.push_back(out_shape[d]);
    beg.push_back(begin[d]);
  }
  if ((int)in.size() > kMoveMaxDims) return false;
  *p = PadPlan{};
  p->rank = (int)in.size();
  for (int k = 0; k < p->rank; k++) {
    p->in_shape[k] = in[k];
    p->out_shape[k] = out[k];
    p->begin[k] = beg[k];
  }
  return true;
}

// Source offset of output element i in the contiguous input, or -1 for the constant.
template <class I>
EMBER_HD inline I pad_source(const PadPlan& p, I i) {
  I src = 0, stride = 1;
  for (int k = p.rank - 1; k >= 0; k--) {
    I n = (I)p.out_shape[k];
    I q = i / n;
    I j = i - q * n - (I)p.begin[k];
    if (j < 0 || j >= (I)p.in_shape[k]) return -1;
    src += j * stride;
    stride *= (I)p.in_shape[k];
    i = q;
  }
  return src;
}

// ---- Trilu -------------------------------------------------------------------------------------

// Whether element (row i, column j) is kept; k already clamped to [-(m + n), m + n].
EMBER_HD inline bool trilu_keep(int64_t i, int64_t j, int64_t k, bool upper) {
  return upper ? j >= i + k : j <= i + k;
}

}  // namespace ember::cuda
