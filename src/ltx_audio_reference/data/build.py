"""``build-dataset``: run a recipe over talking-head clips and write (reference tone, shifted target) pairs.

Per clip (:func:`make_pair` is the in-memory core, :func:`build_dataset` the driver):

1. read the clip's audio (unreadable, no video or no audio: dropped with that reason);
2. measure its natural F0, the median over voiced frames (too few voiced frames: ``no_voiced_frames``);
3. draw the target pitch (``bounded`` or ``decorrelated``, from a stream seeded by the recipe seed and clip name);
4. shift the speech to the target with PSOLA, keeping formants and the exact sample count;
5. re-measure; keep the pair only within ``tolerance_hz`` of the target (else ``out_of_tolerance``);
6. synthesize the reference: a bare voiced tone at the target, with a timbre drawn from an independent stream.

Output (under ``--output``)::

    clips/<name>.mp4          target: the source video packets untouched, the shifted audio (mono AAC)
    references/<name>.wav     reference tone (16-bit PCM, stereo by default)
    dataset.json              manifest for ltx-trainer's process_dataset.py: video, caption, reference_audio
    report.json, report.png   kept/dropped counts with reasons, target-pitch histogram, Pearson r
    recipe.yaml               the recipe this output was built with
    .records/<name>.json      one record per processed clip (the commit point of its pair)

A pair is committed by writing its record after both files are renamed into place. A run first deletes temporary
files and any clip or reference without a record (what a crash between the two renames leaves), so the folders and
the manifest never hold half a pair. Clips that already have a record are skipped, so an interrupted build resumes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ltx_audio_reference.data.audio_io import AudioReadError, is_temp_path, read_audio, temp_path, write_wav
from ltx_audio_reference.data.media import VIDEO_EXTENSIONS, probe, replace_audio, target_suffix
from ltx_audio_reference.data.pitch import PitchSettings, Timbre, measure_f0, semitones_between, shift_pitch, tuned_tone
from ltx_audio_reference.data.recipe import Recipe, ToneConfig, clip_seed, draw_target

logger = logging.getLogger(__name__)

DROP_REASONS: dict[str, str] = {
    "unreadable": "the file could not be opened or decoded",
    "no_video": "the file has no video stream",
    "no_audio": "the file has no audio stream",
    "no_voiced_frames": "too few voiced frames to measure a pitch",
    "out_of_tolerance": "the shifted speech re-measured too far from the target",
    "error": "processing failed unexpectedly (the detail has the error)",
}
RECORDS_DIR = ".records"
RECIPE_SNAPSHOT = "recipe.yaml"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
MANIFEST_COLUMNS = ("video", "caption", "reference_audio")
_INPUT_COLUMNS = ("video", "media_path")


class BuildError(RuntimeError):
    """The build cannot start (bad input or output); the message says what to change."""


@dataclass(frozen=True)
class Clip:
    """One input clip and its name (relative path without suffix, POSIX separators)."""

    path: Path
    key: str


@dataclass
class PairOutcome:
    """The in-memory result of running a recipe on one clip's audio."""

    source_f0_hz: float | None = None
    target_f0_hz: float | None = None
    measured_f0_hz: float | None = None
    shifted: np.ndarray | None = None
    tone: np.ndarray | None = None
    tone_f0_hz: float | None = None
    timbre: Timbre | None = None
    reason: str | None = None  # a DROP_REASONS key, or None when kept
    detail: str = ""

    @property
    def kept(self) -> bool:
        """Whether the pair passed every check."""
        return self.reason is None

    @property
    def shift_semitones(self) -> float | None:
        """The requested shift."""
        if self.source_f0_hz is None or self.target_f0_hz is None:
            return None
        return semitones_between(self.source_f0_hz, self.target_f0_hz)


@dataclass
class BuildResult:
    """What :func:`build_dataset` wrote."""

    output: Path
    report: dict[str, Any]
    processed: int = 0
    resumed: int = 0
    manifest: Path | None = None
    report_png: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


