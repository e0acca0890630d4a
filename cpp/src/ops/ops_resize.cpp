// Resize (ONNX 11..19): nearest (every nearest_mode), linear and cubic, separable per axis.
// Each resized axis gets a table of n source indices (clamped: ONNX pads with the edge) and
// weights per output position, built as onnx.reference does: x_ori from the coordinate
// transform, window start ceil(x_ori) - n/2, ratio in (0, 1]. Nearest gathers elements
// directly; linear/cubic run one 1-D pass per axis in double (shrinking axes first, so no
// intermediate exceeds max(input, output)), then round (ints: half to even) and saturate.
// antialias widens the linear/cubic kernel by 1/scale when downsampling (normalised weights).
// Refused: antialias with nearest, and tf_crop_and_resize with scales (ONNX's spec and its
// reference disagree on the output size there).
#include <limits>

#include "ops/op_util.h"

namespace ember {
namespace {

enum class ResizeMode { Nearest, Linear, Cubic };

bool is_float_dtype(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

struct ResizePlan {
  Shape out;
  std::vector<double> scale;  // per input dim
  std::vector<double> roi;    // [2 * rank] start..., end...; empty unless tf_crop_and_resize
  ResizeMode mode = ResizeMode::Nearest;
};

// Reads the node's attributes and the scales/sizes inputs; fails through `bad`.
template <class Fail>
ResizePlan resize_plan(const Node& node, const Shape& in, const Tensor* roi, const Tensor* scales,
                       const Tensor* sizes, const Fail& bad) {
  const Attrs& a = node.attrs;
  ResizePlan p;
  std::string mode = a.get_string("mode", "nearest");
  if (mode == "nearest") p.mode = ResizeMode::Nearest;
  else if (mode == "linear") p.mode = ResizeMode::Linear;
  else if (mode == "cubic") p.mode = ResizeMode::Cubic;
  else bad("mode must be nearest, linear or cubic, got '" + mode + "'");
  int64_t aa = a.get_int("antialias", 0);
  if (aa != 0 && aa != 1) bad("antialias must be 0 or 1");
  if (aa && p.mode == ResizeMode::Nearest) bad("antialias=1 is not supported with mode nearest");
  std::string ctm = a.get_string("coordinate_transformation_mode", "half_pixel");
  if (ctm != "tf_crop_and_resize" && ctm != "half_pixel" && ctm != "half_pixel_symmetric" && ctm != "pytorch_half_pixel" &&
      ctm != "align_corners" && ctm != "asymmetric" && ctm != "tf_half_pixel_for_nn")
    bad("unknown coordinate_transformation_mode '" + ctm + "'");
  std::string nm = a.get_string("nearest_mode", "round_prefer_floor");
  if (nm != "round_prefer_floor" && nm != "round_prefer_ceil" && nm != "floor" && nm != "ceil")
    bad("unknown nearest_mode '" + nm + "'");
  int64_t ex = a.get_int("exclude_outside", 0);
  if (ex != 0 && ex != 1) bad("exclude_outside must be 0 or 1");
  std::string policy = a.get_string("keep_aspect_ratio_policy", "stretch");
  if (policy != "stretch" && policy != "not_larger" && policy != "not_smaller")
    bad("unknown keep_aspect_ratio_policy '" + policy + "'");
  int r = (int)in.size();
  if (r == 0) bad("X must have rank >= 1");
  std::vector<int> axes;
  std::vector<int64_t> ax = a.get_ints("axes");
  if (a.has("axes")) {
    std::vector<bool> seen(r, false);
    for (int64_t v : ax) {
      if (v < -r || v >= r) bad("axes value " + std::to_string(v) + " out of range");
      int d = (int)(v < 0 ? v + r : v);
      if (seen[d]) bad("axes has a repeated axis");
      seen[d] = true;
      axes.push_back(d);
    }
  } else {
    for (int d = 0; d < r; d++) axes.push_back(d);
  }
  bool has_scales = scales && scales->numel() > 0;
  bool has_sizes = sizes && sizes->numel() > 0;
  if (has_scales == has_sizes) bad("exactly one of scales and sizes must be given (non-empty)");
  p.out = in;
  p.scale.assign(r, 1.0);
  if (ctm == "tf_crop_and_resize") {
    if (has_scales) bad("tf_crop_and_resize with scales is not supported (give sizes)");
    if (!roi || roi->rank() != 1 || roi->numel() != 2 * (int64_t)axes.size())
      bad("tf_crop_and_resize needs a 1-D roi with " + std::to_string(2 * axes.size()) +
          " elements");
    if (!is_float_dtype(roi->dtype())) bad("roi must be a float tensor");
    Tensor rc = roi->contiguous();
    p.roi.assign(2 * r, 0.0);
    for (int d = 0; d < r; d++) p.roi[r + d] = 1.0;
    for (size_t i = 0; i < axes.size(); i++) {
      p.roi[axes[i]] = tensor_get_f64(rc, (int64_t)i);
      p.roi[r + axes[i]] = tensor_get_f64(rc, (int64_t)(axes.size() + i));
      if (!std::isfinite(p.roi[axes[i]]) || !std::isfinite(p.roi[r + axes[i]]))
        bad("roi must be finite");
    }
  }
  const Tensor* t = has_scales ? scales : sizes;
  if (t->rank() != 1 || t->numel() != (int64_t)axes.size())
    bad(std::string(has_scales ? "scales" : "sizes") + " must be 1-D with " +
        std::to_string(axes.size()) + " elements, got shape " + shape_str(t->shape()));
  Tensor c = t->contiguous();
  const double kMaxDim = 4.0e18;
  if (has_scales) {
    if (c.dtype() != DType::F32 && c.dtype() != DType::F16 && c.dtype() != DType::F64 &&
        c.dtype() != DType::BF16)
      bad("scales must be a float tensor, got " + std::string(dtype_name(c.dtype())));
    for (size_t i = 0; i < axes.size(); i++) {
      double s = (double)(float)tensor_get_f64(c, (int64_t)i);
      if (c.dtype() == DType::F64) s = tensor_get_f64(c, (int64_t)i);
      if (!(s > 0) || !std::isfinite(s)) bad("scales must be positive and finite");
      double o = std::floor(s * (double)in[axes[i]]);
      if (!(o < kMaxDim)) bad("scales give an output dim too large");
      p.scale[axes[i]] = s;
      p.out[axes[i]] = (int64_t)o;
    }
    return p;
  }
  if (c.dtype() != DType::I64) bad("sizes must be int64, got " + std::string(dtype_name(c.dtype())));
  for (size_t i = 0; i < axes.size(); i++) {
    int64_t s = tensor_get_i64(c, (int64_t)i);
    if (s <= 0) bad("sizes must be positive, got " + std::to_string(s));
    if (in[axes[i]] == 0) bad("cannot resize an empty axis to a given size");
    p.out[axes[i]] = s;
    p.scale[axes[i]] = (double)s / (double)in[axes[i]];
  }
  if (policy != "stretch") {
    double s = p.scale[axes[0]];
    for (int d : axes) s = policy == "not_larger" ? std::min(s, p.scale[d]) : std::max(s, p.scale[d]);
    for (int d : axes) {
      p.scale[d] = s;
      double o = s * (double)in[d] + 0.5;
      if (!(o < kMaxDim)) bad("sizes give an output dim too large");
      p.out[d] = (int64_t)o;
    }
  }
  return p;
}

bool resize_dtype_ok(DType t) { return t != DType::Bool && dtype_size(t) != 0; }

const Tensor* nonempty_value(const InferCtx& ctx, int i, const char* what) {
  if (!ctx.has(i)) return nullptr;
  if (shape_numel(ctx.in[i].shape) == 0) return nullptr;
  return &ctx.require_value(i, what);
}

std::vector<TensorType> infer_resize(const InferCtx& ctx) {
  DType t = ctx.in[0].dtype;
  if (!resize_dtype_ok(t)) ctx.fail("unsupported dtype ", dtype_name(t));
  const Tensor* scales = nonempty_value(ctx, 2, "scales");
  const Tensor* sizes = nonempty_value(ctx, 3, "sizes");
  const Tensor* roi = nullptr;
  if (ctx.node.attrs.get_string("coordinate_transformation_mode", "") == "tf_crop_and_resize")
    roi = nonempty_value(ctx, 1, "roi");
  ResizePlan p = resize_plan(ctx.node, ctx.in[0].shape, roi, scales, sizes,
                             [&](const std::string& m) { ctx.fail(m); });
  // The output is sized from data values: check it here, before anything allocates it.
  tensor_bytes_checked(TensorType{t, p.out}, ctx.error_kind, "[Resize] node '" + ctx.node.name + "'");
  return one(t, p.out);
}

// The 1-D sampling table of one axis: out_len rows of n (index, weight) pairs; extrap marks
// positions outside tf_crop_and_resize's crop (they take extrapolation_value).
struct AxisTable {
  int64_t n = 0;
  std::vector<int64_t> idx;
  std::vector<double> w;
  std::vector<char> extrap;
};

// roi0/roi1: the axis's crop (tf_crop_and_resize only).
double x_original(const std::string& ctm, double x, double scale, int64_t in_len, int64_t out_len,
                  double roi0, double roi1) {
  double out_w = scale * (double)in_len;  // onnx.reference's length_resized (not rounded)
  if (ctm == "align_corners") return out_w == 1 ? 0.0 : x * (double)(in_len - 1) / (out_w - 1);
  if (ctm == "asymmetric") return x / scale;
  if (ctm == "pytorch_half_pixel") return out_w == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
  if (ctm == "tf_half_pixel_for_nn") return (x + 0.5) / scale;
  if (ctm == "tf_crop_and_resize") {
    double span = (roi1 - roi0) * (double)(in_len - 1);
    return (out_w == 1 ? span / 2 : x * span / (out_w - 1)) + roi0 * (double)(in_len - 1);
  }
  if (ctm == "half_pixel_symmetric") {
    double adjustment = (double)out_len / out_w;
    double offset = (double)in_len / 2 * (1 - adjustment);
    return offset + (x + 0.5) / scale - 0.5;
  }
  return (x + 0.5) / scale - 0.5;  // half_pixel
}

double cubic_kernel(double x, double A) {
  x = std::fabs(x);
  double x2 = x * x, x3 = x2 * x;
  if (x <= 1) return (A + 2) * x3 - (A + 3) * x2 + 1;
  if (x < 2) return A * x3 - 5 * A * x2 + 8 * A * x - 4 * A;
  return 0.0;
}

template <class Fail>
AxisTable axis_table(const Node& node, ResizeMode mode, double scale, int64_t in_len,
                     int64_t out_len, double roi0, double roi1, const Fail& bad) {
  const Attrs& a = node.attrs;
  std::string ctm = a.get_string("coordinate_transformation_mode", "half_pixel");
  std::string nm = a.get_string("nearest_mode", "round_prefer_floor");
  double A = a.get_float("cubic_coeff_a", -0.75);
  bool exclude = a.get_int("exclude_outside", 0) != 0;
  bool antialias = a.get_int("antialias", 0) != 0 && mode != ResizeMode::Nearest;
  double ks = std::min(scale, 1.0);  // antialias kernel scale
  AxisTable t;
  // Kernel taps: 2 (nearest, linear) or 4 (cubic); antialias widens them by 1/scale, which
  // stays within a few times in_len whenever the output is not empty.
  int64_t first = 0;  // offset of tap 0 from the window start, in kernel units
  if (!antialias) {
    t.n = mode == ResizeMode::Cubic ? 4 : 2;
  } else {
    double inv = 1.0 / ks;
    if (!(inv <= 4.0 * (double)in_len + 8)) bad("antialias kernel too wide for this scale");
    first = (int64_t)std::floor((mode == ResizeMode::Cubic ? -2.0 : -1.0) * inv) + 1;
    t.n = 2 - 2 * first;
  }
  t.idx.resize((size_t)(out_len * t.n));
  t.w.resize((size_t)(out_len * t.n));
  t.extrap.assign((size_t)out_len, 0);
  std::vector<double> coef((size_t)t.n);
  for (int64_t o = 0; o < out_len; o++) {
    double x = x_original(ctm, (double)o, scale, in_len, out_len, roi0, roi1);
    if (ctm == "tf_crop_and_resize" && (x < 0 || x > (double)(in_len - 1))) t.extrap[o] = 1;
    // Keep far-out coordinates finite and small before integer conversion (indices are
    // clamped to the edge anyway, and every kernel's weights sum to 1).
    double lim = (double)t.n + 4;
    x = std::min(std::max(x, -lim), (double)in_len + lim);
    double c = std::ceil(x);
    double ratio = x - (c - 1);  // in (0, 1]: prefer the pixel left of x
    if (mode == ResizeMode::Nearest) {
      bool right;
      if (ratio == 1) right = true;
      else if (nm == "round_prefer_floor") right = ratio > 0.5;
      else if (nm == "round_prefer_ceil") right = ratio >= 0.5;
      else right = nm == "ceil";
      coef[0] = right ? 0 : 1;
      coef[1] = right ? 1 : 0;
    } else if (antialias) {
      double sum = 0;
      for (int64_t k = 0; k < t.n; k++) {
        double arg = ((double)(first + k) - ratio) * ks;
        coef[k] = mode == ResizeMode::Cubic ? cubic_kernel(arg, A)
                                            : std::min(std::max(1 - std::fabs(arg), 0.0), 1.0);
        sum += coef[k];
      }
      for (int64_t k = 0; k < t.n; k++) coef[k] /= sum;
    } else if (mode == ResizeMode::Linear) {
      coef[0] = 1 - ratio;
      coef[1] = ratio;
    } else {
      double r = ratio, s = 1 - ratio;
      coef[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
      coef[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
      coef[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
      coef[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
    }
    int64_t start = (int64_t)c - t.n / 2;
    if (exclude) {
      double sum = 0;
      for (int64_t k = 0; k < t.n; k++) {
        int64_t i = start + k;
        if (i < 0 || i >= in_len) coef[k] = 0;
        sum += coef[k];
      }
      if (sum != 0)
        for (int64_t k = 0; k < t.n; k++) coef[k] /= sum;
    }
    for (int64_t k = 0; k < t.n; k++) {
      int64_t i = std::min(std::max(start + k, int64_t(0)), in_len - 1);
      t.idx[o * t.n + k] = i;
      t.w[o * t.n + k] = coef[k];
    }
  }
  return t;
}

bool is_identity_axis(const ResizePlan& p, int d, int64_t in_len) {
  bool roi_full = p.roi.empty() || (std::fabs(p.roi[d]) <= 1e-9 &&
                                    std::fabs(p.roi[p.roi.size() / 2 + d] - 1.0) <= 1e-9);
  return in_len == p.out[d] && std::fabs(p.scale[d] - 1.0) <= 1e-9 && roi_full;
}

template <class T>
void store_rounded(T* p, int64_t i, double v) {
  if constexpr (is_float_v<T>) {
    store(p, i, (compute_t<T>)v);
  } else {
    double lo = (double)std::numeric_limits<T>::lowest(), hi = (double)std::numeric_limits<T>::max();
    double r = std::nearbyint(v);
    if (std::isnan(r)) r = 0;
    if (r <= lo) p[i] = std::numeric_limits<T>::lowest();
    else if (r >= hi) p[i] = std::numeric_limits<T>::max();
    else p[i] = (T)r;
  }
}

void ref_resize(const KernelCtx& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const Tensor* roi = ctx.has_input(1) && ctx.input(1).numel() > 0 ? &ctx.input(1) : nullptr;
  const Tensor* scales = ctx.has_input(2) && ctx.input(2).numel() > 0 ? &ctx.input(2) : nullptr;
  const Tensor* sizes = ctx.has_input(3) && ctx.input(3).numel() > 0 ? &ctx.input(3) : nullptr;
  const Node& n = ctx.node;
  auto bad = [&](const std::string& m) { fail(ErrorKind::Input, "[Resize] node '", n.name, "': ", m); };
  ResizePlan p = resize_plan(n, x.shape(), roi, scales, sizes, bad);
  if (p.out != y.shape()) bad("output shape changed since planning");
  if (y.numel() == 0) return;
  int r = x.rank();
  const Shape& in = x.shape();
  double ev = n.attrs.get_float("extrapolation_value", 0.0);
  auto table = [&](int d) {
    double r0 = p.roi.empty() ? 0.0 : p.roi[d], r1 = p.roi.empty() ? 1.0 : p.roi[r + d];
    return axis_table(n, p.mode, p.scale[d], in[d], p.out[d], r0, r1, bad);
  };
  if (p.mode == ResizeMode::Nearest) {
    // Direct gather: one source index per output coordinate and axis (-1: extrapolated).
    std::vector<std::vector<int64_t>> src(r);
    for (int d = 0; d < r; d++) {
      src[d].resize((size_t)p.out[d]);
      if (is_identity_axis(p, d, in[d])) {
        for (int64_t o = 0; o < p.out[d]; o++) src[d][o] = o;
        continue;
      }
      AxisTable t = table(d);
      for (int64_t o = 0; o < p.out[d]; o++)
        src[d][o] = t.extrap[o] ? -1 : t.w[o * 2] != 0 ? t.idx[o * 2] : t.idx[o * 2 + 1];
    }
    Shape xs = contiguous_strides(in);
    dispatch_dtype(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same_v<T, bool>) {
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        T fill{};
        store_rounded(&fill, 0, ev);
        std::vector<int64_t> ix(r, 0);
        for (int64_t i = 0, total = y.numel(); i < total; i++) {
          int64_t off = 0;
          bool out_of_crop = false;
          for (int d = 0; d < r; d++) {
            int64_t s = src[d][ix[d]];
            out_of_crop |= s < 0;
            off += s * xs[d];
          }
          py[i] = out_of_crop ? fill : px[off];
          for (int d = r - 1; d >= 0; d--) {
            if (++ix[d] < p.out[d]) break;
            ix[d] = 0;
          }
        }
      }
    });
    return;
  }
  // Linear / cubic: separable passes in double; shrinking axes first.
  std::vector<int> order;
  for (int d = 0; d < r; d++)
    if (!is_identity_axis(p, d, in[d]) && p.out[d] < in[d]) order.push_back(d);
  for (int d = 0; d < r; d++)
    if (!is_identity_axis(p, d, in[d]) && p.out[d] >= in[d]) order.push_back(d);
  Shape cur = in;
  std::vector<double> buf((size_t)x.numel());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      const T* px = x.ptr<T>();
      for (int64_t i = 0; i < x.numel(); i++) buf[i] = (double)load(px, i);
    }
  });
  for (int d : order) {
    AxisTable t = table(d);
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < d; k++) outer *= cur[k];
    for (int k = d + 1; k < r; k++) inner *= cur[k];
    int64_t L = cur[d], O = p.out[d];
    std::vector<double> next((size_t)(outer * O * inner));
    for (int64_t a = 0; a < outer; a++)
      for (int64_t o = 0; o < O; o++)
        for (int64_t b = 0; b < inner; b++) {
          double s = 0;
          if (t.extrap[o]) {
            s = ev;
          } else {
            for (int64_t k = 0; k < t.n; k++)
              s += t.w[o * t.n + k] * buf[(a * L + t.idx[o * t.n + k]) * inner + b];
          }
          next[(a * O + o) * inner + b] = s;
        }
    buf.swap(next);
    cur[d] = O;
  }
  dispatch_dtype(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, bool>) {
      T* py = y.ptr<T>();
      for (int64_t i = 0; i < y.numel(); i++) store_rounded(py, i, buf[i]);
    }
  });
}

}  // namespace

static const OpDef kOps[] = {
    // inputs X, roi (ignored: tf_crop_and_resize is refused), scales, sizes
    {OpType::Resize, "Resize", 1, 4, 1, 1, 0,
     {{"antialias", AttrKind::Int}, {"axes", AttrKind::Ints},
      {"coordinate_transformation_mode", AttrKind::String}, {"cubic_coeff_a", AttrKind::Float},
      {"exclude_outside", AttrKind::Int}, {"extrapolation_value", AttrKind::Float},
      {"keep_aspect_ratio_policy", AttrKind::String}, {"mode", AttrKind::String},
      {"nearest_mode", AttrKind::String}},
     infer_resize, ref_resize},
};

std::span<const OpDef> op_defs_resize() { return kOps; }

}  // namespace ember
