"""Dataset recipes as data: the pydantic model behind ``recipes/**/*.yaml``, and the target-pitch draw.

A recipe says how to turn talking-head clips into (reference tone, pitch-shifted target) pairs: how to measure each
clip's pitch, how to pick the target pitch (``bounded`` or ``decorrelated``), how to shift, how the reference tone's
timbre is randomised, the caption, the acceptance tolerance and the output layout. ``recipes/README.md`` explains
the two Helium recipes.
"""

from __future__ import annotations

import importlib.resources
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ltx_audio_reference.reliability.parsing import TextFileError, read_yaml

if TYPE_CHECKING:
    import numpy as np

MAX_BOUNDED_SEMITONES = 7.0
#: How far inside Praat's analysis floor and ceiling a target pitch must lie to be re-measured reliably. With the
#: Helium floor and ceiling (60 and 500 Hz), PSOLA-shifted espeak-ng and synthetic speech re-measured 1-5 Hz high at
#: targets of 61-65 Hz (the track sticks near 66 Hz) and 2-23 Hz low at 460-480 Hz, but within 0.5 Hz from 67 to
#: 440 Hz; two semitones in from each end is 67.3 to 445.4 Hz.
MEASURABLE_MARGIN_SEMITONES = 2.0
MANIFEST_SUFFIXES = (".json", ".jsonl", ".csv")

Range = tuple[float, float]


def _check_range(name: str, value: Range) -> None:
    low, high = value
    if low > high:
        raise ValueError(f"{name} must be [low, high] with low <= high, got [{low}, {high}]: swap the two values")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalysisConfig(_Section):
    """How each clip's natural pitch is measured (Praat's autocorrelation pitch track)."""

    pitch_floor_hz: float = Field(60.0, gt=20.0, lt=1000.0, description="Lowest F0 searched, in Hz.")
    pitch_ceiling_hz: float = Field(500.0, gt=20.0, le=2000.0, description="Highest F0 searched, in Hz.")
    time_step_s: float = Field(0.01, gt=0.0, le=0.05, description="Analysis frame step, in seconds.")
    voicing_threshold: float = Field(
        0.45, gt=0.0, lt=1.0, description="Praat's voicing threshold; higher calls fewer frames voiced."
    )
    min_voiced_frames: int = Field(
        10, ge=1, description="A clip with fewer voiced frames is dropped with reason no_voiced_frames."
    )

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> AnalysisConfig:
        if self.pitch_floor_hz >= self.pitch_ceiling_hz:
            raise ValueError(
                f"analysis.pitch_floor_hz ({self.pitch_floor_hz}) must be below analysis.pitch_ceiling_hz "
                f"({self.pitch_ceiling_hz}): lower the floor or raise the ceiling"
            )
        low, high = self.measurable_range_hz
        if low >= high:
            raise ValueError(
                f"analysis.pitch_ceiling_hz ({self.pitch_ceiling_hz}) must be more than "
                f"{2 * MEASURABLE_MARGIN_SEMITONES:g} semitones above analysis.pitch_floor_hz "
                f"({self.pitch_floor_hz}), or no pitch is measurable: lower the floor or raise the ceiling"
            )
        return self

    @property
    def measurable_range_hz(self) -> Range:
        """Pitches a shifted clip can be re-measured at: ``MEASURABLE_MARGIN_SEMITONES`` inside floor and ceiling."""
        margin = 2.0 ** (MEASURABLE_MARGIN_SEMITONES / 12.0)
        return self.pitch_floor_hz * margin, self.pitch_ceiling_hz / margin


