"""QuantConfig: what to quantize and how. Validated on creation and again before use."""

from __future__ import annotations

import dataclasses
import math

from ember.errors import InputError

SCHEMES = ("int8", "int4")
METHODS = ("minmax", "percentile", "entropy")
GROUP_SIZES = (32, 64, 128, 256)   # q4g needs a multiple of 32; ORT's MatMulNBits a power of 2


@dataclasses.dataclass
class QuantConfig:
    """Quantization settings (every field can be overridden).

    scheme: "int8" (W8A8: dynamic per-token activations, or static QDQ when calibration feeds
        are given) or "int4" (weight-only MatMulNBits, group-wise, round to nearest).
    method: how static int8 activation ranges come from calibration: "minmax", "percentile"
        (each tail clipped at `percentile`), "entropy" (KL-divergence threshold search).
    per_channel: one weight scale per output channel (False: one per tensor, still written as
        one value repeated per channel so the file layout does not change).
    group_size: int4 group along K: 32, 64, 128 or 256.
    int4_zero_point: asymmetric int4 groups with a 4-bit zero point (True, the default) or
        symmetric groups (scale = v / -8, implicit zero point 8). Asymmetric is the default
        because it measured closer to fp32: on all-MiniLM-L6-v2 (G=128, all 36 projections)
        relative weight error 0.107 vs 0.112 and sentence-embedding cosine 0.961 vs 0.953;
        weight groups are rarely centred on 0 and the zero point fits the codes to the range.
    keep_float: node names (or fnmatch patterns such as "*.attention.*") that stay float; a
        pattern also matches an unnamed node by its first output's name.
    quantize_first_last: False keeps the first and last weighted layers float. Weighted layers
        are the MatMul/Gemm/Conv nodes with a constant weight; "first" are those whose input is
        computed from no other weighted layer's output (e.g. a transformer's layer-0 Q/K/V
        projections, a CNN's stem conv), "last" are those whose output feeds no other weighted
        layer (e.g. the classifier, or a transformer's last FFN down projection).
    min_weight_elements: layers whose weight has fewer elements (K*N for MatMul/Gemm,
        M*C/g*kh*kw for Conv) stay float: they cost little and quantizing them gains nothing.
    embeddings: also store Gather tables (embeddings) as int8 with one scale per row.
    """

    scheme: str = "int8"
    method: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    group_size: int = 128
    int4_zero_point: bool = True
    keep_float: list = dataclasses.field(default_factory=list)
    quantize_first_last: bool = False
    min_weight_elements: int = 4096
    embeddings: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises InputError naming the first bad field."""
        if self.scheme not in SCHEMES:
            raise InputError(f"[quantize] scheme must be one of {', '.join(SCHEMES)}, "
                             f"not {self.scheme!r}")
        if self.method not in METHODS:
            raise InputError(f"[quantize] method must be one of {', '.join(METHODS)}, "
                             f"not {self.method!r}")
        p = self.percentile
        if (isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p)
                or not 50.0 < p <= 100.0):
            raise InputError(f"[quantize] percentile must be a number in (50, 100], not {p!r}")
        if isinstance(self.group_size, bool) or self.group_size not in GROUP_SIZES:
            raise InputError(f"[quantize] group_size must be one of "
                             f"{', '.join(map(str, GROUP_SIZES))}, not {self.group_size!r}")
        for field in ("per_channel", "int4_zero_point", "quantize_first_last", "embeddings"):
            if not isinstance(getattr(self, field), bool):
                raise InputError(f"[quantize] {field} must be True or False, "
                                 f"not {getattr(self, field)!r}")
        m = self.min_weight_elements
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise InputError(f"[quantize] min_weight_elements must be an int >= 0, not {m!r}")
        kf = self.keep_float
        if isinstance(kf, str):
            self.keep_float = kf = [kf]
        if not isinstance(kf, (list, tuple, set, frozenset)) or not all(
                isinstance(k, str) and k for k in kf):
            raise InputError(f"[quantize] keep_float must be a list of node names or patterns, "
                             f"not {kf!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d


def config_from(value, **overrides) -> QuantConfig:
    """"int8" | "int4" | QuantConfig | None (-> int8), with fields overridden -> a new config."""
    if value is None:
        cfg = QuantConfig()
    elif isinstance(value, str):
        if value not in SCHEMES:
            raise InputError(f"[quantize] scheme must be one of {', '.join(SCHEMES)} "
                             f"(or a QuantConfig), not {value!r}")
        cfg = QuantConfig(scheme=value)
    elif isinstance(value, QuantConfig):
        cfg = value
    else:
        raise InputError(f"[quantize] expected 'int8', 'int4' or a QuantConfig, "
                         f"not {type(value).__name__}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)   # runs __post_init__: validated
    cfg.keep_float = list(cfg.keep_float)
    return cfg
