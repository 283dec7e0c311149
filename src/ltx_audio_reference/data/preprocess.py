"""Preprocess a manifest of clips with upstream's own scripts, then the references (``audio-reference preprocess``).

Step 2 of "train on your own clips": a manifest (``video``, ``caption``, ``reference_audio`` columns, as
``build-dataset`` writes it) becomes the preprocessed dataset the ``audio_reference`` strategy trains on:

1. **Upstream**: ltx-trainer's ``process_dataset.py`` from an LTX-2 checkout (``packages/ltx-trainer/scripts/``; it is
   not in the ``ltx_trainer`` wheel), run as its own process, unchanged: captions -> ``conditions/``, video ->
   ``latents/``, each clip's sound -> ``audio_latents/``. It is given the manifest without the reference column (a
   hidden copy next to it, removed afterwards), so references are encoded once, by step 2.
2. **References**: :func:`~ltx_audio_reference.data.precompute.precompute_reference_latents` ->
   ``reference_audio_latents/``, named by each row's video as upstream names its latents.

The CLI then ends with ``check``'s verdict on the result.

Everything that can stop the run is checked first, before anything loads or is written, and every problem is named
in one error: the upstream checkout and its version, FFmpeg and torchcodec (upstream reads audio through them), the
manifest's columns and rows, the resolution buckets, every model file (from headers: a file missing weights is named,
see :mod:`.model_check`), every clip (it exists, decodes, has a video and a sound track, and has the frames of the
smallest bucket), every reference, and the output folder.

Both steps skip files already written and write each file atomically, so an interrupted run leaves only complete
files and a rerun resumes. ``OUTPUT/.preprocess.json`` records the settings a folder was made with; a rerun with
other model files, buckets or columns is refused (the latents would mix) unless ``overwrite`` redoes it. It also
records a fingerprint of each sample's inputs (its manifest row, and the size and modification time of its clip and
reference): a rerun redoes the samples whose inputs changed (a dataset rebuilt in place, a clip edited) and removes
the files of samples that left the manifest, instead of keeping latents of inputs that no longer exist.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ltx_audio_reference.data.manifest import ManifestError, read_manifest
from ltx_audio_reference.data.media_tools import MissingToolError, missing_ffmpeg, missing_torchcodec, require
from ltx_audio_reference.data.model_check import PackPaths, check_preprocessing_pack, read_config
from ltx_audio_reference.data.precompute import (
    MANIFEST_SUFFIXES,
    REFERENCE_DIR,
    PrecomputeError,
    PrecomputeResult,
    ReferencePlan,
    plan_reference_latents,
    precompute_reference_latents,
    relative_name,
)
from ltx_audio_reference.errors import errno_in_words
from ltx_audio_reference.layout import PRECOMPUTED_DIR_NAME
from ltx_audio_reference.reliability.files import atomic_write_json, is_temp_name, probe_write
from ltx_audio_reference.reliability.preflight import device_problem, write_problem

logger = logging.getLogger(__name__)

#: The LTX-2 release whose scripts this package calls (ltx-trainer 1.2.0).
UPSTREAM_TAG = "v1.2.0"
UPSTREAM_REPO = "https://github.com/Lightricks/LTX-2.git"
#: Environment variable naming an LTX-2 checkout (the ``--ltx2`` option's default).
CHECKOUT_ENV = "LTX2_CHECKOUT"
#: Where ``bash scripts/setup.sh --trainer`` keeps its checkout, relative to the virtual environment.
VENV_CHECKOUT = Path("src") / "LTX-2"
TRAINER_PACKAGE = Path("packages") / "ltx-trainer"
#: The script and the siblings it imports.
UPSTREAM_SCRIPTS = ("process_dataset.py", "process_captions.py", "process_videos.py", "decode_latents.py")
#: What upstream writes, and what the reference step writes.
UPSTREAM_FOLDERS = ("conditions", "latents", "audio_latents")
DATA_FOLDERS = (*UPSTREAM_FOLDERS, REFERENCE_DIR)
STATE_FILE = ".preprocess.json"
#: Free space under which a failed upstream run names the disk as the likely cause.
LOW_SPACE_BYTES = 256 * 2**20
_SHOWN = 10
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class PreprocessError(RuntimeError):
    """Preprocessing cannot start or did not finish; the message names each problem and its fix."""


# --------------------------------------------------------------------------------------------------------------------
# The upstream checkout
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ltx2Checkout:
    """An LTX-2 checkout holding ltx-trainer's preprocessing scripts."""

    root: Path
    version: str  # packages/ltx-trainer's version
    found_by: str  # how it was found, for messages

    @property
    def scripts(self) -> Path:
        """``packages/ltx-trainer/scripts``."""
        return self.root / TRAINER_PACKAGE / "scripts"

    @property
    def process_dataset(self) -> Path:
        """The entry script."""
        return self.scripts / "process_dataset.py"


