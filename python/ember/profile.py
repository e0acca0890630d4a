"""Engine.profile: per-node and per-op-type timings read from the runtime's trace spans.

Each profiled run returns one span per node run (an eager If/Loop/NonZero is one span, its
subgraph runs inside) with the kernel, ISA and the cost model's flops and bytes
(cpp/src/runtime/cost.h). A node's time is its median over the runs; shares are of the sum of
node medians, so they add up to 1. The run total is the median wall time of the runs (nodes
plus the executor between them); with noisy per-node times (a busy machine) the sum of node
medians can sit well below it, so the table prints both and the executor's own share.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any, Mapping, Sequence

from ember.errors import InputError

__all__ = ["NodeStat", "OpStat", "Profile", "profile"]


@dataclasses.dataclass
class NodeStat:
    """One node: median time over the runs and what the cost model says it does."""

    name: str
    op: str
    kernel: str
    isa: str
    median_ms: float
    share: float         # of the sum of node medians
    flops: float
    bytes: float
    times_ms: list       # per run, in run order

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s at the median time (0 for data movement)."""
        return self.flops / (self.median_ms * 1e6) if self.median_ms > 0 else 0.0

    @property
    def gbps(self) -> float:
        """Achieved GB/s (inputs + outputs) at the median time."""
        return self.bytes / (self.median_ms * 1e6) if self.median_ms > 0 else 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(gflops=self.gflops, gbps=self.gbps)
        return d


