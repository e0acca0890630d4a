// Row-wise f32 kernels: Softmax / LogSoftmax over contiguous rows (last axis, or the opset<13
// 2-D coercion), LayerNormalization and RMSNormalization over X[axis:], ReduceMean / ReduceSum
// over one run of dims. References: the OpDef rows in cpp/src/ops/ops_linalg.cpp and
// ops_reduce.cpp. Rows are split across threads; each row's sums use a fixed lane order
// (written so g++ -O3 vectorises it without -ffast-math), so results do not depend on the
// thread count or batch. RMSNorm sums x^2 in double: exact squares, no overflow past 1.8e19.
#include <cfloat>
#include <cmath>
#include <vector>

#include "kernels/generic/kernels_generic.h"

namespace ember::cpu {
namespace {

constexpr int kLanes = 16;

// Folds lane accumulators pairwise, always in the same order.
template <class T>
inline T fold_lanes(T* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

inline float sum_f32(const float* x, int64_t n) {  // x: [n]
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] += x[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += x[i];
  return fold_lanes(acc);
}

inline float max_f32(const float* x, int64_t n) {  // x: [n]
  float acc[kLanes];
  for (int l = 0; l < kLanes; l++) acc[l] = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  for (int l = 0; i < n; i++, l++) acc[l] = x[i] > acc[l] ? x[i] : acc[l];
  float m = acc[0];
  for (int l = 1; l < kLanes; l++) m = acc[l] > m ? acc[l] : m;
  return m;
}

// Rows per parallel chunk so that a chunk holds at least ~16K elements.
inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
}

}  // namespace

void softmax_f32_row(const float* x, float* y, int64_t n) {
  float mx = max_f32(x, n);
  for (int64_t j = 0; j < n; j++) y[j] = x[j] - mx;
  exp_f32_array(y, y, n);
  float s = sum_f32(y, n);
  for (int64_t j = 0; j < n; j++) y[j] /= s;
}

namespace {

void softmax_rows(const KernelCtx& ctx, bool log) {
  const Tensor& x = ctx.input(0);  // [rows, cols] viewed from any shape
  Tensor& y = ctx.output(0);       // same shape
  int64_t axis =
      ctx.node.attrs.get_int("axis", ctx.node.attrs.get_int("legacy_axis_2d", 0) ? 1 : -1);
  if (axis < 0) axis += x.rank();
  int64_t cols = 1;
  for (int d = (int)axis; d < x.rank(); d++) cols *= x.dim(d);
  if (x.numel() == 0 || cols == 0) return;
  int64_t rows = x.numel() / cols;
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  ctx.parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> e(log ? cols : 0);  // LogSoftmax keeps x - max and sums exp beside it
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = px + r * cols;
      float* yr = py + r * cols;
      if (!log) {
        softmax_f32_row(xr, yr, cols);
        continue;
      }
      float mx = max_f32(xr, cols);
      for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] - mx;
      exp_f32_array(yr, e.data(), cols);
      float lse = std::log(sum_f32(e.data(), cols));
      for (int64_t j = 0; j < cols; j++) yr[j] -= lse;
    }
  });
}

// Reduced dims of a Reduce node (`axes` is its axes input, nullptr when absent); false when
// invalid or a no-op (the reference reports those).
bool reduce_mask(const Node& node, int rank, const Tensor* axes_in, std::vector<bool>* mask) {
  std::vector<int64_t> axes;
  if (axes_in) {
    if (axes_in->dtype() != DType::I64 || axes_in->rank() > 1 || node.attrs.has("axes"))
      return false;
    axes = tensor_to_i64_vector(*axes_in);
  } else {
    axes = node.attrs.get_ints("axes");
  }
  if (axes.empty()) {
    if (node.attrs.get_int("noop_with_empty_axes", 0) != 0) return false;
    mask->assign(rank, true);
    return true;
  }
  mask->assign(rank, false);
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) return false;
    int d = (int)(a < 0 ? a + rank : a);
    if ((*mask)[d]) return false;
    (*mask)[d] = true;
  }
  return true;
}

