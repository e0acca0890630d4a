// Host-side plans of the CUDA elementwise family (cuda/src/elementwise_plan.h): each plan is
// checked by walking it on the CPU the way the kernels do (elementwise.cu's ew_offsets,
// kept_offset / red_offset) and comparing with naive numpy-style indexing.
#include <random>

#include "cuda/src/elementwise_plan.h"
#include "doctest/doctest.h"

using namespace ember;
using namespace ember::cuda;

namespace {

// elementwise.cu's ew_offsets, on the host.
std::vector<int64_t> geom_offsets(const EwGeom& g, int64_t i, int k) {
  std::vector<int64_t> off(k, 0);
  for (int d = g.rank - 1; d >= 0; d--) {
    int64_t r = i;
    if (d > 0) {
      r = i % g.dims[d];
      i /= g.dims[d];
    }
    for (int j = 0; j < k; j++) off[j] += r * g.strides[j][d];
  }
  return off;
}

// Offset in `in` (contiguous) of output element i, numpy broadcasting.
int64_t naive_offset(const Shape& out, const Shape& in, int64_t i) {
  const int r = (int)out.size(), ri = (int)in.size();
  int64_t off = 0, stride = 1;
  for (int d = r - 1; d >= 0; d--) {
    const int64_t idx = i % out[d];
    i /= out[d];
    const int e = d - (r - ri);
    if (e >= 0) {
      if (in[e] != 1) off += idx * stride;
      stride *= in[e];
    }
  }
  return off;
}

void check_plan(const Shape& out, const std::vector<Shape>& ins, int want_rank = -1) {
  CAPTURE(shape_str(out));
  EwGeom g;
  REQUIRE(ew_broadcast_plan(out, ins, &g));
  CHECK(g.numel == shape_numel(out));
  if (want_rank >= 0) CHECK(g.rank == want_rank);
  for (int64_t i = 0; i < g.numel; i++) {
    auto off = geom_offsets(g, i, (int)ins.size());
    for (size_t k = 0; k < ins.size(); k++) {
      CAPTURE(k);
      CAPTURE(i);
      REQUIRE(off[k] == naive_offset(out, ins[k], i));
    }
  }
}

// Reduction by the plan, walked like the kernels, versus a naive masked sum.
void check_reduce(const Shape& x, const std::vector<bool>& mask) {
  CAPTURE(shape_str(x));
  ReduceGeom g;
  REQUIRE(ew_reduce_plan(x, mask, &g));
  const int64_t n = shape_numel(x);
  std::vector<double> data(n);
  for (int64_t i = 0; i < n; i++) data[i] = (double)((i * 7919) % 1009);
  // naive: output index = kept coordinates in row-major order
  int64_t n_out = 1, n_red = 1;
  for (size_t d = 0; d < x.size(); d++) (mask[d] ? n_red : n_out) *= x[d];
  CHECK(g.n_out == n_out);
  CHECK(g.n_red == n_red);
  std::vector<double> want(n_out, 0.0);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, o = 0, mul = 1;
    for (int d = (int)x.size() - 1; d >= 0; d--) {
      const int64_t idx = rem % x[d];
      rem /= x[d];
      if (!mask[d]) {
        o += idx * mul;
        mul *= x[d];
      }
    }
    want[o] += data[i];
  }
  auto walk = [](const int64_t* dims, const int64_t* strides, int rank, int64_t j) {
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; d--) {
      int64_t r = j;
      if (d > 0) {
        r = j % dims[d];
        j /= dims[d];
      }
      off += r * strides[d];
    }
    return off;
  };
  for (int64_t o = 0; o < g.n_out; o++) {
    const int64_t base = walk(g.kept_dims, g.kept_strides, g.kept_rank, o);
    double s = 0;
    for (int64_t j = 0; j < g.n_red; j++) s += data[base + walk(g.red_dims, g.red_strides, g.red_rank, j)];
    CAPTURE(o);
    REQUIRE(s == want[o]);
  }
  CHECK(g.threads % 32 == 0);
  CHECK(g.threads >= 32);
  CHECK(g.threads <= 1024);
}

}  // namespace

TEST_CASE("elementwise broadcast shape") {
  Shape s;
  CHECK(ew_broadcast_shape({2, 1, 5}, {3, 1}, &s));
  CHECK(s == Shape{2, 3, 5});
  CHECK(ew_broadcast_shape({}, {4}, &s));
  CHECK(s == Shape{4});
  CHECK(ew_broadcast_shape({0, 3}, {1, 3}, &s));
  CHECK(s == Shape{0, 3});
  CHECK_FALSE(ew_broadcast_shape({2, 3}, {4}, &s));
}

