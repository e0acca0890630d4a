// fuse_norm_quant (device sessions, after fuse_add_norm): an AddNorm whose Y is read by QMatMul
// nodes of a_mode "token" also writes Y's per-token int8 codes and scales (its outputs 2 and
// 3, ops_add_norm.cpp), and those QMatMuls read them instead (a_mode "rows"): the rows are
// quantized once, where the norm has just written them, for all of them (a BERT block's Q, K
// and V, or its first FFN matmul), not once per matmul. The sums are the token mode's exactly.
#include "graph/fuse.h"
#include "graph/fuse_util.h"

namespace ember {

using namespace fuse;

namespace {

// A QMatMul that quantizes its input `y` per token itself (no a_scale / a_zero_point).
bool token_reader(const Node& n, int y) {
  return n.op == OpType::QMatMul && !n.inputs.empty() && n.inputs[0] == y &&
         n.attrs.get_string("a_mode", "token") == "token" &&
         (n.inputs.size() < 5 || n.inputs[4] < 0);
}

}  // namespace

int fuse_norm_quant(Graph& g) {
  Uses uses(g);
  int fused = 0;
  for (size_t ni = 0; ni < g.nodes.size(); ni++) {
    if (g.nodes[ni].op != OpType::AddNorm || g.nodes[ni].outputs.size() > 2) continue;
    const int y = g.nodes[ni].outputs[0];
    auto it = uses.readers.find(y);
    if (it == uses.readers.end()) continue;
    std::vector<int> readers;
    for (int r : it->second)
      if (token_reader(g.nodes[r], y)) readers.push_back(r);
    if (readers.empty()) continue;
    const std::string base = g.values[y].name;
    const int codes = g.add_value(base + "#codes", DType::I8);
    const int scales = g.add_value(base + "#scales", DType::F32);
    Node& norm = g.nodes[ni];
    norm.outputs.resize(2, -1);
    norm.outputs.push_back(codes);
    norm.outputs.push_back(scales);
    for (int r : readers) {
      Node& q = g.nodes[r];
      q.inputs[0] = codes;
      if (q.inputs.size() < 5) q.inputs.resize(5, -1);
      q.inputs[4] = scales;
      q.attrs.set("a_mode", std::string("rows"));
    }
    fused++;
  }
  return fused;
}

}  // namespace ember