def _checkout_root(path: Path) -> Path:
    """The checkout root for a path given as the root, ``packages/ltx-trainer`` or its ``scripts`` folder."""
    path = path.expanduser().resolve()
    for candidate in (path, path.parent.parent, path.parent.parent.parent):
        if (candidate / TRAINER_PACKAGE / "scripts" / "process_dataset.py").is_file():
            return candidate
    return path


def _installed_trainer_source() -> Path | None:
    """The local folder ltx-trainer was installed from (pip's ``direct_url.json``), or None (a wheel, a git URL)."""
    try:
        text = importlib.metadata.distribution("ltx-trainer").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    if not url.startswith("file://"):
        return None
    return Path(unquote(urlparse(url).path))


def installed_trainer_version() -> str | None:
    """The installed ltx-trainer's version, or None."""
    try:
        return importlib.metadata.version("ltx-trainer")
    except importlib.metadata.PackageNotFoundError:
        return None


def _checkout_version(root: Path) -> str | None:
    """``packages/ltx-trainer/pyproject.toml``'s version (read as text: tomllib is Python 3.11+)."""
    try:
        text = (root / TRAINER_PACKAGE / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return match.group(1) if match else None


def how_to_get_the_scripts() -> str:
    """The commands that fetch upstream's scripts, for error messages and docs."""
    return (
        f"Get them with:\n  git clone --depth 1 --branch {UPSTREAM_TAG} {UPSTREAM_REPO} ~/LTX-2\n"
        f"and pass --ltx2 ~/LTX-2 (or set {CHECKOUT_ENV}=~/LTX-2). bash scripts/setup.sh --trainer keeps such a "
        f"checkout in .venv/{VENV_CHECKOUT.as_posix()}, where it is found without the option."
    )


def find_ltx2_checkout(explicit: Path | None = None) -> Ltx2Checkout:
    """Find the LTX-2 checkout whose ``process_dataset.py`` preprocessing runs.

    Looked for, in order: ``explicit`` (``--ltx2``; the root, ``packages/ltx-trainer`` or its ``scripts`` folder),
    ``$LTX2_CHECKOUT``, the local folder ltx-trainer was installed from, and ``<venv>/src/LTX-2`` (where ``setup.sh
    --trainer`` clones it). An explicit path that holds no scripts is an error even if another candidate would do.

    Raises:
        PreprocessError: Saying where it looked and how to get the scripts, or that the checkout's ltx-trainer version
            differs from the installed one (its scripts import the installed package).
    """
    candidates: list[tuple[str, Path]] = []
    if explicit is not None:
        candidates.append(("--ltx2", explicit))
    elif os.environ.get(CHECKOUT_ENV):
        candidates.append((f"${CHECKOUT_ENV}", Path(os.environ[CHECKOUT_ENV])))
    else:
        if (source := _installed_trainer_source()) is not None:
            candidates.append(("the folder ltx-trainer was installed from", source))
        candidates.append((f"the virtual environment's {VENV_CHECKOUT.as_posix()}", Path(sys.prefix) / VENV_CHECKOUT))
    looked = []
    for found_by, path in candidates:
        root = _checkout_root(path)
        scripts = root / TRAINER_PACKAGE / "scripts"
        missing = [name for name in UPSTREAM_SCRIPTS if not (scripts / name).is_file()]
        if not missing:
            version = _checkout_version(root) or "unknown"
            installed = installed_trainer_version()
            if installed is not None and version != installed:
                raise PreprocessError(
                    f"The LTX-2 checkout at {root} ({found_by}) holds ltx-trainer {version}'s scripts, but ltx-trainer "
                    f"{installed} is installed, and the scripts import it. Check out the matching tag "
                    f"(git -C {root} checkout v{installed}) or pass --ltx2 a checkout at v{installed}"
                )
            return Ltx2Checkout(root=root, version=version, found_by=found_by)
        looked.append(f"  {path} ({found_by}): " + ("no such folder" if not path.exists() else f"no {missing[0]}"))
    raise PreprocessError(
        "\n".join(
            [
                "ltx-trainer's preprocessing scripts were not found. They live in the LTX-2 repository "
                f"({(TRAINER_PACKAGE / 'scripts' / 'process_dataset.py').as_posix()}), not in the ltx_trainer "
                "package. Looked in:",
                *looked,
                how_to_get_the_scripts(),
            ]
        )
    )


# --------------------------------------------------------------------------------------------------------------------
# Settings, buckets, clips
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessSettings:
    """What ``audio-reference preprocess`` was asked to do."""

    manifest: Path
    model_path: Path
    text_encoder_path: Path
    resolution_buckets: str
    video_vae_path: Path | None = None
    audio_vae_path: Path | None = None
    output: Path | None = None
    ltx2: Path | None = None
    device: str = "cpu"
    reference_column: str = "reference_audio"
    video_column: str = "video"
    caption_column: str = "caption"
    front_end: str = "auto"
    overwrite: bool = False

    def output_dir(self) -> Path:
        """``output``, or ``.precomputed`` next to the manifest (upstream's default)."""
        return self.output if self.output is not None else self.manifest.parent / PRECOMPUTED_DIR_NAME

    def recorded(self, pack: PackPaths) -> dict[str, Any]:
        """The settings that decide what the files hold, as ``.preprocess.json`` records them."""
        return {
            "manifest": str(self.manifest.resolve()),
            "model_path": str(pack.model_path.resolve()),
            "text_encoder_path": str(pack.text_encoder_path.resolve()),
            "video_vae_path": str(pack.video_vae_path.resolve()),
            "audio_vae_path": str(pack.audio_vae_path.resolve()),
            "resolution_buckets": self.resolution_buckets,
            "reference_column": self.reference_column,
            "video_column": self.video_column,
            "caption_column": self.caption_column,
        }


@dataclass(frozen=True)
class Bucket:
    """One resolution bucket."""

    width: int
    height: int
    frames: int


def parse_buckets(
    text: str, scale_factors: tuple[int, int, int], option: str = "--resolution-buckets", noun: str = "bucket"
) -> tuple[list[Bucket], list[str]]:
    """Parse ``"WxHxF;WxHxF"`` as upstream does, and say what upstream would refuse, with the nearest valid bucket.

    Args:
        text: The ``--resolution-buckets`` value.
        scale_factors: The video VAE's ``(time, height, width)`` compression (8, 32, 32 by default).
        option: The option (or key) the text comes from, for the messages.
        noun: What one value is called in the messages.

    Returns:
        ``(buckets, problems)``.
    """
    time_factor, height_factor, width_factor = scale_factors
    buckets, problems = [], []
    for item in (part.strip() for part in text.split(";")):
        try:
            w, h, f = (int(part) for part in item.lower().split("x"))
        except ValueError:
            problems.append(
                f"{option}: expected WIDTHxHEIGHTxFRAMES such as 768x512x121 (several joined by ';'); found {item!r}"
            )
            continue
        wrong = []
        if w % width_factor or h % height_factor or min(w, h) < 1:
            wrong.append(f"width and height must be positive multiples of {width_factor} and {height_factor}")
        if f % time_factor != 1:
            wrong.append(f"frames must be a multiple of {time_factor} plus 1")
        if wrong:
            near_w = max(width_factor, round(w / width_factor) * width_factor)
            near_h = max(height_factor, round(h / height_factor) * height_factor)
            near_f = max(1, round((f - 1) / time_factor) * time_factor + 1)
            problems.append(
                f"{option} {item}: {' and '.join(wrong)} (the video VAE's compression); the nearest valid {noun} is "
                f"{near_w}x{near_h}x{near_f}"
            )
        else:
            buckets.append(Bucket(w, h, f))
    return buckets, problems


def video_scale_factors(video_vae_path: Path) -> tuple[int, int, int]:
    """The video VAE's ``(time, height, width)`` compression, from the file's header."""
    from ltx_core.types import SpatioTemporalScaleFactors  # noqa: PLC0415

    factors = SpatioTemporalScaleFactors.from_model_config(read_config(video_vae_path))
    return int(factors.time), int(factors.height), int(factors.width)


@contextmanager
def _quiet_ffmpeg() -> Iterator[None]:
    """FFmpeg's own log lines off (a broken clip's error already carries them), restored afterwards."""
    import av.logging  # noqa: PLC0415

    level = av.logging.get_level()
    av.logging.set_level(av.logging.PANIC)
    try:
        yield
    finally:
        av.logging.set_level(level)


@dataclass(frozen=True)
class ClipInfo:
    """What :func:`probe_clip` found in a clip."""

    frames: int
    fps: float
    has_audio: bool


def probe_clip(path: Path) -> ClipInfo:
    """Open a clip with PyAV, count its frames as ltx-trainer does, and decode its first video and audio frames.

    Raises:
        ValueError: Saying why the clip cannot be used (no video stream, nothing decodes).
        Exception: Whatever PyAV raises on a file it cannot open.
    """
    import av  # noqa: PLC0415 - an ltx-trainer dependency

    with _quiet_ffmpeg(), av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        if stream.frames > 0:
            frames = stream.frames
        elif stream.duration and stream.time_base and rate:
            frames = round(Fraction(stream.duration) * Fraction(stream.time_base) * Fraction(rate))
        else:
            frames = -1  # counted by decoding below
        has_audio = bool(container.streams.audio)
        wanted = {"video"} | ({"audio"} if has_audio else set())
        decoded: set[str] = set()
        streams = [stream, *([container.streams.audio[0]] if has_audio else [])]
        for packet in container.demux(*streams):
            for _ in packet.decode():
                decoded.add(packet.stream.type)
            if decoded >= wanted:
                break
        if "video" not in decoded:
            raise ValueError("no video frame decodes")
        if has_audio and "audio" not in decoded:
            raise ValueError("its sound track does not decode")
    if frames < 0:
        with _quiet_ffmpeg(), av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
    return ClipInfo(frames=frames, fps=float(rate or 0), has_audio=has_audio)


def _listed_problems(header: str, problems: list[str]) -> str:
    shown = problems[:_SHOWN]
    more = [f"  ... and {len(problems) - _SHOWN} more"] if len(problems) > _SHOWN else []
    return "\n".join([header, *(f"  {p}" for p in shown), *more])


def check_clips(rows: list[dict[str, Any]], root: Path, column: str, min_frames: int) -> tuple[list[str], int]:
    """Every clip exists, decodes, has a sound track and at least ``min_frames`` frames; one line per bad clip.

    Upstream would skip such a clip with a warning (or encode no audio for it), leaving a sample without its pair.

    Returns:
        ``(problems, clips checked)``.
    """
    problems = []
    for index, row in enumerate(rows, start=1):
        value = str(row.get(column) or "").strip()
        path = root / value
        where = f"row {index} ({value})"
        if not path.is_file():
            problems.append(f"{where}: no such file {path}")
            continue
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            problems.append(f"{where}: an image has no sound track, and audio_reference trains on each clip's sound")
            continue
        try:
            info = probe_clip(path)
        except Exception as e:
            problems.append(f"{where}: cannot be decoded ({type(e).__name__}: {str(e).strip() or 'unreadable'})")
            continue
        if not info.has_audio:
            problems.append(f"{where}: no sound track (the target audio, audio_latents/, comes from each clip's sound)")
        if info.frames < min_frames:
            seconds = f" ({info.frames / info.fps:.2f} s at {info.fps:g} fps)" if info.fps else ""
            problems.append(
                f"{where}: {info.frames} frames{seconds}, fewer than the {min_frames} of the smallest bucket; "
                "upstream would skip it. Drop it, or add a bucket with fewer frames"
            )
    return problems, len(rows)


def _column_problems(rows: list[dict[str, Any]], manifest: Path, columns: dict[str, str]) -> list[str]:
    if not rows:
        return [f"{manifest}: no rows"]
    problems = []
    present = set().union(*(row.keys() for row in rows))
    for option, column in columns.items():
        if column not in present:
            problems.append(
                f"{manifest}: no {column!r} column (columns: {', '.join(sorted(present))}); name yours with {option}"
            )
            continue
        empty = [str(i) for i, row in enumerate(rows, start=1) if not str(row.get(column) or "").strip()]
        if empty:
            problems.append(f"{manifest}: {column!r} is empty in row(s) {', '.join(empty[:_SHOWN])}")
    return problems


# --------------------------------------------------------------------------------------------------------------------
# Plan and run
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PreprocessPlan:
    """Everything :func:`run_preprocess` needs, checked."""

    settings: PreprocessSettings
    checkout: Ltx2Checkout
    pack: PackPaths
    rows: list[dict[str, Any]]
    buckets: list[Bucket]
    references: ReferencePlan
    output: Path
    resumed: bool  # finished files from an earlier run are there and kept
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # sample name -> fingerprint of its inputs
    changed: tuple[str, ...] = ()  # samples whose inputs changed since their files were made: redone
    removed: tuple[str, ...] = ()  # samples of the earlier run no longer in the manifest: their files removed

    def upstream_command(self, manifest: Path) -> list[str]:
        """The ``process_dataset.py`` command line, for ``manifest`` (the copy without the reference column)."""
        s = self.settings
        command = [
            sys.executable,
            str(self.checkout.process_dataset),
            str(manifest),
            "--resolution-buckets",
            ";".join(f"{b.width}x{b.height}x{b.frames}" for b in self.buckets),
            "--model-path",
            str(self.pack.model_path),
            "--text-encoder-path",
            str(self.pack.text_encoder_path),
            "--device",
            s.device,
            "--output-dir",
            str(self.output),
        ]
        if s.video_vae_path is not None:
            command += ["--video-vae-path", str(s.video_vae_path)]
        if s.audio_vae_path is not None:
            command += ["--audio-vae-path", str(s.audio_vae_path)]
        if s.video_column != "video":
            command += ["--video-column", s.video_column]
        if s.caption_column != "caption":
            command += ["--caption-column", s.caption_column]
        return command


def _output_problems(output: Path) -> list[str]:
    if output.exists() and not output.is_dir():
        return [f"--output {output}: a file, not a folder"]
    base = output
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return [f"--output {output}: cannot be created, {base} is a file"]
    if (why := write_problem(base)) is not None:
        return [f"--output {output}: cannot be written ({why})"]
    return []


def _recorded_state(output: Path) -> dict[str, Any] | None:
    """An earlier run's ``.preprocess.json``: None where there is none, empty where it cannot be read."""
    path = output / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _state_problem(
    output: Path, state: dict[str, Any] | None, recorded: dict[str, Any], overwrite: bool
) -> tuple[str | None, bool]:
    """(A refusal, whether finished files of an earlier run are there) for the output folder, given its recorded
    ``state`` (:func:`_recorded_state`)."""
    existing = [name for name in DATA_FOLDERS if (output / name).is_dir() and any((output / name).rglob("*.pt"))]
    if overwrite or not existing:
        return None, False
    if state is None:
        logger.warning(
            "%s holds files of an earlier run without a record of its settings (%s); finished files are kept. "
            "Pass --overwrite to redo them",
            output,
            ", ".join(existing),
        )
        return None, True
    previous = state.get("settings", {})
    changed = [key for key, value in recorded.items() if key in previous and previous[key] != value]
    if changed:
        lines = [f"{key}: {previous[key]} then, {recorded[key]} now" for key in changed]
        return (
            f"--output {output} was preprocessed with other settings ({'; '.join(lines)}); its files would mix with "
            "the new ones. Pass --overwrite to redo it, or --output another folder"
        ), True
    return None, True


def sample_names(rows: list[dict[str, Any]], root: Path, column: str) -> list[str]:
    """Each row's file name in the data folders (``clips/a.pt``), named by its clip as upstream names its latents."""
    return [relative_name(root / str(row[column]).strip(), root).with_suffix(".pt").as_posix() for row in rows]


def input_fingerprints(rows: list[dict[str, Any]], root: Path, settings: PreprocessSettings) -> dict[str, str]:
    """Per sample name, a fingerprint of what its files are made from: the manifest row, and the size and
    modification time of its clip and its reference (a file rewritten in place changes them)."""
    fingerprints = {}
    for name, row in zip(sample_names(rows, root, settings.video_column), rows, strict=True):
        digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode())
        for column in (settings.video_column, settings.reference_column):
            value = str(row.get(column) or "").strip()
            try:
                stat = (root / value).stat() if value else None
            except OSError:
                stat = None
            seen = f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "-"
            digest.update(f"|{column}:{seen}".encode())
        fingerprints[name] = digest.hexdigest()[:16]
    return fingerprints


