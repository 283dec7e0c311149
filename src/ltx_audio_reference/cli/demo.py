"""``ltx-trainer demo DIR``: write a tiny model, dataset and config (:mod:`..testing.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ltx_audio_reference.testing.demo import DEMO_MODELS, DEMO_OUTPUT_DIR


def _model_choice(value: str) -> str:
    if value not in DEMO_MODELS:
        raise typer.BadParameter(f"choose one of {', '.join(DEMO_MODELS)}")
    return value


def demo_command(
    directory: Annotated[Path, typer.Argument(help="Folder to write the demo into.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps in the config.")] = 4,
    samples: Annotated[int, typer.Option("--samples", min=2, help="Samples in the synthetic dataset.")] = 4,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            callback=_model_choice,
            help="ltx-2.3: a monolithic checkpoint and a Gemma-3 folder; ltx-2.5: a split pack (transformer, packed "
            "Gemma-4 text encoder, video and audio VAE files; needs ltx-core 1.2.0).",
        ),
    ] = DEMO_MODELS[0],
) -> None:
    """Write a tiny model, dataset and config that train on CPU in under a minute."""
    from ltx_audio_reference.errors import StorageError  # noqa: PLC0415
    from ltx_audio_reference.reliability.identity import CHECKPOINTS_DIR_NAME  # noqa: PLC0415
    from ltx_audio_reference.testing.demo import write_demo  # noqa: PLC0415 - torch and ltx-core only when run
    from ltx_audio_reference.testing.tiny_ltx25 import Ltx25NotSupportedError  # noqa: PLC0415

    console = Console()
    trained = directory / DEMO_OUTPUT_DIR / CHECKPOINTS_DIR_NAME
    if trained.is_dir() and any(trained.iterdir()):
        console.print(
            f"error: {directory} holds a demo that was trained ({trained} has its checkpoints): a new demo there would "
            f"leave them next to a model they were not trained on, and its config would be refused by `ltx-trainer "
            f"train` as another run. Choose another folder, or delete {directory} first. Nothing was written.",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    try:
        with console.status(f"Writing the {model} demo model and dataset..."):
            config_path = write_demo(directory, steps=steps, num_samples=samples, model=model)  # type: ignore[arg-type]
    except Ltx25NotSupportedError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
    except StorageError as e:
        safe = (
            f"{directory} holds an incomplete demo: each file in it is complete, but config.yaml, written last, is "
            "not there, so nothing points at it"
        )
        again = f"Free space (or choose another folder) and run `ltx-trainer demo {directory}` again; it rewrites it."
        console.print(f"error: {e.with_context(safe=e.safe or safe, next_step=again)}", style="red", markup=False)
        raise typer.Exit(1) from e
    problems, notes = _check_written(config_path)
    if problems:  # "ready" only for a demo that passes `ltx-trainer check`
        for problem in problems:
            console.print(problem, style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    for note in notes:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Demo ready. Train it with:\n  ltx-trainer train {config_path}", highlight=False)


def _check_written(config_path: Path) -> tuple[list[str], list[str]]:
    """What `ltx-trainer check` finds in the demo just written: problems with what demo wrote (none, unless the write
    went wrong), and notes about the output folder an earlier run left (not demo's to judge)."""
    from ltx_audio_reference.cli.check import check_config  # noqa: PLC0415
    from ltx_audio_reference.plugins import collect_strategies, get_plugin_manager  # noqa: PLC0415
    from ltx_audio_reference.reliability.parsing import read_yaml  # noqa: PLC0415

    data = read_yaml(config_path)
    report = check_config(data, registry=collect_strategies(), pm=get_plugin_manager(), config_dir=config_path.parent)
    earlier = [p for p in report.problems if p.startswith("config output_dir:")]
    problems = [f"the demo just written fails `ltx-trainer check`: {p}" for p in report.problems if p not in earlier]
    return problems, earlier