class BoundedTarget(_Section):
    """Target = the clip's own pitch shifted by a random interval, ``min_semitones <= |shift| <= max_semitones``.

    Source and target pitch stay correlated (the seed's first dataset, r about 0.75).
    """

    kind: Literal["bounded"] = Field(description="Shift a bounded interval off each clip's own pitch.")
    min_semitones: float = Field(1.0, ge=0.0, description="Smallest absolute shift, in semitones.")
    max_semitones: float = Field(5.0, gt=0.0, description="Largest absolute shift, in semitones (at most 7).")
    direction: Literal["both", "up", "down"] = Field("both", description="Which way shifts may go.")

    @model_validator(mode="after")
    def _bounded(self) -> BoundedTarget:
        if self.max_semitones > MAX_BOUNDED_SEMITONES:
            raise ValueError(
                f"target.max_semitones is {self.max_semitones}, but bounded shifts are capped at "
                f"+/-{MAX_BOUNDED_SEMITONES:g} semitones: set max_semitones to {MAX_BOUNDED_SEMITONES:g} or less, "
                "or use kind: decorrelated for targets independent of the source"
            )
        if self.min_semitones > self.max_semitones:
            raise ValueError(
                f"target.min_semitones ({self.min_semitones}) exceeds target.max_semitones ({self.max_semitones}): "
                "lower min_semitones"
            )
        return self


class DecorrelatedTarget(_Section):
    """Target drawn from ``[low_hz, high_hz]`` independently of the clip (the fix: no face-to-pitch shortcut)."""

    kind: Literal["decorrelated"] = Field(description="Draw each target pitch independently of the source.")
    low_hz: float = Field(76.0, gt=20.0, description="Lowest target pitch, in Hz.")
    high_hz: float = Field(353.0, gt=20.0, description="Highest target pitch, in Hz.")
    scale: Literal["linear", "log"] = Field(
        "linear", description="Uniform in hertz (linear) or in semitones (log) between the bounds."
    )

    @model_validator(mode="after")
    def _ordered(self) -> DecorrelatedTarget:
        if self.low_hz >= self.high_hz:
            raise ValueError(
                f"target.low_hz ({self.low_hz}) must be below target.high_hz ({self.high_hz}): swap or widen them"
            )
        return self


TargetConfig = Annotated[BoundedTarget | DecorrelatedTarget, Field(discriminator="kind")]


class ShiftConfig(_Section):
    """How speech is moved to the target pitch."""

    method: Literal["psola"] = Field(
        "psola",
        description="Praat's PSOLA overlap-add resynthesis: formant-preserving, sample count and timing unchanged.",
    )


class ToneConfig(_Section):
    """The reference: a bare voiced tone at the target pitch, with a timbre drawn independently per pair.

    Each ``[low, high]`` range is sampled uniformly for every pair.
    """

    duration_s: float = Field(2.0, gt=0.2, le=30.0, description="Tone length, in seconds.")
    sample_rate: int = Field(16000, ge=8000, le=192000, description="Tone sample rate (the audio VAE runs at 16 kHz).")
    channels: Literal[1, 2] = Field(
        2, description="Written channels; stereo matches what the audio VAE (and stock validation) expects."
    )
    peak: float = Field(0.5, gt=0.0, le=1.0, description="Peak amplitude (0.5 is -6 dBFS).")
    fade_s: float = Field(0.03, ge=0.0, le=0.5, description="Raised-cosine fade in and out, in seconds.")
    rolloff_db_per_octave: Range = Field((-18.0, -6.0), description="Harmonic roll-off range, dB per octave.")
    vibrato_rate_hz: Range = Field((4.0, 7.0), description="Vibrato rate range, Hz.")
    vibrato_depth_semitones: Range = Field((0.0, 0.3), description="Vibrato depth range (peak), semitones.")
    jitter_percent: Range = Field((0.0, 0.8), description="Per-cycle period jitter range, percent.")
    shimmer_percent: Range = Field((0.0, 5.0), description="Per-cycle amplitude shimmer range, percent.")
    breath_snr_db: Range = Field((15.0, 40.0), description="Harmonics-to-breath-noise ratio range, dB.")

    @model_validator(mode="after")
    def _ranges(self) -> ToneConfig:
        for name in (
            "rolloff_db_per_octave",
            "vibrato_rate_hz",
            "vibrato_depth_semitones",
            "jitter_percent",
            "shimmer_percent",
            "breath_snr_db",
        ):
            _check_range(f"tone.{name}", getattr(self, name))
        for name in ("vibrato_rate_hz", "vibrato_depth_semitones", "jitter_percent", "shimmer_percent"):
            if getattr(self, name)[0] < 0:
                raise ValueError(f"tone.{name} cannot be negative: raise its low end to 0 or more")
        if self.jitter_percent[1] > 5 or self.shimmer_percent[1] > 30:
            raise ValueError("tone.jitter_percent must stay <= 5 and tone.shimmer_percent <= 30 (a voice, not noise)")
        return self


