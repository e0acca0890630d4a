"""Vision and recurrent models written in torch (random weights, one fixed seed per model),
exported to ONNX with a dynamic batch (and a dynamic sequence for the RNNs), run on ember vs
onnxruntime on fresh random inputs:

- a ResNet-style CNN in eval mode: conv-BN-ReLU stem, max pool, a basic block and a strided
  basic block with a 1x1 conv + BN downsample, global average pool, linear; input 3x32x32;
- a MobileNet-style CNN: BN + hardswish, depthwise separable convs, an inverted residual,
  squeeze-excite (adaptive average pool, 1x1 convs, hardsigmoid, channel scale); 3x32x32;
- a small ViT: patch embedding by a stride-8 Conv2d, class token, position embedding, two
  pre-LN encoder blocks (nn.MultiheadAttention in one, hand-written attention in the other),
  GELU MLPs, final LayerNorm, head on the class token; 3x32x32, patch 8;
- an LSTM tagger: embedding, bidirectional 1-layer batch_first nn.LSTM, linear per token;
- a GRU regressor: 2-layer batch_first nn.GRU, last layer's final hidden state, linear;
- a gated model with an If: torch.cond on the batch mean of the input picks one of two heads
  (LayerNorm + GELU MLP, or linear + tanh), both reading the shared trunk's weights from the
  main graph; inputs are offset so each branch runs.

Tolerance: max |ember - onnxruntime| < 1e-4 * max |onnxruntime| on every output (relative to
the output's scale; these random-weight heads give outputs of magnitude ~0.1-1). The harness
itself is checked too: onnxruntime on each export vs torch eager, 1e-5 on the same scale, so a
failure against ember is ember's, not the export's.

Each model's export is cached under its key in MODELS: bump the key's -vN when a model changes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from ember_e2e import ExportedEngine, export_for_ember, max_abs_err, ort_run, ort_session

TOL = 1e-4            # ember vs onnxruntime, relative to the output scale (max |output|)
TORCH_TOL = 1e-5      # onnxruntime vs torch eager (harness sanity), same scale
BATCHES = [1, 3]
RNN_SHAPES = [(1, 1), (3, 1), (1, 7), (3, 7), (1, 20), (3, 20)]
RNN_IDS = [f"{b}x{s}" for b, s in RNN_SHAPES]
TAG_VOCAB, N_TAGS, GRU_FEATURES, GATED_FEATURES = 100, 9, 12, 16


# ---- models ----------------------------------------------------------------------------------

def _images(seed_or_rng, batch):
    """Random images whose statistics vary per sample: noise with a per-image, per-channel scale
    and offset (iid noise alone pools to nearly the same features for every image)."""
    r = np.random.default_rng(seed_or_rng)      # a Generator is used as is
    x = r.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    return (x * r.uniform(0.3, 2.0, (batch, 3, 1, 1)) +
            r.uniform(-1.0, 1.0, (batch, 3, 1, 1))).astype(np.float32)


def _randomize_norms(model, seed):
    """Non-trivial norm affine params; BatchNorm running stats measured on random images (as
    training would leave them), so eval-mode activations stay O(1) and depend on the input
    instead of collapsing onto the BN shifts."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None            # cumulative average over the calibration batches
            model.train()
            for i in range(4):
                model(torch.from_numpy(_images(seed * 10 + i, 16)))
    return model.eval()


def resnet_factory():
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + (x if self.down is None else self.down(x)))

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))           # 16x16
            self.layer1 = BasicBlock(16, 16, 1)
            self.layer2 = BasicBlock(16, 32, 2)                                  # 8x8
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(101)
    return _randomize_norms(TinyResNet(), 102).eval()


