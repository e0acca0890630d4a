"""`ember validate NEW --baseline OLD --data FILE`: the candidate against the serving model on
reference data (ember.rollout); exit 0 when it passes, 1 when it regresses past a limit, 2 on
an error (a model or data file that cannot be read, a bad limit).

Limits: --limits FILE.toml (its [validation] table if it has one, so a model's config.toml
works, else the top-level table) then --limit KEY=VALUE, which wins; VALUE `none` switches a
check off. Data: .npz of feeds (batch on axis 0, optional __labels__), .jsonl / .txt texts for LLMs.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from ember.errors import EmberError, InputError

# Keys of the server's [validation] table that serve/validate.py reads itself (not limits).
SERVER_KEYS = ("feeds", "prompt", "max_tokens", "data")


def add_parser(sub):
    import argparse

    from ember.rollout import ValidationLimits
    defaults = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(ValidationLimits()).items())
    p = sub.add_parser(
        "validate", help="compare a candidate model with the serving one; exit 1 on regression",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("\n\n", 1)[1]
        + f"\ndefaults: {defaults}")
    p.add_argument("model", metavar="NEW", help="the candidate: an .onnx / .gguf path or a known "
                                                "model name")
    p.add_argument("--baseline", metavar="OLD", help="the serving model (omit for a first "
                                                     "version: absolute checks only)")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="reference data: .npz feeds (graphs) or .jsonl / .txt texts (LLMs)")
    p.add_argument("--limit", action="append", metavar="KEY=VALUE", help="one limit (repeatable)")
    p.add_argument("--limits", metavar="FILE.toml", help="limits from a TOML file")
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    p.add_argument("--runs", type=int, default=5, help="timed passes per model (default 5)")
    p.add_argument("--threads", type=int, default=None, help="threads per engine")
    p.set_defaults(fn=cmd_validate)
    return p


def read_limits(path=None, specs=()):
    """--limits FILE.toml and --limit KEY=VALUE strings -> ValidationLimits."""
    from ember.rollout import ValidationLimits
    table = {}
    if path:
        from ember.serve.config import read_toml
        table = read_toml(path, "validate")
        table = table.get("validation", table)
    limits = ValidationLimits.from_dict(table, where=path or "--limits", ignore=SERVER_KEYS)
    given = {}
    for spec in specs or ():
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise InputError(f"[validate] --limit expects KEY=VALUE, got {spec!r}")
        given[key.strip()] = _number(value.strip(), spec)
    if not given:
        return limits
    merged = {k: (False if v is None else v) for k, v in dataclasses.asdict(limits).items()}
    return ValidationLimits.from_dict({**merged, **given}, where="--limit")


def _number(text, spec):
    if text.lower() in ("none", "off", "false"):
        return False            # from_dict's "switched off"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    raise InputError(f"[validate] --limit {spec!r}: the value must be a number or none")


def cmd_validate(args) -> int:
    from ember.engine import Engine
    from ember.rollout import compare_models, load_data
    limits = read_limits(args.limits, args.limit)
    data = load_data(args.data)             # before loading models: a bad file fails fast
    with Engine(args.model, threads=args.threads) as cand:
        base = Engine(args.baseline, threads=args.threads) if args.baseline else None
        try:
            report = compare_models(cand, base, data, limits, runs=args.runs)
        finally:
            if base is not None:
                base.close()
    print(report.text())
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_dict(), f, indent=1, allow_nan=False)
        except OSError as e:
            raise InputError(f"[validate] --json {args.json}: {e}") from None
    return 0 if report.passed else 1


def main(argv=None) -> int:
    """`python -m ember.cli_validate NEW ...`: the validate command on its own, with the exit
    codes of `ember validate` (2 and the message on stderr for an EmberError)."""
    import argparse
    parser = argparse.ArgumentParser(prog="ember")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except EmberError as e:
        print(f"ember: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
