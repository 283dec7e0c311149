"""Tier 1: ``audio-reference build-dataset`` end to end on synthetic talking-head clips, and the recipes' statistics.

Needs the ``recipes`` extra (praat-parselmouth, PyAV, matplotlib); each missing library skips with its reason.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("parselmouth", reason="recipes need praat-parselmouth: pip install -e '.[recipes]'")
av = pytest.importorskip("av", reason="recipes need PyAV to read and re-mux clips: pip install -e '.[recipes]'")
pytest.importorskip("matplotlib", reason="the recipe report needs matplotlib: pip install -e '.[recipes]'")

from ltx_audio_reference.cli import build_app  # noqa: E402
from ltx_audio_reference.data.audio_io import read_audio, write_wav  # noqa: E402
from ltx_audio_reference.data.build import BuildError, build_dataset, find_clips  # noqa: E402
from ltx_audio_reference.data.pairs import DROP_REASONS, TONE_TOLERANCE_HZ, make_pair  # noqa: E402
from ltx_audio_reference.data.pitch import measure_f0  # noqa: E402
from ltx_audio_reference.data.recipe import BoundedTarget, clip_seed, draw_target, load_recipe  # noqa: E402
from ltx_audio_reference.data.report import pearson_r  # noqa: E402
from ltx_audio_reference.reliability.files import temp_path_for  # noqa: E402
from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BOUNDED = REPO / "recipes" / "helium" / "bounded.yaml"
DECORRELATED = REPO / "recipes" / "helium" / "decorrelated.yaml"
SOURCE_PITCHES = (95.0, 140.0, 210.0)
runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), ["audio-reference", "build-dataset", *args])
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three voiced clips (one in a subfolder), one unvoiced, one unreadable and one audio-only file."""
    root = tmp_path_factory.mktemp("clips")
    vowels = ("a", "i", "u")
    for index, f0 in enumerate(SOURCE_PITCHES):
        voice = synthetic_voice(f0, sample_rate=44100, duration_s=1.2, vowel=vowels[index], seed=index)
        name = f"speaker_{index}.mp4" if index < 2 else "studio/speaker_2.mp4"
        write_clip(root / name, np.stack([voice, 0.8 * voice]), 44100)
    rng = np.random.default_rng(0)
    write_clip(root / "breathing.mp4", (0.05 * rng.standard_normal(44100)).astype(np.float32), 44100)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    write_wav(root / "voice_only.wav", synthetic_voice(120.0, duration_s=1.0), 16000)  # not a video: not listed
    write_clip(root / "silent_film.mkv", None, 16000, duration_s=0.5)
    return root


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


