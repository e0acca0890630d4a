"""ember.quantize and quantize_model: pick the layers, calibrate if asked, rewrite, write, report."""

from __future__ import annotations

import dataclasses
import time

from ember.errors import InputError
from ember.quantize import calibrate as cal
from ember.quantize import dynamic, embed, int4, static
from ember.quantize.config import QuantConfig, config_from
from ember.quantize.graph import (GraphEditor, display_name, ensure_opset, load_model, save_model,
                                  set_metadata)
from ember.quantize.select import embedding_tables, select_layers


@dataclasses.dataclass
class QuantResult:
    """What ember.quantize did: every examined node's decision, notes, and the report if asked."""

    format: str                      # "int8-dynamic" | "int8-static" | "int4"
    config: QuantConfig
    path: str | None                 # the file written
    decisions: list                  # [select.Decision], graph order
    notes: list                      # e.g. keep_float patterns that matched nothing
    ranges: dict                     # int8-static: {activation: (lo, hi)} from calibration
    seconds: float
    report: object = None            # QuantReport when report=True

    @property
    def quantized(self) -> list:
        return [d for d in self.decisions if d.quantized]

    @property
    def kept_float(self) -> list:
        return [d for d in self.decisions if not d.quantized]

    def summary(self) -> str:
        weighted = [d for d in self.kept_float if d.weight_shape]
        other = len(self.kept_float) - len(weighted)
        lines = [f"{self.format}: {len(self.quantized)} layers quantized, {len(weighted)} weighted "
                 f"layers kept float, {other} other MatMul/Gemm/Conv left as they are "
                 f"({self.seconds:.1f} s)" + (f" -> {self.path}" if self.path else "")]
        for d in weighted:
            lines.append(f"  float  {d.node:<48} {d.op:<8} {d.reason}")
        reasons = sorted({d.reason for d in self.kept_float if not d.weight_shape})
        lines.extend(f"  as is  {sum(d.reason == r for d in self.kept_float)} x {r}"
                     for r in reasons)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"format": self.format, "config": self.config.to_dict(), "path": self.path,
                "decisions": [d.to_dict() for d in self.decisions], "notes": list(self.notes),
                "ranges": {k: list(v) for k, v in self.ranges.items()}, "seconds": self.seconds,
                "report": self.report.to_dict() if self.report is not None else None}


def _run(model, base_dir, cfg, feeds, progress):
    """Quantizes `model` (ours to edit) in place -> (model, QuantResult without path/report)."""
    t0 = time.perf_counter()
    fmt = "int4" if cfg.scheme == "int4" else ("int8-static" if feeds else "int8-dynamic")
    if fmt != "int4":
        model = ensure_opset(model)
    ed = GraphEditor(model, base_dir)
    order = {display_name(n): k for k, n in enumerate(ed.nodes)}
    ops = ("MatMul", "Gemm", "Conv") if fmt == "int8-static" else ("MatMul", "Gemm")
    layers, decisions, notes = select_layers(ed, cfg, ops, gemm_scaled=fmt == "int8-static")
    ranges = {}
    if fmt == "int8-static" and layers:
        names = list(dict.fromkeys(L.x for L in layers))
        if progress:
            progress(f"calibrating {len(names)} activations over {len(feeds)} feeds ({cfg.method})")
        ranges = cal.calibrate(model, names, feeds, cfg.method, cfg.percentile, progress)
    if progress:
        progress(f"quantizing {len(layers)} layers ({fmt})")
    if fmt == "int8-dynamic":
        decisions += dynamic.apply(ed, layers, cfg)
    elif fmt == "int8-static":
        decisions += static.apply(ed, layers, cfg, ranges)
    else:
        decisions += int4.apply(ed, layers, cfg)
    if cfg.embeddings:
        decisions += embed.apply(ed, embedding_tables(ed), cfg)
    ed.commit()
    set_metadata(model, "ember.quantize", fmt)
    decisions.sort(key=lambda d: order.get(d.node, len(order)))
    return model, QuantResult(fmt, cfg, None, decisions, notes, ranges,
                              time.perf_counter() - t0)


