// Conv and pool cases for the CUDA conv tests (cuda/tests/test_conv.cpp, which runs the kernels'
// index maths on the host, and cuda/emu/tests/test_emu_conv.cpp, which runs the kernels on the
// emulated device): the nodes, their 2-D geometry, what conv_cuda launches with the GEMMs done
// on the host, and the check against the op's reference kernel.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/src/conv_plan.h"
#include "doctest/doctest.h"
#include "kernels/generic/conv_f32.h"
#include "ops/pool_geom.h"
#include "tests/cpp/op_test_util.h"

namespace ember::cuda {

struct ConvCase {
  Shape x, w;
  int64_t group = 1;
  std::vector<int64_t> strides, dilations, pads;
  std::string auto_pad;
  bool bias = true;
};

inline Node conv_node(const ConvCase& c) {
  Node n;
  n.op = OpType::Conv;
  n.name = "conv";
  if (c.group != 1) n.attrs.set("group", c.group);
  if (!c.strides.empty()) n.attrs.set("strides", c.strides);
  if (!c.dilations.empty()) n.attrs.set("dilations", c.dilations);
  if (!c.pads.empty()) n.attrs.set("pads", c.pads);
  if (!c.auto_pad.empty()) n.attrs.set("auto_pad", c.auto_pad);
  return n;
}

inline Conv2d conv2d_of(const ConvCase& c) {
  Node n = conv_node(c);
  InferCtx ctx{n, {{DType::F32, c.x}, {DType::F32, c.w}}, {}};
  Conv2d g;
  REQUIRE(conv2d_from(conv_geom(ctx, c.x, c.w, false), &g));
  return g;
}

// The steps of conv_cuda other than its GEMMs: the kernels' index maths on the host, or the
// kernels themselves (conv.h's launchers).
struct ConvSteps {
  // cols [nb, rows, pc] of images n0.., pixels p0..
  std::function<void(const float* x, float* cols, const Conv2d& g, int64_t n0, int64_t nb,
                     int64_t p0, int64_t pc)>
      im2col;
  std::function<void(const float* x, const float* w, const float* bias, float* y, const Conv2d& g)>
      direct;
  std::function<void(float* y, const float* bias, const Conv2d& g)> bias_fill;
};

// The kernels' index maths run on the host, in the index type they pick.
inline ConvSteps conv_host_steps() {
  ConvSteps s;
  s.im2col = [](const float* x, float* cols, const Conv2d& g, int64_t n0, int64_t nb, int64_t p0,
                int64_t pc) {
    const bool i32 = conv_fits_int32(g);
    for (int64_t i = 0; i < nb * g.rows() * pc; i++) {
      int64_t src = i32 ? im2col_source<int>(g, (int)n0, (int)p0, (int)pc, (int)i)
                        : im2col_source<int64_t>(g, n0, p0, pc, i);
      cols[i] = src >= 0 ? x[src] : 0.0f;
    }
  };
  s.direct = [](const float* x, const float* w, const float* bias, float* y, const Conv2d& g) {
    const bool i32 = conv_fits_int32(g);
    for (int64_t n = 0, i = 0; n < g.N; n++)
      for (int64_t m = 0; m < g.M; m++)
        for (int64_t oy = 0; oy < g.OH; oy++)
          for (int64_t ox = 0; ox < g.OW; ox++, i++)
            y[i] = (i32 ? conv_direct_one<int>(g, x, w, (int)n, (int)m, (int)oy, (int)ox)
                        : conv_direct_one<int64_t>(g, x, w, n, m, oy, ox)) +
                   (bias ? bias[m] : 0.0f);
  };
  s.bias_fill = [](float* y, const float* bias, const Conv2d& g) {
    const int64_t P = g.P();
    for (int64_t i = 0; i < g.N * g.M * P; i++) y[i] = bias ? bias[(i / P) % g.M] : 0.0f;
  };
  return s;
}

// What conv_cuda launches, with `steps`: bias fill, then per chunk im2col and the GEMM calls
// (naive fp32 loops on the host in cuBLASLt's place).
inline void emulate_conv(const Conv2d& g, const ConvPlan& plan, const ConvSteps& steps,
                         const float* x, const float* w, const float* bias, float* y) {
  int64_t P = g.P();
  if (plan.path == ConvPath::Empty) return;
  if (plan.path == ConvPath::Direct) {
    steps.direct(x, w, bias, y, g);
    return;
  }
  steps.bias_fill(y, bias, g);
  if (plan.path == ConvPath::Fill) return;
  std::vector<float> cols(plan.cols_elems);
  for (int64_t n0 = 0; n0 < g.N; n0 += plan.nb) {
    for (int64_t p0 = 0; p0 < P; p0 += plan.pc) {
      int64_t nb = std::min(plan.nb, g.N - n0), pc = std::min(plan.pc, P - p0);
      const float* b = x;
      if (plan.path == ConvPath::Im2col) {
        REQUIRE(nb * g.rows() * pc <= plan.cols_elems);
        steps.im2col(x, cols.data(), g, n0, nb, p0, pc);
        b = cols.data();
      } else {
        REQUIRE((n0 == 0 && nb == g.N && pc == P));
      }
      for (const ConvGemmCall& c : conv_gemm_calls(g, n0, nb, p0, pc))
        for (int64_t bi = 0; bi < c.batch; bi++) {
          const float* A = w + c.a_off + bi * c.stride_a;
          const float* B = b + c.b_off + bi * c.stride_b;
          float* D = y + c.d_off + bi * c.stride_d;
          for (int64_t i = 0; i < c.m; i++)
            for (int64_t j = 0; j < c.n; j++) {
              float acc = 0;
              for (int64_t k = 0; k < c.k; k++) acc += A[i * c.k + k] * B[k * c.ldb + j];
              D[i * c.ldd + j] += acc;
            }
        }
    }
  }
}

// The reference's Y and the emulated plan's Y agree at the scratch budget `cols_bytes`.
inline void check_conv(const ConvCase& c, int64_t cols_bytes, ConvPath want_path,
                       const ConvSteps& steps) {
  std::mt19937 gen(1234);
  Node n = conv_node(c);
  InferCtx ic{n, {{DType::F32, c.x}, {DType::F32, c.w}}, {}};
  int64_t M = c.w[0];
  if (c.bias) ic.in.push_back({DType::F32, {M}});
  std::vector<TensorType> out = op_infer(ic);
  Tensor x = test::random_f32(c.x, gen()), w = test::random_f32(c.w, gen());
  Tensor b = test::random_f32({M}, gen());
  Tensor want = Tensor::empty(DType::F32, out[0].shape);
  std::vector<const Tensor*> ins = {&x, &w};
  if (c.bias) ins.push_back(&b);
  KernelCtx kc{n, ins, {&want}};
  op_def(OpType::Conv).reference(kc);

  Conv2d g = conv2d_of(c);
  ConvPlan plan;
  REQUIRE(conv_plan(g, cols_bytes, &plan));
  CHECK(plan.path == want_path);
  Tensor got = Tensor::empty(DType::F32, out[0].shape);
  for (int64_t i = 0; i < got.numel(); i++) got.ptr<float>()[i] = 12345.0f;
  emulate_conv(g, plan, steps, x.ptr<float>(), w.ptr<float>(), c.bias ? b.ptr<float>() : nullptr,
               got.ptr<float>());
  // fp32 sums in another order than the reference's double ones.
  float tol = 1e-5f * std::sqrt((float)std::max<int64_t>(g.kg(), 1)) + 1e-6f;
  for (int64_t i = 0; i < want.numel(); i++) {
    CAPTURE(i);
    REQUIRE(std::fabs(got.ptr<float>()[i] - want.ptr<float>()[i]) <= tol);
  }
}

// The conv cases both tests run, each with its scratch budget and the path it must take.
struct ConvRun {
  ConvCase c;
  int64_t cols_bytes;
  ConvPath path;
};
inline std::vector<ConvRun> conv_runs() {
  const int64_t big = kConvColsBytes;
  const ConvCase base{{3, 5, 7, 9}, {6, 5, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};
  const ConvCase wide{{2, 3, 17, 31}, {4, 3, 3, 3}, 1, {}, {}, {1, 1, 1, 1}};  // 527 pixels
  return {
      // 3x3 pad 1 on a 7x9 image, batch 3; then a budget of one image, and of 256-pixel chunks.
      {base, big, ConvPath::Im2col},
      {base, 5 * 9 * 63 * 4, ConvPath::Im2col},
      {wide, 3 * 9 * 4 * 300, ConvPath::Im2col},  // chunks of 256 pixels
      {{{1, 5, 7, 9}, {6, 5, 3, 3}, 1, {2, 2}, {}, {1, 1, 1, 1}, "", false}, big,
       ConvPath::Im2col},  // stride 2, no bias
      {{{3, 4, 9, 11}, {5, 4, 3, 3}, 1, {1, 1}, {2, 2}, {2, 1, 0, 3}}, big,
       ConvPath::Im2col},  // dilation 2, odd pads
      {{{2, 4, 7, 9}, {5, 4, 2, 4}, 1, {2, 3}, {}, {}, "SAME_UPPER"}, big, ConvPath::Im2col},
      {{{2, 4, 7, 9}, {5, 4, 3, 2}, 1, {2, 1}, {}, {}, "SAME_LOWER"}, big, ConvPath::Im2col},
      {{{2, 4, 7, 9}, {5, 4, 3, 3}, 1, {}, {}, {}, "VALID"}, big, ConvPath::Im2col},
      {{{3, 8, 7, 9}, {6, 8, 1, 1}}, big, ConvPath::Gemm1x1},
      {{{3, 8, 7, 9}, {8, 2, 1, 1}, 4, {}, {}, {}, "", false}, big, ConvPath::Gemm1x1},
      {{{3, 8, 7, 9}, {12, 2, 3, 3}, 4, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Im2col},
      {{{6, 8, 7, 9}, {12, 4, 3, 3}, 2, {2, 1}, {}, {0, 1, 1, 0}}, big, ConvPath::Im2col},
      {{{6, 8, 7, 9}, {12, 4, 3, 3}, 2, {}, {}, {1, 1, 1, 1}}, 72 * 63 * 4 * 4,
       ConvPath::Im2col},  // 4 + 2 images
      {{{3, 8, 7, 9}, {8, 1, 3, 3}, 8, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Direct},
      {{{2, 6, 7, 9}, {12, 1, 5, 3}, 6, {2, 1}, {1, 2}, {2, 1, 2, 1}}, big, ConvPath::Direct},
      {{{2, 1, 7, 9}, {4, 1, 3, 3}, 1, {}, {}, {}, "", false}, big, ConvPath::Direct},
      {{{3, 4, 13}, {6, 4, 3}, 1, {2}, {}, {1, 1}}, big, ConvPath::Im2col},  // 1-D
      {{{3, 4, 13}, {4, 1, 3}, 4, {}, {}, {1, 1}}, big, ConvPath::Direct},   // 1-D depthwise
      {{{2, 0, 7, 9}, {5, 0, 3, 3}, 1, {}, {}, {1, 1, 1, 1}}, big, ConvPath::Fill},
      {{{1, 3, 1, 1}, {2, 3, 1, 1}}, big, ConvPath::Gemm1x1},
  };
}

// Every conv_runs() case through check_conv with `steps`.
inline void check_conv_runs(const ConvSteps& steps) {
  for (const ConvRun& r : conv_runs()) {
    CAPTURE(shape_str(r.c.x));
    CAPTURE(shape_str(r.c.w));
    check_conv(r.c, r.cols_bytes, r.path, steps);
  }
}

inline Node pool_node(OpType op, std::vector<int64_t> k, std::vector<int64_t> s,
                      std::vector<int64_t> pads, std::vector<int64_t> d, bool ceil_mode,
                      bool include_pad, const std::string& ap) {
  Node n;
  n.op = op;
  n.name = "pool";
  n.outputs = {0};
  n.attrs.set("kernel_shape", k);
  if (!s.empty()) n.attrs.set("strides", s);
  if (!pads.empty()) n.attrs.set("pads", pads);
  if (!d.empty()) n.attrs.set("dilations", d);
  if (ceil_mode) n.attrs.set("ceil_mode", int64_t(1));
  if (include_pad) n.attrs.set("count_include_pad", int64_t(1));
  if (!ap.empty()) n.attrs.set("auto_pad", ap);
  return n;
}

// A pool node's input (every 7th element NaN `with_nan`), its reference output and its geometry.
struct PoolRun {
  Tensor x, want;
  Pool2d p;
};
inline PoolRun pool_run(const Node& n, const Shape& xs, bool with_nan) {
  std::mt19937 gen(99);
  PoolRun r;
  r.x = test::random_f32(xs, gen());
  if (with_nan)
    for (int64_t i = 0; i < r.x.numel(); i += 7) r.x.ptr<float>()[i] = NAN;
  InferCtx ic{n, {{DType::F32, xs}}, {nullptr}};
  std::vector<TensorType> out = op_infer(ic);
  r.want = Tensor::empty(DType::F32, out[0].shape);
  KernelCtx kc{n, {&r.x}, {&r.want}};
  op_def(n.op).reference(kc);
  bool include_pad = n.attrs.get_int("count_include_pad", 0) != 0;
  REQUIRE(pool2d_from(pool_geom(ic, xs), xs[0], xs[1], n.op == OpType::MaxPool, include_pad,
                      &r.p));
  REQUIRE(r.p.planes * r.p.OH * r.p.OW == r.want.numel());
  return r;
}

// got equals the reference's output: NaN where it is NaN, else to 1e-6 relative.
inline void check_pool_out(const Tensor& want, const float* got) {
  for (int64_t i = 0; i < want.numel(); i++) {
    float w = want.ptr<float>()[i];
    CAPTURE(i);
    if (std::isnan(w)) REQUIRE(std::isnan(got[i]));
    else REQUIRE(got[i] == doctest::Approx(w).epsilon(1e-6));
  }
}

// The pool cases both tests run (`check(node, x shape, with_nan)`): every window rule, 1-D and
// 2-D, with and without NaNs, and count_include_pad with and without ceil_mode.
inline void for_each_pool_case(const std::function<void(const Node&, const Shape&, bool)>& check) {
  const bool ceil_on = true, ceil_off = false, incl = true, excl = false;
  for (OpType op : {OpType::MaxPool, OpType::AveragePool}) {
    CAPTURE(op_name(op));
    for (bool nan : {false, true}) {
      auto c = [&](Node n, const Shape& xs) { check(n, xs, nan); };
      c(pool_node(op, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, ceil_off, excl, ""), {2, 3, 7, 9});
      c(pool_node(op, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, ceil_on, excl, ""), {2, 3, 8, 10});
      c(pool_node(op, {2, 3}, {3, 2}, {0, 1, 2, 2}, {2, 1}, ceil_on, excl, ""), {1, 2, 9, 11});
      c(pool_node(op, {3, 2}, {1, 1}, {}, {}, ceil_off, excl, "SAME_UPPER"), {2, 2, 7, 9});
      c(pool_node(op, {3, 2}, {2, 2}, {}, {}, ceil_off, excl, "SAME_LOWER"), {2, 2, 7, 9});
      c(pool_node(op, {5}, {2}, {2, 2}, {}, ceil_on, excl, ""), {2, 3, 13});  // 1-D
      c(pool_node(op, {1, 1}, {2, 2}, {}, {}, ceil_off, excl, ""), {1, 2, 7, 9});
      c(pool_node(op, {7, 9}, {}, {}, {}, ceil_off, excl, ""), {1, 2, 7, 9});
    }
  }
  // AveragePool's divisor counts the padding where asked (but not the ceil_mode overhang).
  for (bool mode : {ceil_off, ceil_on}) {
    OpType avg = OpType::AveragePool;
    check(pool_node(avg, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, mode, incl, ""), {2, 3, 8, 10}, false);
    check(pool_node(avg, {4, 3}, {3, 2}, {2, 0, 1, 1}, {1, 2}, mode, incl, ""), {2, 3, 11, 10},
          false);
  }
}

}  // namespace ember::cuda
