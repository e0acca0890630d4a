"""A/B tests, canaries and bandits over model variants, as a library (the server calls it).

    cfg = ExperimentConfig.from_dict(table, where)   # the [experiment] table of config.toml
    exp = Experiment(cfg, state=saved)               # saved: an earlier exp.state()
    a = exp.assign(key)                              # -> Assignment(variant, target, propensity, sticky)
    exp.record_request(a.variant, error=False)
    exp.feedback(a.variant, value, a.propensity)
    exp.report(); exp.current_weights(); exp.state()

ember.experiments.stats (tests, sample sizes, SRM, IPW) and ember.experiments.bandit (policies)
work alone too.
"""

__all__ = ["Assignment", "Experiment", "ExperimentConfig", "unit_hash"]

_HOMES = {"ExperimentConfig": "ember.experiments.config", "Assignment": "ember.experiments.experiment",
          "Experiment": "ember.experiments.experiment", "unit_hash": "ember.experiments.experiment"}


def __getattr__(name):
    # Lazy: `ember --help` registers `ember experiment` without importing scipy.
    if name in _HOMES:
        import importlib
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ember.experiments' has no attribute {name!r}")
