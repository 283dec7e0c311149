"""The ``ltx-trainer audio-reference ...`` commands: ``build-dataset``, ``preprocess``, ``precompute``, ``inspect`` and
``eval``.

The CLI adds this group itself (:func:`ltx_audio_reference.cli.build_app`); no library module imports the CLI. Every
command's rendering
and progress bars live here; the libraries it drives (:mod:`ltx_audio_reference.data`,
:mod:`ltx_audio_reference.evaluation`) are imported inside the commands, so building the CLI stays fast and never
imports torch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from ltx_audio_reference.data.media_tools import RECIPES_FIX

if TYPE_CHECKING:
    from ltx_audio_reference.evaluation.lora_inspect import LoraDistance, LoraReport, ModuleNorms

logger = logging.getLogger(__name__)
console = Console()

_ARMS_HELP = "lora, base, overlap"


@contextmanager
def progress_bar(description: str, *fields: str) -> Iterator[Any]:
    """A rich progress bar; yields ``update(done, total, **fields)`` for a library's progress callback."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(" ".join(f"{name} {{task.fields[{name}]}}" for name in fields)))
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(description, total=None, **dict.fromkeys(fields, 0))

        def update(done: int, total: int, **values: Any) -> None:  # noqa: ANN401
            progress.update(task, completed=done, total=total, **values)

        yield update


_EVAL_SAFE = (
    "each reference tone and each finished arm's outputs in --out are complete (an arm's files appear only once it "
    "is done); sweep.json and sweep.png are written last, so they were not"
)
_EVAL_NEXT = "Free space (or make --out writable) and run the same eval again; it starts over."
_RECIPES_HINT = f"The dataset recipes need the recipes extra: {RECIPES_FIX}"
_SHOWN_DROPS = 5


def _check_device(device: str) -> None:
    """Stop with one line, before anything loads or is written, when ``--device`` cannot run here."""
    from ltx_audio_reference.reliability.preflight import device_problem  # noqa: PLC0415

    if (problem := device_problem(device)) is not None:
        raise _fail(f"error: {problem}", code=2)


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
    from ltx_audio_reference.data.media_tools import MissingToolError  # noqa: PLC0415
    from ltx_audio_reference.data.precompute import PrecomputeError, precompute_reference_latents  # noqa: PLC0415
    from ltx_audio_reference.errors import StorageError  # noqa: PLC0415

    if front_end not in ("auto", "ltx-core", "torch"):
        raise typer.BadParameter("choose auto, ltx-core or torch", param_hint="--front-end")
    if output is None:
        if source.is_dir():
            raise typer.BadParameter("a folder source needs --output (the preprocessed dataset root)")
        output = source.parent / ".precomputed"
    choice: Literal["auto", "ltx-core", "torch"] = front_end  # type: ignore[assignment]
    _check_device(device)
    try:
        with progress_bar("Encoding reference audio") as update:
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
                progress=update,
            )
    except (PrecomputeError, MissingToolError, StorageError) as e:
        raise _fail(f"error: {e}") from e
    # Every file written passed the data check `ltx-trainer check` runs on audio latents (precompute refuses others).
    console.print(
        f"[green]OK[/green]: {len(result.encoded)} encoded, {len(result.skipped)} already done -> {result.output_dir}",
        highlight=False,
    )
    if result.warnings:  # each was logged as the files were measured
        console.print(f"[yellow]{len(result.warnings)} warning(s)[/yellow] above: read them", highlight=False)
    if result.unpaired:
        console.print(
            f"[yellow]warning:[/yellow] {len(result.unpaired)} reference(s) have no audio_latents/ twin, "
            f"e.g. {result.unpaired[0]}",
            highlight=False,
        )


def _verdict(output: Path, model_path: Path) -> int:
    """``check``'s data verdict on a preprocessed folder for the audio_reference strategy; the problem count."""
    from ltx_audio_reference.data.check import check_strategy_data  # noqa: PLC0415
    from ltx_audio_reference.plugins import collect_strategies  # noqa: PLC0415

    strategy = collect_strategies().get("audio_reference").config_cls()
    report = check_strategy_data(output, strategy, batch_size=1, model_path=model_path)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if report.problems:
        console.print(f"[red]check: {len(report.problems)} problem(s) in {output}[/red]", highlight=False)
    else:
        folders = ", ".join(f"{name}/" for name in strategy.get_data_sources())
        console.print(f"[green]check: OK[/green]: {report.samples} samples in {output} ({folders})", highlight=False)
    return len(report.problems)


