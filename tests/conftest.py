"""Shared fixtures. Tier 2 (integration) tests skip with a reason where ltx-trainer is not importable."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest

from ltx_audio_reference import plugins

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN_SRC = REPO_ROOT / "tests" / "plugins" / "example_plugin"


def _ltx_trainer_skip_reason() -> str | None:
    try:
        importlib.import_module("ltx_trainer.trainer")
    except Exception as e:
        return (
            f"tier 2 needs ltx-trainer 1.2.0 importable ({type(e).__name__}: {e}); "
            "install it from the LTX-2 repository as the README shows"
        )
    return None


LTX_TRAINER_SKIP_REASON = _ltx_trainer_skip_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every integration test, with the reason, where ltx-trainer cannot be imported."""
    if LTX_TRAINER_SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=LTX_TRAINER_SKIP_REASON)
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front whether tier 2 runs."""
    if LTX_TRAINER_SKIP_REASON is None:
        return "tier 2 (integration): ltx-trainer importable, integration tests run"
    return f"tier 2 (integration): SKIPPED: {LTX_TRAINER_SKIP_REASON}"


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The quantized-weight cache is on by default, in the user's cache folder: tests (and the CLI runs they start)
    write it to a temporary folder instead."""
    folder = tmp_path_factory.mktemp("xdg_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture
def fresh_pm(monkeypatch: pytest.MonkeyPatch) -> Iterator[pluggy.PluginManager]:
    """A newly built plugin manager, also installed as the shared one for the test's duration."""
    plugins.reset_plugin_manager()
    pm = plugins.build_plugin_manager()
    monkeypatch.setattr(plugins, "_manager", pm)
    yield pm
    plugins.reset_plugin_manager()


@pytest.fixture(scope="session")
def example_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example third-party plugin, really installed (pip --target) into a private site folder."""
    target = tmp_path_factory.mktemp("example_plugin_site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN_SRC),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def example_plugin(
    example_plugin_site: Path, monkeypatch: pytest.MonkeyPatch, fresh_pm: pluggy.PluginManager
) -> Iterator[pluggy.PluginManager]:
    """A fresh plugin manager that also sees the installed example plugin's entry point."""
    monkeypatch.syspath_prepend(str(example_plugin_site))
    importlib.invalidate_caches()
    pm = plugins.build_plugin_manager()
    monkeypatch.setattr(plugins, "_manager", pm)
    yield pm
    for name in [m for m in sys.modules if m.startswith("ltx_trainer_example_plugin")]:
        del sys.modules[name]
