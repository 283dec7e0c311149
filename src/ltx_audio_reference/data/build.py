"""``build-dataset``: run a recipe over talking-head clips and write (reference tone, shifted target) pairs.

Per clip (:func:`~ltx_audio_reference.data.pairs.make_pair` is the in-memory core, :func:`build_dataset` the
driver, :mod:`.report` the report):

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
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ltx_audio_reference.data.audio_io import AudioReadError, read_audio, write_wav
from ltx_audio_reference.data.manifest import ManifestError, read_manifest
from ltx_audio_reference.data.media import VIDEO_EXTENSIONS, probe, replace_audio, target_suffix
from ltx_audio_reference.data.media_tools import missing_package, missing_pyav, require
from ltx_audio_reference.data.pairs import PairOutcome, make_pair
from ltx_audio_reference.data.recipe import Recipe
from ltx_audio_reference.data.report import plot_report, rounded, summarize
from ltx_audio_reference.errors import StorageError
from ltx_audio_reference.reliability.files import (
    atomic_file,
    atomic_write_json,
    atomic_write_text,
    is_temp_name,
    require_writable,
)
from ltx_audio_reference.reliability.parsing import read_yaml

logger = logging.getLogger(__name__)

RECORDS_DIR = ".records"
RECIPE_SNAPSHOT = "recipe.yaml"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
MANIFEST_COLUMNS = ("video", "caption", "reference_audio")
_INPUT_COLUMNS = ("video", "media_path")


#: ``progress(done, total, counts)``: clips processed so far in this run, clips to process, and the kept and dropped
#: counts (resumed clips included).
BuildProgress = Callable[[int, int, dict[str, int]], None]


class BuildError(RuntimeError):
    """The build cannot start (bad input or output); the message says what to change."""


@dataclass(frozen=True)
class Clip:
    """One input clip and its name (relative path without suffix, POSIX separators)."""

    path: Path
    key: str


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


def check_tools() -> None:
    """Refuse to start without the libraries every clip needs (else each clip would be dropped as unreadable).

    Raises:
        MissingToolError: Naming PyAV, praat-parselmouth or matplotlib, whichever is missing, with the fix.
    """
    require(
        "build-dataset",
        missing_pyav(),
        missing_package("parselmouth", "praat-parselmouth", "pitch"),
        missing_package("matplotlib", "matplotlib", "report.png"),
    )


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
        files = sorted(p for p in source.rglob("*") if p.is_file())
        paths = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        if not paths:
            others = f"; it holds {len(files)} other file(s), such as {files[0].name}" if files else "; it is empty"
            raise BuildError(
                f"{source}: no video clips (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}, in sub-folders too)"
                f"{others}. Pass the folder of talking-head clips with audio, or a manifest with a video column"
            )
        clips = [Clip(p, p.relative_to(source).with_suffix("").as_posix()) for p in paths]
    elif source.is_file() and source.suffix.lower() in (".csv", ".json", ".jsonl"):
        try:
            rows = read_manifest(source)
        except ManifestError as e:
            raise BuildError(str(e)) from e
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


def _record(clip: Clip, outcome: PairOutcome | None, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    record: dict[str, Any] = {"clip": clip.key, "source": str(clip.path)}
    if outcome is not None:
        record.update(
            {
                "status": "kept" if outcome.kept else "dropped",
                "reason": outcome.reason,
                "detail": outcome.detail,
                "source_f0_hz": rounded(outcome.source_f0_hz),
                "target_f0_hz": rounded(outcome.target_f0_hz),
                "shift_semitones": rounded(outcome.shift_semitones, 4),
                "measured_f0_hz": rounded(outcome.measured_f0_hz),
                "tone_f0_hz": rounded(outcome.tone_f0_hz),
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
            except StorageError:
                raise  # a full disk is not this clip's fault: every later clip would be dropped the same way
            except Exception as e:  # one odd clip must not stop a long build; the report lists it
                logger.exception("Dropping %s: processing failed", clip.path)
                record = _dropped(clip, "error", f"{type(e).__name__}: {e}")
    atomic_write_json(output / RECORDS_DIR / f"{clip.key}.json", record)
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

    # Both files are written before either is published; the record written after them commits the pair.
    with atomic_file(output / video_rel) as tmp_video, atomic_file(output / reference_rel) as tmp_reference:
        write_wav(tmp_reference, tone, recipe.tone.sample_rate)
        replace_audio(clip.path, tmp_video, speech, sample_rate)
    return _record(
        clip,
        outcome,
        video=video_rel.as_posix(),
        reference_audio=reference_rel.as_posix(),
        duration_s=rounded(audio.shape[1] / sample_rate),
    )


def _load_records(output: Path) -> dict[str, dict[str, Any]]:
    records = {}
    root = output / RECORDS_DIR
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        if is_temp_name(path.name):
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
            if path.is_file() and (is_temp_name(path.name) or path.relative_to(output).as_posix() not in committed):
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
        previous = read_yaml(snapshot)
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise BuildError(
                f"{output} was built with a different recipe ({', '.join(changed)} differ): use another --output, "
                "or --overwrite to rebuild it"
            )
    atomic_write_text(snapshot, yaml.safe_dump(current, sort_keys=False))


def build_dataset(
    recipe: Recipe,
    source: Path,
    output: Path,
    *,
    column: str | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    workers: int = 1,
    progress: BuildProgress | None = None,
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
        progress: Called as ``progress(done, total, counts)`` before the first clip and after each one (``counts``:
            kept and dropped so far, resumed clips included); the CLI draws its progress bar from it.

    Returns:
        The report and what was written.

    Raises:
        BuildError: On a bad input (a folder without video clips, say) or an output that belongs to something else.
        MissingToolError: If PyAV, praat-parselmouth or matplotlib is missing (checked before anything is written).
        StorageError: If ``output`` cannot be written (before any clip), or the disk fills or the folder vanishes
            during the build; the message says what is committed and how to go on.
    """
    check_tools()
    source, output = Path(source), Path(output)
    clips = find_clips(source, column)
    if limit is not None:
        clips = clips[:limit]
    _check_layout(clips, source, output, recipe)
    require_writable(
        output,
        safe="nothing was written (checked before processing any clip)",
        next_step="Point --output at a folder this user can write, with free space.",
    )
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
    if progress is not None:
        progress(0, len(todo), dict(counts))
    try:
        for record in _run(todo, recipe, output, workers):
            records[record["clip"]] = record
            counts[record["status"]] += 1
            result.processed += 1
            if progress is not None:
                progress(result.processed, len(todo), dict(counts))

        ordered = [records[key] for key in sorted(records)]
        result.records = ordered
        result.manifest = write_manifest(output / recipe.output.manifest, ordered, recipe.caption)
        result.report = summarize(ordered, recipe)
        atomic_write_json(output / REPORT_JSON, result.report)
        result.report_png = plot_report(result.report, ordered, output / REPORT_PNG)
    except StorageError as e:
        raise e.with_context(
            safe=f"{len(records)} clip(s) are processed and committed under {output} ({result.processed} in this run; "
            "a pair is committed by its record, written after both of its files), and no half pair or partial file "
            "was left; the manifest and report are written at the end, so they are not updated",
            next_step="Free space (or make the folder writable) and run the same command again: committed clips are "
            "skipped.",
        ) from e
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
    return atomic_write_text(path, text)
