"""The pitch sweep's measurement path: F0 and voiced fraction per output, and the slope of output on reference F0.

Plain numpy and Praat (through :mod:`ltx_audio_reference.data.pitch`); no model is involved, so it is tested on
synthesized audio with a known F0.

**Slope.** Both F0s are taken in semitones (``12 log2(f / 100 Hz)``) and the output is regressed on the reference by
ordinary least squares. A generator that follows the reference has slope 1 (transposed by a fixed interval it still
has slope 1, with another intercept); one that ignores the reference has slope 0. The log scale makes a semitone
weigh the same at 90 Hz and at 300 Hz.

**Confidence interval.** A percentile bootstrap over the (reference, output) pairs: resample the pairs with
replacement, refit, and take the 2.5th and 97.5th percentiles of the slopes (resamples whose references are all equal
have no slope and are skipped). Outputs without a voiced frame have no F0 and are left out of the fit; the voiced
fraction reports them.

**Voiced fraction.** The share of Praat's 10 ms analysis frames with an F0, averaged over an arm's outputs. An arm
that "comes out unvoiced" shows up here as a number near 0, and its slope then rests on few points (or none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ltx_audio_reference.reliability.files import atomic_file

logger = logging.getLogger(__name__)

SEMITONE_REFERENCE_HZ = 100.0


@dataclass(frozen=True)
class PitchMeasurement:
    """One clip's pitch: median F0 over voiced frames (None when none is voiced) and the voiced share of frames."""

    f0_hz: float | None
    voiced_fraction: float
    voiced_frames: int
    frames: int


@dataclass(frozen=True)
class SlopeFit:
    """Output-vs-reference F0 slope (semitones on semitones) with its bootstrap confidence interval."""

    slope: float | None
    intercept_semitones: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    points: int
    bootstrap_resamples: int

    def excludes(self, value: float) -> bool:
        """Whether the confidence interval lies entirely above or below ``value`` (False without an interval)."""
        if self.ci_low is None or self.ci_high is None:
            return False
        return value < self.ci_low or value > self.ci_high


@dataclass
class ArmResult:
    """One arm of the sweep: per-output measurements and the fit."""

    arm: str
    fit: SlopeFit
    voiced_fraction: float
    voiced_outputs: int
    outputs: list[dict[str, Any]] = field(default_factory=list)
    base_arm: str | None = None  # the arm without its reference-guidance suffix (``lora`` for ``lora_rg3``)
    reference_guidance_scale: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """Average ``[channels, samples]`` (or pass ``[samples]``) to float64 mono."""
    waveform = np.asarray(waveform, dtype=np.float64)
    return waveform.mean(axis=0) if waveform.ndim == 2 else waveform


def measure_pitch(
    waveform: np.ndarray, sample_rate: int, *, floor_hz: float = 60.0, ceiling_hz: float = 500.0
) -> PitchMeasurement:
    """F0 and voiced fraction of a clip with Praat's autocorrelation pitch (``recipes`` extra).

    Args:
        waveform: ``[channels, samples]`` or ``[samples]``; channels are averaged.
        sample_rate: In Hz.
        floor_hz: Lowest F0 searched.
        ceiling_hz: Highest F0 searched.

    Returns:
        The measurement; ``f0_hz`` is None when no frame is voiced.
    """
    from ltx_audio_reference.data.pitch import PitchSettings, measure_f0  # noqa: PLC0415

    measured = measure_f0(to_mono(waveform), sample_rate, PitchSettings(floor_hz=floor_hz, ceiling_hz=ceiling_hz))
    fraction = measured.voiced_frames / measured.frames if measured.frames else 0.0
    return PitchMeasurement(
        f0_hz=measured.median_hz,
        voiced_fraction=fraction,
        voiced_frames=measured.voiced_frames,
        frames=measured.frames,
    )


def semitones(hz: np.ndarray | float) -> np.ndarray:
    """``12 log2(hz / 100)``."""
    return 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / SEMITONE_REFERENCE_HZ)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    dx = x - x.mean()
    denominator = float((dx * dx).sum())
    if denominator <= 1e-12:
        return None
    slope = float((dx * (y - y.mean())).sum()) / denominator
    return slope, float(y.mean() - slope * x.mean())


