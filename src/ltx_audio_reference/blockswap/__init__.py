"""Training-time block swap: frozen base weights streamed host-to-device around each block.

- :mod:`.config`: the settings, their checks and the VRAM sizing (no torch import);
- :mod:`.engine`: the streaming engine (pinned host copies, a GPU slot ring, a copy stream, block hooks);
- :mod:`.tensors`: which tensors move, and how quantized ones flatten into plain inner tensors;
- :mod:`.plugin`: the ``block_swap`` entry point (config fields, ``validate_config``, ``configure_model``).

The engine and tensors modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ltx_audio_reference.blockswap.config import (
    BlockSwapConfig,
    SwapPlan,
    estimate_peak,
    num_blocks_from_checkpoint,
    plan_auto,
    resolve_block_swap,
    spread_blocks,
    validate_block_swap,
)

_LAZY = {
    "BlockSwapEngine": "engine",
    "SwapStats": "engine",
    "freeze_base_weights": "tensors",
    "find_transformer": "tensors",
}

__all__ = [
    "BlockSwapConfig",
    "BlockSwapEngine",
    "SwapPlan",
    "SwapStats",
    "estimate_peak",
    "find_transformer",
    "freeze_base_weights",
    "num_blocks_from_checkpoint",
    "plan_auto",
    "resolve_block_swap",
    "spread_blocks",
    "validate_block_swap",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - lazily re-exported engine objects
    if name in _LAZY:
        return getattr(importlib.import_module(f"ltx_audio_reference.blockswap.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
