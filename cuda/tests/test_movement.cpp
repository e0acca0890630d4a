// Host checks of the data-movement plans (cuda/src/movement_plan.h): each test runs a host
// emulation of the kernel's indexing (the same EMBER_HD functions movement.cu calls, with the
// launcher's choice of tiled vs strided kernel and unit widening) on odd shapes and compares
// the bytes with a naive per-element reference.
#include <cstring>
#include <random>
#include <vector>

#include "cuda/src/movement_plan.h"
#include "doctest/doctest.h"
#include "ops/op_util.h"

using namespace ember::cuda;
using Bytes = std::vector<uint8_t>;
using Ints = std::vector<int64_t>;

namespace {

Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  Bytes b(n);
  for (auto& v : b) v = (uint8_t)g();
  return b;
}

Ints unravel(int64_t i, const Ints& shape) {
  Ints idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return idx;
}

int64_t ravel(const Ints& idx, const Ints& shape) {
  int64_t o = 0;
  for (size_t d = 0; d < shape.size(); d++) o = o * shape[d] + idx[d];
  return o;
}

// What movement_strided_copy does, on host buffers at fake device addresses: the tiled
// kernel's loops where transpose_tile_plan accepts the plan, else the widened strided kernel.
// `src_base` is the element offset the adapter adds to the source pointer.
void emulate_box(const StridedDims& d, const Bytes& src, int64_t src_base, Bytes* dst, int es,
                 uintptr_t dst_addr = 0x10000, uintptr_t src_addr = 0x20000, bool* tiled = nullptr) {
  StridedPlan plan;
  REQUIRE(strided_plan_from(d, &plan));
  const uint8_t* s0 = src.data() + src_base * es;
  TransposeTilePlan t;
  if (tiled) *tiled = false;
  if (transpose_tile_plan(plan, &t)) {
    if (tiled) *tiled = true;
    int64_t nb = strided_numel(t.batch);
    for (int64_t b = 0; b < nb; b++) {
      int64_t sb, db;
      strided_offsets(t.batch, b, &sb, &db);
      for (int64_t p0 = 0; p0 < t.p_size; p0 += kTileDim)
        for (int64_t l0 = 0; l0 < t.l_size; l0 += kTileDim)
          for (int j = 0; j < kTileDim; j++)
            for (int x = 0; x < kTileDim; x++) {
              int64_t p = p0 + j, l = l0 + x;  // the write phase's (p, l)
              if (p < t.p_size && l < t.l_size)
                std::memcpy(dst->data() + (db + p * t.dst_p_stride + l) * es, s0 + (sb + l * t.src_l_stride + p) * es, es);
            }
    }
    return;
  }
  int unit = strided_widen(&plan, es, dst_addr, src_addr + src_base * es);
  int64_t n = strided_numel(plan);
  bool small = strided_fits_i32(plan);
  for (int64_t i = 0; i < n; i++) {
    int64_t s, t64;
    strided_offsets(plan, i, &s, &t64);
    if (small) {
      int32_t s32, t32;
      strided_offsets(plan, (int32_t)i, &s32, &t32);
      REQUIRE(s32 == s);
      REQUIRE(t32 == t64);
    }
    std::memcpy(dst->data() + t64 * unit, s0 + s * unit, unit);
  }
}

// Naive reference of a gather-shaped box: out element i reads source element src_of(idx).
template <class F>
Bytes naive(const Ints& out_shape, const Bytes& src, int es, F&& src_of) {
  int64_t n = move_numel(out_shape);
  Bytes out(n * es);
  for (int64_t i = 0; i < n; i++) std::memcpy(out.data() + i * es, src.data() + src_of(unravel(i, out_shape)) * es, es);
  return out;
}

}  // namespace

TEST_CASE("strided_collapse merges adjacent dims and drops ones") {
  // Transpose [2, 3, 4, 5] by (0, 1, 3, 2): dims 0 and 1 stay adjacent on both sides.
  StridedDims c = strided_collapse(transpose_dims({2, 3, 4, 5}, {0, 1, 3, 2}));
  CHECK(c.shape == Ints{6, 5, 4});
  CHECK(c.src_stride == Ints{20, 1, 5});
  CHECK(c.dst_stride == Ints{20, 4, 1});
  // Identity permutation collapses to one contiguous run.
  c = strided_collapse(transpose_dims({7, 1, 9}, {0, 1, 2}));
  CHECK(c.shape == Ints{63});
  // Empty and one-element boxes.
  CHECK(strided_collapse(transpose_dims({3, 0, 2}, {2, 0, 1})).shape == Ints{0});
  CHECK(strided_collapse(transpose_dims({1, 1}, {1, 0})).shape.empty());
  // Expand [3, 1] -> [2, 3, 4]: the leading broadcast dim stays (stride 0 does not continue 3).
  c = strided_collapse(expand_dims({3, 1}, {2, 3, 4}));
  CHECK(c.shape == Ints{2, 3, 4});
  CHECK(c.src_stride == Ints{0, 1, 0});
}

