"""Tier 1: ``precompute`` measures every reference before encoding it, and says OK only over latents that pass
``check``'s checks (a tiny random LTX-2 audio VAE from ltx-core, real WAV files, the CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import wav_shortfall, write_wav
from ltx_audio_reference.data.precompute import REFERENCE_DIR, PrecomputeError, precompute_reference_latents
from ltx_audio_reference.testing.tiny_audio_vae import write_tiny_audio_vae_checkpoint

soundfile = pytest.importorskip("soundfile", reason="float WAVs need soundfile: pip install -e '.[recipes]'")


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_audio_vae_checkpoint(tmp_path_factory.mktemp("vae") / "audio_vae.safetensors", seed=3)


def _tone(seconds: float = 0.5, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * 16000)) / 16000
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _float_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, 16000, subtype="FLOAT")
    return path


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["audio-reference", "precompute", *args], env={"COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def test_references_holding_nan_are_refused_per_file_and_nothing_is_written(tmp_path: Path, vae: Path) -> None:
    # Before: "OK: 2 encoded", with 1,536 of 1,664 latent values non-finite; `check` caught it only later.
    refs = tmp_path / "refs"
    bad = _tone()
    bad[1000:1100] = np.nan
    _float_wav(refs / "a_nan.wav", bad)
    inf = _tone()
    inf[5] = np.inf
    _float_wav(refs / "b_inf.wav", inf)
    _float_wav(refs / "c_fine.wav", _tone())
    code, output = _invoke(str(refs), "--model-path", str(vae), "--output", str(tmp_path / "out"))
    assert code == 1, output
    assert "2 of 3 reference file(s) cannot be encoded; nothing was written:" in output
    assert f"{refs / 'a_nan.wav'}: 100 of 8000 samples are NaN or Inf" in output
    assert f"{refs / 'b_inf.wav'}: 1 of 8000 samples are NaN or Inf" in output
    assert "c_fine.wav" not in output
    assert "OK" not in output
    assert not (tmp_path / "out").exists()


def test_a_clipping_float_wav_and_a_cut_short_wav_encode_with_a_warning_each(
    tmp_path: Path, vae: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refs = tmp_path / "refs"
    _float_wav(refs / "loud.wav", _tone(amplitude=12.0))
    short = refs / "short.wav"
    write_wav(short, _tone(1.0)[None], 16000)
    short.write_bytes(short.read_bytes()[: 44 + 2 * 8000])  # the header still says 1 s; half the data is there
    assert wav_shortfall(short) == pytest.approx((1.0, 0.5))
    assert wav_shortfall(refs / "loud.wav") is None
    with caplog.at_level("WARNING"):
        result = precompute_reference_latents(refs, tmp_path / "out", model_path=vae)
    assert sorted(p.name for p in result.encoded) == ["loud.pt", "short.pt"]
    assert result.warnings == [
        f"{refs / 'loud.wav'}: peaks at 12 (+21.6 dB over full scale): a float file louder than [-1, 1], which the "
        "audio VAE never saw in training (it encodes clipped audio as loud distortion). Normalize it (divide by its "
        "peak) or check the export gain",
        f"{short}: ends after 0.50 s, while its header says 1.00 s (cut short by an interrupted copy or export?): only "
        "the part present is encoded",
    ]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == result.warnings
    assert torch.load(tmp_path / "out" / REFERENCE_DIR / "short.pt", weights_only=True)["duration"] == 0.5


def test_latents_that_fail_the_data_check_are_not_written_and_precompute_does_not_say_ok(
    tmp_path: Path, vae: Path
) -> None:
    # Finite but absurdly loud audio: the mel power overflows float32, and the encoder returns non-finite latents.
    refs = tmp_path / "refs"
    _float_wav(refs / "a_fine.wav", _tone())
    _float_wav(refs / "b_overflow.wav", _tone(amplitude=3e38))
    with pytest.raises(PrecomputeError) as raised:
        precompute_reference_latents(refs, tmp_path / "out", model_path=vae)
    message = str(raised.value)
    assert message.startswith(f"{refs / 'b_overflow.wav'}: its latents fail the data check, so they were not written:")
    assert "expected finite values; found" in message
    assert (
        f"1 of the 2 reference(s) to encode were written, each complete, under {tmp_path / 'out' / REFERENCE_DIR}"
        in (message)
    )
    assert sorted(p.name for p in (tmp_path / "out" / REFERENCE_DIR).iterdir()) == ["a_fine.pt"]