def mobilenet_factory():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.Hardswish()) if act else nn.Sequential(*layers)

    class SqueezeExcite(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
            self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))

    class Block(nn.Module):
        """[expand 1x1] -> depthwise kxk -> SE -> project 1x1 (+ residual when shapes match)."""

        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            mid = cin * expand
            self.expand = conv_bn(cin, mid, 1, 1) if expand != 1 else nn.Identity()
            self.dw = conv_bn(mid, mid, 3, stride, groups=mid)
            self.se = SqueezeExcite(mid)
            self.project = conv_bn(mid, cout, 1, 1, act=False)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.project(self.se(self.dw(self.expand(x))))
            return x + y if self.residual else y

    class TinyMobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn(3, 16, 3, 2)                                     # 16x16
            self.blocks = nn.Sequential(Block(16, 16, 1, 1), Block(16, 16, 1, 2),
                                        Block(16, 24, 2, 2))                     # 8x8
            self.head = conv_bn(24, 48, 1, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(48, 10)

        def forward(self, x):
            x = self.head(self.blocks(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(201)
    return _randomize_norms(TinyMobileNet(), 202).eval()


def vit_factory():
    import torch
    from torch import nn
    import torch.nn.functional as F

    dim, heads, patch, n_patches = 48, 4, 8, 16

    class MHABlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class ManualBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

        def forward(self, x):
            b, t, c = x.shape
            hd = c // heads
            q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
            q, k, v = (z.reshape(b, t, heads, hd).transpose(1, 2) for z in (q, k, v))
            att = F.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, patch, patch)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
            self.pos = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.5)
            self.blocks = nn.Sequential(MHABlock(), ManualBlock())
            self.ln = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)                         # b, 16, dim
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(self.ln(self.blocks(x))[:, 0])

    torch.manual_seed(301)
    return _randomize_norms(TinyViT(), 302).eval()


def lstm_tagger_factory():
    import torch
    from torch import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(TAG_VOCAB, 16)
            self.lstm = nn.LSTM(16, 24, num_layers=1, batch_first=True, bidirectional=True)
            self.out = nn.Linear(48, N_TAGS)

        def forward(self, ids):
            return self.out(self.lstm(self.emb(ids))[0])

    torch.manual_seed(401)
    return Tagger().eval()


def gru_factory():
    import torch
    from torch import nn

    class GRUModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(GRU_FEATURES, 20, num_layers=2, batch_first=True)
            self.out = nn.Linear(20, 5)

        def forward(self, x):
            return self.out(self.gru(x)[1][-1])

    torch.manual_seed(501)
    return GRUModel().eval()


def gated_factory():
    import torch
    from torch import nn

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(GATED_FEATURES, 32)
            self.norm = nn.LayerNorm(32)
            self.mlp = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 8))
            self.head = nn.Linear(32, 8)

        def forward(self, x):
            def wide(x):
                return self.mlp(self.norm(self.trunk(x)))

            def narrow(x):
                return torch.tanh(self.head(self.trunk(x))) * 2

            return torch.cond(x.mean() > 0, wide, narrow, (x,))

    torch.manual_seed(5)
    return Gated().eval()


# ---- exports ---------------------------------------------------------------------------------

def _image_spec():
    import torch

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return (x,), ["pixels"], ["logits"], {"pixels": {0: "batch"}, "logits": {0: "batch"}}


def _tagger_spec():
    import torch

    ids = torch.randint(0, TAG_VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    return (ids,), ["ids"], ["tags"], {"ids": {0: "batch", 1: "seq"},
                                        "tags": {0: "batch", 1: "seq"}}


def _gru_spec():
    import torch

    x = torch.randn(2, 5, GRU_FEATURES, generator=torch.Generator().manual_seed(0))
    return (x,), ["x"], ["y"], {"x": {0: "batch", 1: "seq"}, "y": {0: "batch"}}


def _gated_spec():
    import torch

    x = torch.randn(2, GATED_FEATURES, generator=torch.Generator().manual_seed(0))
    return (x,), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}}


def _gated_inputs(rng, batch, branch):
    # branch +1 / -1: an offset that fixes the sign of the mean, so the If takes that branch.
    return {"x": (rng.standard_normal((batch, GATED_FEATURES)) + branch).astype(np.float32)}


def _image_inputs(rng, batch, seq):
    return {"pixels": _images(rng, batch)}


def _tagger_inputs(rng, batch, seq):
    return {"ids": rng.integers(0, TAG_VOCAB, (batch, seq), dtype=np.int64)}


def _gru_inputs(rng, batch, seq):
    return {"x": rng.standard_normal((batch, seq, GRU_FEATURES), dtype=np.float32)}


