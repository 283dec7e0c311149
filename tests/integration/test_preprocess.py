"""Tier 2: ``ltx-trainer audio-reference preprocess`` on the demo pack: a bad input is named before anything is
written, an interrupted run leaves only whole files and resumes, and a folder made with other settings is not mixed.

Each run is the CLI in its own process, running ltx-trainer 1.2.0's own ``process_dataset.py`` from the LTX-2
checkout ltx-trainer was installed from.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import env_without_ffmpeg, run_cli

from ltx_audio_reference.data.audio_io import write_wav
from ltx_audio_reference.testing.synthetic_audio import synthetic_voice, write_clip
from ltx_audio_reference.testing.tiny_model import write_text_encoder_dir

pytestmark = pytest.mark.integration

BUCKET = "64x64x25"
FOLDERS = ("conditions", "latents", "audio_latents", "reference_audio_latents")
_cli = functools.partial(run_cli, timeout=600)


def _dataset(root: Path, count: int = 3) -> Path:
    """``count`` clips with a voice and a reference tone each, and their manifest (build-dataset's columns)."""
    rows = []
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        f0 = 110.0 + 30 * index
        write_clip(root / "clips" / f"s{index}.mp4", synthetic_voice(f0, duration_s=1.2, seed=index), 16000)
        write_wav(root / "refs" / f"s{index}.wav", synthetic_voice(1.3 * f0, duration_s=2.0, seed=10 + index), 16000)
        rows.append(
            {"video": f"clips/s{index}.mp4", "caption": "A person speaks.", "reference_audio": f"refs/s{index}.wav"}
        )
    manifest = root / "dataset.json"
    manifest.write_text(json.dumps(rows))
    return manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preprocess") / "demo"
    result = run_cli("demo", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def _preprocess(manifest: Path, demo: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = _cli(
        "audio-reference",
        "preprocess",
        str(manifest),
        "--model-path",
        str(demo / "tiny_ltx2.safetensors"),
        "--text-encoder-path",
        str(demo / "text_encoder"),
        "--resolution-buckets",
        BUCKET,
        "--device",
        "cpu",
        *extra,
        env=env,
    )
    return result.returncode, result.stdout + result.stderr


def _written(folder: Path) -> list[str]:
    """Everything preprocess may have written next to the manifest: the output and the hidden manifest copy."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def done(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A complete run: (the manifest, the output)."""
    manifest = _dataset(tmp_path_factory.mktemp("done"))
    code, output = _preprocess(manifest, demo)
    assert code == 0, output
    return manifest, output


def test_a_run_writes_the_four_folders_and_ends_with_checks_verdict(done: tuple[Path, str]) -> None:
    manifest, output = done
    data = manifest.parent / ".precomputed"  # the default: next to the manifest, as upstream's
    assert "Step 1/3" in output
    assert "Step 3/3: check" in output
    assert "check: OK: 3 samples" in output
    assert "Next: set data.preprocessed_data_root" in output
    for folder in FOLDERS:
        assert sorted(p.name for p in (data / folder / "clips").iterdir()) == ["s0.pt", "s1.pt", "s2.pt"]
    assert _written(manifest.parent) == [".precomputed"]  # the copy upstream read is gone


def test_a_missing_model_file_is_named_before_anything_is_written(demo: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path, count=1)
    result = _cli(
        "audio-reference",
        "preprocess",
        str(manifest),
        "--model-path",
        str(tmp_path / "ltx-2.3-22b.safetensors"),
        "--text-encoder-path",
        str(demo / "text_encoder"),
        "--resolution-buckets",
        BUCKET,
    )
    assert result.returncode == 1
    assert f"--model-path {tmp_path / 'ltx-2.3-22b.safetensors'}: no such file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert _written(tmp_path) == []


def test_a_gemma_folder_without_weights_is_refused_naming_them(demo: Path, tmp_path: Path) -> None:
    # Before: upstream loaded it, ltx-core left 49 tensors on the meta device, and captions died minutes later in
    # "NotImplementedError: Cannot copy out of meta tensor; no data!".
    manifest = _dataset(tmp_path, count=1)
    placeholder = write_text_encoder_dir(tmp_path / "gemma")
    code, output = _preprocess(manifest, demo, "--text-encoder-path", str(placeholder))
    assert code == 1
    assert "the Gemma text encoder is incomplete: none of the 49 weights its loader needs" in output
    assert "Re-download or re-export it" in output
    assert _written(tmp_path) == []


def test_every_clip_that_cannot_be_preprocessed_is_named_at_once(demo: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path, count=3)
    (tmp_path / "clips" / "s1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    write_clip(tmp_path / "clips" / "s2.mp4", synthetic_voice(150.0, duration_s=0.5), 16000)
    code, output = _preprocess(manifest, demo)
    assert code == 1
    text = " ".join(output.split())
    assert "2 of 3 clip(s) in" in text
    assert "nothing was written" in text
    assert "row 2 (clips/s1.mp4): cannot be decoded" in text
    assert "row 3 (clips/s2.mp4): 13 frames (0.52 s at 25 fps), fewer than the 25 of the smallest bucket" in text
    assert _written(tmp_path) == []


def test_without_ffmpeg_the_install_line_is_named_before_anything_is_written(demo: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data", count=1)
    code, output = _preprocess(manifest, demo, env=env_without_ffmpeg(tmp_path / "no_ffmpeg"))
    assert code == 2
    text = " ".join(output.split())
    assert "preprocess (ltx-trainer's process_dataset.py reads each clip's sound through torchaudio" in text
    assert "FFmpeg is not installed (no ffmpeg program on PATH): sudo apt-get install ffmpeg" in text
    assert "torchcodec cannot load FFmpeg's libraries" in text
    assert "brew install ffmpeg" in text
    assert _written(tmp_path / "data") == []


def test_without_upstreams_scripts_it_says_where_to_get_them(demo: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data", count=1)
    (tmp_path / "empty").mkdir()
    code, output = _preprocess(manifest, demo, "--ltx2", str(tmp_path / "empty"))
    assert code == 1
    text = " ".join(output.split())
    assert "ltx-trainer's preprocessing scripts were not found" in text
    assert "git clone --depth 1 --branch v1.2.0 https://github.com/Lightricks/LTX-2.git" in text
    assert _written(tmp_path / "data") == []


def test_a_rerun_redoes_only_missing_files(done: tuple[Path, str], demo: Path) -> None:
    manifest, _ = done
    data = manifest.parent / ".precomputed"
    (data / "latents" / "clips" / "s1.pt").unlink()
    (data / "reference_audio_latents" / "clips" / "s2.pt").unlink()
    partial = data / "conditions" / "clips" / "s0.pt.tmp.4242"  # what upstream's write leaves when it dies mid-file
    partial.write_bytes(b"half a file")
    # Upstream encodes a clip's video and sound in one pass, so s1's audio latents are redone with its video.
    redone = data / "audio_latents" / "clips" / "s1.pt"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*.pt") if p != redone}
    code, output = _preprocess(manifest, demo)
    assert code == 0, output
    assert "(resuming: finished files are kept)" in output
    assert "Reference latents: 1 encoded, 2 already done" in output
    assert "check: OK: 3 samples" in output
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing finished was rewritten
    assert (data / "latents" / "clips" / "s1.pt").is_file()
    assert (data / "reference_audio_latents" / "clips" / "s2.pt").is_file()
    assert not partial.exists()


def test_a_rerun_redoes_samples_whose_inputs_changed_and_drops_those_that_left(demo: Path, tmp_path: Path) -> None:
    """A dataset rebuilt in place (new references, captions, fewer rows) must not keep latents of the old inputs."""
    import torch  # noqa: PLC0415

    manifest = _dataset(tmp_path)
    code, output = _preprocess(manifest, demo)
    assert code == 0, output
    data = manifest.parent / ".precomputed"
    old_reference = torch.load(data / "reference_audio_latents" / "clips" / "s1.pt")["latents"]
    untouched = data / "latents" / "clips" / "s0.pt"  # s0 keeps its clip and reference; its caption changes
    mtimes = {p: p.stat().st_mtime_ns for p in data.rglob("*.pt")}
    rows = json.loads(manifest.read_text())
    write_wav(tmp_path / "refs" / "s1.wav", synthetic_voice(300.0, duration_s=2.0, seed=99), 16000)
    rows[0]["caption"] = "A person sings."
    manifest.write_text(json.dumps(rows[:2]))  # s2 leaves the dataset

    code, output = _preprocess(manifest, demo)
    assert code == 0, output
    text = " ".join(output.split())
    assert "2 sample(s) changed since their files were made: made again (clips/s0.pt, clips/s1.pt)" in text
    assert "1 sample(s) are no longer in the manifest: their files removed (clips/s2.pt)" in text
    assert "check: OK: 2 samples" in output
    for folder in FOLDERS:
        assert sorted(p.name for p in (data / folder / "clips").iterdir()) == ["s0.pt", "s1.pt"], folder
    new_reference = torch.load(data / "reference_audio_latents" / "clips" / "s1.pt")["latents"]
    assert not torch.equal(new_reference, old_reference)  # encoded from the new tone, not kept
    caption = data / "conditions" / "clips" / "s0.pt"
    assert caption.stat().st_mtime_ns != mtimes[caption]
    assert untouched.stat().st_mtime_ns != mtimes[untouched]  # a changed row redoes all of the sample's files
    recorded = json.loads((data / ".preprocess.json").read_text())["inputs"]
    assert sorted(recorded) == ["clips/s0.pt", "clips/s1.pt"]

    code, output = _preprocess(manifest, demo)  # nothing changed since: nothing is redone
    assert code == 0, output
    assert "made again" not in output
    assert "Reference latents: 0 encoded, 2 already done" in output


def test_other_settings_over_a_finished_folder_are_refused_unless_overwrite(done: tuple[Path, str], demo: Path) -> None:
    manifest, _ = done
    data = manifest.parent / ".precomputed"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*.pt")}
    code, output = _preprocess(manifest, demo, "--resolution-buckets", "64x32x25")
    assert code == 1
    text = " ".join(output.split())
    assert "resolution_buckets: 64x64x25 then, 64x32x25 now" in text
    assert "Pass --overwrite to redo it, or --output another folder" in text
    assert {p: p.stat().st_mtime_ns for p in before} == before
    code, output = _preprocess(manifest, demo, "--resolution-buckets", "64x32x25", "--overwrite")
    assert code == 0, output
    assert json.loads((data / ".preprocess.json").read_text())["settings"]["resolution_buckets"] == "64x32x25"
    for path in data.glob("latents/clips/*.pt"):
        assert path.stat().st_mtime_ns not in before.values()


def test_an_interrupted_run_leaves_only_whole_files_and_resumes(demo: Path, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path, count=3)
    data = tmp_path / ".precomputed"
    command = [
        sys.executable,
        "-m",
        "ltx_audio_reference.cli",
        "audio-reference",
        "preprocess",
        str(manifest),
        "--model-path",
        str(demo / "tiny_ltx2.safetensors"),
        "--text-encoder-path",
        str(demo / "text_encoder"),
        "--resolution-buckets",
        BUCKET,
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches the CLI and upstream's process, as in a shell
        env={**os.environ, "COLUMNS": "250"},
        # As at a terminal: a test run under nohup (or as a background job) would hand its ignored SIGINT down.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads started yet
    )
    deadline = time.monotonic() + 300
    while not any((data / "conditions").rglob("*.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Interrupted. Every finished file is kept; rerun the same command to resume." in output
    assert json.loads((data / ".preprocess.json").read_text())["status"] == "running"
    for path in data.rglob("*.pt"):  # every file there is whole
        import torch  # noqa: PLC0415

        assert torch.load(path, weights_only=True)
    code, output = _preprocess(manifest, demo)
    assert code == 0, output
    assert "check: OK: 3 samples" in output
    assert json.loads((data / ".preprocess.json").read_text())["status"] == "complete"
    assert _written(tmp_path) == [".precomputed"]


def test_references_come_from_the_reference_column_untrimmed(done: tuple[Path, str]) -> None:
    import torch  # noqa: PLC0415

    manifest, _ = done
    reference = torch.load(manifest.parent / ".precomputed/reference_audio_latents/clips/s0.pt", weights_only=True)
    target = torch.load(manifest.parent / ".precomputed/audio_latents/clips/s0.pt", weights_only=True)
    assert reference["duration"] == pytest.approx(2.0)  # upstream would have trimmed it to the bucket's 1 s
    assert target["duration"] == pytest.approx(1.0, abs=0.05)
    assert not np.allclose(reference["latents"][:, : target["latents"].shape[1]], target["latents"])
