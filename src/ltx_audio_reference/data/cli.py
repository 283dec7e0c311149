"""``ltx-trainer audio-reference precompute`` and ``build-dataset``. Heavy imports stay inside the commands."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)
console = Console()

_RECIPES_HINT = "The dataset recipes need the recipes extra: pip install 'ltx-audio-reference[recipes]'"


def _fail(message: str, code: int = 1) -> typer.Exit:
    for line in message.splitlines():
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def precompute(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder of reference audio files (named by their path in it), or a .csv/.json/.jsonl manifest "
            "with a reference_audio column (named by its video column, as process_dataset.py names latents)."
        ),
    ],
    model_path: Annotated[
        Path, typer.Option("--model-path", help="LTX-2 checkpoint, or a split pack's audio VAE file.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Preprocessed dataset root; latents go to OUTPUT/reference_audio_latents/. Default for a "
            "manifest: .precomputed next to it (process_dataset.py's default). Required for a folder.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Device for the encoder.")] = "cpu",
    front_end: Annotated[
        str,
        typer.Option(
            help="Mel front end: auto (ltx-core's AudioProcessor where torchaudio loads, else plain torch), "
            "ltx-core or torch."
        ),
    ] = "auto",
    max_duration: Annotated[
        float | None, typer.Option(min=0.0, help="Trim references to at most this many seconds.")
    ] = None,
    reference_column: Annotated[str, typer.Option(help="Manifest column with the reference audio.")] = (
        "reference_audio"
    ),
    media_column: Annotated[str, typer.Option(help="Manifest column that names each sample.")] = "video",
    overwrite: Annotated[bool, typer.Option(help="Re-encode references that already have latents.")] = False,
) -> None:
    """Encode reference audio through the LTX-2 audio VAE into reference_audio_latents/ (paired by relative path)."""
    from ltx_audio_reference.data.precompute import PrecomputeError, precompute_reference_latents  # noqa: PLC0415

    if front_end not in ("auto", "ltx-core", "torch"):
        raise typer.BadParameter("choose auto, ltx-core or torch", param_hint="--front-end")
    if output is None:
        if source.is_dir():
            raise typer.BadParameter("a folder source needs --output (the preprocessed dataset root)")
        output = source.parent / ".precomputed"
    choice: Literal["auto", "ltx-core", "torch"] = front_end  # type: ignore[assignment]
    try:
        result = precompute_reference_latents(
            source,
            output,
            model_path=model_path,
            device=device,
            front_end=choice,
            max_duration=max_duration,
            overwrite=overwrite,
            reference_column=reference_column,
            media_column=media_column,
        )
    except PrecomputeError as e:
        raise _fail(f"error: {e}") from e
    console.print(
        f"[green]OK[/green]: {len(result.encoded)} encoded, {len(result.skipped)} already done -> {result.output_dir}",
        highlight=False,
    )
    if result.unpaired:
        console.print(
            f"[yellow]warning:[/yellow] {len(result.unpaired)} reference(s) have no audio_latents/ twin, "
            f"e.g. {result.unpaired[0]}",
            highlight=False,
        )


def build_dataset(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/helium/decorrelated.yaml.")],
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Folder of talking-head clips with audio, or a .csv/.json/.jsonl manifest with a video column.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder to write.")],
    caption: Annotated[str | None, typer.Option(help="Caption for every pair (overrides the recipe's).")] = None,
    column: Annotated[str | None, typer.Option(help="Manifest column with the clip paths.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Process at most this many clips.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild every pair (deletes the previous pairs).")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: one per CPU core, at most 8).")
    ] = None,
) -> None:
    """Turn talking-head clips into (reference tone, pitch-shifted target) pairs with a recipe."""
    try:
        from ltx_audio_reference.data.build import BuildError, build_dataset  # noqa: PLC0415
        from ltx_audio_reference.data.recipe import RecipeError, load_recipe  # noqa: PLC0415
    except ImportError as e:
        raise _fail(f"error: {e}. {_RECIPES_HINT}", code=2) from e

    try:
        loaded = load_recipe(recipe)
        if caption is not None:
            if not caption.strip():
                raise typer.BadParameter("the caption cannot be empty", param_hint="--caption")
            loaded = loaded.model_copy(update={"caption": caption})
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        result = build_dataset(
            loaded, input_path, output, column=column, overwrite=overwrite, limit=limit, workers=workers
        )
    except (RecipeError, BuildError) as e:
        raise _fail(f"error: {e}") from e
    except ImportError as e:
        raise _fail(f"error: {e}. {_RECIPES_HINT}", code=2) from e

    report = result.report
    table = Table(title=f"{report['recipe']} ({report['target_kind']})")
    table.add_column("clips", justify="right")
    table.add_column("outcome")
    table.add_row(str(report["kept"]), "kept")
    for reason, count in report["dropped_by_reason"].items():
        if count:
            table.add_row(str(count), f"dropped: {reason}")
    console.print(table)
    r_value = report["pearson_r_source_target"]
    console.print(
        f"Pearson r (source vs target pitch): {'n/a' if r_value is None else f'{r_value:.3f}'}", highlight=False
    )
    console.print(
        f"Manifest: {result.manifest}\nReport: {output / 'report.json'}, {result.report_png}", highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add ``precompute`` and ``build-dataset`` to the ``audio-reference`` group."""
    app.command("precompute")(precompute)
    app.command("build-dataset")(build_dataset)
