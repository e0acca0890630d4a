"""The server's Prometheus metrics (GET /metrics), one registry per app so tests and embedders
can run several servers in one process. Labels: model, version, endpoint (the route's name)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 1 ms to 2 min; token gaps from 1 ms to 5 s.
_LATENCY = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_GAP = (.001, .0025, .005, .01, .02, .04, .08, .16, .32, .64, 1.28, 2.5, 5)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        mv = ["model", "version"]
        mve = mv + ["endpoint"]
        self.requests = Counter("ember_requests", "Requests finished, by HTTP status",
                                mve + ["status"], registry=r)
        self.errors = Counter("ember_request_errors", "Requests that failed, by error type",
                              mve + ["type"], registry=r)
        self.latency = Histogram("ember_request_latency_seconds", "End-to-end request latency",
                                 mve, buckets=_LATENCY, registry=r)
        self.queue = Histogram("ember_queue_time_seconds",
                               "Time a request waited before its batch (graph models) or its "
                               "first scheduled step (LLMs) started", mv, buckets=_LATENCY,
                               registry=r)
        self.ttft = Histogram("ember_time_to_first_token_seconds", "Time to first token",
                              mv, buckets=_LATENCY, registry=r)
        self.itl = Histogram("ember_inter_token_latency_seconds",
                             "Gap between successive tokens of one request", mv,
                             buckets=_TOKEN_GAP, registry=r)
        self.batch = Histogram("ember_batch_size", "Rows per graph run (dynamic batching)",
                               mv, buckets=_BATCH, registry=r)
        self.prompt_tokens = Counter("ember_prompt_tokens", "Prompt tokens processed", mv,
                                     registry=r)
        self.generation_tokens = Counter("ember_generation_tokens", "Tokens generated", mv,
                                         registry=r)
        self.in_flight = Gauge("ember_requests_in_flight", "Requests being served now", mv,
                               registry=r)
        self.kv_usage = Gauge("ember_kv_cache_usage_ratio", "Share of KV-cache blocks in use",
                              mv, registry=r)
        self.llm_running = Gauge("ember_llm_running_sequences", "Sequences the scheduler runs",
                                 mv, registry=r)
        self.llm_waiting = Gauge("ember_llm_waiting_sequences", "Sequences waiting to be scheduled",
                                 mv, registry=r)
        self.version_state = Gauge("ember_model_version_state",
                                   "1 for the state each known model version is in", mv + ["state"],
                                   registry=r)

    def forget_version(self, model: str, version: str) -> None:
        """Drops a retired version's gauges (counters and histograms keep their history)."""
        for g in (self.in_flight, self.kv_usage, self.llm_running, self.llm_waiting):
            try:
                g.remove(model, version)
            except KeyError:
                pass