class OutputConfig(_Section):
    """Where a build writes, relative to ``--output``."""

    manifest: str = Field(
        "dataset.json",
        description="Manifest for ltx-trainer's process_dataset.py (.json, .jsonl or .csv; columns video, caption, "
        "reference_audio).",
    )
    clips_dir: str = Field("clips", description="Folder of target clips (video untouched, audio replaced).")
    references_dir: str = Field("references", description="Folder of reference tones (WAV).")

    @model_validator(mode="after")
    def _manifest_format(self) -> OutputConfig:
        if Path(self.manifest).suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(
                f"output.manifest {self.manifest!r} must end in one of {', '.join(MANIFEST_SUFFIXES)}: "
                "ltx-trainer's process_dataset.py reads those"
            )
        for name in ("manifest", "clips_dir", "references_dir"):
            value = Path(getattr(self, name))
            if value.is_absolute() or ".." in value.parts:
                raise ValueError(f"output.{name} must be a relative path inside --output, got {value}")
        if self.clips_dir == self.references_dir:
            raise ValueError("output.clips_dir and output.references_dir must differ")
        return self


class Recipe(_Section):
    """A dataset recipe: clips in, (reference tone, pitch-shifted target) pairs out."""

    name: str = Field(description="Recipe name, recorded in the report.")
    description: str = Field("", description="What the recipe is for.")
    seed: int = Field(0, ge=0, description="Seed; each clip's draws depend only on it and the clip's name.")
    caption: str = Field("A person speaks.", min_length=1, description="Constant caption; keep it pitch-free.")
    tolerance_hz: float = Field(
        30.0, gt=0.0, description="Keep a pair only if the shifted speech re-measures this close to the target."
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="Pitch measurement.")
    target: TargetConfig = Field(description="How the target pitch is chosen.")
    shift: ShiftConfig = Field(default_factory=ShiftConfig, description="How speech is shifted.")
    tone: ToneConfig = Field(default_factory=ToneConfig, description="The reference tone.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Output layout.")

    @model_validator(mode="after")
    def _targets_measurable(self) -> Recipe:
        # Bounded targets are drawn inside this range per clip (draw_target); a decorrelated range must fit in it.
        low, high = self.analysis.measurable_range_hz
        if isinstance(self.target, DecorrelatedTarget) and not (
            low <= self.target.low_hz <= self.target.high_hz <= high
        ):
            raise ValueError(
                f"target range [{self.target.low_hz}, {self.target.high_hz}] Hz must lie inside the measurable range "
                f"[{low:.1f}, {high:.1f}] Hz ({MEASURABLE_MARGIN_SEMITONES:g} semitones inside the analysis floor "
                f"{self.analysis.pitch_floor_hz:g} Hz and ceiling {self.analysis.pitch_ceiling_hz:g} Hz), or shifted "
                "clips cannot be re-measured: narrow the target range, lower analysis.pitch_floor_hz or raise "
                "analysis.pitch_ceiling_hz"
            )
        return self


class RecipeError(ValueError):
    """A recipe file is missing, not YAML, or invalid; the message lists each problem."""


def builtin_recipes() -> dict[str, Path]:
    """The recipes this package ships, by name (``helium/decorrelated``): the clone's ``recipes/`` folder, or the copy
    inside an installed wheel."""
    root = Path(__file__).resolve().parents[3]  # src/ltx_audio_reference/data/recipe.py in a clone
    if (root / "pyproject.toml").is_file() and (root / "recipes").is_dir():
        folder = root / "recipes"
    else:
        folder = Path(str(importlib.resources.files("ltx_audio_reference"))) / "recipes"
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*.yaml"))}