def fit_slope(
    reference_hz: Sequence[float],
    output_hz: Sequence[float | None],
    *,
    bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SlopeFit:
    """Regress output F0 on reference F0 (semitones) and bootstrap the slope's confidence interval.

    Args:
        reference_hz: Reference F0 of each output.
        output_hz: Measured output F0, None (or NaN) for an unvoiced output, which is left out.
        bootstrap: Bootstrap resamples.
        confidence: Two-sided confidence level of the percentile interval.
        seed: Seed of the resampling.

    Returns:
        The fit; the slope is None with fewer than 2 distinct voiced references, the interval None with fewer than 3
        voiced points.

    Raises:
        ValueError: If the two sequences differ in length or ``confidence`` is not in (0, 1).
    """
    if len(reference_hz) != len(output_hz):
        raise ValueError(f"{len(reference_hz)} reference F0s but {len(output_hz)} output F0s")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pairs = [
        (r, o) for r, o in zip(reference_hz, output_hz, strict=True) if o is not None and math.isfinite(o) and o > 0
    ]
    x = semitones([r for r, _ in pairs]) if pairs else np.zeros(0)
    y = semitones([o for _, o in pairs]) if pairs else np.zeros(0)
    fitted = _ols(x, y) if len(pairs) >= 2 else None
    if fitted is None:
        return SlopeFit(None, None, None, None, confidence, len(pairs), 0)

    low = high = None
    valid = 0
    if len(pairs) >= 3 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        slopes = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(pairs), len(pairs))
            resampled = _ols(x[pick], y[pick])
            if resampled is not None:
                slopes.append(resampled[0])
        valid = len(slopes)
        if valid:
            tail = (1.0 - confidence) / 2.0 * 100.0
            low, high = (float(v) for v in np.percentile(slopes, [tail, 100.0 - tail]))
    return SlopeFit(fitted[0], fitted[1], low, high, confidence, len(pairs), valid)


def summarize_arm(
    arm: str,
    reference_hz: Sequence[float],
    measurements: Sequence[PitchMeasurement],
    *,
    labels: Sequence[dict[str, Any]] | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
    base_arm: str | None = None,
    reference_guidance_scale: float = 0.0,
) -> ArmResult:
    """Fit one arm and collect its per-output rows.

    Args:
        arm: The arm's name.
        reference_hz: Reference F0 of each output.
        measurements: Each output's pitch.
        labels: Extra per-output fields for the JSON (file, seed, ...).
        bootstrap: Bootstrap resamples.
        seed: Seed of the resampling.
        base_arm: The arm's name without its reference-guidance suffix (``arm`` when None).
        reference_guidance_scale: The reference-guidance scale the arm was sampled with.

    Returns:
        The arm's result.
    """
    fit = fit_slope(reference_hz, [m.f0_hz for m in measurements], bootstrap=bootstrap, seed=seed)
    outputs = []
    for index, (ref, m) in enumerate(zip(reference_hz, measurements, strict=True)):
        row: dict[str, Any] = {"reference_f0_hz": ref, **asdict(m)}
        if labels is not None:
            row.update(labels[index])
        outputs.append(row)
    voiced = [m.voiced_fraction for m in measurements]
    return ArmResult(
        arm=arm,
        fit=fit,
        voiced_fraction=float(np.mean(voiced)) if voiced else 0.0,
        voiced_outputs=sum(m.f0_hz is not None for m in measurements),
        outputs=outputs,
        base_arm=base_arm or arm,
        reference_guidance_scale=float(reference_guidance_scale),
    )


ARM_STYLES = {"lora": ("tab:blue", "o", 64), "base": ("tab:orange", "s", 36), "overlap": ("tab:green", "^", 20)}
#: The arms' colours as RGB (matplotlib's tab10), so guided arms get darker shades of their arm's colour.
_ARM_RGB = {
    "lora": (0.122, 0.467, 0.706),
    "base": (1.0, 0.498, 0.055),
    "overlap": (0.173, 0.627, 0.173),
}
#: Markers of the reference-guided arms, by the rank of their scale among an arm's guided scales.
GUIDED_MARKERS = ("D", "v", "P", "*", "X", "h", "p", "<")


@dataclass(frozen=True)
class ArmStyle:
    """How one arm is drawn: marker colour, shape and size, and the line style of its fit."""

    colour: Any
    marker: str
    size: float
    linestyle: Any


