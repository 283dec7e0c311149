"""Which process is the run's main one: torch-free, so the CLI can ask without importing the trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping


def is_global_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is the run's first one over all machines: ``RANK`` 0 (``LOCAL_RANK`` 0 without it)."""
    environ = os.environ if environ is None else environ
    return environ.get("RANK", environ.get("LOCAL_RANK", "0")) == "0"
