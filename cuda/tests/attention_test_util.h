// Attention nodes, their geometry and kernel arguments, and random inputs, for the CUDA
// attention tests (cuda/tests/test_attention.cpp, cuda/emu/tests/test_emu_attention.cpp).
#pragma once
#include <random>
#include <string>
#include <vector>

#include "cuda/src/attention_plan.h"
#include "doctest/doctest.h"

namespace ember::cuda {

inline Node attention_node(const std::string& layout, const std::string& scale_op, double scale) {
  Node n;
  n.op = OpType::Attention;
  n.name = "attn";
  n.attrs.set("layout", layout);
  n.attrs.set("scale_op", scale_op);
  n.attrs.set("scale", scale);
  return n;
}

inline AttnGeom geom(const Node& n, const std::vector<Shape>& shapes) {
  InferCtx ctx{n, {}, {}};
  for (const Shape& s : shapes) ctx.in.push_back({DType::F32, s});
  return attention_geom(ctx, shapes[0], shapes[1], shapes[2], shapes.size() > 3 ? &shapes[3] : nullptr);
}

inline AttnArgs args_for(const Node& n, const std::vector<Shape>& shapes) {
  AttnArgs a;
  REQUIRE(attention_args(geom(n, shapes), &a));
  return a;
}

inline std::vector<Shape> shapes_of(const std::vector<Tensor>& in) {
  std::vector<Shape> shapes;
  for (const Tensor& t : in) shapes.push_back(t.shape());
  return shapes;
}

// Y of the op's reference kernel for inputs Q, K, V [, mask].
inline Tensor attention_reference(const Node& n, const std::vector<Tensor>& in) {
  Tensor want = Tensor::empty(DType::F32, geom(n, shapes_of(in)).out);
  std::vector<const Tensor*> ins;
  for (const Tensor& t : in) ins.push_back(&t);
  KernelCtx kc{n, ins, {&want}};
  op_def(OpType::Attention).reference(kc);
  return want;
}

// The kernel arguments for `in`, bound to its host buffers (y left for the caller).
inline AttnArgs bound_args(const Node& n, const std::vector<Tensor>& in) {
  AttnArgs a = args_for(n, shapes_of(in));
  a.q = in[0].ptr<float>();
  a.k = in[1].ptr<float>();
  a.v = in[2].ptr<float>();
  a.mask = in.size() > 3 ? in[3].ptr<float>() : nullptr;
  a.scale = (float)n.attrs.get_float("scale", 1.0);
  a.div = n.attrs.get_string("scale_op", "mul") == "div";
  return a;
}

inline Tensor random_tensor(const Shape& s, std::mt19937& gen) {
  Tensor t = Tensor::empty(DType::F32, s);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = dist(gen);
  return t;
}

}  // namespace ember::cuda
