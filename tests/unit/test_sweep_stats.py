"""The pitch sweep's measurement path on synthesized outputs with a known F0: slopes near 1 and 0, disjoint CIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("parselmouth", reason="pitch measurement needs praat-parselmouth: pip install -e '.[recipes]'")

from ltx_audio_reference.data.pitch import Timbre, synthesize_tone
from ltx_audio_reference.evaluation.sweep_stats import (
    PitchMeasurement,
    arm_styles,
    fit_slope,
    measure_pitch,
    plot_sweep,
    summarize_arm,
)

SAMPLE_RATE = 24000  # the vocoder's rate
REFERENCE_HZ = np.geomspace(90.0, 300.0, 8)


def _tone(f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    timbre = Timbre(rolloff_db_per_octave=float(rng.uniform(-15, -6)), vibrato_depth_semitones=0.3)
    stereo = synthesize_tone(f0, timbre, sample_rate=SAMPLE_RATE, duration_s=1.0, rng=rng)
    return np.stack([stereo, stereo])  # the generated audio is stereo


@pytest.fixture(scope="module")
def references() -> list[float]:
    measured = [measure_pitch(_tone(f0, seed=i), SAMPLE_RATE).f0_hz for i, f0 in enumerate(REFERENCE_HZ)]
    assert all(m is not None for m in measured)
    return [float(m) for m in measured]


@pytest.fixture(scope="module")
def follower(references: list[float]) -> list[PitchMeasurement]:
    """A generator that follows the reference exactly (another timbre, the same F0)."""
    return [measure_pitch(_tone(f0, seed=100 + i), SAMPLE_RATE) for i, f0 in enumerate(references)]


@pytest.fixture(scope="module")
def ignorer(references: list[float]) -> list[PitchMeasurement]:
    """A generator that ignores the reference: its own pitch, scattered around 150 Hz."""
    rng = np.random.default_rng(5)
    own = 150.0 * 2.0 ** (rng.normal(0.0, 1.5, len(references)) / 12.0)
    return [measure_pitch(_tone(float(f0), seed=200 + i), SAMPLE_RATE) for i, f0 in enumerate(own)]


def test_measurement_recovers_a_known_f0(references: list[float], follower: list[PitchMeasurement]) -> None:
    for target, measured in zip(REFERENCE_HZ, references, strict=True):
        assert abs(measured - target) / target < 0.02
    assert all(m.voiced_fraction > 0.9 for m in follower)


def test_follower_and_ignorer_slopes_near_one_and_zero_with_disjoint_intervals(
    references: list[float], follower: list[PitchMeasurement], ignorer: list[PitchMeasurement]
) -> None:
    follows = fit_slope(references, [m.f0_hz for m in follower], bootstrap=2000, seed=0)
    ignores = fit_slope(references, [m.f0_hz for m in ignorer], bootstrap=2000, seed=0)
    assert follows.slope == pytest.approx(1.0, abs=0.05)
    assert ignores.slope == pytest.approx(0.0, abs=0.3)
    assert follows.ci_low <= follows.slope <= follows.ci_high
    assert ignores.ci_low <= 0.0 <= ignores.ci_high
    assert follows.ci_low > ignores.ci_high  # the intervals exclude each other
    assert follows.excludes(0.0)
    assert not ignores.excludes(0.0)
    assert follows.points == ignores.points == len(REFERENCE_HZ)


def test_fit_is_semitones_on_semitones() -> None:
    reference = [100.0, 150.0, 200.0, 300.0]
    octave_up = [2.0 * f for f in reference]  # transposed: still follows, slope 1
    fit = fit_slope(reference, octave_up, bootstrap=200)
    assert fit.slope == pytest.approx(1.0)
    assert fit.intercept_semitones == pytest.approx(12.0)
    assert fit.ci_low == pytest.approx(1.0)
    assert fit.ci_high == pytest.approx(1.0)
    assert fit_slope(reference, [150.0] * 4, bootstrap=200).slope == pytest.approx(0.0)


def test_unvoiced_outputs_are_left_out_and_counted() -> None:
    fit = fit_slope([100.0, 150.0, 200.0], [None, 160.0, float("nan")])
    assert (fit.slope, fit.ci_low, fit.points) == (None, None, 1)
    two = fit_slope([100.0, 200.0, 300.0], [110.0, None, 330.0])
    assert two.slope == pytest.approx(1.0)
    assert two.ci_low is None  # no interval from two points
    with pytest.raises(ValueError, match="2 reference F0s but 1 output"):
        fit_slope([1.0, 2.0], [1.0])


def test_noise_is_unvoiced() -> None:
    noise = np.random.default_rng(0).standard_normal((2, SAMPLE_RATE)) * 0.3
    measured = measure_pitch(noise, SAMPLE_RATE)
    assert measured.voiced_fraction < 0.2


def test_summary_json_and_plot(
    tmp_path: Path, references: list[float], follower: list[PitchMeasurement], ignorer: list[PitchMeasurement]
) -> None:
    unvoiced = PitchMeasurement(f0_hz=None, voiced_fraction=0.0, voiced_frames=0, frames=98)
    arms = [
        summarize_arm("lora", references, follower, bootstrap=500),
        summarize_arm("base", references, ignorer, bootstrap=500),
        summarize_arm("overlap", references, [unvoiced, *follower[1:]], bootstrap=500),
    ]
    assert arms[2].voiced_outputs == len(references) - 1
    assert arms[2].voiced_fraction < arms[0].voiced_fraction
    document = json.loads(json.dumps([arm.to_dict() for arm in arms]))
    assert document[0]["fit"]["slope"] == pytest.approx(arms[0].fit.slope)
    assert document[2]["outputs"][0]["f0_hz"] is None

    png = plot_sweep(arms, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_reference_guided_arms_are_recorded_and_drawn_in_styles_of_their_own(
    tmp_path: Path, references: list[float], follower: list[PitchMeasurement], ignorer: list[PitchMeasurement]
) -> None:
    arms = [
        summarize_arm(
            name,
            references,
            follower if base == "lora" else ignorer,
            bootstrap=50,
            base_arm=base,
            reference_guidance_scale=scale,
        )
        for base in ("lora", "base")
        for name, scale in ((base, 0.0), (f"{base}_rg0.5", 0.5), (f"{base}_rg3", 3.0))
    ]
    document = arms[2].to_dict()
    assert (document["arm"], document["base_arm"], document["reference_guidance_scale"]) == ("lora_rg3", "lora", 3.0)
    assert summarize_arm("lora", references, follower, bootstrap=0).to_dict()["base_arm"] == "lora"

    styles = arm_styles(arms)
    assert len({(s.colour, s.marker, s.linestyle) for s in styles}) == len(arms)
    assert styles[0].colour == "tab:blue"
    assert styles[0].linestyle == "-"
    assert styles[1].linestyle == styles[2].linestyle == ":"
    assert styles[1].marker != styles[2].marker
    # Darker shades of the arm's colour as the scale grows.
    assert sum(styles[1].colour) > sum(styles[2].colour)
    assert styles[4].colour[0] > styles[4].colour[2]  # base's guided arms stay orange

    png = plot_sweep(arms, tmp_path / "guided.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
