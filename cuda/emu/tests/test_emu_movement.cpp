// movement.cu run on the emulated device through the real adapters (cuda/src/ops_movement.cpp)
// against the ops' references, byte for byte: Transpose (tiled and strided kernels, 16-byte
// units), Slice (negative steps), Expand, Tile, Concat and Split at unaligned offsets, Gather
// and GatherElements (negative and out-of-range indices), constant Pad (crops), Trilu, Rope
// (partial rotary, both layouts) and Reshape's copy, over 1-, 2-, 4- and 8-byte dtypes.
#include "cuda/kernels/movement.cu"

#include <string>
#include <vector>

#include "cuda/emu/tests/emu_test_util.h"
#include "cuda/src/ops.h"
#include "doctest/doctest.h"
#include "tests/cpp/op_test_util.h"

using namespace ember;
using namespace ember::cuda;

namespace {

using Ints = std::vector<int64_t>;

// Every output of the adapter equals the reference's, byte for byte.
void check_op(const Node& n, const std::vector<const Tensor*>& in, KernelFn fn, SupportsFn ok) {
  AdapterRun r = run_adapter(n, in, fn, ok);
  for (size_t i = 0; i < r.want.size(); i++) {
    CAPTURE(i);
    check_same(r.want[i], r.got[i]);
  }
}

const DType kDtypes[] = {DType::U8, DType::F16, DType::F32, DType::I64};

}  // namespace

TEST_CASE("movement on the emulated device: Transpose") {
  struct Case {
    Shape shape;
    Ints perm;
  };
  // [7, 769] and [33, 65]: the tiled kernel with part tiles; [2, 3, 20, 18] swapping the outer
  // dims: strided, rows widened to 16-byte units; the rest strided with odd dims.
  const Case cases[] = {{{7, 769}, {1, 0}},
                        {{33, 65}, {1, 0}},
                        {{2, 3, 4, 5}, {0, 2, 1, 3}},
                        {{3, 17, 19}, {2, 1, 0}},
                        {{2, 3, 20, 18}, {1, 0, 2, 3}},
                        {{4, 1, 7, 1, 9}, {4, 2, 0, 3, 1}}};
  uint32_t seed = 1;
  for (const Case& c : cases)
    for (DType t : kDtypes) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(std::string(dtype_name(t)));
      Node n = test::node(OpType::Transpose);
      n.attrs.set("perm", c.perm);
      Tensor x = random_of(t, c.shape, seed++);
      check_op(n, {&x}, transpose_cuda, transpose_cuda_supports);
    }
}

TEST_CASE("movement on the emulated device: Slice, Expand, Tile, Reshape") {
  struct SliceCase {
    Shape shape;
    Ints starts, ends, axes, steps;
  };
  const SliceCase slices[] = {
      {{7, 769}, {1, 3}, {6, 700}, {0, 1}, {2, 1}},
      {{7, 769}, {-1, -2}, {-100, 0}, {0, 1}, {-1, -3}},
      {{1030}, {4}, {1030}, {0}, {4}},
      {{3, 4, 5}, {10}, {-10}, {-1}, {-2}},
      {{2, 9, 6}, {0, 1}, {2, 8}, {0, 1}, {1, 1}},  // rows of 6 at odd offsets
  };
  uint32_t seed = 50;
  for (const SliceCase& c : slices)
    for (DType t : kDtypes) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(std::string(dtype_name(t)));
      const Shape k = {(int64_t)c.starts.size()};
      Tensor x = random_of(t, c.shape, seed++), st = ints(DType::I64, k, c.starts);
      Tensor en = ints(DType::I64, k, c.ends), ax = ints(DType::I64, k, c.axes);
      Tensor sp = ints(DType::I64, k, c.steps);
      check_op(test::node(OpType::Slice), {&x, &st, &en, &ax, &sp}, slice_cuda,
               slice_cuda_supports);
    }
  for (DType t : kDtypes) {
    CAPTURE(std::string(dtype_name(t)));
    Tensor x = random_of(t, {3, 1, 5}, seed++), shape = ints(DType::I64, {4}, {2, 3, 7, 5});
    check_op(test::node(OpType::Expand), {&x, &shape}, expand_cuda, expand_cuda_supports);
    Tensor col = random_of(t, {769, 1}, seed++), wide = ints(DType::I64, {2}, {769, 40});
    check_op(test::node(OpType::Expand), {&col, &wide}, expand_cuda, expand_cuda_supports);
    Tensor reps = ints(DType::I64, {3}, {2, 3, 1});
    check_op(test::node(OpType::Tile), {&x, &reps}, tile_cuda, tile_cuda_supports);
    Tensor to = ints(DType::I64, {2}, {5, 3});
    check_op(test::node(OpType::Reshape), {&x, &to}, copy_cuda, copy_cuda_supports);
  }
}