def _prepare(src, cfg, calibration):
    model, base_dir = load_model(src)
    feeds = cal.normalize_feeds(calibration, cal.model_inputs(model))
    if feeds is not None and cfg.scheme == "int4":
        raise InputError("[quantize] int4 is weight-only (round to nearest per group) and takes "
                         "no calibration; to measure it, pass eval_data with report=True")
    return model, base_dir, feeds


def quantize_model(model, config=None, calibration=None):
    """onnx.ModelProto (or a path / bytes) -> a new quantized ModelProto, in memory.

    config: "int8" | "int4" | QuantConfig (default int8). calibration: a feed dict or an
    iterable of them; with int8 it selects static QDQ quantization, without it dynamic W8A8.
    The caller's ModelProto is not modified.
    """
    cfg = config_from(config)
    m, base_dir, feeds = _prepare(model, cfg, calibration)
    return _run(m, base_dir, cfg, feeds, None)[0]


def quantize(src, dst, scheme=None, calibration=None, method=None, config=None, report=False,
             eval_data=None, progress=None) -> QuantResult:
    """Quantizes an ONNX model and writes a standard ONNX file that onnxruntime also runs.

    src: path | bytes | onnx.ModelProto; dst: output path.
    scheme: "int8" (default) | "int4"; method: "minmax" (default) | "percentile" | "entropy"
    (static int8 only); both override the same fields of `config` (a QuantConfig).
    calibration: a feed dict {input name: array} or an iterable of them. int8 with calibration
    writes static QDQ (uint8 activations per tensor, int8 weights per channel); int8 without it
    writes dynamic W8A8 (per-token activation scales computed in the graph); int4 writes
    com.microsoft MatMulNBits and takes no calibration.
    report=True also runs the float and the quantized model with ember on eval_data (default:
    the calibration feeds) and attaches a QuantReport as result.report.
    progress: a callable taking one line of text per step (the CLI prints them).
    Returns a QuantResult: every examined node's decision (quantized, or kept float and why).
    """
    cfg = config_from(config, scheme=scheme, method=method)
    if method is not None and (cfg.scheme != "int8" or calibration is None):
        raise InputError(f"[quantize] method={method!r} picks activation ranges from calibration "
                         "feeds: it applies to int8 with calibration only")
    if not isinstance(report, bool):
        raise InputError(f"[quantize] report must be True or False, not {report!r}")
    if progress is not None and not callable(progress):
        raise InputError("[quantize] progress must be a callable taking one str")
    if progress:
        progress(f"loading {src if isinstance(src, str) else type(src).__name__}")
    model, base_dir, feeds = _prepare(src, cfg, calibration)
    eval_feeds = None
    if report:
        eval_feeds = cal.normalize_feeds(eval_data, cal.model_inputs(model), "eval_data") \
            if eval_data is not None else feeds
        if eval_feeds is None:
            raise InputError("[quantize] report=True needs eval_data (or calibration feeds) to "
                             "run both models on")
    elif eval_data is not None:
        raise InputError("[quantize] eval_data is only used with report=True")
    float_model = None
    if report:
        import onnx
        float_model = onnx.ModelProto()
        float_model.CopyFrom(model)
    qmodel, result = _run(model, base_dir, cfg, feeds, progress)
    if progress:
        progress(f"writing {dst}")
    save_model(qmodel, dst)
    result.path = str(dst)
    if report:
        from ember.quantize.report import build_report
        result.report = build_report(float_model, qmodel, result.format, result.decisions,
                                     eval_feeds, progress)
    return result


def quantize_for_engine(model, cfg):
    """Engine(model, quantize=cfg): -> (quantized ModelProto, base dir of its external data)."""
    m, base_dir = load_model(model)
    return _run(m, base_dir, cfg, None, None)[0], base_dir