def preprocess_command(  # noqa: PLR0913, PLR0917 - every option is a CLI flag
    manifest: Annotated[
        Path,
        typer.Argument(
            help="A .csv/.json/.jsonl manifest with video, caption and reference_audio columns (build-dataset's "
            "dataset.json); paths relative to its folder.",
            show_default=False,
        ),
    ],
    model_path: Annotated[
        Path, typer.Option("--model-path", help="The LTX-2 checkpoint, or a split pack's transformer file.")
    ],
    text_encoder_path: Annotated[
        Path,
        typer.Option("--text-encoder-path", help="The Gemma folder, or a split pack's packed text-encoder file."),
    ],
    resolution_buckets: Annotated[
        str,
        typer.Option(
            "--resolution-buckets",
            help="WIDTHxHEIGHTxFRAMES, several joined by ';' (e.g. 768x512x121): upstream's buckets. Width and "
            "height are multiples of 32, frames a multiple of 8 plus 1.",
        ),
    ],
    video_vae_path: Annotated[
        Path | None, typer.Option("--video-vae-path", help="A split pack's video VAE file (LTX-2.5).")
    ] = None,
    audio_vae_path: Annotated[
        Path | None, typer.Option("--audio-vae-path", help="A split pack's audio VAE file (LTX-2.5).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Preprocessed dataset root. Default: .precomputed next to the manifest."),
    ] = None,
    ltx2: Annotated[
        Path | None,
        typer.Option(
            "--ltx2",
            help="An LTX-2 checkout at the installed ltx-trainer's tag, for its scripts/process_dataset.py. Default: "
            "$LTX2_CHECKOUT, the folder ltx-trainer was installed from, or .venv/src/LTX-2 (setup.sh --trainer).",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Torch device (default: cuda if available, else cpu).")] = None,
    reference_column: Annotated[str, typer.Option(help="Manifest column with the reference audio.")] = (
        "reference_audio"
    ),
    video_column: Annotated[str, typer.Option(help="Manifest column with the clips.")] = "video",
    caption_column: Annotated[str, typer.Option(help="Manifest column with the captions.")] = "caption",
    front_end: Annotated[
        str, typer.Option(help="Mel front end of the reference step: auto, ltx-core or torch.")
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option(help="Redo everything (deletes the output's four data folders first).")
    ] = False,
) -> None:
    """Clips to latents: ltx-trainer's own preprocessing, then the reference latents, then check's verdict.

    Runs upstream's process_dataset.py (captions -> conditions/, video -> latents/, each clip's sound ->
    audio_latents/), then encodes the reference column into reference_audio_latents/. Every input is checked before
    anything loads or is written; finished files are kept, so an interrupted run resumes when rerun.
    """
    from ltx_audio_reference.data.media_tools import MissingToolError  # noqa: PLC0415
    from ltx_audio_reference.data.preprocess import (  # noqa: PLC0415
        PreprocessError,
        PreprocessSettings,
        plan_preprocess,
        run_references,
        run_upstream,
    )

    if front_end not in ("auto", "ltx-core", "torch"):
        raise typer.BadParameter("choose auto, ltx-core or torch", param_hint="--front-end")
    if device is None:
        import torch  # noqa: PLC0415

        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = PreprocessSettings(
        manifest=manifest,
        model_path=model_path,
        text_encoder_path=text_encoder_path,
        resolution_buckets=resolution_buckets,
        video_vae_path=video_vae_path,
        audio_vae_path=audio_vae_path,
        output=output,
        ltx2=ltx2,
        device=device,
        reference_column=reference_column,
        video_column=video_column,
        caption_column=caption_column,
        front_end=front_end,
        overwrite=overwrite,
    )
    try:
        with console.status("Checking the manifest, every clip and reference, and the model files..."):
            plan = plan_preprocess(settings)
        buckets = ";".join(f"{b.width}x{b.height}x{b.frames}" for b in plan.buckets)
        console.print(
            f"{len(plan.rows)} clips, buckets {buckets}, on {device}; ltx-trainer {plan.checkout.version}'s scripts "
            f"in {plan.checkout.root} ({plan.checkout.found_by}) -> {plan.output}"
            + (" (resuming: finished files are kept)" if plan.resumed else ""),
            highlight=False,
            soft_wrap=True,
        )

        console.print(
            "[bold]Step 1/3[/bold]: captions -> conditions/, video -> latents/, each clip's sound -> audio_latents/ "
            "(ltx-trainer's process_dataset.py)",
            highlight=False,
        )
        seconds = run_upstream(plan)
        console.print(f"Upstream preprocessing done in {seconds:.0f} s", highlight=False)
        console.print("[bold]Step 2/3[/bold]: reference audio -> reference_audio_latents/", highlight=False)
        with progress_bar("Encoding reference audio") as update:
            references = run_references(plan, progress=update)
    except MissingToolError as e:
        raise _fail(f"error: {e}", code=2) from e
    except PreprocessError as e:
        raise _fail(f"error: {e}") from e
    except KeyboardInterrupt as e:
        again = "rerun the same command without --overwrite" if overwrite else "rerun the same command"
        console.print(f"Interrupted. Every finished file is kept; {again} to resume.", style="yellow")
        raise typer.Exit(130) from e
    console.print(
        f"Reference latents: {len(references.encoded)} encoded, {len(references.skipped)} already done",
        highlight=False,
    )
    console.print("[bold]Step 3/3[/bold]: check", highlight=False)
    if _verdict(plan.output, plan.pack.model_path):
        raise typer.Exit(1)
    console.print(
        f"Next: set data.preprocessed_data_root: {plan.output.resolve()} in your training config, then\n"
        "  ltx-trainer check CONFIG && ltx-trainer train CONFIG",
        highlight=False,
        soft_wrap=True,
    )


def build_dataset(
    recipe: Annotated[
        Path,
        typer.Argument(help="Recipe YAML, or a shipped recipe's name: helium/decorrelated or helium/bounded."),
    ],
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
        from ltx_audio_reference.data.media_tools import MissingToolError  # noqa: PLC0415
        from ltx_audio_reference.data.recipe import RecipeError, load_recipe  # noqa: PLC0415
        from ltx_audio_reference.errors import StorageError  # noqa: PLC0415
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
        with progress_bar(f"{loaded.name}: building pairs", "kept", "dropped") as update:
            result = build_dataset(
                loaded,
                input_path,
                output,
                column=column,
                overwrite=overwrite,
                limit=limit,
                workers=workers,
                progress=lambda done, total, counts: update(
                    done, total, kept=counts.get("kept", 0), dropped=counts.get("dropped", 0)
                ),
            )
    except (RecipeError, BuildError, StorageError) as e:
        raise _fail(f"error: {e}") from e
    except MissingToolError as e:
        raise _fail(f"error: {e}", code=2) from e
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
    # A clip that cannot be read is usually a wrong path or a broken file: name them, not only in report.json.
    unreadable = [r for r in result.records if r.get("reason") in ("unreadable", "error")]
    for record in unreadable[:_SHOWN_DROPS]:
        line = f"  {record['reason']}: {record['source']}: {record.get('detail')}"
        console.print(line, highlight=False, markup=False)
    if len(unreadable) > _SHOWN_DROPS:
        console.print(f"  ... and {len(unreadable) - _SHOWN_DROPS} more in report.json", highlight=False)
    r_value = report["pearson_r_source_target"]
    kept = report["kept"]
    few = f" (from {kept} pairs: too few to mean much; about 50 make it telling)" if kept < 50 else ""
    console.print(
        f"Pearson r (source vs target pitch): {'n/a' if r_value is None else f'{r_value:.3f}'}{few}", highlight=False
    )
    console.print(
        f"Manifest: {result.manifest}\nReport: {output / 'report.json'}, {result.report_png}", highlight=False
    )
    if report["kept"] == 0:
        raise _fail(
            f"error: no pair was kept, so the dataset in {output} is empty and nothing could train on it: every clip "
            "was dropped (reasons above, per clip in report.json). Check the clips (speech with audio) and the "
            "recipe's analysis and tolerance settings"
        )


def _render_report(report: LoraReport, *, per_module: bool) -> None:
    from ltx_audio_reference.evaluation.lora_inspect import module_kind  # noqa: PLC0415

    summary = Table(title=f"LoRA {report.path}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    convention = "ComfyUI (diffusion_model. + lora_A/lora_B, no alpha)"
    summary.add_row("tensors", str(report.num_tensors))
    summary.add_row("dtypes", ", ".join(f"{d} x{n}" for d, n in report.dtypes.items()) or "-")
    finite = f"[red]no ({len(report.non_finite_tensors)} tensors)[/red]" if report.non_finite_tensors else "yes"
    summary.add_row("finite", finite)
    summary.add_row("keys", f"[red]{len(report.bad_keys)} not {convention}[/red]" if report.bad_keys else convention)
    summary.add_row(
        "format", report.key_format if report.key_format == "comfyui" else f"[red]{report.key_format}[/red]"
    )
    summary.add_row("preset", f"{report.preset} ({report.num_blocks} blocks, {len(report.modules)} modules)")
    summary.add_row("rank", ", ".join(map(str, report.ranks)) or "-")
    summary.add_row("||B A|| total", f"{report.total_delta_norm:.6g}")
    console.print(summary)

    if report.metadata:
        metadata = Table(title="Metadata")
        metadata.add_column("key")
        metadata.add_column("value", overflow="fold")
        for key, value in report.metadata.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            metadata.add_row(key, shown if len(shown) <= 200 else shown[:197] + "...")
        console.print(metadata)

    norms = Table(title="Weight norms per module" if per_module else "Weight norms per module kind (over blocks)")
    if per_module:
        norms.add_column("module", no_wrap=True)
        for column in ("rank", "out x in", "||A||", "||B||", "||BA||"):
            norms.add_column(column, justify="right")
        for m in report.modules:
            norms.add_row(
                m.module,
                str(m.rank),
                f"{m.out_features} x {m.in_features}",
                f"{m.norm_a:.3g}",
                f"{m.norm_b:.3g}",
                f"{m.norm_delta:.3g}",
            )
    else:
        norms.add_column("module", no_wrap=True)
        for column in ("blocks", "||A|| mean", "||B|| mean", "||BA|| min", "||BA|| median", "||BA|| max"):
            norms.add_column(column, justify="right")
        kinds: dict[str, list[ModuleNorms]] = {}
        for m in report.modules:
            kinds.setdefault(module_kind(m.module), []).append(m)
        for kind, items in kinds.items():
            deltas = [m.norm_delta for m in items]
            norms.add_row(
                kind,
                str(len(items)),
                f"{statistics.fmean(m.norm_a for m in items):.3g}",
                f"{statistics.fmean(m.norm_b for m in items):.3g}",
                f"{min(deltas):.3g}",
                f"{statistics.median(deltas):.3g}",
                f"{max(deltas):.3g}",
            )
    if report.modules:
        console.print(norms)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False, soft_wrap=True)


def _render_distance(distance: LoraDistance) -> None:
    table = Table(title="Distance (relative to the first file)", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("||dW2 - dW1|| / ||dW1||  (dW = B @ A)", f"{distance.relative_delta_distance:.6g}")
    raw = distance.relative_raw_distance
    table.add_row("||T2 - T1|| / ||T1||  (raw A, B tensors)", "-" if raw is None else f"{raw:.6g}")
    table.add_row("||dW1||, ||dW2||", f"{distance.delta_norm_reference:.6g}, {distance.delta_norm_other:.6g}")
    table.add_row("modules compared", str(distance.modules_compared))
    if distance.modules_only_in_reference or distance.modules_only_in_other:
        table.add_row(
            "modules in one file only",
            f"{len(distance.modules_only_in_reference)} in the first, {len(distance.modules_only_in_other)} in the "
            "second (counted as zero deltas)",
        )
    console.print(table)


def inspect_command(
    lora: Annotated[Path, typer.Argument(help="An exported LoRA (.safetensors).", show_default=False)],
    other: Annotated[
        Path | None, typer.Argument(help="A second LoRA: also report its distance from the first.", show_default=False)
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON document instead of tables (NaN and Infinity become null; non_finite_values lists "
            "where each was).",
        ),
    ] = False,
    modules: Annotated[
        bool, typer.Option("--modules", help="One norm row per module instead of per module kind.")
    ] = False,
) -> None:
    """Inspect a LoRA (keys, finiteness, preset, metadata, norms); with two files, also their relative distance.

    Exits 1 on non-finite tensors, unknown or alpha keys, or unpaired factors, naming each tensor; 2 on an unreadable
    file.
    """
    from ltx_audio_reference.evaluation.lora_inspect import (  # noqa: PLC0415
        LoraFileError,
        inspect_lora,
        lora_distance,
        strict_json,
    )

    paths = [lora] if other is None else [lora, other]
    try:
        reports = [inspect_lora(path) for path in paths]
        distance = lora_distance(lora, other) if other is not None else None
    except (LoraFileError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if json_output:
        document: dict[str, Any] = {"files": [r.to_dict() for r in reports]}
        if distance is not None:
            document["distance"] = distance.to_dict()
        document, non_finite = strict_json(document)  # NaN and Infinity are not JSON: null, and where they were
        document["non_finite_values"] = non_finite
        typer.echo(json.dumps(document, indent=2, allow_nan=False))
    else:
        for report in reports:
            _render_report(report, per_module=modules)
        if distance is not None:
            _render_distance(distance)
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


def _parse_dims(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        width, height, frames = (int(v) for v in value.replace("x", ",").split(","))
    except ValueError as e:
        raise typer.BadParameter(f"expected WIDTH,HEIGHT,FRAMES such as 512,512,121, got {value!r}") from e
    return width, height, frames


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    from ltx_audio_reference.reliability.parsing import DuplicateKeyError, load_yaml  # noqa: PLC0415

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--validation")
        if key.strip() in overrides:
            raise typer.BadParameter(f"{key.strip()} is given twice; give it once", param_hint="--validation")
        try:
            overrides[key.strip()] = load_yaml(value, f"--validation {key.strip()}")
        except (DuplicateKeyError, yaml.YAMLError) as e:
            raise typer.BadParameter(str(e), param_hint="--validation") from e
    return overrides


def _parse_scales(value: str | None) -> list[float] | None:
    if value is None:
        return None
    scales = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            scale = float(item)
        except ValueError as e:
            raise typer.BadParameter(f"expected numbers such as 0,0.5,1,3, got {item!r}") from e
        if not (math.isfinite(scale) and scale >= 0):
            raise typer.BadParameter(f"scales must be finite and >= 0 (0 = off), got {item.strip()!r}")
        scales.append(scale)
    if not scales:
        raise typer.BadParameter("give at least one scale, e.g. 0")
    return scales


def eval_command(  # noqa: PLR0913, PLR0917 - every option is a CLI flag
    config: Annotated[
        Path,
        typer.Argument(help="The training YAML: model paths, validation (guidance, dims, steps), strategy placement."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for references, outputs, sweep.json, sweep.png.")],
    lora: Annotated[Path | None, typer.Option("--lora", help="The LoRA to evaluate (lora and overlap arms).")] = None,
    arms: Annotated[
        str | None, typer.Option("--arms", help=f"Comma-separated arms (default: all of {_ARMS_HELP}).")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Fixed prompt (default: the config's first validation prompt).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Fixed seed (default: validation.seed).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Consecutive seeds per tone (more points).")] = 1,
    tones: Annotated[int, typer.Option("--tones", min=2, help="Reference tones, log-spaced.")] = 8,
    f0_min: Annotated[float, typer.Option("--f0-min", help="Lowest reference F0 (Hz).")] = 90.0,
    f0_max: Annotated[float, typer.Option("--f0-max", help="Highest reference F0 (Hz).")] = 300.0,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Denoising steps (default: validation's).")
    ] = None,
    video_dims: Annotated[
        str | None, typer.Option("--video-dims", help="WIDTH,HEIGHT,FRAMES (default: validation.video_dims).")
    ] = None,
    audio_only: Annotated[
        bool, typer.Option("--audio-only", help="Generate audio alone (no video stream, no video decoder).")
    ] = False,
    validation: Annotated[
        list[str] | None,
        typer.Option(
            "--validation",
            help="Override a validation setting, KEY=VALUE with a YAML value (repeatable), e.g. audio_cfg_scale=5.",
        ),
    ] = None,
    reference_guidance: Annotated[
        str | None,
        typer.Option(
            "--reference-guidance",
            help="Comma-separated reference-guidance scales, each an extra arm next to every arm (0 = off, the "
            "plain arm; 3 adds lora_rg3, ...), e.g. 0,0.5,1,3. Default: training_strategy."
            "validation_reference_guidance.",
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the CI.")] = 2000,
    device: Annotated[str | None, typer.Option("--device", help="Torch device (default: cuda if available).")] = None,
) -> None:
    """Pitch sweep: output F0 against reference F0 for the LoRA, the base model and the overlap ablation.

    With --reference-guidance, every arm is also sampled with each reference-guidance scale.
    """
    from ltx_audio_reference.data.media_tools import MissingToolError  # noqa: PLC0415
    from ltx_audio_reference.errors import StorageError  # noqa: PLC0415
    from ltx_audio_reference.evaluation.sweep import ARMS, SweepSettings, run_sweep  # noqa: PLC0415

    if device is not None:
        _check_device(device)
    settings = SweepSettings(
        config=config,
        out=out,
        lora=lora,
        arms=[a.strip() for a in arms.split(",") if a.strip()] if arms else ARMS,
        prompt=prompt,
        seed=seed,
        num_seeds=seeds,
        num_tones=tones,
        f0_min_hz=f0_min,
        f0_max_hz=f0_max,
        inference_steps=steps,
        video_dims=_parse_dims(video_dims),
        generate_video=not audio_only,
        bootstrap=bootstrap,
        device=device,
        validation_overrides=_parse_overrides(validation or []),
        reference_guidance=_parse_scales(reference_guidance),
    )
    try:
        result = run_sweep(settings)
    except StorageError as e:
        raise _fail(f"error: {e.with_context(safe=e.safe or _EVAL_SAFE, next_step=e.next_step or _EVAL_NEXT)}") from e
    except (ValueError, ModuleNotFoundError, MissingToolError) as e:
        raise _fail(f"error: {e}") from e
    except KeyboardInterrupt as e:
        console.print(f"Interrupted: {_EVAL_SAFE}. Run the same eval again; it starts over.", style="yellow")
        raise typer.Exit(130) from e

    table = Table(title="Pitch sweep: slope of output F0 on reference F0 (semitones)")
    for column in ("arm", "ref. guidance", "slope", "95% CI", "voiced fraction", "voiced outputs"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in result.arms.values():
        fit = arm.fit
        slope = "-" if fit.slope is None else f"{fit.slope:.3f}"
        ci = "-" if fit.ci_low is None else f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}]"
        table.add_row(
            arm.arm,
            f"{arm.reference_guidance_scale:g}",
            slope,
            ci,
            f"{arm.voiced_fraction:.0%}",
            f"{arm.voiced_outputs}/{len(arm.outputs)}",
        )
    console.print(table)
    console.print(f"Wrote {result.json_path} and {result.plot_path}", highlight=False)


def build_audio_reference_app() -> typer.Typer:
    """The ``audio-reference`` sub-application."""
    app = typer.Typer(
        name="audio-reference",
        help="Audio-reference IC-LoRA tools: datasets, reference latents, evaluation and inspection.",
        no_args_is_help=True,
    )
    app.command("build-dataset")(build_dataset)
    app.command("preprocess")(preprocess_command)
    app.command("precompute")(precompute)
    app.command("inspect")(inspect_command)
    app.command("eval")(eval_command)
    return app