TEST_CASE("strided_widen picks the largest unit the rows and pointers allow") {
  StridedPlan p;
  REQUIRE(strided_plan_from(concat_part_dims(5, 12, 20), &p));  // 4-byte elements
  StridedPlan q = p;
  CHECK(strided_widen(&q, 4, 0x1000, 0x2000) == 16);
  CHECK(q.shape[1] == 3);
  CHECK(q.dst_stride[0] == 5);
  q = p;
  CHECK(strided_widen(&q, 4, 0x1008, 0x2000) == 8);  // dst only 8-byte aligned
  q = p;
  CHECK(strided_widen(&q, 4, 0x1004, 0x2000) == 4);
  REQUIRE(strided_plan_from(concat_part_dims(5, 6, 9), &p));  // row of 9 2-byte elements: odd
  CHECK(strided_widen(&p, 2, 0x1000, 0x2000) == 2);
  REQUIRE(strided_plan_from(transpose_dims({4, 6}, {1, 0}), &p));  // innermost not contiguous
  CHECK(strided_widen(&p, 1, 0x1000, 0x2000) == 1);
}

TEST_CASE("strided_fits_i32 bounds every partial offset") {
  StridedPlan p;
  REQUIRE(strided_plan_from(transpose_dims({1 << 16, 1 << 14}, {1, 0}), &p));
  CHECK(strided_fits_i32(p));
  REQUIRE(strided_plan_from(transpose_dims({1 << 16, 1 << 16}, {1, 0}), &p));
  CHECK_FALSE(strided_fits_i32(p));
  // A small output reading far apart (a strided slice of a big tensor).
  REQUIRE(strided_plan_from({{3, 4}, {int64_t(1) << 30, 1}, {4, 1}}, &p));
  CHECK_FALSE(strided_fits_i32(p));
}

TEST_CASE("transpose: emulated kernels match the naive permutation") {
  struct Case {
    Ints shape, perm;
  };
  const Case cases[] = {
      {{7, 769}, {1, 0}},           {{33, 65}, {1, 0}},          {{1, 5125}, {1, 0}},
      {{2, 3, 4, 5}, {0, 2, 1, 3}}, {{3, 17, 19}, {2, 1, 0}},    {{5, 40, 3, 37}, {0, 3, 2, 1}},
      {{2, 3, 20, 18}, {1, 0, 3, 2}}, {{4, 1, 7, 1, 9}, {4, 2, 0, 3, 1}}, {{6}, {0}},
      {{3, 0, 4}, {2, 1, 0}},       {{2, 2, 2, 2, 2, 2, 2, 2, 2}, {8, 7, 6, 5, 4, 3, 2, 1, 0}},
  };
  int tiled_cases = 0;
  for (const Case& c : cases) {
    for (int es : {1, 2, 4, 8}) {
      CAPTURE(es);
      StridedDims d = transpose_dims(c.shape, c.perm);
      StridedPlan plan;
      if (!strided_plan_from(d, &plan)) {
        CHECK(c.shape.size() > (size_t)kMoveMaxDims);  // only the 9-dim reversal is refused
        continue;
      }
      Bytes src = random_bytes(move_numel(c.shape) * es, (uint32_t)es);
      Bytes want = naive(d.shape, src, es, [&](const Ints& idx) {
        Ints in(c.shape.size());
        for (size_t k = 0; k < idx.size(); k++) in[c.perm[k]] = idx[k];
        return ravel(in, c.shape);
      });
      Bytes got(want.size(), 0xee);
      bool tiled = false;
      emulate_box(d, src, 0, &got, es, 0x10000, 0x20000, &tiled);
      tiled_cases += tiled;
      CHECK(got == want);
    }
  }
  CHECK(tiled_cases > 0);
}