def arm_styles(arms: Sequence[ArmResult]) -> list[ArmStyle]:
    """A distinct style per arm.

    Plain arms (reference guidance 0) keep their colour, marker and solid fit line. Reference-guided arms take
    darker shades of their base arm's colour as the scale grows, a marker of their own per scale, and a dotted fit
    line; arms outside the known three get the next matplotlib cycle colours.
    """
    styles = []
    guided_scales: dict[str, list[float]] = {}
    for arm in arms:
        if arm.reference_guidance_scale:
            guided_scales.setdefault(arm.base_arm or arm.arm, []).append(arm.reference_guidance_scale)
    for index, arm in enumerate(arms):
        base = arm.base_arm or arm.arm
        colour, marker, size = ARM_STYLES.get(base, (f"C{index + 3}", "o", 24))
        if not arm.reference_guidance_scale:
            styles.append(ArmStyle(colour, marker if base in ARM_STYLES else "D", size, "-"))
            continue
        ranked = sorted(guided_scales[base])
        rank = ranked.index(arm.reference_guidance_scale)
        darkness = 0.3 + 0.45 * (rank + 1) / len(ranked)  # 0.3 .. 0.75 of the way to black
        rgb = _ARM_RGB.get(base)
        shade = tuple(c * (1 - darkness) for c in rgb) if rgb else f"C{index + 3}"
        styles.append(ArmStyle(shade, GUIDED_MARKERS[rank % len(GUIDED_MARKERS)], 30, ":"))
    return styles


def plot_sweep(arms: Sequence[ArmResult], path: Path, *, title: str = "Pitch sweep") -> Path:  # noqa: PLR0915
    """Reference F0 (x) against output F0 (y), one colour per arm, with each arm's fitted line.

    Voiced outputs are markers (a circle, square and triangle per arm, nested where arms coincide; reference-guided
    arms in darker shades of their arm's colour, with markers of their own and dotted fit lines, see
    :func:`arm_styles`); unvoiced outputs are crosses on the x axis. The dashed diagonal is "follows the reference
    exactly" (slope 1). Both axes are logarithmic, matching the semitone fit.

    Args:
        arms: The arms to draw.
        path: Output PNG.
        title: Plot title.

    Returns:
        ``path``.
    """
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    all_refs = [row["reference_f0_hz"] for arm in arms for row in arm.outputs]
    all_outs = [row["f0_hz"] for arm in arms for row in arm.outputs if row["f0_hz"] is not None]
    low = min([*all_refs, *all_outs], default=90.0) / 1.15
    high = max([*all_refs, *all_outs], default=300.0) * 1.15

    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1, label="follows the reference (1)")
    for arm, style in zip(arms, arm_styles(arms), strict=True):
        colour, marker, size = style.colour, style.marker, style.size
        voiced = [(r["reference_f0_hz"], r["f0_hz"]) for r in arm.outputs if r["f0_hz"] is not None]
        unvoiced = [r["reference_f0_hz"] for r in arm.outputs if r["f0_hz"] is None]
        fit = arm.fit
        if fit.slope is None:
            slope_text = "no slope"
        elif fit.ci_low is None:
            slope_text = f"slope {fit.slope:.2f}"
        else:
            slope_text = f"slope {fit.slope:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]"
        label = f"{arm.arm}: {slope_text}, voiced {arm.voiced_fraction:.0%}"
        if voiced:
            axes.scatter(
                [v[0] for v in voiced],
                [v[1] for v in voiced],
                color=colour,
                marker=marker,
                s=size,
                label=label,
                zorder=3,
            )
        else:
            axes.scatter([], [], color=colour, marker=marker, s=size, label=label)
        if unvoiced:
            axes.scatter(unvoiced, [low * 1.02] * len(unvoiced), color=colour, marker="x", s=36, zorder=3)
        if fit.slope is not None and fit.intercept_semitones is not None:
            xs = np.geomspace(min(r for r, _ in voiced), max(r for r, _ in voiced), 20)
            ys = SEMITONE_REFERENCE_HZ * 2.0 ** ((fit.slope * semitones(xs) + fit.intercept_semitones) / 12.0)
            axes.plot(xs, ys, color=colour, linewidth=1.5, linestyle=style.linestyle)
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter  # noqa: PLC0415

    ticks = [t for t in (50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 600, 800) if low <= t <= high]
    for axis, set_scale in ((axes.xaxis, axes.set_xscale), (axes.yaxis, axes.set_yscale)):
        set_scale("log")
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("reference F0 (Hz)")
    axes.set_ylabel("output F0 (Hz)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    try:
        with atomic_file(Path(path)) as tmp:
            figure.savefig(tmp)
    finally:
        plt.close(figure)
    return Path(path)