// Views the input as [outer, red, inner] with the reduction over `red`; false when the reduced
// dims (size-1 dims aside) are not one contiguous run.
bool reduce_split(const Shape& s, const std::vector<bool>& mask, int64_t dims[3]) {
  int first = -1, last = -1;
  for (int d = 0; d < (int)s.size(); d++) {
    if (s[d] == 1 || !mask[d]) continue;
    if (first < 0) first = d;
    last = d;
  }
  for (int d = first + 1; d < last; d++)
    if (s[d] != 1 && !mask[d]) return false;
  if (first < 0) first = last = (int)s.size();  // only size-1 dims reduced: red = 1
  dims[0] = dims[1] = dims[2] = 1;
  for (int d = 0; d < (int)s.size(); d++) dims[d < first ? 0 : d <= last ? 1 : 2] *= s[d];
  return true;
}

void reduce_f32(const KernelCtx& ctx, bool mean) {
  const Tensor& x = ctx.input(0);  // [outer, red, inner]
  Tensor& y = ctx.output(0);       // [outer, inner]
  std::vector<bool> mask;
  int64_t dims[3];
  bool ok = reduce_mask(ctx.node, x.rank(), ctx.has_input(1) ? &ctx.input(1) : nullptr, &mask) &&
            reduce_split(x.shape(), mask, dims);
  EMBER_CHECK(ok, Internal, "[", op_name(ctx.node.op), "] reduce_f32 got axes it does not support");
  int64_t outer = dims[0], red = dims[1], inner = dims[2];
  if (y.numel() == 0) return;
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  if (inner == 1) {  // rows: lanes across the row
    ctx.parallel_for(outer, row_grain(red), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = px + r * red;
        double acc[kLanes] = {};
        int64_t i = 0;
        for (; i + kLanes <= red; i += kLanes)
          for (int l = 0; l < kLanes; l++) acc[l] += (double)xr[i + l];
        for (int l = 0; i < red; i++, l++) acc[l] += (double)xr[i];
        double s = fold_lanes(acc);
        py[r] = (float)(mean ? s / (double)red : s);
      }
    });
    return;
  }
  // Middle dims: each output sums its column in order, vectorised across `inner`.
  constexpr int64_t kBlock = 256;
  int64_t nblk = (inner + kBlock - 1) / kBlock;
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(red * kBlock, 1));
  ctx.parallel_for(outer * nblk, grain, [&](int64_t t0, int64_t t1) {
    double acc[kBlock];
    for (int64_t t = t0; t < t1; t++) {
      int64_t o = t / nblk, i0 = (t % nblk) * kBlock, w = std::min(kBlock, inner - i0);
      for (int64_t i = 0; i < w; i++) acc[i] = 0.0;
      for (int64_t r = 0; r < red; r++) {
        const float* xr = px + (o * red + r) * inner + i0;
        for (int64_t i = 0; i < w; i++) acc[i] += (double)xr[i];
      }
      float* yo = py + o * inner + i0;
      for (int64_t i = 0; i < w; i++) yo[i] = (float)(mean ? acc[i] / (double)red : acc[i]);
    }
  });
}

}  // namespace

void softmax_f32(const KernelCtx& ctx) { softmax_rows(ctx, false); }
void log_softmax_f32(const KernelCtx& ctx) { softmax_rows(ctx, true); }

bool softmax_f32_supports(const InferCtx& ctx) {
  if (ctx.in[0].dtype != DType::F32) return false;
  if (ctx.node.attrs.get_int("legacy_axis_2d", 0) != 0) return true;
  const Shape& s = ctx.in[0].shape;
  int rank = (int)s.size();
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (axis < -rank || axis >= rank) return false;
  if (axis < 0) axis += rank;
  for (int d = (int)axis + 1; d < rank; d++)
    if (s[d] != 1) return false;  // the normalised axis must be contiguous
  return true;
}