TEST_CASE("slice: negative steps, clamping and misaligned starts") {
  struct Case {
    Ints shape, starts, ends, axes, steps;
  };
  const Case cases[] = {
      {{7, 769}, {1, 3}, {6, 700}, {0, 1}, {2, 1}},
      {{7, 769}, {-1, -2}, {-100, 0}, {0, 1}, {-1, -3}},
      {{5125}, {4}, {5125}, {0}, {4}},
      {{3, 4, 5}, {0, 1, 0}, {3, 3, 5}, {0, 1, 2}, {1, 1, 1}},
      {{3, 4, 5}, {10}, {-10}, {-1}, {-2}},
      {{1}, {-2}, {-9}, {0}, {-1}},  // numpy keeps one element
      {{6, 6}, {4}, {2}, {0}, {1}},  // empty
  };
  for (const Case& c : cases) {
    for (int es : {1, 2, 4, 8}) {
      ember::SliceSpec spec;
      REQUIRE(ember::slice_resolve(c.shape, c.starts, c.ends, &c.axes, &c.steps, &spec).empty());
      int64_t base = 0;
      StridedDims d = slice_dims(c.shape, spec.start, spec.step, spec.out, &base);
      Bytes src = random_bytes(move_numel(c.shape) * es, 7);
      Bytes want = naive(spec.out, src, es, [&](const Ints& idx) {
        Ints in(idx.size());
        for (size_t k = 0; k < idx.size(); k++) in[k] = spec.start[k] + idx[k] * spec.step[k];
        return ravel(in, c.shape);
      });
      Bytes got(want.size(), 0xee);
      emulate_box(d, src, base, &got, es);
      CHECK(got == want);
    }
  }
}

TEST_CASE("expand and tile") {
  for (int es : {1, 4, 8}) {
    Ints in = {3, 1, 5}, out = {2, 3, 7, 5};
    Bytes src = random_bytes(move_numel(in) * es, 11);
    Bytes want = naive(out, src, es, [&](const Ints& idx) { return ravel({idx[1], 0, idx[3]}, in); });
    Bytes got(want.size(), 0xee);
    emulate_box(expand_dims(in, out), src, 0, &got, es);
    CHECK(got == want);

    Ints reps = {2, 3, 1};
    Ints tout = {6, 3, 5};
    want = naive(tout, src, es, [&](const Ints& idx) { return ravel({idx[0] % 3, idx[1] % 1, idx[2] % 5}, in); });
    got.assign(want.size(), 0xee);
    emulate_box(tile_dims(in, reps), src, 0, &got, es);
    CHECK(got == want);
  }
  // Expand of a scalar and of a column (tiled: the source-contiguous dim is not the last).
  Ints in = {769, 1}, out = {769, 40};
  Bytes src = random_bytes(769 * 4, 3);
  Bytes want = naive(out, src, 4, [&](const Ints& idx) { return idx[0]; });
  Bytes got(want.size(), 0xee);
  bool tiled = false;
  emulate_box(expand_dims(in, out), src, 0, &got, 4, 0x10000, 0x20000, &tiled);
  CHECK(tiled);
  CHECK(got == want);
}

TEST_CASE("concat and split parts round-trip") {
  for (int es : {1, 2, 8}) {
    // Concat of [4, 3, 6], [4, 1, 6], [4, 5, 6] on axis 1, at a misaligned destination.
    Ints sizes = {3, 1, 5};
    int64_t outer = 4, inner = 6, total = 9;
    std::vector<Bytes> parts;
    Bytes y(outer * total * inner * es, 0xee);
    int64_t at = 0;
    for (size_t k = 0; k < sizes.size(); k++) {
      parts.push_back(random_bytes(outer * sizes[k] * inner * es, 20 + (uint32_t)k));
      Bytes region(y.size() - at * es);
      // Emulate into a copy that starts `at` elements in.
      StridedDims d = concat_part_dims(outer, sizes[k] * inner, total * inner);
      std::memcpy(region.data(), y.data() + at * es, region.size());
      emulate_box(d, parts[k], 0, &region, es, 0x10000 + at * es, 0x20000);
      std::memcpy(y.data() + at * es, region.data(), region.size());
      at += sizes[k] * inner;
    }
    for (int64_t o = 0; o < outer; o++)
      for (int64_t a = 0, k = 0, base = 0; a < total; a++) {
        if (a - base >= sizes[k]) base += sizes[k++];
        for (int64_t i = 0; i < inner; i++)
          REQUIRE(std::memcmp(y.data() + ((o * total + a) * inner + i) * es,
                              parts[k].data() + ((o * sizes[k] + a - base) * inner + i) * es, es) == 0);
      }
    // Split the result back.
    at = 0;
    for (size_t k = 0; k < sizes.size(); k++) {
      Bytes back(parts[k].size(), 0xee);
      emulate_box(split_part_dims(outer, sizes[k] * inner, total * inner), y, at, &back, es);
      CHECK(back == parts[k]);
      at += sizes[k] * inner;
    }
  }
}

