"""``scripts/setup.sh`` without installing: ``--check`` on this environment, argument errors, and ``--fetch-ltx2``,
which clones the LTX-2 checkout whose preprocessing scripts ``audio-reference preprocess`` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _setup(*args: str, venv: Path | str = sys.prefix) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VENV": str(venv)},
        timeout=300,
        check=False,
    )


def test_check_verifies_this_environment_without_installing() -> None:
    result = _setup("--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "setup ok"


def test_check_of_a_missing_environment_says_how_to_make_it(tmp_path: Path) -> None:
    result = _setup("--check", "--trainer", venv=tmp_path / "nowhere")
    assert result.returncode == 2
    assert f"no environment at {tmp_path / 'nowhere'}: run bash scripts/setup.sh --trainer first" in result.stderr


def test_an_unknown_argument_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = _setup("--trainr", venv=tmp_path / "venv")
    assert result.returncode == 2
    assert "unknown argument --trainr" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_fetch_ltx2_refuses_a_folder_that_is_no_checkout(tmp_path: Path) -> None:
    result = _setup("--fetch-ltx2", str(tmp_path), venv=tmp_path / "venv")
    assert result.returncode == 2
    assert "is not an LTX-2 checkout (no packages/ltx-core/pyproject.toml)" in result.stderr


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_fetch_ltx2_clones_the_tag_once_into_the_venv(tmp_path: Path) -> None:
    # A stand-in LTX-2 repository, served by URL as GitHub serves the real one.
    upstream = tmp_path / "LTX-2"
    for name in ("ltx-core", "ltx-trainer", "ltx-pipelines"):
        (upstream / "packages" / name).mkdir(parents=True)
        (upstream / "packages" / name / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1.2.0"\n')
    (upstream / "packages" / "ltx-trainer" / "scripts").mkdir()
    (upstream / "packages" / "ltx-trainer" / "scripts" / "process_dataset.py").write_text("# upstream\n")
    _git("init", "-q", cwd=upstream)
    _git("add", ".", cwd=upstream)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "release", cwd=upstream)
    _git("tag", "v1.2.0", cwd=upstream)
    (upstream / "later.txt").write_text("after the tag\n")
    _git("add", ".", cwd=upstream)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "later", cwd=upstream)

    venv = tmp_path / "venv"
    result = _setup("--fetch-ltx2", f"file://{upstream}@v1.2.0", venv=venv)
    assert result.returncode == 0, result.stderr
    checkout = venv / "src" / "LTX-2"
    assert (checkout / "packages" / "ltx-trainer" / "scripts" / "process_dataset.py").is_file()
    assert not (checkout / "later.txt").exists()  # the tag, not the branch head
    assert f"LTX-2 checkout: {checkout}" in result.stdout
    again = _setup("--fetch-ltx2", f"file://{upstream}@v1.2.0", venv=venv)
    assert again.returncode == 0, again.stderr
    assert "LTX-2 v1.2.0 already in" in again.stdout
