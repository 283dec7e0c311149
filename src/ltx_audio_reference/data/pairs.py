"""One pair, in memory: measure a clip's pitch, draw a target, shift the speech there, synthesize the reference tone.

:func:`make_pair` is the core of a recipe (:mod:`.build` drives it over a folder of clips); it reads and writes no
file, so the tests run it on synthetic voices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ltx_audio_reference.data.pitch import PitchSettings, Timbre, measure_f0, semitones_between, shift_pitch, tuned_tone
from ltx_audio_reference.data.recipe import Recipe, ToneConfig, clip_seed, draw_target

#: The reference tone must measure this close to the target; ``tuned_tone`` aims at 0.25 Hz and lands within 0.25 Hz
#: over the whole measurable range with the Helium timbres, so anything further is a failed synthesis.
TONE_TOLERANCE_HZ = 1.0

DROP_REASONS: dict[str, str] = {
    "unreadable": "the file could not be opened or decoded",
    "no_video": "the file has no video stream",
    "no_audio": "the file has no audio stream",
    "no_voiced_frames": "too few voiced frames to measure a pitch",
    "target_unmeasurable": "every allowed shift puts the target outside the recipe's measurable pitch range",
    "out_of_tolerance": "the shifted speech re-measured too far from the target",
    "tone_off_target": "the reference tone did not measure at the target pitch (or had no measurable pitch)",
    "error": "processing failed unexpectedly (the detail has the error)",
}


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
    measurable = recipe.analysis.measurable_range_hz
    target = draw_target(
        source.median_hz,
        recipe.target,
        np.random.default_rng(clip_seed(recipe.seed, key, 0)),
        within_hz=measurable,
    )
    if target is None:
        outcome.reason = "target_unmeasurable"
        outcome.detail = (
            f"source {source.median_hz:.1f} Hz: every allowed shift lands outside the measurable range "
            f"[{measurable[0]:.1f}, {measurable[1]:.1f}] Hz"
        )
        return outcome
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
        if outcome.tone_f0_hz is None or abs(outcome.tone_f0_hz - target) > TONE_TOLERANCE_HZ:
            found = "no voiced frames" if outcome.tone_f0_hz is None else f"{outcome.tone_f0_hz:.2f} Hz"
            outcome.reason = "tone_off_target"
            outcome.detail = f"target {target:.1f} Hz, tone measured {found} (tolerance {TONE_TOLERANCE_HZ:g} Hz)"
    return outcome
