"""Example third-party plugin: a text-to-video variant strategy, a CLI command and a metadata entry."""

from __future__ import annotations

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
