"""Speed of a dataset recipe (``build-dataset``) in multiples of real time, on synthetic talking-head clips.

The clips are made first and are not timed: a moving 256x256 H.264 test pattern at 25 fps with a 48 kHz stereo AAC
soundtrack of synthetic voiced speech (:func:`ltx_audio_reference.testing.synthetic_audio.synthetic_voice`, a glottal
pulse train through vowel formants) at pitches spread over 85-255 Hz. Then
:func:`ltx_audio_reference.data.build.build_dataset` runs the recipe over them in this one process, exactly as
``ltx-trainer audio-reference build-dataset`` does: decode, measure F0, draw the target, PSOLA shift, re-measure,
synthesize and check the 2 s reference tone, write the WAV, re-mux the clip (video packets copied, audio re-encoded),
commit the pair, then the manifest, report JSON and report PNG, with ``--workers`` processes (default one per core, as
the CLI). Speed is seconds of input audio over wall-clock seconds (worker start-up included), best of ``--repeats``
runs, each into a fresh output folder. CPU seconds (this process and its workers) are reported too: on a busy machine
the wall clock measures the neighbours as well.

Run (2-core CPU, about a minute):

    .venv/bin/python benchmarks/recipe_speed.py
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ltx_audio_reference.data.build import build_dataset
from ltx_audio_reference.data.recipe import load_recipe
from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip

REPO = Path(__file__).resolve().parent.parent
CPU_FIELDS = ("user", "system", "children_user", "children_system")
console = Console()


def make_clips(folder: Path, count: int, seconds: float, sample_rate: int) -> float:
    """Write ``count`` synthetic talking-head clips; return their total audio duration in seconds."""
    vowels = ("a", "e", "i", "u")
    for index, f0 in enumerate(np.geomspace(85.0, 255.0, count)):
        voice = synthetic_voice(
            float(f0), sample_rate=sample_rate, duration_s=seconds, vowel=vowels[index % 4], seed=index
        )
        stereo = np.stack([voice, 0.9 * voice])
        write_clip(folder / f"speaker_{index:02d}.mp4", stereo, sample_rate, size=(256, 256))
    return count * seconds


def main(
    recipe: Annotated[Path, typer.Option(help="Recipe YAML.")] = REPO / "recipes" / "helium" / "decorrelated.yaml",
    clips: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 12,
    seconds: Annotated[float, typer.Option(min=1.0, help="Length of each clip.")] = 8.0,
    sample_rate: Annotated[int, typer.Option(help="Clip audio rate.")] = 48000,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs; the best is reported.")] = 3,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (the CLI's default: one per core).")] = (
        os.cpu_count() or 1
    ),
) -> None:
    """Time ``build_dataset`` on synthetic clips and report multiples of real time."""
    logging.basicConfig(level=logging.WARNING)
    loaded = load_recipe(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        audio_seconds = make_clips(root / "clips", clips, seconds, sample_rate)
        walls, cpus = [], []
        for run in range(repeats):
            before, start = os.times(), time.perf_counter()
            result = build_dataset(loaded, root / "clips", root / f"out{run}", workers=workers)
            walls.append(time.perf_counter() - start)
            after = os.times()  # worker processes are joined by now, so their CPU time is in children_*
            cpus.append(sum(getattr(after, f) - getattr(before, f) for f in CPU_FIELDS))
        report = result.report

    best = min(range(repeats), key=walls.__getitem__)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = Table(title=f"build-dataset speed: {loaded.name} ({os.cpu_count()} CPUs, load average {load})")
    for column in ("clips", "workers", "audio s", "kept", "wall s", "CPU s", "x real time", "x real time per CPU s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(clips),
        str(workers),
        f"{audio_seconds:.0f}",
        str(report["kept"]),
        f"{walls[best]:.2f}",
        f"{cpus[best]:.2f}",
        f"{audio_seconds / walls[best]:.1f}",
        f"{audio_seconds / cpus[best]:.1f}",
    )
    console.print(table)
    console.print(f"all runs, wall s: {' '.join(f'{w:.2f}' for w in walls)}", highlight=False)


if __name__ == "__main__":
    typer.run(main)
