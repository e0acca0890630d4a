// Data movement for any element dtype (bytes of dtype_size): Gather as one row memcpy per
// index, Concat and Slice as runs of contiguous bytes, Transpose on coalesced dims either as
// contiguous row copies (last dim kept: [b, s, h, d] -> [b, h, s, d]) or as 64x64 tiles
// (last dim moved: 2-D transposes, [b, s, h, d] -> [b, h, d, s]). Work is split over the
// output only, so results never depend on the thread count. References:
// cpp/src/ops/ops_index.cpp (Gather, Concat, Slice) and ops_shape.cpp (Transpose).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/generic/kernels_generic.h"
#include "ops/op_util.h"

namespace ember::cpu {
namespace {

constexpr int64_t kGrainBytes = 32 << 10;  // at least this much copying per parallel chunk

int64_t grain_for(int64_t bytes_per_item) {
  return std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, bytes_per_item));
}

int64_t prod(const Shape& s, int begin, int end) {
  int64_t n = 1;
  for (int i = begin; i < end; i++) n *= s[i];
  return n;
}

// Copies rows of `run` bytes into contiguous `dst`; row r (row-major over `outer`) starts at
// src + sum(idx_k * stride_k) bytes. Fixed > 0 lets small runs compile to plain moves.
template <int64_t Fixed>
void copy_rows_impl(const KernelCtx& ctx, char* dst,  // [rows, run] bytes
                    const char* src, const Shape& outer, const Shape& stride, int64_t run) {
  int r = (int)outer.size();
  ctx.parallel_for(shape_numel(outer), grain_for(run), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(r);
    int64_t off = 0;
    int64_t rem = begin;
    for (int d = r - 1; d >= 0; d--) {
      idx[d] = rem % outer[d];
      rem /= outer[d];
      off += idx[d] * stride[d];
    }
    for (int64_t row = begin; row < end; row++) {
      std::memcpy(dst + row * run, src + off, Fixed > 0 ? Fixed : run);
      for (int d = r - 1; d >= 0; d--) {
        off += stride[d];
        if (++idx[d] < outer[d]) break;
        off -= stride[d] * outer[d];
        idx[d] = 0;
      }
    }
  });
}

void copy_rows(const KernelCtx& ctx, char* dst, const char* src, const Shape& outer,
               const Shape& stride, int64_t run) {
  if (run == 0 || shape_numel(outer) == 0) return;
  switch (run) {
    case 1: copy_rows_impl<1>(ctx, dst, src, outer, stride, run); break;
    case 2: copy_rows_impl<2>(ctx, dst, src, outer, stride, run); break;
    case 4: copy_rows_impl<4>(ctx, dst, src, outer, stride, run); break;
    case 8: copy_rows_impl<8>(ctx, dst, src, outer, stride, run); break;
    default: copy_rows_impl<0>(ctx, dst, src, outer, stride, run); break;
  }
}

// ---- transpose ----

// Batched tiled 2-D transpose: for every batch index, dst[i * dst_q + j] = src[i + j * src_n]
// for i < m, j < n. One parallel item per tile, so a single large matrix still spreads.
template <class T>
void transpose_tiles(const KernelCtx& ctx, T* dst, const T* src, const Shape& batch,
                     const Shape& batch_src, const Shape& batch_dst, int64_t m, int64_t n,
                     int64_t dst_q, int64_t src_n) {
  constexpr int64_t kTile = sizeof(T) >= 8 ? 32 : 64;  // 64 measured best for 4-byte elements
  int64_t tiles_m = (m + kTile - 1) / kTile, tiles_n = (n + kTile - 1) / kTile;
  int64_t items = shape_numel(batch) * tiles_m * tiles_n;
  int rb = (int)batch.size();
  ctx.parallel_for(items, grain_for(kTile * kTile * (int64_t)sizeof(T)), [&](int64_t begin, int64_t end) {
    // Through an L1 buffer so both sides stream whole rows: reading a column directly
    // touches lines a power-of-two stride apart, which share cache sets and thrash.
    T buf[kTile][kTile];
    for (int64_t item = begin; item < end; item++) {
      int64_t j0 = (item % tiles_n) * kTile, i0 = (item / tiles_n % tiles_m) * kTile;
      int64_t b = item / tiles_n / tiles_m;
      int64_t i1 = std::min(m, i0 + kTile), j1 = std::min(n, j0 + kTile);
      int64_t so = 0, dof = 0;
      for (int d = rb - 1; d >= 0; d--) {
        int64_t k = b % batch[d];
        b /= batch[d];
        so += k * batch_src[d];
        dof += k * batch_dst[d];
      }
      for (int64_t j = j0; j < j1; j++) {
        const T* in = src + so + j * src_n;
        for (int64_t i = i0; i < i1; i++) buf[i - i0][j - j0] = in[i];
      }
      for (int64_t i = i0; i < i1; i++) {
        T* out = dst + dof + i * dst_q + j0;
        for (int64_t j = 0; j < j1 - j0; j++) out[j] = buf[i - i0][j];
      }
    }
  });
}