def plan_preprocess(settings: PreprocessSettings) -> PreprocessPlan:
    """Check everything that could stop preprocessing, loading no model and writing nothing.

    Raises:
        PreprocessError: Naming every problem found (the checkout, the manifest, the buckets, the model files, the
            clips, the references, the output folder), each with its fix.
        MissingToolError: FFmpeg or torchcodec missing, each with its install line.
    """
    if installed_trainer_version() is None:
        raise PreprocessError(
            "preprocess runs ltx-trainer's own preprocessing, and ltx-trainer is not installed. It is not on PyPI: run "
            "bash scripts/setup.sh --trainer (docs/install.md)"
        )
    # Upstream reads every clip's sound with torchaudio.load, which decodes through torchcodec and FFmpeg.
    require(
        "preprocess (ltx-trainer's process_dataset.py reads each clip's sound through torchaudio and torchcodec)",
        missing_ffmpeg(),
        missing_torchcodec(),
    )
    checkout = find_ltx2_checkout(settings.ltx2)
    manifest = settings.manifest
    if not manifest.is_file():
        raise PreprocessError(f"{manifest}: no such manifest" if not manifest.exists() else f"{manifest}: not a file")
    if manifest.suffix.lower() not in MANIFEST_SUFFIXES:
        raise PreprocessError(f"{manifest}: expected a {', '.join(MANIFEST_SUFFIXES)} manifest")
    try:
        rows = read_manifest(manifest)
    except ManifestError as e:
        raise PreprocessError(f"{manifest}: cannot be read ({e})") from e
    problems = _column_problems(
        rows,
        manifest,
        {
            "--video-column": settings.video_column,
            "--caption-column": settings.caption_column,
            "--reference-column": settings.reference_column,
        },
    )
    pack, model_problems = check_preprocessing_pack(
        settings.model_path, settings.text_encoder_path, settings.video_vae_path, settings.audio_vae_path
    )
    problems += model_problems
    buckets: list[Bucket] = []
    if pack is not None and not any(p.startswith(("--video-vae-path", "--model-path")) for p in model_problems):
        buckets, bucket_problems = parse_buckets(settings.resolution_buckets, video_scale_factors(pack.video_vae_path))
        problems += bucket_problems
    output = settings.output_dir()
    problems += _output_problems(output)
    if (why := device_problem(settings.device)) is not None:
        problems.append(why)
    if (why := write_problem(manifest.parent)) is not None:
        problems.append(
            f"{manifest.parent}: cannot be written ({why}); preprocess puts a temporary copy of the manifest there, "
            "since upstream names its outputs relative to the manifest's folder. Copy the dataset somewhere writable"
        )
    if problems or pack is None:  # clips and references are checked once the cheap problems are fixed
        raise PreprocessError(_listed_problems(f"preprocess cannot start ({len(problems)} problem(s)):", problems))

    clip_problems, _ = check_clips(rows, manifest.parent, settings.video_column, min(b.frames for b in buckets))
    if clip_problems:
        raise PreprocessError(
            _listed_problems(
                f"{len(clip_problems)} of {len(rows)} clip(s) in {manifest} cannot be preprocessed; nothing was "
                "written:",
                clip_problems,
            )
        )
    state = _recorded_state(output)
    refusal, resumed = _state_problem(output, state, settings.recorded(pack), settings.overwrite)
    if refusal:
        raise PreprocessError(refusal)
    inputs = input_fingerprints(rows, manifest.parent, settings)
    recorded_inputs = (state or {}).get("inputs")  # none before fingerprints were recorded
    previous = recorded_inputs if isinstance(recorded_inputs, dict) and not settings.overwrite else {}
    changed = tuple(name for name, value in inputs.items() if previous.get(name, value) != value)
    removed = tuple(name for name in previous if name not in inputs)
    option = "--audio-vae-path" if settings.audio_vae_path is not None else "--model-path"
    try:
        references = plan_reference_latents(
            manifest,
            output,
            model_path=pack.audio_vae_path,
            overwrite=settings.overwrite,
            reference_column=settings.reference_column,
            media_column=settings.video_column,
            model_option=option,
            redo={Path(name) for name in changed},
        )
    except PrecomputeError as e:
        raise PreprocessError(str(e)) from e
    return PreprocessPlan(
        settings=settings,
        checkout=checkout,
        pack=pack,
        rows=rows,
        buckets=buckets,
        references=references,
        output=output,
        resumed=resumed,
        inputs=inputs,
        changed=changed,
        removed=removed,
    )


