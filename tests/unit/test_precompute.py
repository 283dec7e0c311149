"""Tier 1: ``audio-reference precompute`` on a tiny random LTX-2 audio VAE built from ltx-core (real files, CLI)."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import read_audio, write_wav
from ltx_audio_reference.data.check import check_audio_latents, load_sample_file
from ltx_audio_reference.data.mel import front_end_for
from ltx_audio_reference.data.precompute import (
    PrecomputeError,
    encode_waveform,
    find_references,
    load_audio_encoder,
    precompute_reference_latents,
)
from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder, write_tiny_audio_vae_checkpoint

runner = CliRunner()


def _tone(seconds: float, sample_rate: int, channels: int, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t)
    return np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def _latent_steps(samples_at_16k: int) -> int:
    frames = samples_at_16k // 160 + 1  # centred STFT
    for _ in range(2):  # two causal stride-2 downsamplings: ceil(n / 2)
        frames = (frames - 1) // 2 + 1
    return frames


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_audio_vae_checkpoint(tmp_path_factory.mktemp("vae") / "audio_vae.safetensors", seed=3)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Reference WAVs (mono 22.05 kHz, stereo 16 kHz, nested) and a preprocessed root whose audio_latents/ pairs."""
    references = tmp_path / "references"
    references.mkdir()
    write_wav(references / "a.wav", _tone(0.5, 22050, 1), 22050)
    write_wav(references / "b.wav", _tone(0.4, 16000, 2, 330.0), 16000)
    (references / "speaker").mkdir()
    write_wav(references / "speaker" / "c.wav", _tone(0.3, 48000, 1, 150.0), 48000)

    root = tmp_path / "precomputed"
    for rel in ("a.pt", "b.pt", "speaker/c.pt"):  # the targets' files, in process_dataset.py's format
        out = root / "audio_latents" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        latents = torch.randn(8, 15, 16)
        torch.save({"latents": latents, "num_time_steps": 15, "frequency_bins": 16, "duration": 0.6}, out)
    return references, root


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_app(), ["audio-reference", "precompute", *args])
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def test_tiny_audio_vae_loads_through_ltx_core_and_encodes_to_the_trainer_layout(checkpoint: Path) -> None:
    encoder = load_audio_encoder(checkpoint)
    assert (encoder.sample_rate, encoder.mel_bins, encoder.mel_hop_length, encoder.n_fft) == (16000, 64, 160, 1024)
    built = build_tiny_audio_encoder(seed=3)
    for (name, loaded), (_, fresh) in zip(encoder.state_dict().items(), built.state_dict().items(), strict=True):
        assert torch.equal(loaded, fresh), name
    record = encode_waveform(encoder, front_end_for(encoder), torch.zeros(1, 16000), 16000)
    assert record["latents"].shape == (8, _latent_steps(16000), 16)
    assert record["latents"].dtype == torch.float32


def test_precompute_writes_paired_latents_of_the_right_shape(dataset: tuple[Path, Path], checkpoint: Path) -> None:
    references, root = dataset
    code, output = _invoke(str(references), "--model-path", str(checkpoint), "--output", str(root))
    assert code == 0, output
    assert "3 encoded, 0 already done" in output

    ref_dir = root / "reference_audio_latents"
    written = sorted(p.relative_to(ref_dir).as_posix() for p in ref_dir.rglob("*") if p.is_file())
    targets = sorted(p.relative_to(root / "audio_latents").as_posix() for p in (root / "audio_latents").rglob("*.pt"))
    assert written == targets == ["a.pt", "b.pt", "speaker/c.pt"]  # paired by relative path, no temp files left

    encoder = load_audio_encoder(checkpoint)
    front_end = front_end_for(encoder)
    for rel, source in (("a.pt", "a.wav"), ("b.pt", "b.wav"), ("speaker/c.pt", "speaker/c.wav")):
        data = load_sample_file(ref_dir / rel)
        assert list(check_audio_latents(rel, data)) == []
        samples, sample_rate = read_audio(references / source)
        at_16k = math.ceil(samples.shape[-1] * 16000 / sample_rate)
        assert data["latents"].shape == (8, _latent_steps(at_16k), 16)
        assert data["num_time_steps"] == data["latents"].shape[1]
        assert data["frequency_bins"] == 16
        assert data["duration"] == pytest.approx(samples.shape[-1] / sample_rate)
        direct = encode_waveform(encoder, front_end, torch.from_numpy(samples), sample_rate)["latents"]
        assert torch.equal(data["latents"], direct)


def test_mono_is_widened_to_stereo(checkpoint: Path) -> None:
    encoder = load_audio_encoder(checkpoint)
    front_end = front_end_for(encoder)
    mono = torch.from_numpy(_tone(0.3, 16000, 1))
    widened = encode_waveform(encoder, front_end, mono, 16000)["latents"]
    stereo = encode_waveform(encoder, front_end, mono.expand(2, -1), 16000)["latents"]
    assert torch.equal(widened, stereo)


