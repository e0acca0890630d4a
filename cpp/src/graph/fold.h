// Constant folding and dead-node elimination. The same evaluation (infer + reference
// kernel) folds initializer-only sub-graphs at load and shape sub-graphs at plan time.
#pragma once
#include "ember/graph.h"

namespace ember {

// Infers output types with `inputs` as known values and runs the reference kernel.
// Absent optional inputs are nullptr; unused outputs come back undefined.
std::vector<Tensor> evaluate_node(const Node& node, const std::vector<const Tensor*>& inputs,
                                  ErrorKind error_kind);

// Replaces every node whose inputs are all constants (and that has no side effects) by
// constants, then drops nodes and constants nothing reads. Returns the nodes folded.
int fold_constants(Graph& graph);
int eliminate_dead_nodes(Graph& graph);

}  // namespace ember