TEST_CASE("elementwise broadcast plan collapses dims") {
  // Same shape: one flat dim, unit strides.
  check_plan({7, 769, 3}, {{7, 769, 3}, {7, 769, 3}}, 1);
  // Scalar operand (rank 0 and [1, 1]) against a tensor: flat, stride 0.
  check_plan({5, 1025}, {{5, 1025}, {}}, 1);
  check_plan({5, 1025}, {{1, 1}, {5, 1025}}, 1);
  EwGeom g;
  REQUIRE(ew_broadcast_plan({5, 1025}, {{5, 1025}, {}}, &g));
  CHECK(g.strides[0][0] == 1);
  CHECK(g.strides[1][0] == 0);
  // Bias over rows: [M, N] + [N] stays 2-D; [B, M, N] + [N] merges B and M.
  check_plan({7, 5125}, {{7, 5125}, {5125}}, 2);
  check_plan({3, 7, 33}, {{3, 7, 33}, {33}}, 2);
  // Column broadcast and outer products.
  check_plan({769, 7}, {{769, 1}, {769, 7}}, 2);
  check_plan({13, 17}, {{13, 1}, {1, 17}}, 2);
  // Size-1 dims in the middle are dropped before merging.
  check_plan({4, 1, 6}, {{4, 1, 6}, {1, 1, 6}}, 2);
  check_plan({2, 3, 1, 4, 5}, {{3, 1, 1, 5}, {2, 1, 1, 4, 1}});
  // Alternating broadcasts keep every dim.
  check_plan({2, 3, 4, 5}, {{2, 1, 4, 1}, {1, 3, 1, 5}}, 4);
  // Where: three operands.
  check_plan({3, 4, 5}, {{3, 1, 5}, {4, 5}, {}}, 3);
  check_plan({6, 7}, {{6, 7}, {6, 7}, {6, 7}}, 1);
}

TEST_CASE("elementwise broadcast plan edge cases") {
  EwGeom g;
  // Rank 0 everywhere: one element, scalar operands.
  REQUIRE(ew_broadcast_plan({}, {{}, {}}, &g));
  CHECK(g.numel == 1);
  CHECK(g.rank == 1);
  CHECK(g.dims[0] == 1);
  CHECK(g.strides[0][0] == 0);
  // Empty output: nothing to launch.
  REQUIRE(ew_broadcast_plan({3, 0, 5}, {{3, 0, 5}, {5}}, &g));
  CHECK(g.numel == 0);
  // Operands that do not broadcast are refused, not mis-planned.
  CHECK_FALSE(ew_broadcast_plan({3, 4}, {{3, 4}, {2, 4}}, &g));
  CHECK_FALSE(ew_broadcast_plan({4}, {{4}, {1, 4}}, &g));
  // Rank past kEwMaxRank only when dims cannot merge.
  Shape big(10, 2), alt(10, 1);
  for (int i = 0; i < 10; i += 2) alt[i] = 2;
  CHECK(ew_broadcast_plan(big, {big, big}, &g));
  CHECK(g.rank == 1);
  CHECK_FALSE(ew_broadcast_plan(big, {big, alt}, &g));
  // Rank 8 that cannot merge is fine.
  Shape b8(8, 2), a8(8, 1);
  for (int i = 0; i < 8; i += 2) a8[i] = 2;
  check_plan(b8, {b8, a8}, 8);
}

TEST_CASE("elementwise broadcast plan random shapes") {
  std::mt19937 rng(1234);
  for (int t = 0; t < 300; t++) {
    const int r = (int)(rng() % 6);
    Shape out(r);
    for (auto& d : out) d = 1 + (int64_t)(rng() % 4);
    std::vector<Shape> ins;
    const int k = 1 + (int)(rng() % 3);
    for (int i = 0; i < k; i++) {
      const int ri = r ? (int)(rng() % (r + 1)) : 0;
      Shape s(out.end() - ri, out.end());
      for (auto& d : s) if (rng() % 3 == 0) d = 1;
      ins.push_back(s);
    }
    check_plan(out, ins);
  }
}