def pitch_settings(recipe: Recipe) -> PitchSettings:
    """The recipe's analysis section as Praat settings."""
    a = recipe.analysis
    return PitchSettings(
        floor_hz=a.pitch_floor_hz,
        ceiling_hz=a.pitch_ceiling_hz,
        time_step_s=a.time_step_s,
        voicing_threshold=a.voicing_threshold,
    )


def draw_timbre(tone: ToneConfig, rng: np.random.Generator) -> Timbre:
    """A timbre drawn uniformly from the recipe's ranges (independent of pitch and source)."""

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    return Timbre(
        rolloff_db_per_octave=uniform(tone.rolloff_db_per_octave),
        vibrato_rate_hz=uniform(tone.vibrato_rate_hz),
        vibrato_depth_semitones=uniform(tone.vibrato_depth_semitones),
        jitter=uniform(tone.jitter_percent) / 100.0,
        shimmer=uniform(tone.shimmer_percent) / 100.0,
        breath_snr_db=uniform(tone.breath_snr_db),
    )


def make_pair(
    samples: np.ndarray, sample_rate: int, recipe: Recipe, key: str, *, with_tone: bool = True
) -> PairOutcome:
    """Run the recipe on one clip's mono audio, in memory: measure, draw, shift, re-measure, synthesize.

    Args:
        samples: Mono ``[n]`` float samples.
        sample_rate: In Hz.
        recipe: The recipe.
        key: The clip's name; with the recipe seed it seeds every random draw for this clip.
        with_tone: Synthesize the reference tone (skipped when only the pitches matter).

    Returns:
        The outcome; ``outcome.reason`` says why a pair was dropped.
    """
    settings = pitch_settings(recipe)
    outcome = PairOutcome()
    source = measure_f0(samples, sample_rate, settings, min_voiced_frames=recipe.analysis.min_voiced_frames)
    if source.median_hz is None:
        outcome.reason = "no_voiced_frames"
        outcome.detail = (
            f"{source.voiced_frames} voiced of {source.frames} frames (need {recipe.analysis.min_voiced_frames})"
        )
        return outcome
    outcome.source_f0_hz = source.median_hz
    target = draw_target(source.median_hz, recipe.target, np.random.default_rng(clip_seed(recipe.seed, key, 0)))
    outcome.target_f0_hz = target
    # Mark the source's pitch periods across its whole range, whatever the target is.
    shifted = shift_pitch(samples, sample_rate, target / source.median_hz, settings)
    outcome.shifted = shifted
    remeasured = measure_f0(shifted, sample_rate, settings, min_voiced_frames=recipe.analysis.min_voiced_frames)
    outcome.measured_f0_hz = remeasured.median_hz
    if remeasured.median_hz is None or abs(remeasured.median_hz - target) > recipe.tolerance_hz:
        found = "no voiced frames" if remeasured.median_hz is None else f"{remeasured.median_hz:.1f} Hz"
        outcome.reason = "out_of_tolerance"
        outcome.detail = f"target {target:.1f} Hz, re-measured {found} (tolerance {recipe.tolerance_hz:g} Hz)"
        return outcome
    outcome.timbre = draw_timbre(recipe.tone, np.random.default_rng(clip_seed(recipe.seed, key, 1)))
    if with_tone:
        tone = recipe.tone
        outcome.tone, tone_f0 = tuned_tone(
            target,
            outcome.timbre,
            seed=clip_seed(recipe.seed, key, 2),
            sample_rate=tone.sample_rate,
            duration_s=tone.duration_s,
            fade_s=tone.fade_s,
            peak=tone.peak,
            settings=settings,
        )
        outcome.tone_f0_hz = None if math.isnan(tone_f0) else tone_f0
    return outcome


