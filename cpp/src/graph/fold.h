// Constant folding and dead-node elimination. The same evaluation (infer + reference
// kernel) folds initializer-only sub-graphs at load and shape sub-graphs at plan time.
#pragma once
#include "ember/graph.h"

namespace ember {

// Infers output types with `inputs` as known values (op_infer: sizes checked before any
// allocation) and runs the reference kernel. Absent optional inputs are nullptr; unused
// outputs come back undefined.
std::vector<Tensor> evaluate_node(const Node& node, const std::vector<const Tensor*>& inputs,
                                  ErrorKind error_kind);

// Folded values live outside the arena and memory_limit, and a few bytes of a hostile model
// can ask for gigabytes (ConstantOfShape, Expand, Range). So outputs of up to
// kFoldAlwaysElements elements (values shape inference may read) always fold; larger ones fold
// while the pass's byte budget lasts, and otherwise their node stays and runs from the arena.
constexpr int64_t kFoldAlwaysElements = 1024;
constexpr size_t kFoldBudgetBytes = size_t(64) << 20;
// Whether a node with these output types may fold; takes its bytes from *budget_left if so.
bool fold_budget_take(const std::vector<TensorType>& types, size_t* budget_left);

// Replaces every node whose inputs are all constants (and that has no side effects) by
// constants, within a budget of kFoldBudgetBytes plus 4x the graph's own constant bytes (a
// Cast of every weight, int8 -> float, fits), then drops nodes and constants nothing reads.
// Returns the nodes folded.
int fold_constants(Graph& graph);
// Captured inputs of If/Loop nodes that are constants here become constants of the subgraphs
// (which then fold and pre-pack them as their own) instead of values passed on every run.
// Returns the inputs moved.
int bind_constant_captures(Graph& graph);
int eliminate_dead_nodes(Graph& graph);

}  // namespace ember