def resolve_recipe(name_or_path: Path | str) -> Path:
    """A recipe file: ``name_or_path`` where it is a file, else the shipped recipe of that name
    (``helium/decorrelated``, or the path the docs use, ``recipes/helium/decorrelated.yaml``, from any folder).

    Raises:
        RecipeError: If it is neither, listing the shipped recipes.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = builtin_recipes()
    key = path.with_suffix("").as_posix() if path.suffix in (".yaml", ".yml") else path.as_posix()
    key = key.removeprefix("recipes/")
    if key in shipped:
        return shipped[key]
    names = ", ".join(shipped) or "none found"
    raise RecipeError(f"{path}: no such recipe file, and no shipped recipe of that name (the shipped ones: {names})")


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe YAML, a file or a shipped recipe's name (:func:`resolve_recipe`).

    Raises:
        RecipeError: With one ``field: problem`` line per validation error.
    """
    path = resolve_recipe(path)
    try:
        data = read_yaml(path)
    except TextFileError as e:
        raise RecipeError(str(e)) from e
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: invalid recipe"]
        for err in e.errors():
            loc = ".".join(str(part) for part in err["loc"]) or "(recipe)"
            lines.append(f"  {loc}: {err['msg']}")
        raise RecipeError("\n".join(lines)) from e


def clip_seed(seed: int, key: str, stream: int) -> list[int]:
    """Entropy for one clip's random stream: the recipe seed, a hash of the clip's name, and a stream number.

    Streams: 0 the target pitch, 1 the tone's timbre, 2 the tone's waveform. Each clip's draws are independent of
    the order clips are processed in and of each other.
    """
    return [seed, zlib.crc32(key.encode("utf-8")), stream]


def draw_target(
    source_hz: float, target: TargetConfig, rng: np.random.Generator, *, within_hz: Range | None = None
) -> float | None:
    """The target pitch for a clip whose natural pitch is ``source_hz``.

    Args:
        source_hz: The clip's median F0.
        target: The recipe's target section.
        rng: A ``numpy.random.Generator`` for this clip's target stream.
        within_hz: Keep ``bounded`` targets inside this ``[low, high]`` range (the recipe's
            :attr:`AnalysisConfig.measurable_range_hz`). Where every allowed shift lands inside it the draw is the
            unrestricted one; otherwise the shift is uniform over the allowed shifts that do.

    Returns:
        Target F0 in Hz. ``bounded`` keeps ``|12 log2(target / source)|`` within ``[min_semitones, max_semitones]``;
        ``decorrelated`` never looks at ``source_hz``. None when no allowed ``bounded`` shift lands inside
        ``within_hz`` (a source too low or too high for its shifts to stay measurable).
    """
    if isinstance(target, BoundedTarget):
        shift = _bounded_shift(source_hz, target, rng, within_hz)
        return None if shift is None else source_hz * 2.0 ** (shift / 12.0)
    if target.scale == "log":
        return math.exp(rng.uniform(math.log(target.low_hz), math.log(target.high_hz)))
    return float(rng.uniform(target.low_hz, target.high_hz))


def _bounded_shift(
    source_hz: float, target: BoundedTarget, rng: np.random.Generator, within_hz: Range | None
) -> float | None:
    """A signed shift in semitones: uniform in magnitude and (for ``both``) a fair sign, restricted to ``within_hz``."""
    low, high = target.min_semitones, target.max_semitones
    segments = {"up": [(low, high)], "down": [(-high, -low)], "both": [(-high, -low), (low, high)]}[target.direction]
    if within_hz is not None:
        lowest, highest = (12.0 * math.log2(bound / source_hz) for bound in within_hz)
        clipped = [(max(a, lowest), min(b, highest)) for a, b in segments]
        if clipped != segments:  # some shifts leave the range: draw among those that stay in it
            feasible = [(a, b) for a, b in clipped if a <= b]
            if not feasible:
                return None
            total = sum(b - a for a, b in feasible)
            if total == 0.0:
                return feasible[int(rng.integers(len(feasible)))][0]
            position = float(rng.uniform(0.0, total))
            for a, b in feasible:
                if position <= b - a:
                    return a + position
                position -= b - a
            return feasible[-1][1]
    # Every allowed shift is in range: the same two draws as always, so existing datasets rebuild identically.
    magnitude = rng.uniform(low, high)
    sign = {"up": 1.0, "down": -1.0}.get(target.direction) or (1.0 if rng.uniform() < 0.5 else -1.0)
    return float(sign * magnitude)
