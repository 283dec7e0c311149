"""``ltx-trainer demo DIR``: write a tiny checkpoint, text encoder, dataset and config (:mod:`..testing.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo_command(
    directory: Annotated[Path, typer.Argument(help="Folder to write the demo into.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps in the config.")] = 4,
    samples: Annotated[int, typer.Option("--samples", min=2, help="Samples in the synthetic dataset.")] = 4,
) -> None:
    """Write a tiny checkpoint, text encoder, dataset and config that train on CPU in under a minute."""
    from ltx_audio_reference.testing.demo import write_demo  # noqa: PLC0415 - torch and ltx-core only when run

    console = Console()
    with console.status("Writing the demo checkpoint, text encoder and dataset..."):
        config_path = write_demo(directory, steps=steps, num_samples=samples)
    console.print(f"Demo ready. Train it with:\n  ltx-trainer train {config_path}", highlight=False)