void layer_norm_f32(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);  // [rows, cols], cols = prod(X.shape[axis:])
  const float* scale = ctx.input(1).ptr<float>();                          // [cols]
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [cols]
  float* py = ctx.output(0).ptr<float>();
  float* pmean = ctx.has_output(1) ? ctx.output(1).ptr<float>() : nullptr;  // [rows]
  float* pinv = ctx.has_output(2) ? ctx.output(2).ptr<float>() : nullptr;   // [rows]
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (axis < 0) axis += x.rank();
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  int64_t cols = 1;
  for (int d = (int)axis; d < x.rank(); d++) cols *= x.dim(d);
  if (x.numel() == 0 || cols == 0) return;
  int64_t rows = x.numel() / cols;
  const float* px = x.ptr<float>();
  ctx.parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = px + r * cols;
      float* yr = py + r * cols;
      float mean = sum_f32(xr, cols) / (float)cols;
      float acc[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= cols; i += kLanes)
        for (int l = 0; l < kLanes; l++) {
          float d = xr[i + l] - mean;
          acc[l] += d * d;
        }
      for (int l = 0; i < cols; i++, l++) {
        float d = xr[i] - mean;
        acc[l] += d * d;
      }
      float var = fold_lanes(acc) / (float)cols;
      float inv = 1.0f / std::sqrt(var + eps);
      if (bias) {
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - mean) * inv * scale[j] + bias[j];
      } else {
        for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - mean) * inv * scale[j];
      }
      if (pmean) pmean[r] = mean;
      if (pinv) pinv[r] = inv;
    }
  });
}

bool layer_norm_f32_supports(const InferCtx& ctx) {
  const Shape& x = ctx.in[0].shape;
  int rank = (int)x.size();
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (ctx.in[0].dtype != DType::F32 || rank == 0 || axis < -rank || axis >= rank) return false;
  if (axis < 0) axis += rank;
  if (ctx.node.attrs.get_int("stash_type", 1) != 1) return false;
  // Scale and B must hold exactly X[axis:] (leading 1s allowed), not broadcast within it.
  for (int i = 1; i < 3; i++) {
    if (!ctx.has(i)) continue;
    const Shape& p = ctx.in[i].shape;
    if (ctx.in[i].dtype != DType::F32 || p.size() > x.size()) return false;
    size_t off = x.size() - p.size();
    for (int d = 0; d < rank; d++) {
      int64_t pd = d >= (int)off ? p[d - off] : 1;
      if (d < axis ? pd != 1 : (pd != x[d])) return false;
    }
  }
  return true;
}

void rms_norm_f32_row(const float* x, const float* scale, float* y, int64_t n, float eps) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += (double)x[i] * (double)x[i];
  double inv = 1.0 / std::sqrt(fold_lanes(acc) / (double)n + (double)eps);
  if (!(inv >= FLT_MIN && inv <= FLT_MAX)) {
    // 1/rms is no normal float (|x| near FLT_MAX, eps 0 with tiny x, inf or NaN): the
    // reference's arithmetic, in double.
    for (int64_t j = 0; j < n; j++)
      y[j] = (float)((double)x[j] * inv * (scale ? (double)scale[j] : 1.0));
    return;
  }
  float fi = (float)inv;
  if (scale) {
    for (int64_t j = 0; j < n; j++) y[j] = x[j] * fi * scale[j];
  } else {
    for (int64_t j = 0; j < n; j++) y[j] = x[j] * fi;
  }
}

void rms_norm_f32(const KernelCtx& ctx) { rms_norm_f32_with(ctx, rms_norm_f32_row); }

namespace {

// Elements from `axis` on (a negative axis counts from the end).
int64_t cols_from(const Tensor& x, int64_t axis) {
  if (axis < 0) axis += x.rank();
  int64_t cols = 1;
  for (int d = (int)axis; d < x.rank(); d++) cols *= x.dim(d);
  return cols;
}

}  // namespace