def test_second_run_skips_everything_without_loading_the_model(
    dataset: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    references, root = dataset
    assert _invoke(str(references), "--model-path", str(checkpoint), "--output", str(root))[0] == 0
    stamps = {p: p.stat().st_mtime_ns for p in (root / "reference_audio_latents").rglob("*.pt")}
    # A missing checkpoint proves nothing is loaded when every file is done.
    code, output = _invoke(str(references), "--model-path", str(tmp_path / "absent.safetensors"), "-o", str(root))
    assert code == 0, output
    assert "0 encoded, 3 already done" in output
    assert stamps == {p: p.stat().st_mtime_ns for p in (root / "reference_audio_latents").rglob("*.pt")}


def test_manifest_source_names_latents_by_the_video_column(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "references").mkdir()
    write_wav(tmp_path / "references" / "one.wav", _tone(0.3, 16000, 2), 16000)
    rows = [{"video": "clips/one.mp4", "caption": "A person speaks.", "reference_audio": "references/one.wav"}]
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps(rows))
    assert [item.relative.as_posix() for item in find_references(manifest)] == ["clips/one.pt"]

    code, output = _invoke(str(manifest), "--model-path", str(checkpoint))
    assert code == 0, output
    assert (tmp_path / ".precomputed" / "reference_audio_latents" / "clips" / "one.pt").is_file()


def test_unreadable_file_fails_naming_it(dataset: tuple[Path, Path], checkpoint: Path) -> None:
    references, root = dataset
    broken = references / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00not a wave file")
    code, output = _invoke(str(references), "--model-path", str(checkpoint), "--output", str(root))
    assert code == 1
    assert str(broken) in output
    assert "cannot read audio" in output
    # Files before the broken one were committed whole; no temporary files remain.
    leftovers = [p for p in (root / "reference_audio_latents").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_unpaired_references_are_reported(dataset: tuple[Path, Path], checkpoint: Path) -> None:
    references, root = dataset
    write_wav(references / "extra.wav", _tone(0.3, 16000, 1), 16000)
    result = precompute_reference_latents(references, root, model_path=checkpoint)
    assert [p.as_posix() for p in result.unpaired] == ["extra.pt"]


def test_too_short_and_missing_sources_fail_clearly(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "refs").mkdir()
    with wave.open(str(tmp_path / "refs" / "tiny.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(b"\x00\x00" * 100)
    with pytest.raises(PrecomputeError, match=r"tiny\.wav: too short"):
        precompute_reference_latents(tmp_path / "refs", tmp_path / "out", model_path=checkpoint)
    with pytest.raises(PrecomputeError, match="no such folder or manifest"):
        find_references(tmp_path / "nowhere")
    code, output = _invoke(str(tmp_path / "refs"), "--model-path", str(checkpoint))
    assert code != 0
    assert "--output" in output


def _write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={"format": "pt", "config": json.dumps(config)})
    return path


@pytest.fixture
def one_reference(tmp_path: Path) -> Path:
    (tmp_path / "refs").mkdir()
    write_wav(tmp_path / "refs" / "r.wav", _tone(0.3, 16000, 2), 16000)
    return tmp_path / "refs"


def test_a_split_packs_transformer_is_refused_naming_the_audio_vae_file(one_reference: Path, tmp_path: Path) -> None:
    # An LTX-2.5 transformer file: its config holds only the transformer. ltx-core would hand back an encoder on the
    # meta device (it only warns about the missing tensors), which then fails with an unrelated TypeError.
    transformer = _write_checkpoint(tmp_path / "transformer.safetensors", {"transformer": {"num_layers": 48}})
    code, output = _invoke(str(one_reference), "--model-path", str(transformer), "--output", str(tmp_path / "out"))
    assert code == 1
    assert f"{transformer}: holds no audio VAE (config sections: transformer)" in output
    assert "split checkpoint pack (LTX-2.5): pass the pack's audio VAE file" in output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_checkpoint_without_audio_vae_or_missing_encoder_tensors_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    video_only = _write_checkpoint(tmp_path / "video.safetensors", {"transformer": {}, "vae": {}})
    with pytest.raises(PrecomputeError, match=r"holds no audio VAE \(config sections: transformer, vae\); pass a full"):
        load_audio_encoder(video_only)
    from safetensors.torch import load_file  # noqa: PLC0415

    tensors = load_file(str(checkpoint))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    incomplete = _write_checkpoint(
        tmp_path / "incomplete.safetensors", json.loads(_metadata(checkpoint)["config"]), tensors
    )
    with pytest.raises(PrecomputeError, match=r"lacks 1 tensor\(s\) in this file"):
        load_audio_encoder(incomplete)
    with pytest.raises(PrecomputeError, match="no such checkpoint file"):
        load_audio_encoder(tmp_path / "absent.safetensors")


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())