@dataclass
class PreprocessResult:
    """What a run wrote."""

    output: Path
    samples: int
    references: PrecomputeResult
    upstream_seconds: float


def expected_files(plan: PreprocessPlan) -> list[Path]:
    """Every ``.pt`` file upstream's step writes, relative to the output (named as upstream names them)."""
    names = sample_names(plan.rows, plan.settings.manifest.parent, plan.settings.video_column)
    return [Path(folder) / name for folder in UPSTREAM_FOLDERS for name in names]


def _remove_partial_files(output: Path) -> int:
    """Remove the temporary files an interrupted or failed write left in the data folders (upstream's
    ``NAME.pt.tmp.PID`` and this package's own); returns how many."""
    removed = 0
    for folder in DATA_FOLDERS:
        for path in (output / folder).rglob("*") if (output / folder).is_dir() else ():
            if path.is_file() and (".pt.tmp." in path.name or is_temp_name(path.name)):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _forget_stale(plan: PreprocessPlan) -> None:
    """Remove the files of samples whose inputs changed (they are made again) or that left the manifest."""
    for names, what in (
        (plan.changed, "changed since their files were made: made again"),
        (plan.removed, "are no longer in the manifest: their files removed"),
    ):
        if not names:
            continue
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        logger.warning("%d sample(s) %s (%s)", len(names), what, shown)
        for name in names:
            for folder in DATA_FOLDERS:
                (plan.output / folder / name).unlink(missing_ok=True)


