// Cost model for the profiler: the work a node does (flops) and the memory it touches (bytes),
// from its input and output types and attributes. It sizes achieved GFLOP/s and GB/s next to
// measured times, so it counts what the op must do, not what a given kernel happens to do.
//
// Conventions (one multiply-add = 2 flops; a transcendental counts as one flop):
//   MatMul          2 * numel(Y) * K (batched and broadcast: numel(Y) holds the batch);
//                   FusedMatMul likewise (its bias and activation are not counted)
//   Gemm            2 * M * N * K (alpha, beta and the C add are not counted)
//   Conv            2 * numel(Y) * (C_in / group) * prod(kernel)   (= 2 * numel(Y) * numel(W) / M)
//   ConvTranspose   2 * numel(X) * (M / group) * prod(kernel)      (each input scatters once)
//   LSTM, GRU       the gate GEMMs: 2 * seq * batch * (numel(W) + numel(R))
//   Einsum          2 * numel(Y) * prod(sizes of the summed-out labels)
//   elementwise     1 per output element (Sum/Mean: one per extra input)
//   Softmax 5, LayerNorm / InstanceNorm / GroupNorm 8, BatchNorm 2 per element
//   reductions, ArgMax/Min, CumSum, TopK, global pools: 1 per input element (ReduceL2: 2)
//   MaxPool, AveragePool  prod(kernel_shape) per output element
//   Resize          nearest 0; linear / cubic 2 flops per tap (2 / 4 taps per resized dim)
//   PagedAttention  per head and attended key 4 D + 5 (from the run's query_start and
//                   seq_lens; bytes: each sequence's cached K, V rows once, not the whole cache)
//   data movement (reshape, transpose, gather, concat, cast, ...) and control flow: 0
//     (an If/Loop span's subgraph work is inside its time but not in its flops)
// bytes = every input's bytes (constants included) + every output's bytes; except that
//   Gather, GatherElements, GatherND and Slice read only output-many elements of input 0
//   (an embedding lookup does not stream the whole table).
#pragma once
#include <vector>

#include "ember/op.h"

namespace ember {

struct NodeCost {
  double flops = 0;
  double bytes = 0;
};

// in / out: the node's input and output types; dtype Count marks an absent one.
NodeCost node_cost(const Node& node, const std::vector<TensorType>& in,
                   const std::vector<TensorType>& out);
// The same from a kernel call's tensors (outputs already set).
NodeCost node_cost(const KernelCtx& ctx);
// Bytes of a tensor of this type; block-quantized formats by their block size.
double type_bytes(const TensorType& t);

}  // namespace ember