@dataclasses.dataclass
class OpStat:
    """One op type: its nodes' medians summed."""

    op: str
    count: int           # nodes of this op per run
    ms: float
    share: float
    flops: float
    bytes: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Profile:
    """The result of Engine.profile: `nodes` in execution order, `ops` by time (largest first),
    `total_ms` the median run, `table()`, `to_chrome_trace(path)`, `as_dict()`."""

    def __init__(self, runs: list, warmup: int):
        # runs: [(events, total_ns)], events [(name, op, kernel, isa, start_ns, end_ns, flops, bytes)]
        self.runs = len(runs)
        self.warmup = warmup
        self._raw = runs
        self.total_ms = statistics.median(total / 1e6 for _, total in runs)
        self.run_ms = [total / 1e6 for _, total in runs]
        # Time in a run outside every span: the executor's own work between nodes.
        self.overhead_ms = statistics.median(
            (total - sum(end - start for *_, start, end, _f, _b in events)) / 1e6
            for events, total in runs)

        # A node is keyed by name, op and its occurrence in a run, so unnamed or repeated
        # nodes stay apart; order is first appearance.
        rows: dict = {}
        for events, _ in runs:
            seen: dict = {}
            for name, op, kernel, isa, start, end, flops, nbytes in events:
                k = seen[(name, op)] = seen.get((name, op), -1) + 1
                row = rows.setdefault((name, op, k), dict(name=name, op=op, kernel=kernel, isa=isa,
                                                          flops=flops, bytes=nbytes, times=[]))
                row["times"].append((end - start) / 1e6)
        node_total = sum(statistics.median(r["times"]) for r in rows.values())
        self.nodes_ms = node_total
        self.nodes = []
        for r in rows.values():
            med = statistics.median(r["times"])
            self.nodes.append(NodeStat(r["name"], r["op"], r["kernel"], r["isa"], med,
                                       med / node_total if node_total > 0 else 0.0,
                                       r["flops"], r["bytes"], r["times"]))
        by_op: dict = {}
        for n in self.nodes:
            s = by_op.setdefault(n.op, OpStat(n.op, 0, 0.0, 0.0, 0.0, 0.0))
            s.count += 1
            s.ms += n.median_ms
            s.flops += n.flops
            s.bytes += n.bytes
        for s in by_op.values():
            s.share = s.ms / node_total if node_total > 0 else 0.0
        self.ops = sorted(by_op.values(), key=lambda s: (-s.ms, s.op))

    # ---- reports ----

    def table(self, top: int | None = 20) -> str:
        """The `top` slowest nodes (None: all) and every op type, as text."""
        lines = [f"{self.runs} runs ({self.warmup} warmup): median {self.total_ms:.3f} ms per run "
                 f"(min {min(self.run_ms):.3f}, max {max(self.run_ms):.3f}), executor between "
                 f"nodes {self.overhead_ms:.3f} ms",
                 f"{len(self.nodes)} nodes; shares are of the sum of node medians, "
                 f"{self.nodes_ms:.3f} ms"]
        ranked = sorted(self.nodes, key=lambda n: -n.median_ms)
        shown = ranked if top is None else ranked[:max(top, 0)]
        width = max([len("node")] + [len(n.name) for n in shown])
        width = min(width, 48)
        lines.append(f"{'node':<{width}} {'op':<18} {'kernel':<26} {'isa':<7} {'ms':>9} "
                     f"{'share':>6} {'GFLOP/s':>8} {'GB/s':>7}")
        for n in shown:
            name = n.name if len(n.name) <= width else "..." + n.name[-(width - 3):]
            lines.append(f"{name:<{width}} {n.op:<18} {n.kernel:<26} {n.isa:<7} {n.median_ms:>9.4f} "
                         f"{n.share:>6.1%} {n.gflops:>8.1f} {n.gbps:>7.1f}")
        if len(shown) < len(ranked):
            rest = ranked[len(shown):]
            lines.append(f"... {len(rest)} more nodes, {sum(n.median_ms for n in rest):.4f} ms")
        lines.append("")
        lines.append(f"{'op type':<22} {'nodes':>6} {'ms':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7}")
        for s in self.ops:
            gflops = s.flops / (s.ms * 1e6) if s.ms > 0 else 0.0
            gbps = s.bytes / (s.ms * 1e6) if s.ms > 0 else 0.0
            lines.append(f"{s.op:<22} {s.count:>6} {s.ms:>9.4f} {s.share:>6.1%} {gflops:>8.1f} "
                         f"{gbps:>7.1f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"<ember.Profile {self.runs} runs, median {self.total_ms:.3f} ms, "
                f"{len(self.nodes)} nodes>")

    def chrome_trace(self) -> dict:
        """Chrome trace-event JSON: one "X" event per node per run, runs one after another."""
        events: list = [
            {"ph": "M", "pid": 1, "tid": 1, "name": "process_name", "args": {"name": "ember"}},
            {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "nodes"}},
        ]
        offset_ns = 0
        for run, (evs, total_ns) in enumerate(self._raw):
            for name, op, kernel, isa, start, end, flops, nbytes in evs:
                events.append({"ph": "X", "pid": 1, "tid": 1, "name": name, "cat": op,
                               "ts": (offset_ns + start) / 1e3, "dur": (end - start) / 1e3,
                               "args": {"kernel": kernel, "isa": isa, "flops": flops,
                                        "bytes": nbytes, "run": run}})
            offset_ns += max(total_ns, evs[-1][5] if evs else 0)
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def to_chrome_trace(self, path: str) -> None:
        """Writes chrome_trace() to `path` (opens in ui.perfetto.dev or chrome://tracing)."""
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)

    def as_dict(self) -> dict:
        """Everything as JSON-ready values."""
        return {"runs": self.runs, "warmup": self.warmup, "total_ms": self.total_ms,
                "run_ms": self.run_ms, "nodes_ms": self.nodes_ms, "overhead_ms": self.overhead_ms,
                "nodes": [n.as_dict() for n in self.nodes], "ops": [s.as_dict() for s in self.ops]}


def _count(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**31:
        raise InputError(f"[profile] {what} must be an int >= {low}, not {value!r}")
    return value


def profile(engine, feeds: Mapping[str, Any], runs: int = 10, warmup: int = 2,
            outputs: Sequence[str] | None = None) -> Profile:
    """Runs `warmup` untimed runs, then `runs` traced ones; see Engine.profile."""
    runs = _count(runs, "runs", 1)
    warmup = _count(warmup, "warmup", 0)
    session = engine._live_session()
    if not isinstance(feeds, Mapping):
        raise InputError(f"[profile] feeds must be a dict of name -> array, not {type(feeds).__name__}")
    if outputs is not None:
        if isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs):
            raise InputError("[profile] outputs must be a list of output names")
        known = [t.name for t in engine.outputs]
        for o in outputs:
            if o not in known:
                raise InputError(f"[profile] unknown output {o!r}; outputs are: {', '.join(known)}")
    prepared = engine._prepare_feeds(feeds)
    names = list(outputs or [])
    for _ in range(warmup):
        session.run(prepared, names)
    traced = []
    for _ in range(runs):
        _, events, total_ns = session.run_profiled(prepared, names)
        traced.append((events, total_ns))
    return Profile(traced, warmup)
