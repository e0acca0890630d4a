"""The production layer of `ember serve`: drift monitors per model version, experiments (A/B
splits, canaries, bandits) per public model name, and the feedback that ties outcomes to
request ids. Configured per model in config.toml ([monitor], [experiment]); the statistics are
ember.monitor and ember.experiments, usable without a server.

State that must outlive the process (experiment counts, bandit posteriors) goes to the server's
StateStore, outside the watched model tree, at most once a second and at shutdown.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import shlex
import subprocess
import threading

from ember.errors import EmberError

log = logging.getLogger("ember.serve")

MAX_PENDING = 100_000     # request ids remembered for feedback


class Assignment:
    __slots__ = ("model", "experiment", "variant", "propensity", "version")

    def __init__(self, model, experiment, variant, propensity, version=None):
        self.model, self.experiment, self.variant = model, experiment, variant
        self.propensity, self.version = propensity, version


class Production:
    def __init__(self, metrics, state=None):
        from prometheus_client import Counter, Gauge
        self.metrics, self.state = metrics, state
        self.experiments: dict[str, object] = {}          # public model name -> Experiment
        self._exp_configs: dict[str, object] = {}
        self._requests: collections.OrderedDict = collections.OrderedDict()  # id -> (Assignment|None, servable labels)
        self._lock = threading.Lock()
        self._dirty = False
        r = metrics.registry
        lab = ["model", "experiment", "variant"]
        self.exp_requests = Counter("ember_experiment_requests", "Requests routed per variant",
                                    lab, registry=r)
        self.exp_feedback = Counter("ember_experiment_feedback", "Outcomes received per variant",
                                    lab, registry=r)
        self.exp_value = Counter("ember_experiment_outcome_sum", "Sum of outcome values per variant",
                                 lab, registry=r)
        self.exp_weight = Gauge("ember_experiment_weight", "Current share of traffic per variant",
                                lab, registry=r)
        self.drift_score = Gauge("ember_drift_score", "Drift score per monitored feature",
                                 ["model", "version", "feature"], registry=r)
        self.drift_alert = Gauge("ember_drift_alert", "1 while a model version's inputs or "
                                 "outputs drift beyond its thresholds", ["model", "version"],
                                 registry=r)
        self._checking: set = set()
        self._tasks: set = set()

    # ---- experiments ----

    def configure(self, name: str, config) -> None:
        """(Re)creates the experiment of a model when its [experiment] table changes."""
        spec = config.extra.get("experiment")
        if spec is None:
            self.experiments.pop(name, None)
            self._exp_configs.pop(name, None)
            return
        from ember.experiments import Experiment, ExperimentConfig
        cfg = ExperimentConfig.from_dict(spec, where=f"{name}: [experiment]")
        if self._exp_configs.get(name) == cfg:
            return
        old = self.experiments.get(name)
        if old is not None and old.config.name == cfg.name:
            saved = old.state()             # an edited experiment keeps its live counts
        else:
            saved = self.state.get(self._key(name, cfg.name)) if self.state is not None else None
        self.experiments[name] = Experiment(cfg, state=saved)
        self._exp_configs[name] = cfg
        log.info("model %s: experiment %s (%s) over %s", name, cfg.name, cfg.mode,
                 ", ".join(v.name if hasattr(v, "name") else str(v) for v in cfg.variants))

    @staticmethod
    def _key(model, experiment) -> str:
        return f"experiment/{model}/{experiment}"

    def route(self, name: str, key: str | None) -> tuple[Assignment | None, dict | None]:
        """The variant a request to `name` goes to: (assignment, target) or (None, None)."""
        exp = self.experiments.get(name)
        if exp is None:
            return None, None
        a = exp.assign(key)
        return Assignment(name, exp.config.name, a.variant, a.propensity), dict(a.target)

    def remember(self, request_id: str, assignment: Assignment | None, servable) -> None:
        with self._lock:
            self._requests[request_id] = (assignment, servable.labels, servable.monitor)
            self._requests.move_to_end(request_id)
            while len(self._requests) > MAX_PENDING:
                self._requests.popitem(last=False)

    def finished(self, assignment: Assignment | None, status: int) -> None:
        if assignment is None:
            return
        exp = self.experiments.get(assignment.model)
        if exp is None:
            return
        exp.record_request(assignment.variant, error=status >= 500)
        self.exp_requests.labels(assignment.model, assignment.experiment, assignment.variant).inc()
        self._dirty = True

    def feedback(self, request_id: str, value: float) -> dict:
        with self._lock:
            entry = self._requests.get(request_id)
        if entry is None:
            raise KeyError(request_id)
        assignment, labels, monitor = entry
        out = {"request_id": request_id, "model": labels[0], "version": labels[1]}
        if assignment is not None and assignment.model in self.experiments:
            exp = self.experiments[assignment.model]
            exp.feedback(assignment.variant, value, assignment.propensity)
            lab = (assignment.model, assignment.experiment, assignment.variant)
            self.exp_feedback.labels(*lab).inc()
            self.exp_value.labels(*lab).inc(value)
            out.update(experiment=assignment.experiment, variant=assignment.variant)
            self._dirty = True
        if monitor is not None:
            out["monitored"] = bool(monitor.feedback(request_id, value))
        return out

    def save(self, force: bool = False) -> None:
        if self.state is None or not (self._dirty or force):
            return
        self._dirty = False
        for name, exp in self.experiments.items():
            self.state.set(self._key(name, exp.config.name), exp.state())

    def update_gauges(self) -> None:
        for name, exp in self.experiments.items():
            for variant, w in exp.current_weights().items():
                self.exp_weight.labels(name, exp.config.name, variant).set(w)

    # ---- monitoring ----

    def observe(self, servable, request_id: str, rows: list, latency_s: float,
                prediction=None) -> None:
        mon = servable.monitor
        if mon is None:
            return
        for i, row in enumerate(rows):
            mon.observe(row, request_id=request_id if i == 0 else None,
                        prediction=prediction if i == 0 else None)
        mon.observe_latency(latency_s)
        if servable.labels not in self._checking:
            self._checking.add(servable.labels)
            self._spawn(self._check(servable))

    def _spawn(self, coro) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, servable) -> None:
        try:
            alerts, gauges = await asyncio.to_thread(_check_and_gauges, servable.monitor)
            self.drift_alert.labels(*servable.labels).set(gauges.pop("drift_alert", 0.0))
            top = sorted(gauges.items(), key=lambda kv: -kv[1])[:32]   # bounded series
            for name, score in top:
                self.drift_score.labels(*servable.labels, name).set(score)
            for a in alerts:
                self._alert(servable, a)
        except Exception:  # noqa: BLE001 - monitoring must never fail serving
            log.exception("drift check of %s version %s failed", *servable.labels)
            self._checking.discard(servable.labels)
            return
        # Rows that came in while this check ran may already be due for the next one.
        if servable.monitor.due():
            self._spawn(self._check(servable))
        else:
            self._checking.discard(servable.labels)

    def _alert(self, servable, alert: dict) -> None:
        name, version = servable.labels
        log.warning("drift alert: model %s version %s: %s", name, version, alert)
        cfg = servable.monitor.cfg
        if getattr(cfg, "webhook", None):
            self._spawn(_post_webhook(cfg.webhook, dict(alert, model=name, version=version)))
        if getattr(cfg, "hook", None):
            env = dict(os.environ, EMBER_MODEL=name, EMBER_VERSION=version,
                       EMBER_ALERT=str(alert))
            try:
                subprocess.Popen(shlex.split(cfg.hook), env=env, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            except OSError as e:
                log.error("drift hook %r failed to start: %s", cfg.hook, e)


def _check_and_gauges(monitor) -> tuple[list, dict]:
    """Off the event loop: a drift check can take tens of milliseconds."""
    alerts = monitor.check()
    return alerts, monitor.gauges()


async def _post_webhook(url: str, payload: dict) -> None:
    try:
        import httpx
        async with httpx.AsyncClient(timeout=10) as c:
            await c.post(url, json=payload)
    except Exception as e:  # noqa: BLE001 - an unreachable webhook is logged, not raised
        log.error("drift webhook %s failed: %s", url, e)


def build_monitor(servable) -> object | None:
    """The Monitor of a loaded version whose config has [monitor] (its baseline from
    baseline_file, run through the model, when given); runs in the loading thread."""
    spec = servable.config.extra.get("monitor")
    if spec is None:
        return None
    from ember.monitor import Monitor, MonitorConfig, load_reference
    cfg = MonitorConfig.from_dict(spec, where=f"{servable.name}: [monitor]")
    eng = servable.engine
    mon = Monitor(cfg, servable.kind, eng.inputs, eng.outputs)
    if cfg.baseline_file and servable.kind == "graph":
        path = _beside(servable.path, cfg.baseline_file)
        feeds = load_reference(path)
        n = len(next(iter(feeds.values())))
        rows = []
        for lo in range(0, n, 64):
            part = {k: v[lo:lo + 64] for k, v in feeds.items()}
            rows += mon.features_graph(part, eng.run(part))
        mon.set_baseline(rows)
    return mon


def _beside(model_path: str, file: str) -> str:
    version_dir = os.path.dirname(model_path) if os.path.isfile(model_path) else model_path
    for d in (version_dir, os.path.dirname(version_dir)):
        p = os.path.join(d, file)
        if os.path.isfile(p):
            return p
    raise EmberError(f"[monitor] baseline file {file!r} not found beside {model_path}")


def prediction_of(row: dict):
    """What a request predicted, for concept drift: the first output's class ("<output>:class"),
    else its score ("<output>:score"); None when the outputs are neither."""
    for k, v in row.items():
        if k.endswith(":class"):
            return int(v)            # categorical features are strings
    for k, v in row.items():
        if k.endswith(":score"):
            return v
    return None


def request_key(request, spec: str, body_user: str | None) -> str | None:
    """The sticky key of a request: "header:NAME" or "body:user"."""
    kind, _, name = spec.partition(":")
    if kind == "header":
        return request.headers.get(name) or None
    if kind == "body":
        return body_user
    return None