def find_clips(source: Path, column: str | None = None) -> list[Clip]:
    """List the input clips: the video files under a folder, or a manifest's video column.

    Args:
        source: A folder, or a ``.csv``/``.json``/``.jsonl`` manifest whose paths are relative to its folder.
        column: Manifest column with the clip paths (default: ``video``, else ``media_path``).

    Returns:
        Clips in a stable order.

    Raises:
        BuildError: If ``source`` is missing or the manifest has no usable column; or two clips share a name.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        clips = [Clip(p, p.relative_to(source).with_suffix("").as_posix()) for p in paths]
    elif source.is_file() and source.suffix.lower() in (".csv", ".json", ".jsonl"):
        rows = _read_rows(source)
        columns = [column] if column else [c for c in _INPUT_COLUMNS if rows and c in rows[0]]
        if not rows:
            raise BuildError(f"{source}: the manifest has no rows")
        if not columns or columns[0] not in rows[0]:
            raise BuildError(
                f"{source}: no clip column (looked for {column or ' or '.join(_INPUT_COLUMNS)}); "
                "pass --column to name it"
            )
        clips = []
        for row in rows:
            relative = Path(str(row[columns[0]]).strip())
            path = relative if relative.is_absolute() else source.parent / relative
            if relative.is_absolute() or ".." in relative.parts:
                # Named by the absolute path's parts (as upstream names out-of-tree media), never escaping --output.
                resolved = path.resolve()
                relative = resolved.relative_to(resolved.anchor)
            clips.append(Clip(path, relative.with_suffix("").as_posix()))
    else:
        raise BuildError(f"{source}: expected a folder of clips or a .csv/.json/.jsonl manifest")
    duplicates = [k for k, n in Counter(c.key for c in clips).items() if n > 1]
    if duplicates:
        raise BuildError(f"{source}: clips share names (e.g. {duplicates[0]!r}); rename them so each is unique")
    return clips


def _read_rows(manifest: Path) -> list[dict[str, Any]]:
    suffix = manifest.suffix.lower()
    text = manifest.read_text(encoding="utf-8")
    if suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise BuildError(f"{manifest}: a JSON manifest must hold a list of objects")
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _write_json_atomic(path: Path, data: Any) -> None:  # noqa: ANN401
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _record(clip: Clip, outcome: PairOutcome | None, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    record: dict[str, Any] = {"clip": clip.key, "source": str(clip.path)}
    if outcome is not None:
        record.update(
            {
                "status": "kept" if outcome.kept else "dropped",
                "reason": outcome.reason,
                "detail": outcome.detail,
                "source_f0_hz": _round(outcome.source_f0_hz),
                "target_f0_hz": _round(outcome.target_f0_hz),
                "shift_semitones": _round(outcome.shift_semitones, 4),
                "measured_f0_hz": _round(outcome.measured_f0_hz),
                "tone_f0_hz": _round(outcome.tone_f0_hz),
                "timbre": outcome.timbre.to_dict() if outcome.timbre is not None else None,
            }
        )
    record.update(extra)
    return record


def _dropped(clip: Clip, reason: str, detail: str) -> dict[str, Any]:
    return _record(clip, PairOutcome(reason=reason, detail=detail))


def process_clip(clip: Clip, recipe: Recipe, output: Path) -> dict[str, Any]:
    """Run the recipe on one clip file and commit its pair (or its drop) under ``output``.

    Returns:
        The clip's record (also written to ``.records/<name>.json``).
    """
    try:
        info = probe(clip.path)
    except Exception as e:  # PyAV raises many error types for broken files
        record = _dropped(clip, "unreadable", f"{type(e).__name__}: {e}")
    else:
        if not info.has_video:
            record = _dropped(clip, "no_video", "no video stream")
        elif not info.has_audio:
            record = _dropped(clip, "no_audio", "no audio stream")
        else:
            try:
                record = _process_media(clip, recipe, output)
            except Exception as e:  # one odd clip must not stop a long build; the report lists it
                logger.exception("Dropping %s: processing failed", clip.path)
                record = _dropped(clip, "error", f"{type(e).__name__}: {e}")
    _write_json_atomic(output / RECORDS_DIR / f"{clip.key}.json", record)
    return record


def _process_media(clip: Clip, recipe: Recipe, output: Path) -> dict[str, Any]:
    try:
        waveform, sample_rate = read_audio(clip.path)
    except AudioReadError as e:
        return _dropped(clip, "unreadable", str(e))
    audio = waveform.astype(np.float64)
    outcome = make_pair(audio.mean(axis=0), sample_rate, recipe, clip.key)
    if not outcome.kept:
        return _record(clip, outcome)

    video_rel = Path(recipe.output.clips_dir) / f"{clip.key}{target_suffix(clip.path)}"
    reference_rel = Path(recipe.output.references_dir) / f"{clip.key}.wav"
    # Mono: the shifted speech is one channel, and ltx-trainer widens mono to stereo by duplication when it encodes
    # audio_latents/, so this is lossless and halves the AAC encoding time.
    speech = outcome.shifted[None, :].astype(np.float64)
    peak = float(np.abs(speech).max())
    if peak > 0.999:  # PSOLA can raise peaks slightly; scale rather than clip
        speech *= 0.999 / peak
    tone = np.repeat(outcome.tone[None, :], recipe.tone.channels, axis=0)

    final_video, final_reference = output / video_rel, output / reference_rel
    tmp_video, tmp_reference = temp_path(final_video), temp_path(final_reference)
    final_video.parent.mkdir(parents=True, exist_ok=True)
    final_reference.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_wav(tmp_reference, tone, recipe.tone.sample_rate)
        replace_audio(clip.path, tmp_video, speech, sample_rate)
        tmp_reference.replace(final_reference)
        tmp_video.replace(final_video)
    finally:
        tmp_reference.unlink(missing_ok=True)
        tmp_video.unlink(missing_ok=True)
    return _record(
        clip,
        outcome,
        video=video_rel.as_posix(),
        reference_audio=reference_rel.as_posix(),
        duration_s=_round(audio.shape[1] / sample_rate),
    )


def _load_records(output: Path) -> dict[str, dict[str, Any]]:
    records = {}
    root = output / RECORDS_DIR
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        if is_temp_path(path):
            path.unlink(missing_ok=True)
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("status") == "kept" and not all(
            (output / record[name]).is_file() for name in ("video", "reference_audio")
        ):
            logger.info("Reprocessing %s: its pair's files are missing", record["clip"])
            path.unlink()
            continue
        records[record["clip"]] = record
    return records


def _remove_half_pairs(output: Path, recipe: Recipe, records: dict[str, dict[str, Any]]) -> int:
    """Delete temporary files and any clip or reference that no committed record names."""
    committed = set()
    for record in records.values():
        if record.get("status") == "kept":
            committed.update({record["video"], record["reference_audio"]})
    removed = 0
    for folder in (recipe.output.clips_dir, recipe.output.references_dir):
        root = output / folder
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file() and (is_temp_path(path) or path.relative_to(output).as_posix() not in committed):
                logger.info("Removing %s (left by an interrupted build)", path)
                path.unlink()
                removed += 1
    return removed


def _check_layout(clips: list[Clip], source: Path, output: Path, recipe: Recipe) -> None:
    """Refuse outputs whose clips/ or references/ folder would hold (or, for a folder input, feed) the input."""
    for folder in (recipe.output.clips_dir, recipe.output.references_dir):
        owned = (output / folder).resolve()
        inside = [c.path for c in clips if owned in c.path.resolve().parents]
        feeds_back = source.is_dir() and (owned == source.resolve() or source.resolve() in owned.parents)
        if inside or feeds_back:
            raise BuildError(
                f"--output {output} would write its {folder}/ folder over or inside the input {source}: "
                "choose an --output outside the input folder"
            )
        if owned.is_dir() and any(owned.iterdir()) and not (output / RECORDS_DIR).is_dir():
            raise BuildError(f"{owned} already holds files that build-dataset did not write: choose an empty --output")


def _check_snapshot(output: Path, recipe: Recipe, overwrite: bool) -> None:
    snapshot = output / RECIPE_SNAPSHOT
    current = recipe.model_dump(mode="json")
    if snapshot.is_file() and not overwrite:
        previous = yaml.safe_load(snapshot.read_text(encoding="utf-8"))
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise BuildError(
                f"{output} was built with a different recipe ({', '.join(changed)} differ): use another --output, "
                "or --overwrite to rebuild it"
            )
    output.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(snapshot)
    tmp.write_text(yaml.safe_dump(current, sort_keys=False), encoding="utf-8")
    tmp.replace(snapshot)


def build_dataset(
    recipe: Recipe,
    source: Path,
    output: Path,
    *,
    column: str | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    workers: int = 1,
    show_progress: bool = True,
) -> BuildResult:
    """Run ``recipe`` over every clip of ``source`` and write pairs, manifest and report under ``output``.

    Args:
        recipe: The recipe (after any CLI overrides such as the caption).
        source: A folder of clips or a manifest (see :func:`find_clips`).
        output: The dataset folder to write.
        column: Manifest column with the clip paths.
        overwrite: Reprocess every clip (previous pairs are deleted).
        limit: Process at most this many clips (in order).
        workers: Worker processes (Praat is single-threaded; use one per core). Results do not depend on it:
            every clip's random draws are seeded by its name.
        show_progress: Show a rich progress bar.

    Returns:
        The report and what was written.

    Raises:
        BuildError: On a bad input or an output that belongs to something else.
    """
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    source, output = Path(source), Path(output)
    clips = find_clips(source, column)
    if limit is not None:
        clips = clips[:limit]
    _check_layout(clips, source, output, recipe)
    _check_snapshot(output, recipe, overwrite)
    if overwrite and (output / RECORDS_DIR).is_dir():
        for path in (output / RECORDS_DIR).rglob("*.json"):
            path.unlink()
    records = _load_records(output)
    _remove_half_pairs(output, recipe, records)
    result = BuildResult(output=output, report={})

    todo = [clip for clip in clips if clip.key not in records]
    result.resumed = len(clips) - len(todo)
    if result.resumed:
        logger.info("%d of %d clips already processed; resuming", result.resumed, len(clips))
    counts = Counter(record["status"] for record in records.values())
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("kept {task.fields[kept]} dropped {task.fields[dropped]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(
            f"{recipe.name}: building pairs", total=len(todo), kept=counts["kept"], dropped=counts["dropped"]
        )
        for record in _run(todo, recipe, output, workers):
            records[record["clip"]] = record
            counts[record["status"]] += 1
            result.processed += 1
            progress.update(task, advance=1, kept=counts["kept"], dropped=counts["dropped"])

    ordered = [records[key] for key in sorted(records)]
    result.records = ordered
    result.manifest = write_manifest(output / recipe.output.manifest, ordered, recipe.caption)
    result.report = summarize(ordered, recipe)
    _write_json_atomic(output / REPORT_JSON, result.report)
    result.report_png = plot_report(result.report, ordered, output / REPORT_PNG)
    return result


def _run(todo: list[Clip], recipe: Recipe, output: Path, workers: int) -> Iterator[dict[str, Any]]:
    """Process clips in this process, or in ``workers`` spawned processes; yield records as clips finish."""
    if workers <= 1 or len(todo) <= 1:
        for clip in todo:
            yield process_clip(clip, recipe, output)
        return
    # Spawned, not forked: the parent runs a progress-bar thread, and forking while it holds a lock can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
        futures = [pool.submit(process_clip, clip, recipe, output) for clip in todo]
        for future in as_completed(futures):
            yield future.result()


def write_manifest(path: Path, records: list[dict[str, Any]], caption: str) -> Path:
    """Write the kept pairs in ltx-trainer's preprocessing format (columns ``video``, ``caption``, ``reference_audio``).

    Paths are relative to the manifest's folder, as ``process_dataset.py`` resolves them. The format follows the
    suffix: ``.json`` (a list of objects), ``.jsonl`` or ``.csv``.
    """
    rows = [
        {"video": r["video"], "caption": caption, "reference_audio": r["reference_audio"]}
        for r in records
        if r.get("status") == "kept"
    ]
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(rows, indent=2) + "\n"
    elif suffix == ".jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def pearson_r(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation, or None with fewer than 3 points or no variance."""
    if len(x) < 3:
        return None
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(array.min()), 3),
        "max": round(float(array.max()), 3),
        "mean": round(float(array.mean()), 3),
        "median": round(float(np.median(array)), 3),
    }


