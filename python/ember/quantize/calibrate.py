"""Calibration: activation ranges of the float model, run by ember over the calibration feeds.

The tensors wanted are added as graph outputs of a copy of the model. Ranges per method:
  minmax      [min, max] over every feed.
  percentile  each tail is clipped on its own: lo is where the lowest (100 - p)% of the values
              end, hi where the highest (100 - p)% begin (p = QuantConfig.percentile), read off a
              2048-bin histogram over [min, max] (bin edges, so never inside the kept range).
  entropy     threshold T minimising KL(P || Q) over a 2048-bin histogram of |x| (TensorRT's
              search): P is the histogram cut at bin i with the outliers added to its last bin,
              Q the same bins merged into the number of quantization levels on that side (256
              for a tensor >= 0, 128 per side otherwise) and spread back over P's non-empty
              bins. The range is then [max(min, -T), min(max, T)]. Exact zeros are left out
              of the histogram: 0 always has an exact code (the range holds 0, the zero point is
              an integer), and a ReLU's spike at 0 would otherwise pull T far down.
percentile and entropy read the feeds twice (min/max first, then histograms over that range).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ember.errors import EmberError, InputError

BINS = 2048


def normalize_feeds(data, input_names, what="calibration"):
    """A feed dict, or an iterable of them -> [dict of name -> np.ndarray], checked."""
    if data is None:
        return None
    if isinstance(data, Mapping):
        data = [data]
    elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise InputError(f"[quantize] {what} must be a feed dict or an iterable of feed dicts, "
                         f"not {type(data).__name__}")
    feeds = []
    for k, feed in enumerate(data):
        if not isinstance(feed, Mapping):
            raise InputError(f"[quantize] {what} item {k} is a {type(feed).__name__}, "
                             f"not a dict of input name -> array")
        unknown = [n for n in feed if n not in input_names]
        if unknown:
            raise InputError(f"[quantize] {what} item {k}: unknown input(s) {unknown}; the model "
                             f"takes {sorted(input_names)}")
        missing = [n for n in input_names if n not in feed]
        if missing:
            raise InputError(f"[quantize] {what} item {k}: missing input(s) {missing}")
        try:
            feeds.append({n: np.asarray(v) for n, v in feed.items()})
        except (TypeError, ValueError) as e:
            raise InputError(f"[quantize] {what} item {k}: {e}") from None
    if not feeds:
        raise InputError(f"[quantize] {what} is empty: give at least one feed")
    return feeds


def model_inputs(model):
    """Names of the graph inputs that are not initializers (what feeds must provide)."""
    inits = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in inits]


def with_outputs(model, names):
    """A copy of `model` whose graph also outputs `names` (types left for ember to infer)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m


class _Runner:
    """Runs the float model with ember and returns the wanted tensors of each feed."""

    def __init__(self, model, names, progress):
        from ember.engine import Engine

        inputs = set(model_inputs(model))
        self.from_feed = [n for n in names if n in inputs]
        self.computed = [n for n in names if n not in inputs]
        try:
            self.engine = Engine(with_outputs(model, self.computed))
        except EmberError as e:
            raise type(e)(f"[quantize] calibration runs the float model with ember, which "
                          f"cannot load it: {e}") from None
        self.progress = progress

    def each(self, feeds, label):
        for k, feed in enumerate(feeds):
            if self.progress and (k % max(1, len(feeds) // 10) == 0 or k == len(feeds) - 1):
                self.progress(f"{label}: feed {k + 1}/{len(feeds)}")
            out = self.engine.run(feed, outputs=self.computed) if self.computed else {}
            for n in self.from_feed:
                out[n] = feed[n]
            yield {n: np.asarray(v, np.float32) for n, v in out.items()}

    def close(self):
        self.engine.close()


def _percentile_range(hist, lo, hi, p):
    edges = np.linspace(lo, hi, len(hist) + 1, dtype=np.float64)
    total = hist.sum()
    tail = total * (100.0 - p) / 100.0
    left = np.cumsum(hist)
    right = np.cumsum(hist[::-1])
    i = int(np.searchsorted(left, tail, side="right"))        # first bin with cum > tail
    j = int(np.searchsorted(right, tail, side="right"))
    return float(edges[min(i, len(hist) - 1)]), float(edges[len(hist) - min(j, len(hist) - 1)])


def _kl(p, q):
    p = p / p.sum()
    q = q / q.sum()
    m = p > 0
    q = np.where(m & (q <= 0), 1e-12, q)    # P has mass Q lost: a large but finite penalty
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def entropy_threshold(hist, amax, levels):
    """|x| histogram over [0, amax] -> the threshold T with the least KL divergence."""
    hist = np.asarray(hist, np.float64)
    nbins = len(hist)
    if amax <= 0 or hist.sum() == 0:
        return 0.0
    best_i, best = nbins, np.inf
    for i in range(min(levels, nbins), nbins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        starts = (np.arange(levels) * i) // levels
        starts = np.unique(starts)
        sums = np.add.reduceat(hist[:i], starts)
        nonzero = p > 0
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        per_bin = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        widths = np.diff(np.append(starts, i))
        q = np.repeat(per_bin, widths) * nonzero
        if q.sum() <= 0:
            continue
        d = _kl(p, q)
        if d < best:
            best, best_i = d, i
    return float(amax) * best_i / nbins


def calibrate(model, names, feeds, method="minmax", percentile=99.99, progress=None):
    """{tensor name: (lo, hi)} for each of `names` over `feeds`, by `method`."""
    runner = _Runner(model, names, progress)
    try:
        lo = {n: np.inf for n in names}
        hi = {n: -np.inf for n in names}
        for out in runner.each(feeds, "calibration (min/max)"):
            for n in names:
                x = out[n]
                if x.size:
                    if not np.isfinite(x).all():
                        raise InputError(f"[quantize] calibration: tensor '{n}' has non-finite "
                                         "values in the float model")
                    lo[n] = min(lo[n], float(x.min()))
                    hi[n] = max(hi[n], float(x.max()))
        ranges = {n: (lo[n], hi[n]) if lo[n] <= hi[n] else (0.0, 0.0) for n in names}
        if method == "minmax":
            return ranges
        hists = {n: np.zeros(BINS, np.float64) for n in names}
        for out in runner.each(feeds, f"calibration ({method} histograms)"):
            for n in names:
                a, b = ranges[n]
                x = out[n].ravel()
                if method == "entropy":
                    amax = max(-a, b)
                    if amax > 0:      # exact zeros (ReLU) quantize exactly at any threshold
                        hists[n] += np.histogram(np.abs(x[x != 0]), BINS, (0.0, amax))[0]
                elif b > a:
                    hists[n] += np.histogram(x, BINS, (a, b))[0]
        result = {}
        for n in names:
            a, b = ranges[n]
            if method == "percentile":
                result[n] = _percentile_range(hists[n], a, b, percentile) if b > a else (a, b)
            else:
                t = entropy_threshold(hists[n], max(-a, b), 256 if a >= 0 else 128)
                result[n] = (max(a, -t), min(b, t))
        return result
    finally:
        runner.close()
