"""Tier 1: commands that need FFmpeg, torchcodec or PyAV check for them first and name the fix, writing nothing.

FFmpeg is hidden by pointing ``PATH`` at an empty folder; PyAV by ``sys.modules["av"] = None`` (what Python does for
a package that is not installed: ``import av`` raises ``ModuleNotFoundError``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import needs_pyav, write_wav
from ltx_audio_reference.data.media_tools import (
    FFMPEG_FIX,
    MissingToolError,
    missing_ffmpeg,
    missing_pyav,
    missing_torchcodec,
    require,
)
from ltx_audio_reference.testing.tiny_audio_vae import write_tiny_audio_vae_checkpoint

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _invoke(*args: str, path: str | None = None) -> tuple[int, str]:
    env = {"PATH": path} if path is not None else None
    result = runner.invoke(build_app(), ["audio-reference", *args], env=env)
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


@pytest.fixture
def no_ffmpeg_path(tmp_path: Path) -> str:
    """A PATH on which no ffmpeg program exists."""
    empty = tmp_path / "empty_path"
    empty.mkdir()
    return str(empty)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_ffmpeg_is_found_on_path_and_missing_without_it(no_ffmpeg_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("ffmpeg") is not None:
        assert missing_ffmpeg() is None
    monkeypatch.setenv("PATH", no_ffmpeg_path)
    line = missing_ffmpeg()
    assert line == f"FFmpeg is not installed (no ffmpeg program on PATH): {FFMPEG_FIX}"
    assert "apt-get install ffmpeg" in line
    assert "conda install -c conda-forge ffmpeg" in line
    assert "brew install ffmpeg" in line


def test_require_lists_every_missing_tool_and_passes_when_none_is() -> None:
    require("eval", None, None)
    with pytest.raises(MissingToolError) as info:
        require("eval", "FFmpeg is not installed: fix one", None, "torchcodec is not installed: fix two")
    assert str(info.value).splitlines() == [
        "eval needs tools that are missing:",
        "  FFmpeg is not installed: fix one",
        "  torchcodec is not installed: fix two",
    ]


def test_torchcodec_is_reported_when_it_cannot_be_imported() -> None:
    line = missing_torchcodec()
    try:
        import torchcodec.decoders  # noqa: F401, PLC0415
    except ModuleNotFoundError:
        assert line is not None
        assert "torchcodec is not installed" in line
        assert "pip install 'torchcodec" in line
    except (ImportError, OSError, RuntimeError):
        assert line is not None
        assert FFMPEG_FIX in line
    else:
        assert line is None


def test_eval_without_ffmpeg_names_the_fix_before_anything_loads(tmp_path: Path, no_ffmpeg_path: str) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("model: {}\n")
    out = tmp_path / "out"
    code, output = _invoke("eval", str(config), "--arms", "base", "--out", str(out), path=no_ffmpeg_path)
    assert code == 1, output
    assert "eval (ltx-trainer's validation runner decodes the reference tones) needs tools that are missing" in output
    assert "FFmpeg is not installed (no ffmpeg program on PATH): sudo apt-get install ffmpeg" in output
    assert "Traceback" not in output
    assert not out.exists()


def test_only_pyav_formats_need_pyav() -> None:
    assert not needs_pyav(Path("a.wav"))
    assert not needs_pyav(Path("a.flac"))  # soundfile (installed with the recipes extra)
    assert needs_pyav(Path("a.m4a"))
    assert needs_pyav(Path("a.mp3"))


def _write_m4a(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    av = pytest.importorskip("av", reason="writing an m4a reference needs PyAV")
    samples = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def test_precompute_of_m4a_references_without_pyav_names_the_fix_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    references = tmp_path / "references"
    references.mkdir()
    write_wav(references / "a.wav", np.zeros((1, 8000), dtype=np.float32), 16000)
    _write_m4a(references / "b.m4a")
    checkpoint = write_tiny_audio_vae_checkpoint(tmp_path / "audio_vae.safetensors")
    monkeypatch.setitem(sys.modules, "av", None)
    assert missing_pyav() is not None
    code, output = _invoke("precompute", str(references), "--model-path", str(checkpoint), "-o", str(tmp_path / "pre"))
    assert code == 1, output
    assert f"precompute (1 reference(s) such as {references / 'b.m4a'} are not WAV, FLAC or OGG)" in output
    assert "PyAV is not installed" in output
    assert "pip install av" in output
    assert _files(tmp_path / "pre") == []


def _build_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *modules: str) -> tuple[int, str, Path]:
    """``build-dataset`` on one clip with ``modules`` made unimportable: (exit code, output, the output folder)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "one.mp4").write_bytes(b"")  # never opened: the check comes first
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    output_dir = tmp_path / "dataset"
    recipe = REPO / "recipes" / "helium" / "bounded.yaml"
    code, output = _invoke("build-dataset", str(recipe), "--input", str(clips), "--output", str(output_dir))
    return code, output, output_dir


def test_build_dataset_without_pyav_names_the_fix_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output, output_dir = _build_without(tmp_path, monkeypatch, "av")
    assert code == 2, output
    assert "build-dataset needs tools that are missing" in output
    assert "PyAV is not installed" in output
    assert not output_dir.exists()


def test_build_dataset_without_praat_and_matplotlib_names_both_packages_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("av", reason="the check names PyAV first when it is missing too")
    code, output, output_dir = _build_without(tmp_path, monkeypatch, "parselmouth", "matplotlib")
    assert code == 2, output
    assert "build-dataset needs tools that are missing" in output
    assert "praat-parselmouth (pitch) is not installed" in output
    assert "pip install praat-parselmouth" in output
    assert "matplotlib (report.png) is not installed" in output
    assert "PyAV" not in output
    assert not output_dir.exists()
