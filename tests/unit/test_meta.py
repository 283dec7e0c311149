"""Meta-tests: every hook has a docstring, a docs entry and a test; the code is ruff-clean."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_audio_reference import hookspecs

REPO = Path(__file__).resolve().parents[2]
HOOKS = sorted(
    name for name, obj in vars(hookspecs).items() if inspect.isfunction(obj) and hasattr(obj, "ltx_trainer_spec")
)


def test_there_are_hooks() -> None:
    assert {"register_strategies", "register_commands", "configure_model", "checkpoint_metadata"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_with_params(hook: str) -> None:
    func = getattr(hookspecs, hook)
    doc = inspect.getdoc(func) or ""
    assert doc, f"hookspec {hook} has no docstring"
    for param in inspect.signature(func).parameters:
        assert f":param {param}:" in doc, f"hookspec {hook} does not document {param}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_the_plugin_docs(hook: str) -> None:
    page = (REPO / "docs" / "plugins.md").read_text()
    section = page.split("## Hooks", 1)[1].split("\n## ", 1)[0]
    assert f"`{hook}(" in section or f"`{hook}`" in section, f"docs/plugins.md's Hooks section does not list {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    tests = [p for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_meta.py"]
    assert any(hook in p.read_text() for p in tests), f"no test mentions hook {hook}"


def test_ci_runs_the_documented_setup_and_test_commands() -> None:
    development = (REPO / "docs" / "development.md").read_text()
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for command in ("bash scripts/setup.sh", ".venv/bin/python -m pytest"):
        assert f"\n{command}\n" in development, f"docs/development.md lacks {command!r} on a line of its own"
        assert f"\n{command}\n" in readme, f"README.md lacks {command!r} on a line of its own"
        assert f"\n{command}\n" in ci, f".ci/run does not run {command!r}"


def test_changelog_has_an_unreleased_section() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert "### " in unreleased


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(), reason="ruff not installed"
)
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