def _upstream_manifest(plan: PreprocessPlan) -> Path:
    """A hidden copy of the manifest without the reference column, next to it (upstream names outputs relative to
    the manifest's folder, so the copy must sit there)."""
    manifest = plan.settings.manifest
    copy = manifest.parent / f".{manifest.stem}.upstream.json"
    rows = [{k: v for k, v in row.items() if k != plan.settings.reference_column} for row in plan.rows]
    atomic_write_json(copy, rows)
    return copy


def _write_state(plan: PreprocessPlan, status: str, **extra: Any) -> None:  # noqa: ANN401
    plan.output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        plan.output / STATE_FILE,
        {
            "status": status,
            "settings": plan.settings.recorded(plan.pack),
            "ltx_trainer": plan.checkout.version,
            "inputs": plan.inputs,
            **extra,
        },
    )


def run_upstream(plan: PreprocessPlan, *, stream_output: bool = True) -> float:
    """Step 1: ltx-trainer's ``process_dataset.py`` on the manifest without its reference column.

    Args:
        plan: The checked plan (:func:`plan_preprocess`).
        stream_output: Let upstream print to this process's terminal (its own progress bars); False captures it and
            logs it at debug level (its last lines go into the error if it fails).

    Returns:
        Seconds it took.

    Raises:
        PreprocessError: Upstream failed (its exit code, and its last lines when captured) or left a sample without
            its files.
    """
    s = plan.settings
    if s.overwrite:
        for name in DATA_FOLDERS:
            shutil.rmtree(plan.output / name, ignore_errors=True)
        (plan.output / STATE_FILE).unlink(missing_ok=True)
    _forget_stale(plan)
    if removed := _remove_partial_files(plan.output):
        logger.info("Removed %d partial file(s) an earlier run left in %s", removed, plan.output)
    _write_state(plan, "running")
    copy = _upstream_manifest(plan)
    command = plan.upstream_command(copy)
    logger.debug("Running %s", " ".join(command))
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            check=False,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=None if stream_output else subprocess.PIPE,
            stderr=None if stream_output else subprocess.STDOUT,
        )
    finally:
        copy.unlink(missing_ok=True)
    if not stream_output and completed.stdout:
        logger.debug("process_dataset.py output:\n%s", completed.stdout)
    if completed.returncode != 0:
        _remove_partial_files(plan.output)
        tail = "" if stream_output else "\n" + "\n".join((completed.stdout or "").strip().splitlines()[-15:])
        cause = ""
        if (code := probe_write(plan.output)) is not None:
            cause = f"\nThe likely cause: {plan.output} cannot be written ({errno_in_words(code)}); fix that first."
        elif (free := shutil.disk_usage(plan.output).free) < LOW_SPACE_BYTES:
            cause = (
                f"\nThe likely cause: the disk holding {plan.output} has only {free / 2**20:.1f} MB free (upstream's "
                "messages above may say only 'file write failed'); free space first."
            )
        raise PreprocessError(
            f"ltx-trainer's process_dataset.py failed (exit code {completed.returncode})"
            f"{' with the messages above' if stream_output else ':'}{tail}{cause}\nEvery file it finished is kept "
            f"(no partial file is left): fix the cause and rerun the same command"
            f"{' without --overwrite' if s.overwrite else ''} to resume."
        )
    missing = [str(path) for path in expected_files(plan) if not (plan.output / path).is_file()]
    if missing:
        raise PreprocessError(
            _listed_problems(
                f"ltx-trainer's process_dataset.py finished but wrote no file for {len(missing)} sample(s) (its log "
                "says why):",
                missing,
            )
        )
    return time.monotonic() - started


