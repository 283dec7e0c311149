"""Tier 2: ``scripts/setup.sh --check --trainer`` on this environment, with FFmpeg hidden as on a fresh machine.

Before, the script's import check ran ``import torchcodec``, which without FFmpeg's libraries raises ``RuntimeError:
Could not load libtorchcodec``: the script died in that traceback (exit 1) before its own "FFmpeg is not installed"
message. Now it finishes what works without FFmpeg (imports, the bridge, the demo trains on precomputed latents),
then names what is missing, what needs it, and the install lines, and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import env_without_ffmpeg

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), "--check", "--trainer"],
        capture_output=True,
        text=True,
        env={**os.environ, "VENV": sys.prefix, **env},
        timeout=600,
        check=False,
    )


def test_without_ffmpeg_the_trainer_check_finishes_names_the_install_lines_and_exits_0(tmp_path: Path) -> None:
    hidden = env_without_ffmpeg(tmp_path)
    # The environment really lacks FFmpeg: torchcodec, which the old check imported, cannot load.
    probe = subprocess.run(
        [sys.executable, "-c", "import torchcodec"],
        capture_output=True,
        text=True,
        env={**os.environ, **hidden},
        check=False,
    )
    assert probe.returncode == 1
    assert "Could not load libtorchcodec" in probe.stderr

    result = _check(hidden)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "demo trained" in result.stdout  # what works without FFmpeg was finished first
    assert "FFmpeg is not installed (no ffmpeg program on PATH)" in result.stderr
    assert "torchcodec cannot load FFmpeg's libraries" in result.stderr
    for line in ("sudo apt-get install ffmpeg", "conda install -c conda-forge ffmpeg", "brew install ffmpeg"):
        assert line in result.stderr
    assert "audio-reference preprocess" in result.stderr  # what needs it
    assert "bash scripts/setup.sh --check --trainer" in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("setup ok (trainer, without FFmpeg")
