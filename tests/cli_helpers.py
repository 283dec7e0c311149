"""Run the `ltx-trainer` CLI in a subprocess, as a user would (tier-2 tests share this)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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


def env_without_ffmpeg(folder: Path) -> dict[str, str]:
    """Environment variables under which FFmpeg looks uninstalled, as on a machine that never had it.

    - ``PATH``: this Python's ``bin`` and a folder of links to every program on the current ``PATH`` except
      ``ffmpeg``, ``ffprobe`` and ``ffplay``.
    - ``LD_LIBRARY_PATH``: a folder of empty ``libavutil.so.N`` files. The dynamic loader searches it first and fails
      on them (``file too short``), so torchcodec cannot load FFmpeg's libraries and raises
      ``RuntimeError: Could not load libtorchcodec``. PyAV keeps working: its wheels bundle their own FFmpeg.
    """
    programs = folder / "bin"
    libraries = folder / "lib"
    programs.mkdir(parents=True, exist_ok=True)
    libraries.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            link = programs / program.name
            if program.name.startswith(("ffmpeg", "ffprobe", "ffplay")) or link.exists() or link.is_symlink():
                continue
            link.symlink_to(program)
    for version in range(55, 62):
        (libraries / f"libavutil.so.{version}").write_bytes(b"")
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(programs)]),
        "LD_LIBRARY_PATH": str(libraries),
    }