template <class F>
void with_word(size_t es, F&& f) {
  switch (es) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: fail(ErrorKind::Internal, "[movement] no word type for ", es, "-byte elements");
  }
}

}  // namespace

void transpose_blocked(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  size_t es = dtype_size(x.dtype());
  int r = x.rank();
  if (y.numel() == 0) return;
  std::vector<int64_t> perm = ctx.node.attrs.get_ints("perm");
  if (!ctx.node.attrs.has("perm"))
    for (int i = r - 1; i >= 0; i--) perm.push_back(i);

  // Coalesce: drop size-1 dims, then merge output dims that are adjacent in the input too.
  std::vector<int> renum(r, -1);
  Shape dims;
  for (int i = 0; i < r; i++)
    if (x.dim(i) != 1) renum[i] = (int)dims.size(), dims.push_back(x.dim(i));
  std::vector<std::vector<int>> groups;  // in output order; each a run of input dims
  for (int k = 0; k < r; k++) {
    int p = renum[perm[k]];
    if (p < 0) continue;
    if (!groups.empty() && groups.back().back() + 1 == p) groups.back().push_back(p);
    else groups.push_back({p});
  }
  int g = (int)groups.size();
  std::vector<int> order(g);  // order[i]: the group that is input dim i
  for (int i = 0; i < g; i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return groups[a][0] < groups[b][0]; });
  std::vector<int> in_pos(g);
  Shape in_shape(g);
  for (int i = 0; i < g; i++) {
    in_pos[order[i]] = i;
    in_shape[i] = 1;
    for (int d : groups[order[i]]) in_shape[i] *= dims[d];
  }
  Shape in_stride = contiguous_strides(in_shape), out_shape(g), src_stride(g);
  for (int k = 0; k < g; k++) {
    out_shape[k] = in_shape[in_pos[k]];
    src_stride[k] = in_stride[in_pos[k]];
  }

  if (g <= 1 || in_pos[g - 1] == g - 1) {
    // The last dim stays last: copy contiguous rows of it.
    int64_t run = g == 0 ? 1 : out_shape[g - 1];
    Shape outer(out_shape.begin(), out_shape.end() - std::min(g, 1)), stride;
    for (int k = 0; k + 1 < g; k++) stride.push_back(src_stride[k] * (int64_t)es);
    copy_rows(ctx, y.ptr<char>(), x.ptr<const char>(), outer, stride, run * (int64_t)es);
    return;
  }
  // The input's last dim lands at output dim q; tile it against the output's last dim.
  int q = (int)(std::find(in_pos.begin(), in_pos.end(), g - 1) - in_pos.begin());
  Shape out_stride = contiguous_strides(out_shape), batch, batch_src, batch_dst;
  for (int k = 0; k + 1 < g; k++) {
    if (k == q) continue;
    batch.push_back(out_shape[k]);
    batch_src.push_back(src_stride[k]);
    batch_dst.push_back(out_stride[k]);
  }
  with_word(es, [&](auto w) {
    using T = decltype(w);
    transpose_tiles<T>(ctx, y.ptr<T>(), x.ptr<const T>(), batch, batch_src, batch_dst, out_shape[q],
                       out_shape[g - 1], out_stride[q], src_stride[g - 1]);
  });
}

