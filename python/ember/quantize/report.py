"""QuantReport: how far the quantized model is from the float one, measured by running both with
ember on the same eval feeds.

Per quantized layer the node's output (the same tensor name in both models, exposed as a graph
output of a copy of each) gives a relative L2 error ||q - f|| / ||f|| and a cosine, both over
all eval feeds together. Per model output (float outputs only): the cosine of each row (the last
axis; a whole 0-D/1-D output is one row), its mean and minimum; when the last axis has more than
one element, top-1 agreement (argmax over it) and the KL divergence KL(softmax(f) || softmax(q))
per row, averaged. Every position counts, padding included: to measure real tokens only, pass
unpadded feeds (one per sequence).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np


@dataclasses.dataclass
class LayerError:
    node: str
    op: str
    output: str
    rel_l2: float
    cosine: float


@dataclasses.dataclass
class OutputMetrics:
    name: str
    rows: int
    cosine_mean: float
    cosine_min: float
    rel_l2: float
    top1_agreement: float | None     # fraction of rows with the same argmax; None: last dim 1
    kl_mean: float | None            # mean KL(softmax(fp32) || softmax(quant)); None: last dim 1


@dataclasses.dataclass
class QuantReport:
    """Accuracy of a quantized model against its float original (see the module docstring)."""

    scheme: str
    eval_feeds: int
    outputs: list                    # [OutputMetrics]
    layers: list                     # [LayerError], graph order
    kept_float: list                 # [(node, op, reason)]: weighted layers left float
    fallbacks: list                  # [(node, op)]: quantized nodes ember runs unfused
    left_alone: list = dataclasses.field(default_factory=list)  # [(node, op, reason)]: no weight

    def worst_layers(self, k: int = 10) -> list:
        """The k layers with the largest relative L2 error, worst first."""
        return sorted(self.layers, key=lambda e: -e.rel_l2)[:k]

    def to_dict(self) -> dict:
        return {
            "scheme": self.scheme, "eval_feeds": self.eval_feeds,
            "outputs": [dataclasses.asdict(o) for o in self.outputs],
            "layers": [dataclasses.asdict(e) for e in self.layers],
            "worst_layers": [e.node for e in self.worst_layers()],
            "kept_float": [{"node": n, "op": op, "reason": r} for n, op, r in self.kept_float],
            "left_alone": [{"node": n, "op": op, "reason": r} for n, op, r in self.left_alone],
            "fallbacks": [{"node": n, "op": op} for n, op in self.fallbacks],
        }

    def table(self, worst: int = 10) -> str:
        f = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
        lines = [f"quantization report: {self.scheme}, {len(self.layers)} layers quantized, "
                 f"{len(self.kept_float)} kept float, {self.eval_feeds} eval feeds"]
        lines.append(f"  {'model output':<28} {'rows':>6} {'cos mean':>9} {'cos min':>9} "
                     f"{'rel L2':>9} {'top-1':>7} {'KL':>9}")
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.1f}%"
            lines.append(f"  {o.name:<28} {o.rows:>6} {f(o.cosine_mean):>9} {f(o.cosine_min):>9} "
                         f"{f(o.rel_l2):>9} {top1:>7} {f(o.kl_mean, '.2e'):>9}")
        if self.layers:
            lines.append(f"worst layers (of {len(self.layers)}, by relative L2 error):")
            lines.append(f"  {'node':<48} {'op':<8} {'rel L2':>9} {'cosine':>9}")
            for e in self.worst_layers(worst):
                lines.append(f"  {e.node:<48} {e.op:<8} {e.rel_l2:>9.4f} {e.cosine:>9.5f}")
        if self.kept_float:
            lines.append("kept float:")
            for n, op, r in self.kept_float:
                lines.append(f"  {n:<48} {op:<8} {r}")
        for r in sorted({r for _, _, r in self.left_alone}):
            lines.append(f"left as is: {sum(x[2] == r for x in self.left_alone)} x {r}")
        if self.fallbacks:
            lines.append(f"not fused into integer kernels (slower reference path in ember): "
                         f"{len(self.fallbacks)} nodes")
            for n, op in self.fallbacks:
                lines.append(f"  {n:<48} {op}")
        return "\n".join(lines)


class _Sums:
    def __init__(self):
        self.dd = self.ff = self.qq = self.fq = 0.0

    def add(self, f, q):
        f = np.asarray(f, np.float64).ravel()
        q = np.asarray(q, np.float64).ravel()
        d = q - f
        self.dd += float(d @ d)
        self.ff += float(f @ f)
        self.qq += float(q @ q)
        self.fq += float(f @ q)

    def rel_l2(self):
        return float(np.sqrt(self.dd / self.ff)) if self.ff > 0 else float(np.sqrt(self.dd))

    def cosine(self):
        den = np.sqrt(self.ff * self.qq)
        return float(self.fq / den) if den > 0 else float(self.dd == 0)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class _OutputStats:
    def __init__(self, name):
        self.name, self.sums = name, _Sums()
        self.cos, self.top1, self.kl = [], [], []

    def add(self, f, q):
        self.sums.add(f, q)
        f = np.asarray(f, np.float64)
        q = np.asarray(q, np.float64)
        if f.size == 0:
            return
        shape = (-1, f.shape[-1]) if f.ndim >= 2 else (1, -1)     # rows: the last axis
        f2, q2 = f.reshape(shape), q.reshape(shape)
        nf, nq = np.linalg.norm(f2, axis=1), np.linalg.norm(q2, axis=1)
        den = nf * nq
        cos = np.where(den > 0, (f2 * q2).sum(axis=1) / np.where(den > 0, den, 1),
                       (nf == nq).astype(np.float64))
        self.cos.extend(cos.tolist())
        if f2.shape[1] > 1:
            self.top1.extend((f2.argmax(axis=1) == q2.argmax(axis=1)).tolist())
            lp, lq = _log_softmax(f2), _log_softmax(q2)
            self.kl.extend((np.exp(lp) * (lp - lq)).sum(axis=1).tolist())

    def result(self):
        cos = np.array(self.cos)
        return OutputMetrics(self.name, len(cos), float(cos.mean()), float(cos.min()),
                             self.sums.rel_l2(),
                             float(np.mean(self.top1)) if self.top1 else None,
                             float(np.mean(self.kl)) if self.kl else None)


def build_report(float_model, quant_model, scheme, decisions, feeds, progress=None):
    """Runs both models with ember over `feeds` -> QuantReport."""
    from ember.engine import Engine
    from ember.quantize.calibrate import with_outputs

    layers = [d for d in decisions if d.quantized and d.output]
    names = list(dict.fromkeys(d.output for d in layers))
    float_outputs = [o.name for o in float_model.graph.output]
    with warnings.catch_warnings():
        from ember.quantize import QuantFallbackWarning
        warnings.simplefilter("ignore", QuantFallbackWarning)
        fallbacks = list(Engine(quant_model).quant_fallbacks)
        ef = Engine(with_outputs(float_model, names))
        eq = Engine(with_outputs(quant_model, names))
    try:
        sums = {n: _Sums() for n in names}
        outs = {}
        for k, feed in enumerate(feeds):
            if progress:
                progress(f"report: feed {k + 1}/{len(feeds)} (fp32 and quantized)")
            rf = ef.run(feed)
            rq = eq.run(feed)
            for n in names:
                sums[n].add(rf[n], rq[n])
            for n in float_outputs:
                f = np.asarray(rf[n])
                if f.dtype.kind != "f":
                    continue
                outs.setdefault(n, _OutputStats(n)).add(f, rq[n])
    finally:
        ef.close()
        eq.close()
    return QuantReport(
        scheme=scheme, eval_feeds=len(feeds),
        outputs=[outs[n].result() for n in float_outputs if n in outs],
        layers=[LayerError(d.node, d.op, d.output, sums[d.output].rel_l2(),
                           sums[d.output].cosine()) for d in layers],
        kept_float=[(d.node, d.op, d.reason) for d in decisions
                    if not d.quantized and d.weight_shape],
        fallbacks=fallbacks,
        left_alone=[(d.node, d.op, d.reason) for d in decisions
                    if not d.quantized and not d.weight_shape])
