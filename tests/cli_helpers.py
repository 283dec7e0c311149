"""Run the `ltx-trainer` CLI in a subprocess, as a user would (tier-2 tests share this)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``python -m ltx_audio_reference.cli ARGS`` with captured text output; never raises on a non-zero exit.

    ``COLUMNS`` is wide so that rich does not wrap the log lines the tests look for.
    """
    return subprocess.run(
        [sys.executable, "-m", "ltx_audio_reference.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
        timeout=timeout,
        check=False,
    )
