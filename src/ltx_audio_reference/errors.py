"""The package's exception types, shared by the host, the bridge, the strategy and the tools.

Each one says what went wrong and how to fix it; the CLI prints its message without a traceback.
"""

from __future__ import annotations


class UnknownNameError(LookupError):
    """A lookup named something nobody registered."""


class DuplicateNameError(ValueError):
    """Two plugins registered the same name."""


class ConfigurationError(ValueError):
    """The config or its data cannot train; raised before any model loads, with a message saying how to fix it."""


class CheckpointError(ConfigurationError):
    """A checkpoint or training-state file cannot be used (incomplete, untrusted, or of another model)."""


class NonFiniteError(RuntimeError):
    """A loss, gradient norm or parameter became NaN or Inf; training stopped before it reached a checkpoint."""


__all__ = ["CheckpointError", "ConfigurationError", "DuplicateNameError", "NonFiniteError", "UnknownNameError"]
