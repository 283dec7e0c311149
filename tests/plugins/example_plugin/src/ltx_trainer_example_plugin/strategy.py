"""The example strategy: stock text-to-video training under another name (imports ltx-trainer)."""

from __future__ import annotations

from typing import Any, Literal

from ltx_trainer.training_strategies import TextToVideoConfig, TextToVideoStrategy


class ExampleConfig(TextToVideoConfig):
    """Stock text-to-video options under the name ``example_t2v``."""

    name: Literal["example_t2v"] = "example_t2v"


class ExampleStrategy(TextToVideoStrategy):
    """Stock text-to-video training that also tags its checkpoints."""

    def get_checkpoint_metadata(self) -> dict[str, Any]:
        """Add a marker the tests look for."""
        return {**super().get_checkpoint_metadata(), "example_strategy": True}
