"""The package's own plugin, registered through the ``ltx_trainer`` entry-point group like any third party."""

from __future__ import annotations

from ltx_audio_reference.hookspecs import hookimpl
from ltx_audio_reference.registry import StrategyRegistry

PLUGIN_NAME = "audio_reference"


@hookimpl
def register_strategies(register: StrategyRegistry) -> None:
    """Register the ``audio_reference`` strategy."""
    register(
        "audio_reference",
        "ltx_audio_reference.strategies.audio_reference.config:AudioReferenceConfig",
        "ltx_audio_reference.strategies.audio_reference.strategy:AudioReferenceStrategy",
    )