def summarize(records: list[dict[str, Any]], recipe: Recipe, bin_hz: float = 10.0) -> dict[str, Any]:
    """The build report: counts and reasons, the target-pitch histogram and source/target correlation."""
    kept = [r for r in records if r.get("status") == "kept"]
    dropped = [r for r in records if r.get("status") != "kept"]
    source = [r["source_f0_hz"] for r in kept]
    target = [r["target_f0_hz"] for r in kept]
    measured = [r["measured_f0_hz"] for r in kept]
    shifts = [r["shift_semitones"] for r in kept]
    histogram: dict[str, list[float]] = {"bin_edges_hz": [], "counts": []}
    if target:
        low = math.floor(min(target) / bin_hz) * bin_hz
        high = max(low + bin_hz, math.ceil(max(target) / bin_hz) * bin_hz)
        counts, edges = np.histogram(target, bins=np.arange(low, high + bin_hz / 2, bin_hz))
        histogram = {"bin_edges_hz": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}
    r = pearson_r(source, target)
    return {
        "recipe": recipe.name,
        "target_kind": recipe.target.kind,
        "caption": recipe.caption,
        "tolerance_hz": recipe.tolerance_hz,
        "clips": len(records),
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_by_reason": {reason: sum(r.get("reason") == reason for r in dropped) for reason in DROP_REASONS},
        "drop_reasons": DROP_REASONS,
        "drops": [{"clip": r["clip"], "reason": r["reason"], "detail": r.get("detail", "")} for r in dropped],
        "pearson_r_source_target": None if r is None else round(r, 4),
        "pearson_r_source_measured": _round(pearson_r(source, measured), 4),
        "source_f0_hz": _stats(source),
        "target_f0_hz": _stats(target),
        "shift_semitones": _stats(shifts),
        "abs_error_hz": _stats([abs(m - t) for m, t in zip(measured, target, strict=True)]),
        "target_histogram": histogram,
    }


