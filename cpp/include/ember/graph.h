// The graph IR: values (named tensors with declared types), nodes in topological order,
// constants (initializers) and the graph's inputs and outputs. Frontends (ONNX import,
// LLM builders) fill it; Session compiles it.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "ember/op.h"

namespace ember {

// A declared dimension: a fixed size, or a symbol ("batch") / unknown (-1, empty symbol).
struct Dim {
  int64_t value = -1;
  std::string symbol;
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::Count;  // Count: not declared
  std::vector<Dim> dims;
  bool has_shape = false;      // false: rank unknown
};

struct Graph {
  std::vector<ValueInfo> values;
  std::vector<Node> nodes;                    // topological order
  std::vector<int> inputs;                    // value ids fed at run time
  std::vector<int> outputs;                   // value ids returned
  std::unordered_map<int, Tensor> constants;  // value id -> initializer

  int add_value(const std::string& name, DType dtype = DType::Count);
  int find_value(const std::string& name) const;  // -1 when absent
  // Checks ids, topological order, single producers, attributes; throws ModelError.
  void validate() const;
  size_t constant_bytes() const;
};

}  // namespace ember
