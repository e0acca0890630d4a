"""CUDA convolution and pooling family (cuda/kernels/conv.cu, cuda/src/ops_conv.cpp) against the
CPU engine: Conv through im2col + cuBLASLt (3x3, strides, dilations, asymmetric and automatic
pads, 1-D, grouped, chunked over the batch and over pixels), 1x1 GEMMs straight on X, the direct
depthwise kernel; MaxPool / AveragePool (ceil_mode, dilations, count_include_pad), the global
pools, BatchNormalization; and a ResNet-style block graph at fp32 (tight) and fp16 (loose). Every
case asserts no CPU fallback but MaxPool's Indices output, which the kernel refuses on purpose.
"""
import numpy as np
import pytest

import ember

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not ember.cuda.is_available(), reason="no CUDA device")]

# atol per sqrt(K) (K = C/group * kh * kw, inputs uniform in [-1, 1]), as in test_cuda_gemm.py:
# fp32 is exact FMA (no TF32), only the summation order differs from the CPU.
ATOL_PER_SQRT_K = {"fp32": 2e-5, "fp16": 1e-3, "bf16": 6e-3}


def uniform(rng, shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def run_both(model, feeds, atol, rtol=1e-5, precision="fp32", fallbacks=()):
    """Runs `model` on CUDA and on the CPU; compares Y."""
    dev = ember.Engine(model, device="cuda", precision=precision)
    got = dev.run(feeds)["Y"]
    want = ember.Engine(model).run(feeds)["Y"]
    assert dev.device_fallbacks == list(fallbacks)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got, want


# ---- Conv ------------------------------------------------------------------------------------

def conv_model(make_model, x_shape, w_shape, bias, attrs):
    inputs = [("X", np.float32, x_shape), ("W", np.float32, w_shape)]
    if bias:
        inputs.append(("B", np.float32, (w_shape[0],)))
    return make_model("Conv", inputs=inputs, outputs=["Y"], attrs=attrs)


def check_conv(make_model, rng, x_shape, w_shape, attrs, bias=True, precision="fp32"):
    feeds = {"X": uniform(rng, x_shape), "W": uniform(rng, w_shape)}
    if bias:
        feeds["B"] = uniform(rng, (w_shape[0],))
    k = int(np.prod(w_shape[1:]))
    atol = ATOL_PER_SQRT_K[precision] * np.sqrt(max(k, 1))
    return run_both(conv_model(make_model, x_shape, w_shape, bias, attrs), feeds, atol=atol,
                    rtol=1e-5 if precision == "fp32" else 0, precision=precision)


P1 = {"pads": [1, 1, 1, 1]}
CONV_CASES = [
    # (X, W, attrs)                                                       path
    ((1, 5, 7, 9), (6, 5, 3, 3), P1),                                    # im2col
    ((3, 16, 7, 9), (32, 16, 3, 3), P1),                                 # batch 3
    ((3, 8, 13, 15), (8, 8, 3, 3), {"strides": [2, 2], **P1}),
    ((2, 4, 11, 13), (5, 4, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((2, 4, 11, 13), (5, 4, 3, 2), {"dilations": [2, 3], "strides": [1, 2], "pads": [0, 1, 2, 3]}),
    ((2, 4, 7, 9), (5, 4, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 4, 7, 9), (5, 4, 3, 2), {"strides": [2, 1], "auto_pad": "SAME_LOWER"}),
    ((2, 4, 7, 9), (5, 4, 3, 3), {"auto_pad": "VALID"}),
    ((2, 4, 7, 9), (5, 4, 7, 9), {}),                                    # one output pixel
    ((3, 64, 7, 9), (33, 64, 1, 1), {}),                                 # 1x1: GEMM on X
    ((1, 769, 1, 1), (5125, 769, 1, 1), {}),
    ((2, 16, 7, 9), (8, 16, 1, 1), {"strides": [2, 2]}),                 # 1x1 stride 2: im2col
    ((2, 16, 7, 9), (8, 16, 1, 1), {"pads": [0, 0, 1, 1]}),              # 1x1, end pads
    ((3, 32, 7, 9), (32, 1, 3, 3), {"group": 32, **P1}),                 # depthwise: direct
    ((2, 8, 13, 15), (16, 1, 5, 5), {"group": 8, "strides": [2, 2], "pads": [2, 2, 2, 2]}),
    ((2, 1, 7, 9), (4, 1, 3, 3), P1),                                    # one input channel
    ((3, 16, 7, 9), (24, 4, 3, 3), {"group": 4, **P1}),                  # grouped: per image
    ((7, 16, 7, 9), (24, 8, 3, 3), {"group": 2, **P1}),                  # grouped: per group
    ((2, 16, 7, 9), (32, 8, 1, 1), {"group": 2}),                        # grouped 1x1
    ((3, 8, 769), (16, 8, 5), {"pads": [2, 2], "strides": [2]}),         # 1-D
    ((3, 8, 769), (8, 1, 3), {"group": 8, "pads": [1, 1]}),              # 1-D depthwise
    ((2, 64, 56, 56), (64, 64, 3, 3), P1),                               # a ResNet layer
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_CASES)
def test_conv_fp32(make_model, rng, x_shape, w_shape, attrs, bias):
    check_conv(make_model, rng, x_shape, w_shape, attrs, bias=bias)


@pytest.mark.parametrize("x_shape,w_shape", [((1, 256, 180, 180), (16, 256, 3, 3)),
                                             ((5, 256, 100, 100), (16, 256, 3, 3))])
def test_conv_chunked(make_model, rng, x_shape, w_shape):
    """im2col columns past the 256 MiB scratch bound: chunks of pixels (one 180x180 image is
    ~300 MiB of columns) and chunks of images (2 + 2 + 1 of ~90 MiB each)."""
    check_conv(make_model, rng, x_shape, w_shape, P1)


def test_conv_empty_batch(make_model, rng):
    got, _ = check_conv(make_model, rng, (0, 4, 7, 9), (5, 4, 3, 3), P1)
    assert got.shape == (0, 5, 7, 9)


def test_conv_weights_initializer(make_model, rng):
    """Weights and bias stored in the model (device constants) rather than fed."""
    w, b = uniform(rng, (32, 16, 3, 3)), uniform(rng, (32,))
    model = make_model("Conv", inputs=[("X", np.float32, (3, 16, 7, 9)), "W", "B"], outputs=["Y"],
                       attrs=P1, initializers={"W": w, "B": b})
    run_both(model, {"X": uniform(rng, (3, 16, 7, 9))}, atol=2e-5 * np.sqrt(16 * 9))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((2, 64, 56, 56), (64, 64, 3, 3), P1),
    ((3, 64, 7, 9), (33, 64, 1, 1), {}),
    ((3, 16, 7, 9), (24, 4, 3, 3), {"group": 4, **P1}),
    ((4, 64, 32, 32), (2048, 64, 1, 1), {}),  # a 1x1 conv whose X is rounded to 16 bits first
])
def test_conv_half_precision(make_model, rng, precision, x_shape, w_shape, attrs):
    check_conv(make_model, rng, x_shape, w_shape, attrs, precision=precision)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((2, 16, 13, 11), (24, 16, 3, 3), P1),           # im2col
    ((3, 64, 7, 9), (33, 64, 1, 1), {}),             # 1x1: X rounded because W already is
    ((2, 8, 9, 9), (8, 1, 3, 3), {"group": 8, **P1}),  # depthwise: W kept F32 (direct kernel)
])
def test_conv_half_weight_initializer(make_model, rng, precision, x_shape, w_shape, attrs):
    """A constant W at fp16 / bf16 is rounded at load (weight_prepare_*), except a depthwise
    one, which the direct fp32 kernel reads."""
    w, b = uniform(rng, w_shape), uniform(rng, (w_shape[0],))
    model = make_model("Conv", inputs=[("X", np.float32, x_shape), "W", "B"], outputs=["Y"],
                       attrs=attrs, initializers={"W": w, "B": b})
    k = int(np.prod(w_shape[1:]))
    run_both(model, {"X": uniform(rng, x_shape)}, atol=ATOL_PER_SQRT_K[precision] * np.sqrt(k),
             rtol=0, precision=precision)