TEST_CASE("movement on the emulated device: Concat and Split") {
  uint32_t seed = 100;
  for (DType t : kDtypes) {
    CAPTURE(std::string(dtype_name(t)));
    // Parts of 3, 1 and 5 rows of 6 on axis 1: every part but the first starts unaligned.
    Tensor a = random_of(t, {4, 3, 6}, seed++), b = random_of(t, {4, 1, 6}, seed++);
    Tensor c = random_of(t, {4, 5, 6}, seed++);
    Node cat = test::node(OpType::Concat);
    cat.attrs.set("axis", int64_t(1));
    check_op(cat, {&a, &b, &c}, concat_cuda, concat_cuda_supports);
    Node last = test::node(OpType::Concat);
    last.attrs.set("axis", int64_t(-1));
    Tensor d = random_of(t, {4, 3, 7}, seed++);
    check_op(last, {&a, &d}, concat_cuda, concat_cuda_supports);

    Tensor x = random_of(t, {4, 9, 6}, seed++), split = ints(DType::I64, {3}, {3, 1, 5});
    Node sp = test::node(OpType::Split, 3);
    sp.attrs.set("axis", int64_t(1));
    check_op(sp, {&x, &split}, split_cuda, split_cuda_supports);
  }
}

TEST_CASE("movement on the emulated device: Gather and GatherElements") {
  uint32_t seed = 200;
  for (DType t : kDtypes)
    for (DType it : {DType::I64, DType::I32}) {
      CAPTURE(std::string(dtype_name(t)));
      CAPTURE(std::string(dtype_name(it)));
      // inner 6: 8-byte units for 4-byte elements; inner 8: 16-byte; axis 0 of a [5] vector.
      Tensor x = random_of(t, {3, 5, 6}, seed++), x8 = random_of(t, {2, 5, 8}, seed++);
      Tensor idx = ints(it, {2, 3}, {-1, 0, 4, -5, 2, 2});
      Node g = test::node(OpType::Gather);
      g.attrs.set("axis", int64_t(1));
      check_op(g, {&x, &idx}, gather_cuda, gather_cuda_supports);
      check_op(g, {&x8, &idx}, gather_cuda, gather_cuda_supports);
      Tensor v = random_of(t, {5}, seed++), one = ints(it, {}, {-2});
      check_op(test::node(OpType::Gather), {&v, &one}, gather_cuda, gather_cuda_supports);

      Tensor ge = random_of(t, {4, 7, 3}, seed++);
      std::vector<int64_t> iv(2 * 9 * 3);
      for (size_t i = 0; i < iv.size(); i++) iv[i] = (int64_t)(i * 5 % 14) - 7;  // [-7, 7)
      Tensor gi = ints(it, {2, 9, 3}, iv);
      Node gn = test::node(OpType::GatherElements);
      gn.attrs.set("axis", int64_t(1));
      check_op(gn, {&ge, &gi}, gather_elements_cuda, gather_elements_cuda_supports);
    }
  // An index out of range: the device flag raises the reference's Input error.
  Tensor x = random_of(DType::F32, {3, 5}, 1), bad = ints(DType::I64, {2}, {1, 5});
  Node g = test::node(OpType::Gather);
  g.attrs.set("axis", int64_t(1));
  CHECK(test::error_of([&] { run_adapter(g, {&x, &bad}, gather_cuda, gather_cuda_supports); }) ==
        ErrorKind::Input);
  Tensor gbad = ints(DType::I32, {3, 1}, {0, -6, 2});
  Node gn = test::node(OpType::GatherElements);
  gn.attrs.set("axis", int64_t(1));
  CHECK(test::error_of([&] {
          run_adapter(gn, {&x, &gbad}, gather_elements_cuda, gather_elements_cuda_supports);
        }) == ErrorKind::Input);
}