def run_references(plan: PreprocessPlan, *, progress: Callable[[int, int], None] | None = None) -> PrecomputeResult:
    """Step 2: the reference column through the audio VAE encoder into ``reference_audio_latents/``; then the folder is
    recorded as complete.

    Raises:
        PreprocessError: A reference could not be encoded (the plan checked them all, so only a file that changed
            since).
    """
    s = plan.settings
    try:
        references = precompute_reference_latents(
            s.manifest,
            plan.output,
            model_path=plan.pack.audio_vae_path,
            device=s.device,
            front_end=s.front_end,  # type: ignore[arg-type]
            overwrite=s.overwrite,
            reference_column=s.reference_column,
            media_column=s.video_column,
            progress=progress,
            model_option="--audio-vae-path" if s.audio_vae_path is not None else "--model-path",
        )
    except (PrecomputeError, MissingToolError) as e:
        raise PreprocessError(str(e)) from e
    _write_state(plan, "complete", samples=len(plan.rows), buckets=[asdict(b) for b in plan.buckets])
    return references


def run_preprocess(
    plan: PreprocessPlan,
    *,
    progress: Callable[[int, int], None] | None = None,
    stream_output: bool = True,
) -> PreprocessResult:
    """Both steps: :func:`run_upstream`, then :func:`run_references`.

    Returns:
        What was written.
    """
    seconds = run_upstream(plan, stream_output=stream_output)
    references = run_references(plan, progress=progress)
    return PreprocessResult(output=plan.output, samples=len(plan.rows), references=references, upstream_seconds=seconds)
