"""Example third-party plugin: a text-to-video variant strategy, a CLI command, a metadata entry, and (when
``EXAMPLE_PLUGIN_DUMP_DIR`` is set) a dump of each rank's trainable weights at every checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from ltx_audio_reference import hookimpl


@hookimpl
def register_strategies(register: Any) -> None:  # noqa: ANN401
    """Register ``example_t2v``; the classes are imported only when the strategy is used."""
    register(
        "example_t2v",
        "ltx_trainer_example_plugin.strategy:ExampleConfig",
        "ltx_trainer_example_plugin.strategy:ExampleStrategy",
    )


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    """Add ``ltx-trainer example-hello``."""

    @cli.command("example-hello")
    def example_hello(name: str = "world") -> None:
        typer.echo(f"hello {name} from the example plugin")


@hookimpl
def checkpoint_metadata(config: Any, strategy: Any, metadata: Any) -> None:  # noqa: ANN401
    """Stamp checkpoints trained with ``example_t2v``."""
    if getattr(config.training_strategy, "name", None) == "example_t2v":
        metadata.add("example_plugin", {"trained_with": "example_t2v"})


@hookimpl
def on_checkpoint(context: Any) -> None:  # noqa: ANN401
    """Write this rank's trainable parameters, so tests can compare ranks with the exported file."""
    dump_dir = os.environ.get("EXAMPLE_PLUGIN_DUMP_DIR")
    if not dump_dir:
        return
    from safetensors.torch import save_file  # noqa: PLC0415

    rank = int(os.environ.get("RANK", "0"))
    state = {
        name: param.detach().float().cpu().contiguous()
        for name, param in context.model.named_parameters()
        if param.requires_grad
    }
    save_file(state, str(Path(dump_dir) / f"rank{rank}_step{context.step:05d}.safetensors"))
