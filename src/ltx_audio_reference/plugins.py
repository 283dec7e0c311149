"""The plugin manager: built lazily, once, from the ``ltx_trainer`` entry-point group.

Environment switches:
    ``LTX_TRAINER_PLUGINS_BLOCK``: comma-separated plugin names (entry-point names) that are not loaded.
    ``LTX_TRAINER_PLUGINS_ALLOW``: when set, only these plugin names are loaded (the built-in one included).
    ``LTX_TRAINER_PLUGINS_TRACE``: when set to 1, every hook call is logged at DEBUG level.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from importlib import metadata
from typing import TypeVar

import pluggy

from ltx_audio_reference import hookspecs
from ltx_audio_reference.registry import Registry, StrategyRegistry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BLOCK_ENV = "LTX_TRAINER_PLUGINS_BLOCK"
ALLOW_ENV = "LTX_TRAINER_PLUGINS_ALLOW"
TRACE_ENV = "LTX_TRAINER_PLUGINS_TRACE"

#: The package's own plugins: entry-point name -> module, exactly as ``pyproject.toml`` declares them in the
#: ``ltx_trainer`` group (a tier-1 test compares the two). Used only where that metadata is missing.
BUILTIN_PLUGINS: dict[str, str] = {
    "audio_reference": "ltx_audio_reference.strategies.audio_reference.plugin",
    "block_swap": "ltx_audio_reference.blockswap.plugin",
    "ref_gap": "ltx_audio_reference.strategies.audio_reference.ref_gap",
    "quantization": "ltx_audio_reference.quantization.plugin",
}

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def _names_from_env(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def build_plugin_manager() -> pluggy.PluginManager:
    """Build a fresh manager: load the entry points, honour the allow/block lists, then ``check_pending()``.

    The package's own plugins are entry points of the same group, so they load like any third party. When the
    package runs from a source tree without installed metadata, every built-in plugin (:data:`BUILTIN_PLUGINS`) is
    registered directly instead, honouring the same allow and block lists.

    Returns:
        A new plugin manager. Use :func:`get_plugin_manager` for the shared one.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)

    blocked = _names_from_env(BLOCK_ENV) or set()
    allowed = _names_from_env(ALLOW_ENV)
    for name in blocked:
        pm.set_blocked(name)

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or (allowed is not None and ep.name not in allowed):
            logger.debug("Plugin %s not loaded (allow/block list)", ep.name)
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        logger.debug("Loaded plugin %s from %s", ep.name, ep.value)

    # Run from a source tree (PYTHONPATH, no installed metadata), the entry points above are missing: register every
    # built-in plugin directly, so that the host is the same with or without metadata (never 1 of 3).
    for name, module_name in BUILTIN_PLUGINS.items():
        if name in blocked or (allowed is not None and name not in allowed) or pm.is_blocked(name):
            continue
        if pm.get_plugin(name) is not None:
            continue
        module = importlib.import_module(module_name)
        if not pm.is_registered(module):
            pm.register(module, name=name)
            logger.debug("Registered built-in plugin %s without entry-point metadata", name)

    if os.environ.get(TRACE_ENV) == "1":
        pm.trace.root.setwriter(lambda msg: logger.debug("%s", msg.rstrip()))
        pm.enable_tracing()

    pm.check_pending()
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _manager  # noqa: PLW0603 - a lazily built singleton
    with _lock:
        if _manager is None:
            _manager = build_plugin_manager()
        return _manager


def reset_plugin_manager() -> None:
    """Forget the shared manager so the next :func:`get_plugin_manager` rebuilds it (tests, env changes)."""
    global _manager  # noqa: PLW0603
    with _lock:
        _manager = None


_R = TypeVar("_R", bound=Registry)


def _plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or repr(impl.plugin)


def collect(registry_cls: type[_R], pm: pluggy.PluginManager | None = None) -> _R:
    """Run the hook that fills ``registry_cls`` (its ``hook``) on every plugin and return the filled registry.

    Each implementation is called with the registry as ``register``; duplicates name the plugin that registered
    first and the one registering now.

    Args:
        registry_cls: :class:`~ltx_audio_reference.registry.StrategyRegistry`, ``ConfigFieldRegistry`` or
            ``ConditionerRegistry``.
        pm: The plugin manager (the shared one by default).
    """
    pm = pm or get_plugin_manager()
    registry = registry_cls()
    for impl in getattr(pm.hook, registry_cls.hook).get_hookimpls():
        registry.current_plugin = _plugin_name(pm, impl)
        logger.debug("%s -> %s", registry_cls.hook, registry.current_plugin)
        impl.function(register=registry)
    return registry


def collect_strategies(pm: pluggy.PluginManager | None = None) -> StrategyRegistry:
    """The registered strategies (``register_strategies`` on every plugin)."""
    return collect(StrategyRegistry, pm)