TEST_CASE("movement on the emulated device: Pad, Trilu") {
  struct PadCase {
    Shape shape;
    Ints pads;
  };
  const PadCase pads[] = {{{3, 4, 5}, {0, 1, 0, 0, 2, 0}},
                          {{7, 9}, {2, -3, 1, 4}},
                          {{1, 1030}, {1, 0, 0, 3}},
                          {{0, 3}, {1, 1, 1, 1}}};
  uint32_t seed = 300;
  for (const PadCase& c : pads)
    for (DType t : kDtypes) {
      CAPTURE(shape_str(c.shape));
      CAPTURE(std::string(dtype_name(t)));
      Tensor x = random_of(t, c.shape, seed++);
      Tensor p = ints(DType::I64, {(int64_t)c.pads.size()}, c.pads);
      Tensor value = random_of(t, {}, seed++);
      check_op(test::node(OpType::Pad), {&x, &p, &value}, pad_cuda, pad_cuda_supports);
      check_op(test::node(OpType::Pad), {&x, &p}, pad_cuda, pad_cuda_supports);  // zeros
    }
  for (DType t : kDtypes)
    for (int64_t k : {0, 1, -2, 9})
      for (int64_t upper : {0, 1}) {
        CAPTURE(std::string(dtype_name(t)));
        CAPTURE(k);
        CAPTURE(upper);
        Tensor x = random_of(t, {2, 5, 7}, seed++), kt = ints(DType::I64, {}, {k});
        Node n = test::node(OpType::Trilu);
        n.attrs.set("upper", upper);
        check_op(n, {&x, &kt}, trilu_cuda, trilu_cuda_supports);
      }
}

TEST_CASE("movement on the emulated device: Rope") {
  struct Case {
    int64_t tokens, heads, head_dim, rot_half;
    bool interleaved;
    DType pos;
  };
  const Case cases[] = {{5, 2, 8, 4, false, DType::I64},
                        {3, 3, 64, 32, true, DType::I32},
                        {7, 1, 10, 3, false, DType::I32},  // partial rotary: dims 6..9 copied
                        {2, 4, 6, 2, true, DType::I64}};
  uint32_t seed = 400;
  for (const Case& c : cases) {
    CAPTURE(c.head_dim);
    CAPTURE(c.rot_half);
    CAPTURE(c.interleaved);
    Tensor x = random_of(DType::F32, {c.tokens, c.heads * c.head_dim}, seed++);
    std::vector<int64_t> pv;
    for (int64_t t = 0; t < c.tokens; t++) pv.push_back(t * 37 % 4099);
    Tensor pos = ints(c.pos, {c.tokens}, pv);
    Tensor inv = Tensor::empty(DType::F32, {c.rot_half});
    for (int64_t i = 0; i < c.rot_half; i++)
      inv.ptr<float>()[i] = (float)std::pow(10000.0, -2.0 * i / (2.0 * c.rot_half));
    Node n = test::node(OpType::Rope);
    n.attrs.set("num_heads", c.heads);
    n.attrs.set("head_dim", c.head_dim);
    n.attrs.set("interleaved", int64_t(c.interleaved));
    AdapterRun r = run_adapter(n, {&x, &pos, &inv}, rope_cuda, rope_cuda_supports);
    // sin / cos in double, rounded once, against libm's float ones: an ulp at most.
    check_near(r.want[0], r.got[0], 1e-6);
  }
}