def plot_report(report: dict[str, Any], records: list[dict[str, Any]], path: Path) -> Path:
    """Draw the report: target-pitch histogram, source vs target pitch, and kept/dropped counts."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    kept = [r for r in records if r.get("status") == "kept"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    hist = report["target_histogram"]
    if hist["counts"]:
        edges = hist["bin_edges_hz"]
        axes[0].bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#3b75af", edgecolor="white")
    axes[0].set(title="Target pitch", xlabel="Hz", ylabel="pairs")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))

    axes[1].scatter([r["source_f0_hz"] for r in kept], [r["target_f0_hz"] for r in kept], s=10, alpha=0.7)
    r_value = report["pearson_r_source_target"]
    r_text = "n/a" if r_value is None else f"{r_value:.3f}"
    axes[1].set(title=f"Source vs target pitch (Pearson r = {r_text})", xlabel="source Hz", ylabel="target Hz")

    labels = ["kept", *report["dropped_by_reason"]]
    values = [report["kept"], *report["dropped_by_reason"].values()]
    colors = ["#4c9a2a"] + ["#c0392b"] * (len(labels) - 1)
    axes[2].barh(labels, values, color=colors)
    axes[2].invert_yaxis()
    axes[2].set(title=f"{report['recipe']}: {report['kept']} kept / {report['clips']} clips", xlabel="clips")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
