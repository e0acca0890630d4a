"""The errors ember raises: every one is an EmberError.

ember._core maps C++ error kinds onto these classes, so C++ and Python raise the same types.
"""


class EmberError(Exception):
    """Base of every error ember raises."""


class ModelError(EmberError):
    """A model file or graph is corrupt, truncated or invalid; the message names what."""


class InputError(EmberError):
    """A feed is missing, unknown, of the wrong dtype or shape, or its plan exceeds memory_limit."""


class UnsupportedOpError(ModelError):
    """The model uses ops ember cannot run; `ops` maps each op type to its node names."""

    def __init__(self, message, ops=None):
        super().__init__(message)
        self.ops = dict(ops or {})


class InternalError(EmberError):
    """A bug in ember: please report it with the model and feeds."""
