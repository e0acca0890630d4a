// Host-side plans of the elementwise family, plain C++ (tested without a GPU in
// cuda/tests/test_elementwise.cpp): the broadcast plan of binary ops and Where, the
// [kept, reduced] plan of reductions, softmax's [outer, n, inner] view, and how a norm's scale
// or bias maps onto a row.
#pragma once
#include <algorithm>
#include <array>
#include <vector>

#include "cuda/kernels/elementwise.h"
#include "ember/tensor.h"

namespace ember::cuda {

// numpy broadcast of two shapes; false when they do not broadcast.
inline bool ew_broadcast_shape(const Shape& a, const Shape& b, Shape* out) {
  const size_t r = std::max(a.size(), b.size());
  Shape s(r);
  for (size_t i = 0; i < r; i++) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1) return false;
    s[i] = da == 1 ? db : da;
  }
  *out = std::move(s);
  return true;
}

// The iteration space of an op writing `out` from up to three operands that broadcast onto it.
// Size-1 output dims are dropped and neighbouring dims merged where every operand steps
// through them alike (both broadcast, or both contiguous), so same-shape and scalar operands
// end at rank 1. False when more than kEwMaxRank dims remain (or an operand does not fit).
inline bool ew_broadcast_plan(const Shape& out, const std::vector<Shape>& ins, EwGeom* g) {
  *g = EwGeom{};
  const int r = (int)out.size(), k = (int)ins.size();
  if (k < 1 || k > 3) return false;
  int64_t numel = 1;
  for (int64_t d : out) numel *= d;
  g->numel = numel;
  if (numel == 0) return true;  // nothing to launch
  std::vector<int64_t> dims;
  std::vector<std::array<int64_t, 3>> strides;
  // Contiguous strides of each operand, aligned to out's dims (0 where it broadcasts).
  std::vector<std::vector<int64_t>> st(k, std::vector<int64_t>(r, 0));
  for (int i = 0; i < k; i++) {
    const Shape& s = ins[i];
    if ((int)s.size() > r) return false;
    int64_t acc = 1;
    for (int d = r - 1; d >= r - (int)s.size(); d--) {
      const int64_t sd = s[d - (r - (int)s.size())];
      if (sd != 1 && sd != out[d]) return false;
      st[i][d] = sd == 1 ? 0 : acc;
      acc *= sd;
    }
  }
  for (int d = 0; d < r; d++) {
    if (out[d] == 1) continue;
    bool merge = !dims.empty();
    for (int i = 0; i < k && merge; i++) merge = strides.back()[i] == st[i][d] * out[d];
    if (merge) {
      dims.back() *= out[d];
      for (int i = 0; i < k; i++) strides.back()[i] = st[i][d];
    } else {
      dims.push_back(out[d]);
      strides.push_back({k > 0 ? st[0][d] : 0, k > 1 ? st[1][d] : 0, k > 2 ? st[2][d] : 0});
    }
  }
  if (dims.empty()) {  // one element: every operand is a scalar
    dims.push_back(1);
    strides.push_back({0, 0, 0});
  }
  if ((int)dims.size() > kEwMaxRank) return false;
  g->rank = (int)dims.size();
  for (int d = 0; d < g->rank; d++) {
    g->dims[d] = dims[d];
    for (int i = 0; i < 3; i++) g->strides[i][d] = strides[d][i];
  }
  return true;
}

// The reduction of x over the dims where mask is true: size-1 dims dropped, neighbouring dims
// of the same kind merged; outputs enumerate the kept dims, each reducing the reduced dims.
// Picks a block per output for long reductions (coalesced when the reduced dims are innermost)
// or when there are too few outputs to fill the GPU with threads, else a thread per output.
inline bool ew_reduce_plan(const Shape& x, const std::vector<bool>& mask, ReduceGeom* g) {
  *g = ReduceGeom{};
  const int r = (int)x.size();
  if ((int)mask.size() != r) return false;
  std::vector<int64_t> cs(r, 1);  // contiguous strides of x
  for (int d = r - 2; d >= 0; d--) cs[d] = cs[d + 1] * x[d + 1];
  std::vector<int64_t> kd, ks, rd, rs;
  int last = -1;  // kind of the last dim pushed: 0 kept, 1 reduced
  g->n_out = 1;
  g->n_red = 1;
  for (int d = 0; d < r; d++) {
    (mask[d] ? g->n_red : g->n_out) *= x[d];
    if (x[d] == 1) continue;
    auto& dims = mask[d] ? rd : kd;
    auto& strides = mask[d] ? rs : ks;
    if (last == (int)mask[d]) {  // adjacent in x (size-1 dims between): contiguous, merge
      dims.back() *= x[d];
      strides.back() = cs[d];
    } else {
      dims.push_back(x[d]);
      strides.push_back(cs[d]);
    }
    last = mask[d];
  }
  if ((int)kd.size() > kEwMaxRank || (int)rd.size() > kEwMaxRank) return false;
  g->kept_rank = (int)kd.size();
  g->red_rank = (int)rd.size();
  for (size_t i = 0; i < kd.size(); i++) g->kept_dims[i] = kd[i], g->kept_strides[i] = ks[i];
  for (size_t i = 0; i < rd.size(); i++) g->red_dims[i] = rd[i], g->red_strides[i] = rs[i];
  const bool unit = g->red_rank == 0 || (g->red_rank == 1 && g->red_strides[0] == 1);
  if (g->n_red > 16 && (unit || g->n_out < 4096)) {
    g->mode = EwReduceMode::BlockPerOutput;
    // A warp for short rows; up to 1024 threads when few outputs share the GPU.
    const int64_t want = g->n_out < 1024 && g->n_red >= 8192 ? 1024 : 256;
    g->threads = (int)std::min<int64_t>(want, (g->n_red + 31) / 32 * 32);
  } else {
    g->mode = EwReduceMode::ThreadPerOutput;
    g->threads = 256;
  }
  return true;
}

// Softmax's view of x as [outer, n, inner] (the reference's softmax_dims): legacy_axis_2d
// (opset < 13) flattens everything from axis on into n. axis is already normalised (legacy
// allows axis == rank: n = 1).
struct EwSoftmaxDims {
  int64_t outer = 1, n = 1, inner = 1;
};
inline EwSoftmaxDims ew_softmax_dims(const Shape& s, int axis, bool legacy) {
  EwSoftmaxDims d;
  for (int i = 0; i < (int)s.size(); i++) {
    if (i < axis) d.outer *= s[i];
    else if (i == axis || legacy) d.n *= s[i];
    else d.inner *= s[i];
  }
  return d;
}

// How a norm's scale or bias `p` (which broadcasts onto x) maps onto a row of x[axis:]:
// 0 one scalar for every element, 1 one value per column (p is x[axis:] up to leading 1s),
// -1 anything else (it varies across rows, or repeats within one: the kernel does not do it).
inline int ew_norm_param_mode(const Shape& p, const Shape& x, int axis) {
  int64_t n = 1;
  for (int64_t d : p) n *= d;
  if (n == 1) return 0;
  const int rx = (int)x.size(), rp = (int)p.size();
  if (rp > rx) return -1;
  for (int d = 0; d < rx; d++) {
    const int e = d - (rx - rp);
    const int64_t pd = e < 0 ? 1 : p[e];
    if (d < axis ? pd != 1 : pd != x[d]) return -1;
  }
  return 1;
}

}  // namespace ember::cuda