@pytest.fixture(scope="module")
def built(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    output = tmp_path_factory.mktemp("built") / "dataset"
    code, text = _invoke(str(DECORRELATED), "--input", str(clips), "--output", str(output), "--workers", "1")
    return output, code, text


def test_build_writes_pairs_manifest_and_report(built: tuple[Path, int, str], clips: Path) -> None:
    output, code, text = built
    assert code == 0, text
    assert "helium-decorrelated: building pairs" in text  # the progress bar, in its final state
    assert "6/6 kept 3 dropped 3" in text
    assert "Pearson r" in text
    manifest = json.loads((output / "dataset.json").read_text())
    assert [row["video"] for row in manifest] == [
        "clips/speaker_0.mp4",
        "clips/speaker_1.mp4",
        "clips/studio/speaker_2.mp4",
    ]
    for row in manifest:
        assert set(row) == {"video", "caption", "reference_audio"}  # process_dataset.py's column names
        assert row["caption"] == "A person speaks."
        assert (output / row["video"]).is_file()
        assert (output / row["reference_audio"]).is_file()
    assert (output / "report.png").stat().st_size > 10_000
    assert (output / "recipe.yaml").is_file()
    assert not [p for p in output.rglob("*") if ".tmp" in p.name]


def test_unvoiced_unreadable_and_audio_less_clips_are_dropped_with_reasons(built: tuple[Path, int, str]) -> None:
    output, _, _ = built
    report = json.loads((output / "report.json").read_text())
    assert report["clips"] == 6
    assert report["kept"] == 3
    assert report["dropped"] == 3
    assert report["dropped_by_reason"]["no_voiced_frames"] == 1
    assert report["dropped_by_reason"]["unreadable"] == 1
    assert report["dropped_by_reason"]["no_audio"] == 1
    reasons = {drop["clip"]: drop["reason"] for drop in report["drops"]}
    assert reasons == {"breathing": "no_voiced_frames", "broken": "unreadable", "silent_film": "no_audio"}
    assert all(drop["detail"] for drop in report["drops"])
    assert sum(report["target_histogram"]["counts"]) == 3
    assert report["pearson_r_source_target"] is not None
    _, _, text = built
    broken = next(drop for drop in report["drops"] if drop["clip"] == "broken")
    assert re.search(r"unreadable: \S*broken\.\w+: " + re.escape(broken["detail"][:20]), " ".join(text.split()))
    assert "(from 3 pairs: too few to mean much" in " ".join(text.split())


def test_targets_keep_the_video_and_land_on_the_target_pitch(built: tuple[Path, int, str], clips: Path) -> None:
    output, _, _ = built
    for record_path in sorted((output / ".records").rglob("*.json")):
        record = json.loads(record_path.read_text())
        if record["status"] != "kept":
            continue
        source = Path(record["source"])
        target = output / record["video"]
        assert _video_packets(target) == _video_packets(source)  # video untouched, packet for packet
        source_audio, source_rate = read_audio(source)
        target_audio, target_rate = read_audio(target)
        assert target_rate == source_rate
        assert abs(target_audio.shape[-1] - source_audio.shape[-1]) <= 1024  # AAC frames; timing kept
        remeasured = measure_f0(target_audio[0], target_rate).median_hz
        assert abs(remeasured - record["target_f0_hz"]) < 30.0
        assert abs(record["measured_f0_hz"] - record["target_f0_hz"]) <= 30.0

        tone, tone_rate = read_audio(output / record["reference_audio"])
        assert tone.shape == (2, 32000)
        assert tone_rate == 16000
        assert abs(measure_f0(tone[0], tone_rate).median_hz - record["target_f0_hz"]) < 1.0
        assert set(record["timbre"]) == {
            "rolloff_db_per_octave",
            "vibrato_rate_hz",
            "vibrato_depth_semitones",
            "jitter",
            "shimmer",
            "breath_snr_db",
        }


def test_rerun_resumes_and_a_crash_leaves_no_half_pair(built: tuple[Path, int, str], clips: Path) -> None:
    output, _, _ = built
    recipe = load_recipe(DECORRELATED)
    # What a crash between the two renames (or mid-write) leaves behind:
    orphan = output / "references" / "orphan.wav"
    write_wav(orphan, np.zeros(100), 16000)
    temp = temp_path_for(output / "clips" / "speaker_0.mp4", pid=999)
    temp.write_bytes(b"partial")
    stamps = {p: p.stat().st_mtime_ns for p in (output / "clips").rglob("*.mp4") if p != temp}

    result = build_dataset(recipe, clips, output)
    assert result.processed == 0
    assert result.resumed == 6
    assert not orphan.exists()
    assert not temp.exists()
    assert stamps == {p: p.stat().st_mtime_ns for p in (output / "clips").rglob("*.mp4")}

    # A kept pair whose files vanished is rebuilt, identically (its draws depend only on the seed and its name).
    reference = output / "references" / "speaker_1.wav"
    before = reference.read_bytes()
    reference.unlink()
    result = build_dataset(recipe, clips, output)
    assert result.processed == 1
    assert reference.read_bytes() == before


def test_a_different_recipe_needs_a_new_output_or_overwrite(built: tuple[Path, int, str], clips: Path) -> None:
    output, _, _ = built
    code, text = _invoke(str(BOUNDED), "--input", str(clips), "--output", str(output), "--workers", "1")
    assert code == 1
    assert "different recipe" in text
    assert "--overwrite" in text


def test_csv_input_caption_override_limit_and_csv_manifest(clips: Path, tmp_path: Path) -> None:
    listing = tmp_path / "input.csv"
    with listing.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "caption"])
        writer.writerow([str(clips / "speaker_1.mp4"), "ignored"])
        writer.writerow([str(clips / "speaker_0.mp4"), "ignored"])
    data = yaml.safe_load(BOUNDED.read_text())
    data["output"]["manifest"] = "train.csv"
    recipe = tmp_path / "bounded_csv.yaml"
    recipe.write_text(yaml.safe_dump(data))
    output = tmp_path / "out"
    code, text = _invoke(
        str(recipe), "-i", str(listing), "-o", str(output), "--caption", "Someone talks.", "--limit", "1"
    )
    assert code == 0, text
    with (output / "train.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert rows[0]["caption"] == "Someone talks."
    assert rows[0]["video"].endswith("speaker_1.mp4")


def test_output_over_the_input_is_refused(clips: Path, tmp_path: Path) -> None:
    recipe = load_recipe(BOUNDED)
    (tmp_path / "data" / "clips").mkdir(parents=True)
    shutil.copy(clips / "speaker_0.mp4", tmp_path / "data" / "clips" / "speaker_0.mp4")
    for source, output in (
        (tmp_path / "data" / "clips", tmp_path / "data"),  # clips/ would be the input folder itself
        (tmp_path / "data", tmp_path / "data" / "built"),  # outputs would be listed as inputs next time
    ):
        with pytest.raises(BuildError, match="choose an --output outside the input folder"):
            build_dataset(recipe, source, output)
    (tmp_path / "foreign" / "clips").mkdir(parents=True)
    (tmp_path / "foreign" / "clips" / "mine.mp4").write_bytes(b"someone else's file")
    with pytest.raises(BuildError, match="did not write: choose an empty --output"):
        build_dataset(recipe, tmp_path / "data" / "clips", tmp_path / "foreign")
    assert (tmp_path / "foreign" / "clips" / "mine.mp4").is_file()
    code, text = _invoke(str(BOUNDED), "-i", str(clips / "nowhere"), "-o", str(tmp_path / "x"))
    assert code == 1
    assert "expected a folder of clips" in text


def test_parallel_workers_give_the_same_pairs(clips: Path, built: tuple[Path, int, str], tmp_path: Path) -> None:
    output, _, _ = built
    parallel = tmp_path / "parallel"
    build_dataset(load_recipe(DECORRELATED), clips, parallel, workers=2)
    assert (parallel / "dataset.json").read_text() == (output / "dataset.json").read_text()
    for name in ("speaker_0.wav", "speaker_1.wav", "studio/speaker_2.wav"):
        assert (parallel / "references" / name).read_bytes() == (output / "references" / name).read_bytes()


def _synthetic_population(count: int, seconds: float = 0.5) -> list[tuple[str, np.ndarray, float]]:
    """``count`` voices, F0 log-uniform over 80-260 Hz (typical adult speech), with varied vowels."""
    rng = np.random.default_rng(2024)
    vowels = ("a", "e", "i", "u")
    population = []
    for index in range(count):
        f0 = float(np.exp(rng.uniform(np.log(80.0), np.log(260.0))))
        voice = synthetic_voice(f0, duration_s=seconds, vowel=vowels[index % 4], seed=index, intonation_semitones=0.5)
        population.append((f"clip_{index:03d}", voice, f0))
    return population


@pytest.fixture(scope="module")
def population() -> list[tuple[str, np.ndarray, float]]:
    return _synthetic_population(200)


def test_decorrelated_recipe_has_no_source_target_correlation_on_200_clips(
    population: list[tuple[str, np.ndarray, float]],
) -> None:
    recipe = load_recipe(DECORRELATED)
    outcomes = [make_pair(voice, 16000, recipe, key, with_tone=False) for key, voice, _ in population]
    kept = [o for o in outcomes if o.kept]
    assert len(kept) >= 190, [o.detail for o in outcomes if not o.kept]
    for outcome, (_, _, truth) in zip(outcomes, population, strict=True):
        if outcome.kept:
            assert abs(outcome.source_f0_hz - truth) / truth < 0.03
            assert 76.0 <= outcome.target_f0_hz <= 353.0
            assert abs(outcome.measured_f0_hz - outcome.target_f0_hz) <= 30.0
    r = pearson_r([o.source_f0_hz for o in kept], [o.target_f0_hz for o in kept])
    assert abs(r) < 0.2, r


def test_bounded_recipe_correlates_and_never_exceeds_seven_semitones(
    population: list[tuple[str, np.ndarray, float]],
) -> None:
    recipe = load_recipe(BOUNDED)
    outcomes = [make_pair(voice, 16000, recipe, key, with_tone=False) for key, voice, _ in population[:100]]
    kept = [o for o in outcomes if o.kept]
    assert len(kept) >= 95
    assert max(abs(o.shift_semitones) for o in kept) <= 7.0
    assert min(abs(o.shift_semitones) for o in kept) >= 1.0
    r = pearson_r([o.source_f0_hz for o in kept], [o.target_f0_hz for o in kept])
    assert r > 0.6, r  # the seed's bounded set had about 0.75


def test_a_failing_clip_is_dropped_as_error_and_the_build_goes_on(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltx_audio_reference.data import build  # noqa: PLC0415

    real = build.replace_audio

    def fail_for_speaker_1(source: Path, destination: Path, audio: np.ndarray, sample_rate: int) -> Path:
        if source.name == "speaker_1.mp4":
            destination.write_bytes(b"half-written")
            raise RuntimeError("container refused the stream")
        return real(source, destination, audio, sample_rate)

    monkeypatch.setattr(build, "replace_audio", fail_for_speaker_1)
    output = tmp_path / "out"
    result = build_dataset(load_recipe(DECORRELATED), clips, output)
    assert result.report["dropped_by_reason"]["error"] == 1
    assert result.report["kept"] == 2
    drop = next(d for d in result.report["drops"] if d["reason"] == "error")
    assert drop["clip"] == "speaker_1"
    assert "container refused the stream" in drop["detail"]
    assert not (output / "references" / "speaker_1.wav").exists()  # no half pair
    assert not [p for p in output.rglob("*") if ".tmp" in p.name]


def test_manifest_paths_never_escape_the_output(clips: Path, tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "input.json"
    listing.parent.mkdir()
    relative = Path("..") / clips.name / "speaker_0.mp4"
    shutil.copytree(clips, tmp_path / clips.name)
    listing.write_text(json.dumps([{"video": relative.as_posix()}]))
    (clip,) = find_clips(listing)
    assert ".." not in Path(clip.key).parts
    assert clip.path.resolve() == (tmp_path / clips.name / "speaker_0.mp4").resolve()


# --- Bounded targets on real low and high voices (espeak-ng speech) ------------------------------------------------

ESPEAK_TEXT = "The quick brown fox jumps over the lazy dog."
#: espeak-ng's default English voice at pitch 10 (about 71 Hz) and its f5 variant at pitch 99 (about 349 Hz): below 90
#: and above 334 Hz, where a bounded shift of up to 7 semitones can leave the measurable range [67.3, 445.4] Hz.
ESPEAK_VOICES = {"low": ("-p", "10"), "high": ("-v", "en+f5", "-p", "99")}


@pytest.fixture(scope="module")
def espeak_voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, int]]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    folder = tmp_path_factory.mktemp("espeak")
    voices = {}
    for name, args in ESPEAK_VOICES.items():
        path = folder / f"{name}.wav"
        subprocess.run([exe, "-w", str(path), *args, ESPEAK_TEXT], check=True, capture_output=True)
        samples, rate = read_audio(path)
        voices[name] = (samples.mean(axis=0).astype(np.float64), rate)
    return voices


@pytest.mark.parametrize("voice", ["low", "high"])
def test_bounded_targets_of_real_low_and_high_voices_stay_measurable(
    voice: str, espeak_voices: dict[str, tuple[np.ndarray, int]]
) -> None:
    recipe = load_recipe(BOUNDED)
    low, high = recipe.analysis.measurable_range_hz
    samples, rate = espeak_voices[voice]
    source = measure_f0(samples, rate).median_hz
    assert (source < 90.0) if voice == "low" else (source > 334.0), source  # the premise: a voice at the range's edge
    keys = [f"{voice}_{index:02d}" for index in range(12)]
    # Without the bound, several of these clips draw a target the re-measure cannot confirm (issue 12: 57.8 Hz).
    free = [draw_target(source, recipe.target, np.random.default_rng(clip_seed(recipe.seed, k, 0))) for k in keys]
    assert sum(not low <= t <= high for t in free) >= 3, free
    for key in keys:
        outcome = make_pair(samples, rate, recipe, key)
        assert outcome.kept, (key, outcome.reason, outcome.detail)
        assert low <= outcome.target_f0_hz <= high
        assert 1.0 - 1e-9 <= abs(outcome.shift_semitones) <= 7.0 + 1e-9
        assert abs(outcome.measured_f0_hz - outcome.target_f0_hz) < 3.0, (key, outcome.target_f0_hz)
        assert outcome.tone_f0_hz is not None
        assert abs(outcome.tone_f0_hz - outcome.target_f0_hz) <= TONE_TOLERANCE_HZ


def test_a_voice_whose_every_shift_leaves_the_range_is_dropped_with_a_reason(
    espeak_voices: dict[str, tuple[np.ndarray, int]],
) -> None:
    recipe = load_recipe(BOUNDED)
    down = recipe.model_copy(
        update={"target": BoundedTarget(kind="bounded", min_semitones=3.0, max_semitones=7.0, direction="down")}
    )
    samples, rate = espeak_voices["low"]
    outcome = make_pair(samples, rate, down, "low_down")
    assert outcome.reason == "target_unmeasurable"
    assert "target_unmeasurable" in DROP_REASONS
    assert "measurable range [67.3, 445.4] Hz" in outcome.detail
    assert outcome.shifted is None  # dropped before any shift or tone


def test_a_tone_without_a_measurable_pitch_is_dropped_not_kept(tmp_path: Path) -> None:
    # Breath noise 10 dB above the harmonics: Praat finds no voiced frame in the tone, so its pitch is null.
    recipe = load_recipe(BOUNDED)
    noisy = recipe.model_copy(update={"tone": recipe.tone.model_copy(update={"breath_snr_db": (-10.0, -10.0)})})
    outcome = make_pair(synthetic_voice(150.0, duration_s=1.0), 16000, noisy, "noisy")
    assert outcome.tone_f0_hz is None
    assert outcome.reason == "tone_off_target"
    assert "tone measured no voiced frames" in outcome.detail

    clips = tmp_path / "clips"
    write_clip(clips / "noisy.mp4", synthetic_voice(150.0, sample_rate=44100, duration_s=1.0), 44100)
    result = build_dataset(noisy, clips, tmp_path / "out")
    assert (result.report["kept"], result.report["dropped_by_reason"]["tone_off_target"]) == (0, 1)
    assert not (tmp_path / "out" / "references").exists() or not any((tmp_path / "out" / "references").iterdir())