void softmax_rows_with(const KernelCtx& ctx, SoftmaxRowFn row) {
  const Tensor& x = ctx.input(0);  // [rows, cols] viewed from any shape
  int64_t axis =
      ctx.node.attrs.get_int("axis", ctx.node.attrs.get_int("legacy_axis_2d", 0) ? 1 : -1);
  int64_t cols = cols_from(x, axis);
  if (x.numel() == 0 || cols == 0) return;
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) row(px + r * cols, py + r * cols, cols);
  });
}

void layer_norm_f32_with(const KernelCtx& ctx, LayerNormRowFn row) {
  const Tensor& x = ctx.input(0);                                                // [rows, cols]
  const float* scale = ctx.input(1).ptr<float>();                               // [cols]
  const float* bias = ctx.has_input(2) ? ctx.input(2).ptr<float>() : nullptr;  // [cols]
  float* pmean = ctx.has_output(1) ? ctx.output(1).ptr<float>() : nullptr;      // [rows]
  float* pinv = ctx.has_output(2) ? ctx.output(2).ptr<float>() : nullptr;       // [rows]
  int64_t cols = cols_from(x, ctx.node.attrs.get_int("axis", -1));
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  if (x.numel() == 0 || cols == 0) return;
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
      row(px + r * cols, scale, bias, py + r * cols, cols, eps, pmean ? pmean + r : nullptr,
          pinv ? pinv + r : nullptr);
  });
}

void rms_norm_f32_with(const KernelCtx& ctx, RmsNormRowFn row) {
  const Tensor& x = ctx.input(0);  // [rows, cols], cols = prod(X.shape[axis:])
  const Tensor& s = ctx.input(1);  // [cols], or one element broadcast (fuse_rms_norm's ones)
  int64_t cols = cols_from(x, ctx.node.attrs.get_int("axis", -1));
  float eps = (float)ctx.node.attrs.get_float("epsilon", 1e-5);
  if (x.numel() == 0 || cols == 0) return;
  bool bcast = s.numel() != cols;
  const float* scale = bcast ? nullptr : s.ptr<float>();
  float s0 = s.ptr<float>()[0];
  const float* px = x.ptr<float>();
  float* py = ctx.output(0).ptr<float>();  // [rows, cols]
  ctx.parallel_for(x.numel() / cols, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      float* yr = py + r * cols;
      row(px + r * cols, scale, yr, cols, eps);
      if (bcast && s0 != 1.0f)
        for (int64_t j = 0; j < cols; j++) yr[j] *= s0;
    }
  });
}

bool rms_norm_f32_supports(const InferCtx& ctx) {
  const Shape& x = ctx.in[0].shape;
  int rank = (int)x.size();
  int64_t axis = ctx.node.attrs.get_int("axis", -1);
  if (ctx.in[0].dtype != DType::F32 || rank == 0 || axis < -rank || axis >= rank) return false;
  if (axis < 0) axis += rank;
  if (ctx.node.attrs.get_int("stash_type", 1) != 1 || ctx.in[1].dtype != DType::F32) return false;
  // Scale holds exactly X[axis:] (leading 1s allowed) or is one element.
  const Shape& p = ctx.in[1].shape;
  if (p.size() > x.size()) return false;
  if (shape_numel(p) == 1) return true;
  size_t off = x.size() - p.size();
  for (int d = 0; d < rank; d++) {
    int64_t pd = d >= (int)off ? p[d - off] : 1;
    if (d < axis ? pd != 1 : (pd != x[d])) return false;
  }
  return true;
}

void reduce_mean_f32(const KernelCtx& ctx) { reduce_f32(ctx, true); }
void reduce_sum_f32(const KernelCtx& ctx) { reduce_f32(ctx, false); }

bool reduce_f32_supports(const InferCtx& ctx) {
  if (ctx.in[0].dtype != DType::F32) return false;
  if (ctx.has(1) && !ctx.value(1)) return false;
  std::vector<bool> mask;
  int64_t dims[3];
  return reduce_mask(ctx.node, (int)ctx.in[0].shape.size(), ctx.has(1) ? ctx.value(1) : nullptr,
                     &mask) &&
         reduce_split(ctx.in[0].shape, mask, dims);
}

}  // namespace ember::cpu
