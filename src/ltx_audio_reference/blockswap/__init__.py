"""Training-time block swap: frozen base weights streamed host-to-device around each block.

The config half (:mod:`.config`) imports no torch; the engine (:mod:`.engine`) is imported on first use.
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

_ENGINE_NAMES = ("BlockSwapEngine", "SwapStats", "freeze_base_weights", "find_transformer")

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
    if name in _ENGINE_NAMES:
        return getattr(importlib.import_module("ltx_audio_reference.blockswap.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