# export cache key -> (factory, export spec, feeds(rng, batch, seq))
MODELS = {
    "vision-resnet-v2": (resnet_factory, _image_spec, _image_inputs),
    "vision-mobilenet-v2": (mobilenet_factory, _image_spec, _image_inputs),
    "vision-vit-v1": (vit_factory, _image_spec, _image_inputs),
    "rnn-lstm-tagger-v1": (lstm_tagger_factory, _tagger_spec, _tagger_inputs),
    "rnn-gru-v1": (gru_factory, _gru_spec, _gru_inputs),
    "control-if-v1": (gated_factory, _gated_spec, _gated_inputs),
}


class _Exported:
    def __init__(self, key, export_dir):
        factory, spec, self.inputs = MODELS[key]
        args, in_names, out_names, dyn = spec()
        self.factory, self.key = factory, key
        path, self.exporter, missing = export_for_ember(export_dir, key, factory, args, in_names,
                                                        out_names, dyn)
        self.sess = ort_session(path)
        self.engine = ExportedEngine(path, self.exporter, missing, key)


@pytest.fixture(scope="module")
def exported(export_dir):
    """key -> _Exported, exporting (or loading from the cache) each model on first use."""
    done = {}

    def get(key):
        if key not in done:
            done[key] = _Exported(key, export_dir)
        return done[key]

    yield get
    for m in done.values():
        m.engine.close()


def _scaled_err(got, want):
    """max |got - want| / max |want| (want is never all zeros here: random weights and data)."""
    return max_abs_err(got, want) / max(float(np.abs(want).max()), 1e-30)


def _check(model, rng, batch, seq=None):
    feeds = model.inputs(rng, batch, seq)
    want = ort_run(model.sess, feeds)
    got = model.engine.get().run(feeds)
    assert set(got) == set(want)
    for name, w in want.items():
        err = _scaled_err(got[name], w)
        shape = f"batch {batch}" + ("" if seq is None else f" seq {seq}")
        print(f"{model.key} ({model.exporter}) {shape} {name}: scaled max abs err {err:.3g} "
              f"(|{name}| max {np.abs(w).max():.3g})")
        assert err < TOL, f"{name}: {err:.3g}"


# ---- tests -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("key", list(MODELS))
def test_onnxruntime_matches_torch(exported, rng, key):
    """Harness check: the export, run by onnxruntime, is the torch model (batch 3, seq 7)."""
    import torch

    model = exported(key)
    feeds = model.inputs(rng, 3, 7 if "rnn" in key else 1)
    want = model.factory()
    with torch.no_grad():
        want = want(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    (got,) = ort_run(model.sess, feeds).values()
    err = _scaled_err(got, want)
    print(f"{key} ({model.exporter}): onnxruntime vs torch scaled max abs err {err:.3g}")
    assert err < TORCH_TOL


@pytest.mark.slow
@pytest.mark.parametrize("batch", BATCHES)
def test_resnet_matches_onnxruntime(exported, rng, batch):
    _check(exported("vision-resnet-v2"), rng, batch)


@pytest.mark.slow
@pytest.mark.parametrize("batch", BATCHES)
def test_mobilenet_matches_onnxruntime(exported, rng, batch):
    _check(exported("vision-mobilenet-v2"), rng, batch)


@pytest.mark.slow
@pytest.mark.parametrize("batch", BATCHES)
def test_vit_matches_onnxruntime(exported, rng, batch):
    _check(exported("vision-vit-v1"), rng, batch)


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", RNN_SHAPES, ids=RNN_IDS)
def test_lstm_tagger_matches_onnxruntime(exported, rng, batch, seq):
    _check(exported("rnn-lstm-tagger-v1"), rng, batch, seq)


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq", RNN_SHAPES, ids=RNN_IDS)
def test_gru_matches_onnxruntime(exported, rng, batch, seq):
    _check(exported("rnn-gru-v1"), rng, batch, seq)


@pytest.mark.slow
@pytest.mark.parametrize("batch,branch", [(1, 1), (3, 1), (1, -1), (3, -1)],
                         ids=["1-then", "3-then", "1-else", "3-else"])
def test_if_model_matches_onnxruntime(exported, rng, batch, branch):
    from ember_e2e import onnx_op_types

    model = exported("control-if-v1")
    assert "If" in onnx_op_types(model.engine.path), "the export has no If: nothing tested"
    _check(model, rng, batch, branch)