TEST_CASE("gather: unit choice and index split") {
  CHECK(gather_unit(4, 8, 0x1000, 0x2000) == 16);
  CHECK(gather_unit(4, 6, 0x1000, 0x2000) == 8);
  CHECK(gather_unit(2, 7, 0x1000, 0x2000) == 2);
  CHECK(gather_unit(8, 4, 0x1000, 0x2008) == 8);
  // Emulate the kernel on x [3, 5, 6] (4-byte), indices [-1, 0, 4, -5, 2], axis 1.
  const int64_t outer = 3, dim = 5, inner = 6, n = 5;
  const int64_t ind[n] = {-1, 0, 4, -5, 2};
  Bytes x = random_bytes(outer * dim * inner * 4, 5);
  int unit = gather_unit(4, inner, 0x1000, 0x2000);
  int64_t inner_u = inner * 4 / unit;
  Bytes y(outer * n * inner * 4);
  for (int64_t i = 0; i < outer * n * inner_u; i++) {
    int64_t o, j, k;
    gather_split<int64_t>(i, n, inner_u, &o, &j, &k);
    int64_t v = ind[j] < 0 ? ind[j] + dim : ind[j];
    std::memcpy(y.data() + i * unit, x.data() + ((o * dim + v) * inner_u + k) * unit, unit);
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < n; j++) {
      int64_t v = ind[j] < 0 ? ind[j] + dim : ind[j];
      CHECK(std::memcmp(y.data() + (o * n + j) * inner * 4, x.data() + (o * dim + v) * inner * 4, inner * 4) == 0);
    }
}

TEST_CASE("gather_elements source offsets") {
  Ints xs = {4, 7, 3}, is = {2, 9, 3};
  const int axis = 1;
  GatherElementsPlan p;
  REQUIRE(gather_elements_plan(xs, is, axis, &p));
  std::mt19937 g(9);
  for (int64_t i = 0; i < move_numel(is); i++) {
    int64_t v = (int64_t)(g() % 7);
    Ints idx = unravel(i, is);
    idx[axis] = v;
    CHECK(gather_elements_source<int64_t>(p, i, v) == ravel(idx, xs));
  }
  CHECK_FALSE(gather_elements_plan(Ints(9, 1), Ints(9, 1), 0, &p));
}

TEST_CASE("pad: resolve, collapse and source offsets") {
  struct Case {
    Ints shape, pads;
  };
  const Case cases[] = {
      {{3, 4, 5}, {0, 1, 0, 0, 2, 0}},     // only the middle dim: trailing dim merges in
      {{7, 9}, {2, -3, 1, 4}},             // a crop on dim 1
      {{2, 3, 4, 5}, {0, 0, 0, 1, 0, 0, 0, 1}},
      {{1, 5125}, {1, 0, 0, 3}},
      {{0, 3}, {1, 1, 1, 1}},              // empty input: all constant
  };
  for (const Case& c : cases) {
    Ints begin, out;
    REQUIRE(pad_resolve_constant(c.shape, c.pads, nullptr, &begin, &out).empty());
    PadPlan p;
    REQUIRE(pad_plan(c.shape, begin, out, &p));
    for (int64_t i = 0; i < move_numel(out); i++) {
      Ints idx = unravel(i, out);
      int64_t want = 0;
      for (size_t d = 0; d < idx.size() && want >= 0; d++) {
        int64_t j = idx[d] - begin[d];
        want = (j < 0 || j >= c.shape[d]) ? -1 : want;
        idx[d] = j;
      }
      if (want == 0) want = ravel(idx, c.shape);
      REQUIRE(pad_source<int64_t>(p, i) == want);
    }
  }
  // Only the first dim padded: the three others merge into it.
  Ints begin, out, axes0 = {0};
  REQUIRE(pad_resolve_constant({2, 3, 4, 5}, {1, 2}, &axes0, &begin, &out).empty());
  PadPlan p;
  REQUIRE(pad_plan({2, 3, 4, 5}, begin, out, &p));
  CHECK(p.rank == 1);
  CHECK(p.out_shape[0] == 5 * 60);
  CHECK(p.begin[0] == 60);
  CHECK_FALSE(pad_resolve_constant({3}, {1}, nullptr, &begin, &out).empty());
  CHECK_FALSE(pad_resolve_constant({3}, {-2, -2}, nullptr, &begin, &out).empty());
}

TEST_CASE("trilu_keep") {
  CHECK(trilu_keep(0, 0, 0, true));
  CHECK_FALSE(trilu_keep(1, 0, 0, true));
  CHECK(trilu_keep(1, 0, 0, false));
  CHECK_FALSE(trilu_keep(0, 2, 1, false));
  CHECK(trilu_keep(0, 1, 1, false));
  CHECK(trilu_keep(3, 0, -3, true));
}
