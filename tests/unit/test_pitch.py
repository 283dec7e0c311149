"""Tier 1: F0 measurement, the PSOLA shift and tone synthesis on synthetic voiced signals with a known F0."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("parselmouth", reason="pitch tools need praat-parselmouth: pip install -e '.[recipes]'")

from ltx_audio_reference.data.pitch import (
    PitchSettings,
    Timbre,
    f0_track,
    measure_f0,
    semitones_between,
    shift_pitch,
    synthesize_tone,
    tuned_tone,
)
from ltx_audio_reference.testing.synthetic_audio import VOWELS, synthetic_voice, synthetic_whisper


@pytest.mark.parametrize("vowel", sorted(VOWELS))
@pytest.mark.parametrize("f0", [78.0, 110.0, 165.0, 240.0, 340.0])
def test_measured_f0_is_within_3_percent(f0: float, vowel: str) -> None:
    voice = synthetic_voice(f0, sample_rate=16000, duration_s=1.0, vowel=vowel, seed=int(f0))
    measured = measure_f0(voice, 16000)
    assert measured.median_hz is not None
    assert abs(measured.median_hz - f0) / f0 < 0.03, measured
    assert measured.voiced_frames > 0.8 * measured.frames


@pytest.mark.parametrize("sample_rate", [16000, 44100])
@pytest.mark.parametrize("f0", [90.0, 130.0, 200.0, 260.0])
def test_plus_five_semitones_remeasures_within_30_hz_and_keeps_the_sample_count(f0: float, sample_rate: int) -> None:
    voice = synthetic_voice(f0, sample_rate=sample_rate, duration_s=1.0, seed=7)
    source = measure_f0(voice, sample_rate).median_hz
    factor = 2.0 ** (5 / 12)
    shifted = shift_pitch(voice, sample_rate, factor)
    assert shifted.shape == voice.shape  # exactly the same number of samples: the lips stay in sync
    remeasured = measure_f0(shifted, sample_rate).median_hz
    assert remeasured is not None
    assert abs(remeasured - source * factor) < 30.0
    assert abs(semitones_between(source, remeasured) - 5.0) < 0.5


@pytest.mark.parametrize("length", [12_345, 16_000, 16_001, 23_999])
def test_shift_preserves_the_sample_count_exactly(length: int) -> None:
    voice = synthetic_voice(150.0, sample_rate=16000, duration_s=1.5, seed=1)[:length]
    for factor in (0.6, 1.0, 1.7):
        assert shift_pitch(voice, 16000, factor).shape == (length,)


def test_shift_moves_pitch_without_moving_time() -> None:
    """A gap in the voicing stays where it was: PSOLA changes pitch, not timing."""
    voice = synthetic_voice(120.0, sample_rate=16000, duration_s=1.2, seed=2)
    voice[6000:9000] = 0.0
    shifted = shift_pitch(voice, 16000, 2.0 ** (4 / 12))
    track_before = f0_track(voice, 16000) > 0
    track_after = f0_track(shifted, 16000) > 0
    assert np.mean(track_before == track_after) > 0.9


@pytest.mark.parametrize("f0", [76.0, 100.0, 151.3, 222.2, 300.0, 353.0])
def test_tone_f0_is_within_1_hz(f0: float) -> None:
    rng = np.random.default_rng(int(f0))
    for _ in range(4):
        timbre = Timbre(
            rolloff_db_per_octave=rng.uniform(-18, -6),
            vibrato_rate_hz=rng.uniform(4, 7),
            vibrato_depth_semitones=rng.uniform(0, 0.3),
            jitter=rng.uniform(0, 0.008),
            shimmer=rng.uniform(0, 0.05),
            breath_snr_db=rng.uniform(15, 40),
        )
        tone, measured = tuned_tone(f0, timbre, seed=int(rng.integers(1 << 30)))
        assert tone.shape == (32000,)  # 2 s at 16 kHz
        assert abs(measured - f0) < 1.0
        assert abs(measure_f0(tone, 16000).median_hz - f0) < 1.0
        assert np.abs(tone).max() == pytest.approx(0.5, abs=1e-6)


def test_plain_tone_is_on_pitch_and_timbre_changes_the_spectrum_not_the_pitch() -> None:
    dark = synthesize_tone(180.0, Timbre(rolloff_db_per_octave=-18, vibrato_depth_semitones=0.0, jitter=0.0))
    bright = synthesize_tone(180.0, Timbre(rolloff_db_per_octave=-3, vibrato_depth_semitones=0.0, jitter=0.0))
    for tone in (dark, bright):
        assert abs(measure_f0(tone, 16000).median_hz - 180.0) < 1.0

    def high_band_share(tone: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(tone)) ** 2
        return float(spectrum[len(spectrum) // 4 :].sum() / spectrum.sum())

    assert high_band_share(bright) > 10 * high_band_share(dark)


def test_unvoiced_and_silent_signals_have_no_pitch() -> None:
    rng = np.random.default_rng(0)
    noise = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    for signal in (noise, np.zeros(16000, dtype=np.float32)):
        measured = measure_f0(signal, 16000, min_voiced_frames=10)
        assert measured.median_hz is None
    assert measure_f0(noise[:100], 16000).median_hz is None  # shorter than one analysis window


def test_whisper_is_mostly_unvoiced_with_a_stricter_voicing_threshold() -> None:
    whisper = synthetic_whisper(duration_s=1.0)
    strict = PitchSettings(voicing_threshold=0.7)
    assert measure_f0(whisper, 16000, strict, min_voiced_frames=10).median_hz is None


def test_semitones_and_argument_checks() -> None:
    assert semitones_between(100.0, 200.0) == pytest.approx(12.0)
    assert semitones_between(200.0, 100.0 * 2 ** (7 / 12) * 2) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="positive"):
        shift_pitch(np.zeros(16000), 16000, 0.0)
    with pytest.raises(ValueError, match="f0_hz"):
        synthesize_tone(9000.0, Timbre(), sample_rate=16000)
    assert not math.isnan(tuned_tone(120.0, Timbre(), seed=0, duration_s=0.5)[1])
