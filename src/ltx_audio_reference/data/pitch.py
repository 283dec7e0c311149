"""Pitch tools for the dataset recipes: F0 measurement, a timing-preserving pitch shift and voiced-tone synthesis.

Measurement and shifting use Praat through praat-parselmouth (the ``recipes`` extra):

- F0 is Praat's autocorrelation pitch track (``To Pitch (ac)``); a clip's pitch is the median over voiced frames.
- The shift is Praat's PSOLA (``To Manipulation``, the pitch tier multiplied by a constant factor, ``Get resynthesis
  (overlap-add)``). PSOLA moves pitch periods without resampling them, so formants stay where they were, and with
  the duration untouched every pitch mark keeps its time: the lips stay in sync. The output has exactly as many
  samples as the input.

Tones are additive synthesis in numpy: harmonics of an instantaneous F0 with vibrato, per-cycle jitter and shimmer,
a spectral roll-off and pulsed breath noise (:class:`Timbre`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _parselmouth() -> ModuleType:
    try:
        import parselmouth  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("Pitch measurement and shifting need praat-parselmouth: pip install praat-parselmouth") from e
    return parselmouth


@dataclass(frozen=True)
class PitchSettings:
    """Praat pitch-analysis settings.

    Attributes:
        floor_hz: Lowest F0 searched; Praat's analysis window is three periods of it.
        ceiling_hz: Highest F0 searched.
        time_step_s: Frame step.
        voicing_threshold: Praat's voicing threshold (0.45 by default); raise it to call fewer frames voiced.
    """

    floor_hz: float = 60.0
    ceiling_hz: float = 500.0
    time_step_s: float = 0.01
    voicing_threshold: float = 0.45


@dataclass(frozen=True)
class F0Measurement:
    """A clip's measured pitch.

    Attributes:
        median_hz: Median F0 over voiced frames, or None when no frame is voiced.
        voiced_frames: Number of voiced analysis frames.
        frames: Number of analysis frames.
    """

    median_hz: float | None
    voiced_frames: int
    frames: int


def _sound(samples: np.ndarray, sample_rate: int) -> Any:  # noqa: ANN401 - a parselmouth.Sound
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples [n], got shape {samples.shape}")
    return _parselmouth().Sound(samples, sampling_frequency=float(sample_rate))


def f0_track(samples: np.ndarray, sample_rate: int, settings: PitchSettings = PitchSettings()) -> np.ndarray:
    """Praat's autocorrelation F0 track.

    Args:
        samples: Mono ``[n]`` float samples.
        sample_rate: In Hz.
        settings: Floor, ceiling and time step.

    Returns:
        F0 per frame in Hz, 0 where the frame is unvoiced.
    """
    pitch = _sound(samples, sample_rate).to_pitch_ac(
        time_step=settings.time_step_s,
        pitch_floor=settings.floor_hz,
        pitch_ceiling=settings.ceiling_hz,
        voicing_threshold=settings.voicing_threshold,
    )
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def measure_f0(
    samples: np.ndarray,
    sample_rate: int,
    settings: PitchSettings = PitchSettings(),
    min_voiced_frames: int = 1,
) -> F0Measurement:
    """A clip's natural pitch: the median F0 over its voiced frames.

    Args:
        samples: Mono ``[n]`` float samples.
        sample_rate: In Hz.
        settings: Praat pitch settings.
        min_voiced_frames: Fewer voiced frames than this counts as unvoiced (``median_hz`` None).

    Returns:
        The measurement.
    """
    minimum = 3.0 / settings.floor_hz  # Praat needs three periods of the floor in one window
    if len(samples) < minimum * sample_rate:
        return F0Measurement(median_hz=None, voiced_frames=0, frames=0)
    track = f0_track(samples, sample_rate, settings)
    voiced = track[track > 0]
    median = float(np.median(voiced)) if len(voiced) >= max(1, min_voiced_frames) else None
    return F0Measurement(median_hz=median, voiced_frames=len(voiced), frames=len(track))


def semitones_between(from_hz: float, to_hz: float) -> float:
    """The interval from ``from_hz`` to ``to_hz`` in semitones (positive upwards)."""
    return 12.0 * math.log2(to_hz / from_hz)


def shift_pitch(
    samples: np.ndarray, sample_rate: int, factor: float, settings: PitchSettings = PitchSettings()
) -> np.ndarray:
    """Multiply the pitch by ``factor`` with PSOLA, keeping formants and timing.

    Args:
        samples: Mono ``[n]`` float samples.
        sample_rate: In Hz.
        factor: Pitch ratio (``2 ** (semitones / 12)``); the whole contour is scaled, so intonation is kept.
        settings: Praat settings for the pitch marks (the floor and ceiling must cover the input's pitch).

    Returns:
        float32 ``[n]``: exactly as many samples as ``samples``.

    Raises:
        ValueError: If ``factor`` is not positive.
    """
    if factor <= 0:
        raise ValueError(f"pitch factor must be positive, got {factor}")
    call = _parselmouth().praat.call
    sound = _sound(samples, sample_rate)
    manipulation = call(sound, "To Manipulation", settings.time_step_s, settings.floor_hz, settings.ceiling_hz)
    tier = call(manipulation, "Extract pitch tier")
    call(tier, "Multiply frequencies", sound.xmin, sound.xmax, float(factor))
    call([tier, manipulation], "Replace pitch tier")
    shifted = call(manipulation, "Get resynthesis (overlap-add)").values[0]
    n = len(samples)
    # Overlap-add keeps the domain [xmin, xmax]; pin the count anyway so the video stays in sync to the sample.
    if len(shifted) != n:
        shifted = np.pad(shifted[:n], (0, max(0, n - len(shifted))))
    return shifted.astype(np.float32)


@dataclass(frozen=True)
class Timbre:
    """The voice quality of a synthetic tone; drawn independently of its pitch.

    Attributes:
        rolloff_db_per_octave: Harmonic level change per octave (negative: darker).
        vibrato_rate_hz: Vibrato rate; rounded so a whole number of cycles fits the tone (keeps the median exact).
        vibrato_depth_semitones: Vibrato peak deviation.
        jitter: Relative standard deviation of the per-cycle period.
        shimmer: Relative standard deviation of the per-cycle amplitude.
        breath_snr_db: Harmonic-to-breath-noise ratio.
    """

    rolloff_db_per_octave: float = -12.0
    vibrato_rate_hz: float = 5.0
    vibrato_depth_semitones: float = 0.2
    jitter: float = 0.005
    shimmer: float = 0.03
    breath_snr_db: float = 30.0

    def to_dict(self) -> dict[str, float]:
        """As a JSON-ready dict."""
        return {key: round(float(value), 6) for key, value in asdict(self).items()}


def synthesize_tone(
    f0_hz: float,
    timbre: Timbre,
    *,
    sample_rate: int = 16000,
    duration_s: float = 2.0,
    fade_s: float = 0.03,
    peak: float = 0.5,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A bare voiced tone whose median F0 is ``f0_hz``.

    Vibrato is a sine in log frequency with a whole number of cycles, and jitter is zero-mean per cycle, so the
    median F0 stays at ``f0_hz``. Harmonics stop below 0.45 of the sample rate at the highest instantaneous F0
    (no aliasing). Breath noise is differentiated white noise, pulsed at the glottal rate.

    Args:
        f0_hz: Median fundamental frequency.
        timbre: Voice quality.
        sample_rate: In Hz.
        duration_s: Length.
        fade_s: Raised-cosine fade in and out.
        peak: Peak amplitude of the result.
        rng: Random source for harmonic phases, jitter, shimmer and noise (a fixed seed when None).

    Returns:
        float32 ``[round(duration_s * sample_rate)]``.

    Raises:
        ValueError: If ``f0_hz`` is not below the Nyquist frequency or the duration is not positive.
    """
    if not 0 < f0_hz < 0.45 * sample_rate:
        raise ValueError(f"f0_hz must be in (0, {0.45 * sample_rate}), got {f0_hz}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    rng = rng if rng is not None else np.random.default_rng(0)
    n = round(duration_s * sample_rate)
    t = np.arange(n) / sample_rate

    cycles = round(timbre.vibrato_rate_hz * duration_s)
    vibrato = np.zeros(n)
    if cycles > 0 and timbre.vibrato_depth_semitones > 0:
        vibrato = timbre.vibrato_depth_semitones * np.sin(
            2 * np.pi * cycles / duration_s * t + rng.uniform(0, 2 * np.pi)
        )
    f_smooth = f0_hz * 2.0 ** (vibrato / 12.0)
    cycle_position = np.cumsum(f_smooth) / sample_rate  # in glottal cycles
    n_cycles = int(cycle_position[-1]) + 2
    jitter = 1.0 + np.clip(timbre.jitter * rng.standard_normal(n_cycles), -3 * timbre.jitter, 3 * timbre.jitter)
    shimmer = 1.0 + np.clip(timbre.shimmer * rng.standard_normal(n_cycles), -3 * timbre.shimmer, 3 * timbre.shimmer)
    cycle = np.minimum(cycle_position.astype(np.int64), n_cycles - 1)
    f_inst = f_smooth * jitter[cycle]
    phase = 2 * np.pi * np.cumsum(f_inst) / sample_rate

    harmonics = max(1, min(200, int(0.45 * sample_rate / f_inst.max())))
    voiced = np.zeros(n)
    for k in range(1, harmonics + 1):
        level = 10.0 ** (timbre.rolloff_db_per_octave * math.log2(k) / 20.0)
        voiced += level * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    voiced *= np.interp(cycle_position, np.arange(n_cycles) + 0.5, shimmer)

    noise = np.diff(rng.standard_normal(n + 1)) / np.sqrt(2.0)
    noise *= 0.4 + 0.6 * (0.5 + 0.5 * np.cos(phase))  # breath is strongest while the glottis opens
    voiced_rms = float(np.sqrt(np.mean(voiced**2))) or 1.0
    noise *= voiced_rms / 10.0 ** (timbre.breath_snr_db / 20.0) / (float(np.sqrt(np.mean(noise**2))) or 1.0)
    tone = voiced + noise

    fade = min(round(fade_s * sample_rate), n // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        tone[:fade] *= ramp
        tone[n - fade :] *= ramp[::-1]
    tone *= peak / (float(np.abs(tone).max()) or 1.0)
    return tone.astype(np.float32)


def tuned_tone(
    f0_hz: float,
    timbre: Timbre,
    *,
    seed: int | Sequence[int],
    sample_rate: int = 16000,
    duration_s: float = 2.0,
    fade_s: float = 0.03,
    peak: float = 0.5,
    settings: PitchSettings = PitchSettings(),
    tolerance_hz: float = 0.25,
    max_corrections: int = 2,
) -> tuple[np.ndarray, float]:
    """:func:`synthesize_tone`, measured with Praat and re-synthesized until it measures within ``tolerance_hz``.

    Frame coverage of the vibrato, jitter and shimmer move the measured median a fraction of a hertz. Each
    correction scales the requested F0 by ``target / measured`` and replays the same random draws (same ``seed``),
    so only the pitch changes.

    Args:
        f0_hz: Target median F0.
        timbre: Voice quality.
        seed: Seed (or entropy sequence) for the tone's random draws.
        sample_rate: In Hz.
        duration_s: Length.
        fade_s: Fade in and out.
        peak: Peak amplitude.
        settings: Praat settings for the check.
        tolerance_hz: Accept once the measured median is this close.
        max_corrections: At most this many re-syntheses.

    Returns:
        ``(tone float32 [n], measured median F0)``; the F0 is NaN if Praat finds no voiced frame.
    """
    requested = f0_hz
    tone = np.zeros(0, dtype=np.float32)
    measured = math.nan
    for _ in range(max_corrections + 1):
        tone = synthesize_tone(
            requested,
            timbre,
            sample_rate=sample_rate,
            duration_s=duration_s,
            fade_s=fade_s,
            peak=peak,
            rng=np.random.default_rng(seed),
        )
        median = measure_f0(tone, sample_rate, settings).median_hz
        measured = math.nan if median is None else median
        if median is None or abs(median - f0_hz) <= tolerance_hz:
            break
        requested *= f0_hz / median
    return tone, measured
