"""The ``audio_reference`` IC-LoRA strategy: a clean reference audio clip conditions joint audio+video generation.

One folder holds the whole strategy, the way peft keeps a tuner under ``tuners/<method>/``:

- :mod:`.plugin`: the entry point (hook implementations: strategy, LoRA presets, validation placement, metadata);
- :mod:`.config`: :class:`~.config.AudioReferenceConfig` (validates without ltx-trainer);
- :mod:`.strategy`: the ltx-trainer ``TrainingStrategy`` adapter, the only file on ltx-trainer's API;
- :mod:`.positions`, :mod:`.inputs`, :mod:`.loss`: the math (torch and ltx-core only);
- :mod:`.lora_targets`: the LoRA presets; :mod:`.ref_gap`: the reference-gap probe plugin.

Importing this package imports neither torch nor ltx-trainer.
"""

from __future__ import annotations

from typing import Any

#: ``training_strategy.name`` of this strategy.
STRATEGY_NAME = "audio_reference"

__all__ = ["STRATEGY_NAME", "AudioReferenceConfig"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - the config class, imported on first use
    if name == "AudioReferenceConfig":
        from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415

        return AudioReferenceConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