void gather_rows(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& idx = ctx.input(1);
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), x.rank());
  int64_t es = (int64_t)dtype_size(x.dtype());
  int64_t outer = prod(x.shape(), 0, axis), dim = x.dim(axis), inner = prod(x.shape(), axis + 1, x.rank());
  int64_t n = idx.numel(), row = inner * es;
  bool i64 = idx.dtype() == DType::I64;
  auto index = [&](int64_t j) { return i64 ? idx.ptr<const int64_t>()[j] : (int64_t)idx.ptr<const int32_t>()[j]; };
  // Every index is checked before any copy: a bad feed must not read out of bounds.
  for (int64_t j = 0; j < n; j++) {
    int64_t v = index(j);
    EMBER_CHECK(v >= -dim && v < dim, Input, "[Gather] node '", ctx.node.name, "': index ", v,
                " is out of range for axis ", axis, " of size ", dim);
  }
  if (row == 0) return;
  const char* src = x.ptr<const char>();
  char* dst = y.ptr<char>();
  ctx.parallel_for(outer * n, grain_for(row), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      int64_t o = t / n, v = index(t % n);
      if (v < 0) v += dim;
      std::memcpy(dst + t * row, src + (o * dim + v) * row, (size_t)row);
    }
  });
}

void concat_blocks(const KernelCtx& ctx) {
  Tensor& y = ctx.output(0);
  int axis = normalize_axis(ctx.node.attrs.get_int("axis", 0), y.rank());
  int64_t es = (int64_t)dtype_size(y.dtype());
  int64_t outer = prod(y.shape(), 0, axis), inner = prod(y.shape(), axis + 1, y.rank());
  int64_t row = y.dim(axis) * inner * es;  // bytes per outer index in the output
  if (row == 0 || outer == 0) return;
  int k = (int)ctx.in.size();
  std::vector<int64_t> block(k), at(k);  // bytes per outer index of each input, and its offset
  for (int i = 0; i < k; i++) {
    block[i] = ctx.in[i]->dim(axis) * inner * es;
    at[i] = i == 0 ? 0 : at[i - 1] + block[i - 1];
  }
  char* dst = y.ptr<char>();
  if (outer >= 8L * ctx.max_threads) {
    ctx.parallel_for(outer, grain_for(row), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; o++)
        for (int i = 0; i < k; i++)
          if (block[i]) std::memcpy(dst + o * row + at[i], ctx.in[i]->ptr<const char>() + o * block[i], block[i]);
    });
    return;
  }
  // Few outer rows (e.g. batch 1 along the sequence): split the large blocks into pieces.
  struct Piece { char* dst; const char* src; int64_t bytes; };
  std::vector<Piece> pieces;
  constexpr int64_t kPiece = 256 << 10;
  for (int64_t o = 0; o < outer; o++)
    for (int i = 0; i < k; i++)
      for (int64_t b = 0; b < block[i]; b += kPiece)
        pieces.push_back({dst + o * row + at[i] + b, ctx.in[i]->ptr<const char>() + o * block[i] + b,
                          std::min(kPiece, block[i] - b)});
  ctx.parallel_for((int64_t)pieces.size(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; p++) std::memcpy(pieces[p].dst, pieces[p].src, pieces[p].bytes);
  });
}

void slice_blocks(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  if (y.numel() == 0) return;
  SliceSpec spec = slice_resolve(ctx);
  int64_t es = (int64_t)dtype_size(x.dtype());
  Shape xs = contiguous_strides(x.shape());
  int64_t base = 0;
  for (int d = 0; d < x.rank(); d++) base += spec.start[d] * xs[d];
  // Contiguous run: trailing dims taken whole, then one more dim if its step is 1.
  int d = x.rank() - 1;
  int64_t run = 1;
  while (d >= 0 && spec.out[d] == x.dim(d) && spec.step[d] == 1) run *= x.dim(d--);
  if (d >= 0 && spec.step[d] == 1) run *= spec.out[d--];
  Shape outer(spec.out.begin(), spec.out.begin() + (d + 1)), stride(d + 1);
  for (int k = 0; k <= d; k++) stride[k] = spec.step[k] * xs[k] * es;
  copy_rows(ctx, y.ptr<char>(), x.ptr<const char>() + base * es, outer, stride, run * es);
}

}  // namespace ember::cpu
