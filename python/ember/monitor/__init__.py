"""ember.monitor: drift monitoring of a served model version, as a library (no HTTP).

    cfg = MonitorConfig.from_dict(table)               # the [monitor] table; see config.py
    mon = Monitor(cfg, "graph", engine.inputs, engine.outputs)
    for row in mon.features_graph(feeds, outputs):     # or mon.features_llm(...) for LLMs
        mon.observe(row, request_id, prediction)
    mon.observe_latency(seconds)
    events = mon.check()                               # drift / recovered events to log
    mon.report(histograms=True), mon.gauges(), mon.feedback(request_id, outcome)

Features: features.py; statistics and the binning rule: stats.py; the drift rule and ranking:
drift.py; concept drift: concept.py; the HTML report: html.py; `ember monitor report`: cli.py.
"""
from ember.monitor.config import MonitorConfig
from ember.monitor.features import load_reference
from ember.monitor.monitor import Monitor

__all__ = ["Monitor", "MonitorConfig", "load_reference"]