# ---- MaxPool, AveragePool --------------------------------------------------------------------

POOL_CASES = [
    ((2, 16, 13, 15), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 16, 14, 16), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                       "ceil_mode": 1}),
    ((1, 3, 11, 13), {"kernel_shape": [2, 3], "strides": [3, 2], "pads": [0, 1, 1, 1],
                      "dilations": [2, 1], "ceil_mode": 1}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 3, 7, 9), {"kernel_shape": [7, 9]}),                             # global-sized window
    ((3, 4, 769), {"kernel_shape": [5], "strides": [2], "pads": [2, 2]}),  # 1-D
    ((1, 64, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("x_shape,attrs", POOL_CASES)
def test_pool(make_model, rng, op, x_shape, attrs):
    # opset 19: AveragePool's dilations
    model = make_model(op, inputs=[("X", np.float32, x_shape)], outputs=["Y"], attrs=attrs,
                       opset=19)
    run_both(model, {"X": uniform(rng, x_shape)}, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_average_pool_count_include_pad(make_model, rng, ceil_mode):
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
             "count_include_pad": 1, "ceil_mode": ceil_mode}
    model = make_model("AveragePool", inputs=[("X", np.float32, (2, 5, 8, 10))], outputs=["Y"],
                       attrs=attrs)
    run_both(model, {"X": uniform(rng, (2, 5, 8, 10))}, atol=1e-6, rtol=1e-6)


def test_max_pool_nan(make_model, rng):
    """The reference's NaN rule (a NaN first in its window sticks; later ones are skipped)."""
    x = uniform(rng, (2, 3, 9, 11))
    x.reshape(-1)[::7] = np.nan
    model = make_model("MaxPool", inputs=[("X", np.float32, x.shape)], outputs=["Y"],
                       attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    run_both(model, {"X": x}, atol=0, rtol=0)


def test_max_pool_indices_falls_back(make_model, rng):
    """The Indices output has no CUDA kernel: the node runs on the CPU."""
    model = make_model("MaxPool", inputs=[("X", np.float32, (2, 3, 7, 9))], outputs=["Y", "I"],
                       attrs={"kernel_shape": [3, 3]})
    run_both(model, {"X": uniform(rng, (2, 3, 7, 9))}, atol=0, rtol=0,
             fallbacks=[("maxpool_0", "MaxPool")])


# ---- GlobalAveragePool, GlobalMaxPool --------------------------------------------------------

@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("x_shape", [(2, 64, 7, 7), (3, 5, 1), (1, 7, 64, 64), (2, 2048, 7, 7),
                                     (3, 5), (1, 3, 5125)])
def test_global_pool(make_model, rng, op, x_shape):
    model = make_model(op, inputs=[("X", np.float32, x_shape)], outputs=["Y"])
    run_both(model, {"X": uniform(rng, x_shape)}, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("x_shape", [(2, 3, 7, 7), (1, 2, 64, 64)])  # warp rows, block rows
def test_global_max_pool_nan(make_model, rng, x_shape):
    x = uniform(rng, x_shape)
    x[0, 1].reshape(-1)[5] = np.nan
    model = make_model("GlobalMaxPool", inputs=[("X", np.float32, x_shape)], outputs=["Y"])
    got, _ = run_both(model, {"X": x}, atol=0, rtol=0)
    assert np.isnan(got[0, 1]).all() and not np.isnan(got[0, 0]).any()


# ---- BatchNormalization ----------------------------------------------------------------------

@pytest.mark.parametrize("x_shape", [(3, 16, 7, 9), (5, 7), (2, 3, 769), (1, 64, 56, 56)])
@pytest.mark.parametrize("epsilon", [1e-5, 1e-3])
def test_batch_norm(make_model, rng, x_shape, epsilon):
    c = x_shape[1]
    feeds = {"X": uniform(rng, x_shape), "scale": uniform(rng, (c,)), "B": uniform(rng, (c,)),
             "mean": uniform(rng, (c,)), "var": uniform(rng, (c,), 0.1, 2.0)}
    inputs = [("X", np.float32, x_shape)] + [(n, np.float32, (c,))
                                            for n in ("scale", "B", "mean", "var")]
    model = make_model("BatchNormalization", inputs=inputs, outputs=["Y"],
                       attrs={"epsilon": epsilon})
    run_both(model, feeds, atol=1e-5, rtol=1e-5)


# ---- a ResNet-style block --------------------------------------------------------------------

def resnet_block_model(finish_model_fn, rng, c_in=16, c=32, classes=10):
    """Conv3x3/2-BN-Relu-Conv3x3-BN + (Conv1x1/2-BN shortcut), Add, Relu, GlobalAveragePool,
    Flatten, Gemm; weights as initializers."""
    from onnx import helper, numpy_helper, TensorProto

    inits, nodes = {}, []

    def conv(name, x, cin, cout, k, stride):
        w = uniform(rng, (cout, cin, k, k)) / np.sqrt(cin * k * k)
        inits[f"{name}_w"] = w.astype(np.float32)
        inits[f"{name}_b"] = uniform(rng, (cout,))
        p = k // 2
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                      strides=[stride, stride], pads=[p, p, p, p]))
        return name

    def bn(name, x, ch):
        inits[f"{name}_s"] = uniform(rng, (ch,), 0.5, 1.5)
        inits[f"{name}_b"] = uniform(rng, (ch,))
        inits[f"{name}_m"] = uniform(rng, (ch,))
        inits[f"{name}_v"] = uniform(rng, (ch,), 0.5, 1.5)
        nodes.append(helper.make_node("BatchNormalization",
                                      [x] + [f"{name}_{s}" for s in "sbmv"], [name], name=name,
                                      epsilon=1e-5))
        return name

    def op(kind, ins, name, **attrs):
        nodes.append(helper.make_node(kind, ins, [name], name=name, **attrs))
        return name

    h = op("Relu", [bn("bn1", conv("conv1", "X", c_in, c, 3, 2), c)], "relu1")
    h = bn("bn2", conv("conv2", h, c, c, 3, 1), c)
    s = bn("bn_s", conv("conv_s", "X", c_in, c, 1, 2), c)
    h = op("Relu", [op("Add", [h, s], "add")], "relu2")
    h = op("Flatten", [op("GlobalAveragePool", [h], "gap")], "flat")
    inits["fc_w"] = uniform(rng, (classes, c))
    inits["fc_b"] = uniform(rng, (classes,))
    op("Gemm", [h, "fc_w", "fc_b"], "Y", transB=1)
    graph = helper.make_graph(
        nodes, "resnet_block",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", c_in, 15, 17])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return finish_model_fn(graph, 18)


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 3e-2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_resnet_block(finish_model_fn, rng, precision, atol, batch):
    model = resnet_block_model(finish_model_fn, rng)
    x = uniform(rng, (batch, 16, 15, 17))
    run_both(model, {"X": x}, atol=atol, rtol=1e-4 if precision == "fp32" else 1e-2,
             precision=precision)
