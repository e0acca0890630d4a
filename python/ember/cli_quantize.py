"""`ember quantize SRC DST`: write an int8 or int4 ONNX file (ember.quantize), optionally with
an accuracy report from running the float and quantized models with ember."""

from __future__ import annotations

import json
import sys
import time

from ember.errors import InputError

EPILOG = """\
formats:
  int8 without --calibration  dynamic W8A8: per-token activation scales computed in the graph
                              (MatMulInteger), int8 weights per output channel
  int8 with --calibration     static QDQ: uint8 activations per tensor from calibration ranges
                              (--method), int8 weights per output channel; Conv too
  int4                        com.microsoft MatMulNBits, groups of --group-size along K
Each --calibration / --eval file is one feed: an .npz holding one array per model input,
named after it (np.savez(path, input_ids=..., attention_mask=...)).
By default the first and last weighted layers and layers with fewer than 4096 weight elements
stay float; --quantize-first-last and --min-weight-elements change that.
"""


def add_parser(sub):
    import argparse
    p = sub.add_parser("quantize", help="quantize an ONNX model to int8 or int4 (a file "
                                        "onnxruntime can also run)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=__doc__.strip(), epilog=EPILOG)
    p.add_argument("src", help="float ONNX model (.onnx), or a known model name (minilm-l6)")
    p.add_argument("dst", help="where to write the quantized model")
    p.add_argument("--scheme", choices=["int8", "int4"], default="int8")
    p.add_argument("--calibration", nargs="+", action="extend", metavar="FILE.npz",
                   help="calibration feeds (int8: selects static QDQ quantization)")
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default=None,
                   help="activation ranges from calibration (default minmax)")
    p.add_argument("--percentile", type=float, default=None,
                   help="tail kept by --method percentile (default 99.99)")
    p.add_argument("--group-size", type=int, default=None, choices=[32, 64, 128, 256],
                   help="int4 group size along K (default 128)")
    p.add_argument("--symmetric", action="store_true",
                   help="int4: symmetric groups without zero points")
    p.add_argument("--per-tensor", action="store_true",
                   help="one weight scale per tensor instead of per output channel")
    p.add_argument("--keep-float", nargs="+", action="extend", metavar="NAME",
                   help="node names or fnmatch patterns that stay float")
    p.add_argument("--quantize-first-last", action="store_true",
                   help="also quantize the first and last weighted layers")
    p.add_argument("--min-weight-elements", type=int, default=None, metavar="N",
                   help="layers with fewer weight elements stay float (default 4096)")
    p.add_argument("--embeddings", action="store_true", help="also store Gather tables as int8")
    p.add_argument("--report", action="store_true",
                   help="run the float and quantized models with ember on --eval (default: "
                        "the calibration feeds) and print the accuracy report")
    p.add_argument("--eval", nargs="+", action="extend", metavar="FILE.npz",
                   help="eval feeds for --report")
    p.add_argument("--json", metavar="OUT.json", help="write every decision (and the report)")
    p.set_defaults(fn=cmd_quantize)
    return p


def _load_feeds(paths, what):
    import numpy as np

    feeds = []
    for path in paths or []:
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise InputError(f"[cli] --{what} {path}: not an .npz archive (np.savez)")
                feeds.append({k: z[k] for k in z.files})
        except (OSError, ValueError) as e:
            raise InputError(f"[cli] --{what}: cannot read {path!r}: {e}") from None
    return feeds or None


def cmd_quantize(args):
    from ember.quantize import QuantConfig, quantize
    from ember.quantize.config import config_from

    t0 = time.perf_counter()

    def progress(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    cfg = config_from(QuantConfig(), scheme=args.scheme, percentile=args.percentile,
                      group_size=args.group_size, min_weight_elements=args.min_weight_elements,
                      keep_float=args.keep_float or [], per_channel=not args.per_tensor,
                      int4_zero_point=not args.symmetric,
                      quantize_first_last=args.quantize_first_last, embeddings=args.embeddings)
    if args.symmetric and args.scheme != "int4":
        raise InputError("[cli] --symmetric applies to --scheme int4 only")
    calibration = _load_feeds(args.calibration, "calibration")
    eval_data = _load_feeds(args.eval, "eval")
    if eval_data is not None and not args.report:
        raise InputError("[cli] --eval is only used with --report")
    result = quantize(args.src, args.dst, config=cfg, calibration=calibration,
                      method=args.method, report=args.report, eval_data=eval_data,
                      progress=progress)
    print(result.summary())
    if result.report is not None:
        print(result.report.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=1)
        print(f"json: {args.json}")
    return 0