TEST_CASE("reduce plan") {
  // Last axis: contiguous, a block per output for long rows.
  check_reduce({7, 769}, {false, true});
  ReduceGeom g;
  REQUIRE(ew_reduce_plan({7, 769}, {false, true}, &g));
  CHECK(g.mode == EwReduceMode::BlockPerOutput);
  CHECK(g.red_rank == 1);
  CHECK(g.red_strides[0] == 1);
  // Short rows, many outputs: a thread per output.
  REQUIRE(ew_reduce_plan({100000, 7}, {false, true}, &g));
  CHECK(g.mode == EwReduceMode::ThreadPerOutput);
  // Middle axis with many columns: a thread per (outer, inner) column, coalesced.
  check_reduce({3, 50, 5125}, {false, true, false});
  REQUIRE(ew_reduce_plan({3, 50, 5125}, {false, true, false}, &g));
  CHECK(g.mode == EwReduceMode::ThreadPerOutput);
  CHECK(g.kept_rank == 2);
  CHECK(g.red_rank == 1);
  CHECK(g.red_strides[0] == 5125);
  // First axis with few columns: a block per output.
  check_reduce({1000, 3}, {true, false});
  REQUIRE(ew_reduce_plan({1000, 3}, {true, false}, &g));
  CHECK(g.mode == EwReduceMode::BlockPerOutput);
  // Everything: one output, 1024 threads for a long reduction.
  check_reduce({5, 7, 9}, {true, true, true});
  REQUIRE(ew_reduce_plan({64, 1024}, {true, true}, &g));
  CHECK(g.n_out == 1);
  CHECK(g.red_rank == 1);
  CHECK(g.threads == 1024);
  // Non-adjacent axes, with size-1 dims between that merge.
  check_reduce({2, 3, 4, 5}, {true, false, true, false});
  check_reduce({2, 1, 3, 4}, {true, true, true, false});
  REQUIRE(ew_reduce_plan({2, 1, 3, 4}, {true, false, true, false}, &g));
  CHECK(g.red_rank == 1);
  CHECK(g.red_dims[0] == 6);
  check_reduce({4, 1, 6, 1, 3}, {false, true, true, false, true});
  // Rank 0 and reducing a size-1 dim: a copy.
  check_reduce({}, {});
  check_reduce({5, 1}, {false, true});
}

TEST_CASE("reduce plan zero dims") {
  ReduceGeom g;
  // Reducing an empty dim: outputs exist, each over nothing (Sum 0, Max -inf, Mean NaN).
  REQUIRE(ew_reduce_plan({3, 0}, {false, true}, &g));
  CHECK(g.n_out == 3);
  CHECK(g.n_red == 0);
  // Keeping an empty dim: no outputs.
  REQUIRE(ew_reduce_plan({0, 4}, {false, true}, &g));
  CHECK(g.n_out == 0);
}

TEST_CASE("reduce plan random") {
  std::mt19937 rng(99);
  for (int t = 0; t < 200; t++) {
    const int r = (int)(rng() % 6);
    Shape x(r);
    std::vector<bool> mask(r);
    for (int d = 0; d < r; d++) {
      x[d] = 1 + (int64_t)(rng() % 5);
      mask[d] = rng() % 2;
    }
    check_reduce(x, mask);
  }
}

TEST_CASE("softmax dims") {
  auto d = ew_softmax_dims({2, 3, 4, 5}, 1, false);
  CHECK(d.outer == 2);
  CHECK(d.n == 3);
  CHECK(d.inner == 20);
  d = ew_softmax_dims({2, 3, 4, 5}, 3, false);
  CHECK(d.outer == 24);
  CHECK(d.n == 5);
  CHECK(d.inner == 1);
  // legacy_axis_2d: everything from axis on is one row.
  d = ew_softmax_dims({2, 3, 4, 5}, 1, true);
  CHECK(d.outer == 2);
  CHECK(d.n == 60);
  CHECK(d.inner == 1);
  d = ew_softmax_dims({2, 3}, 2, true);  // axis == rank: rows of one element
  CHECK(d.outer == 6);
  CHECK(d.n == 1);
}

TEST_CASE("norm parameter modes") {
  CHECK(ew_norm_param_mode({768}, {4, 7, 768}, 2) == 1);
  CHECK(ew_norm_param_mode({1, 1, 768}, {4, 7, 768}, 2) == 1);
  CHECK(ew_norm_param_mode({7, 768}, {4, 7, 768}, 1) == 1);
  CHECK(ew_norm_param_mode({1}, {4, 7, 768}, 2) == 0);
  CHECK(ew_norm_param_mode({}, {4, 7, 768}, 2) == 0);
  // Varies across rows, or repeats within a row: not the kernel's layout.
  CHECK(ew_norm_param_mode({7, 768}, {4, 7, 768}, 2) == -1);
  CHECK(ew_norm_param_mode({7, 1}, {4, 7, 768}, 1) == -1);
  // x dims of size 1 inside the row.
  CHECK(ew_norm_param_mode({1, 5}, {3, 1, 5}, 1) == 1);
}

TEST_CASE("row kernel block sizes") {
  CHECK(ew_row_threads(1) == 32);
  CHECK(ew_row_threads(7) == 32);
  CHECK(ew_row_threads(1024) == 32);
  CHECK(ew_row_threads(1025) == 256);
  CHECK(ew_row_threads(32000) == 512);
  for (int64_t n : {1, 7, 769, 5125, 32000, 1 << 20}) CHECK(ew_row_threads(n) % 32 == 0);
}
