"""The plugin host: lazy manager, entry points, allow/block lists, check_pending, tracing."""

from __future__ import annotations

import logging
import types
from importlib import metadata
from pathlib import Path

import pluggy
import pytest
import typer

from ltx_audio_reference import hookimpl, plugins
from ltx_audio_reference.blockswap import plugin as block_swap_hooks
from ltx_audio_reference.registry import ConditionerRegistry, ConfigFieldRegistry
from ltx_audio_reference.strategies.audio_reference import plugin as builtin


def test_get_plugin_manager_is_lazy_and_built_once() -> None:
    plugins.reset_plugin_manager()
    assert plugins._manager is None  # nothing is built at import time
    first = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is first
    plugins.reset_plugin_manager()
    assert plugins.get_plugin_manager() is not first
    plugins.reset_plugin_manager()


def test_builtin_plugins_come_from_the_entry_point_group() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert eps["audio_reference"] == "ltx_audio_reference.strategies.audio_reference.plugin"
    assert eps["block_swap"] == "ltx_audio_reference.blockswap.plugin"
    pm = plugins.build_plugin_manager()
    assert pm.get_plugin("audio_reference") is builtin
    assert pm.get_plugin("block_swap") is block_swap_hooks


def test_builtin_strategy_is_registered_through_the_hook(fresh_pm: pluggy.PluginManager) -> None:
    registry = plugins.collect_strategies(fresh_pm)
    entry = registry.get("audio_reference")
    assert entry.plugin == "audio_reference"
    assert registry.available()[:3] == ["text_to_video", "video_to_video", "flexible"]


def test_block_list_env_skips_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.BLOCK_ENV, "audio_reference")
    pm = plugins.build_plugin_manager()
    assert pm.get_plugin("audio_reference") is None
    assert pm.is_blocked("audio_reference")
    assert "audio_reference" not in plugins.collect_strategies(pm)


def test_allow_list_env_loads_only_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.ALLOW_ENV, "block_swap")
    pm = plugins.build_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == ["block_swap"]


def test_check_pending_rejects_a_misspelled_hook(fresh_pm: pluggy.PluginManager) -> None:
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def register_strategy(register: object) -> None:  # misspelled: the spec is register_strategies
        pass

    plugin.register_strategy = register_strategy
    fresh_pm.register(plugin, name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="register_strategy"):
        fresh_pm.check_pending()


def test_trace_env_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(plugins.TRACE_ENV, "1")
    pm = plugins.build_plugin_manager()
    with caplog.at_level(logging.DEBUG, logger="ltx_audio_reference.plugins"):
        pm.hook.validate_config(config=None)
    assert any("validate_config" in r.getMessage() for r in caplog.records)


def test_third_party_plugin_is_found_through_its_entry_point(example_plugin: pluggy.PluginManager) -> None:
    assert example_plugin.get_plugin("example") is not None
    registry = plugins.collect_strategies(example_plugin)
    entry = registry.get("example_t2v")
    assert entry.plugin == "example"
    # Listing strategies does not import the plugin's strategy module (it needs ltx-trainer).
    assert isinstance(entry.config_ref, str)


def test_register_reference_conditioners_gives_the_training_placement(fresh_pm: pluggy.PluginManager) -> None:
    from ltx_audio_reference.strategies.audio_reference.positions import audio_reference_conditioner  # noqa: PLC0415

    registry = plugins.collect(ConditionerRegistry, fresh_pm)
    assert registry.get("audio_reference", "audio") is audio_reference_conditioner
    assert registry.get("flexible", "audio") is None


def test_register_config_fields_adds_block_swap_knobs(fresh_pm: pluggy.PluginManager) -> None:
    fields = {(e.owner, e.name): e.plugin for e in plugins.collect(ConfigFieldRegistry, fresh_pm)}
    assert fields[("acceleration", "block_swap_blocks")] == "block_swap"
    assert fields[("root", "block_swap")] == "block_swap"


class _CommandsPlugin:
    @hookimpl
    def register_commands(self, cli: typer.Typer) -> None:
        @cli.command("ping")
        def ping() -> None:
            typer.echo("pong")


def test_register_commands_adds_to_the_cli(fresh_pm: pluggy.PluginManager) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from ltx_audio_reference.cli import build_app  # noqa: PLC0415

    fresh_pm.register(_CommandsPlugin(), name="commands")
    result = CliRunner().invoke(build_app(), ["ping"])
    assert result.exit_code == 0
    assert result.output == "pong\n"


def test_the_builtin_plugin_table_is_the_pyproject_entry_point_group() -> None:
    import tomllib  # noqa: PLC0415

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"][plugins.ENTRY_POINT_GROUP] == plugins.BUILTIN_PLUGINS


def test_without_entry_point_metadata_every_builtin_plugin_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # A source tree run by PYTHONPATH has no installed metadata: the group is empty. Before, only audio_reference
    # was registered then, so the block-swap config keys were refused as unknown and ref_gap never ran.
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda **_: [])
    pm = plugins.build_plugin_manager()
    assert sorted(name for name, _ in pm.list_name_plugin()) == sorted(plugins.BUILTIN_PLUGINS)
    assert pm.get_plugin("block_swap") is block_swap_hooks
    fields = {(e.owner, e.name) for e in plugins.collect(ConfigFieldRegistry, pm)}
    assert ("acceleration", "block_swap_blocks") in fields
    assert [impl.plugin_name for impl in pm.hook.on_checkpoint.get_hookimpls()] == ["ref_gap"]
    # The allow and block lists hold for the fallback too.
    monkeypatch.setenv(plugins.BLOCK_ENV, "ref_gap")
    monkeypatch.setenv(plugins.ALLOW_ENV, "ref_gap,block_swap")
    pm = plugins.build_plugin_manager()
    assert [name for name, plugin in pm.list_name_plugin() if plugin is not None] == ["block_swap"]
    assert pm.is_blocked("ref_gap")
