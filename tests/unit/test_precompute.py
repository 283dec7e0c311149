"""Tier 1: ``audio-reference precompute`` on a tiny random LTX-2 audio VAE built from ltx-core (real files, CLI)."""

from __future__ import annotations

import json
import logging
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ltx_audio_reference.cli import build_app
from ltx_audio_reference.data.audio_io import read_audio, write_wav
from ltx_audio_reference.data.check import check_audio_latents, load_sample_file
from ltx_audio_reference.data.mel import front_end_for, import_audio_vae
from ltx_audio_reference.data.precompute import (
    PrecomputeError,
    encode_waveform,
    find_references,
    load_audio_encoder,
    precompute_reference_latents,
)
from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder, write_tiny_audio_vae_checkpoint
from ltx_audio_reference.testing.tiny_model import write_tiny_checkpoint
from ltx_core.loader import SingleGPUModelBuilder

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


def test_every_bad_file_is_named_in_one_run_and_nothing_is_written(
    dataset: tuple[Path, Path], checkpoint: Path
) -> None:
    # Changed: precompute used to stop at the first bad file, with the files before it already written.
    references, root = dataset
    broken = references / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00not a wave file")
    also_broken = references / "speaker" / "also_broken.wav"
    also_broken.write_bytes(b"")
    short = references / "short.wav"
    write_wav(short, np.zeros((1, 100), dtype=np.float32), 16000)
    code, output = _invoke(str(references), "--model-path", str(checkpoint), "--output", str(root))
    assert code == 1
    assert "3 of 6 reference file(s) cannot be encoded; nothing was written" in output
    assert f"{broken}: cannot read audio" in output
    assert f"{also_broken}: cannot read audio" in output
    assert f"{short}: too short to encode (100 samples at 16000 Hz" in output
    assert not (root / "reference_audio_latents").exists()  # a.wav, b.wav and c.wav are fine, but not written either


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


def _resave(source: Path, destination: Path, *, drop: tuple[str, ...] = (), config: dict | None = None) -> Path:
    """Copy a safetensors file without some keys, or with another ``config`` metadata entry."""
    with safe_open(str(source), framework="pt") as f:
        metadata = dict(f.metadata())
    if config is not None:
        metadata["config"] = json.dumps(config)
    tensors = {k: v for k, v in load_file(str(source)).items() if k not in drop}
    save_file(tensors, str(destination), metadata=metadata)
    return destination


def test_an_audio_vae_with_missing_weights_is_refused_naming_them(
    dataset: tuple[Path, Path], checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    references, root = dataset
    missing = ("audio_vae.encoder.mid.block_2.conv2.conv.weight", "audio_vae.per_channel_statistics.mean-of-means")
    partial = _resave(checkpoint, tmp_path / "partial.safetensors", drop=missing)
    # The fault: ltx-core's loader builds the encoder anyway, only logging "Uninitialized parameters".
    audio_vae = import_audio_vae()
    with caplog.at_level(logging.WARNING):
        built = SingleGPUModelBuilder(
            model_path=str(partial),
            model_class_configurator=audio_vae.AudioEncoderConfigurator,
            model_sd_ops=audio_vae.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        ).build(device=torch.device("cpu"), dtype=torch.float32)
    assert "Uninitialized parameters" in caplog.text
    assert sorted(n for n, t in [*built.named_parameters(), *built.named_buffers()] if t.is_meta) == [
        "mid.block_2.conv2.conv.weight",
        "per_channel_statistics.mean-of-means",
    ]

    code, output = _invoke(str(references), "--model-path", str(partial), "--output", str(root))
    assert code == 1
    assert "the audio VAE encoder is incomplete: 2 of its 18 weights are not in the file" in output
    for key in missing:
        assert key in output
    assert not (root / "reference_audio_latents").exists()
    with pytest.raises(PrecomputeError, match="mean-of-means"):
        load_audio_encoder(partial)


def test_a_checkpoint_without_an_audio_vae_is_refused_saying_so(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    references, root = dataset
    full = write_tiny_checkpoint(tmp_path / "tiny_ltx2.safetensors")  # transformer + video VAE section, no audio VAE
    code, output = _invoke(str(references), "--model-path", str(full), "--output", str(root))
    assert code == 1
    assert f"no audio VAE in this file: {full} (its config has transformer, vae)" in output
    assert "TypeError" not in output

    # A split pack's transformer file: its config has only the transformer section.
    with safe_open(str(full), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    split = _resave(full, tmp_path / "transformer.safetensors", config={"transformer": config["transformer"]})
    code, output = _invoke(str(references), "--model-path", str(split), "--output", str(root))
    assert code == 1
    assert f"{split} is the transformer file of a split checkpoint pack and holds no audio VAE" in output
    assert "pass the pack's audio VAE file" in output
    assert "model.audio_vae_path" in output

    not_safetensors = tmp_path / "model.ckpt"
    not_safetensors.write_bytes(b"\x80\x04 a pickle, not safetensors")
    with pytest.raises(PrecomputeError, match="not a readable safetensors checkpoint"):
        precompute_reference_latents(references, root, model_path=not_safetensors)
    with pytest.raises(PrecomputeError, match="no such checkpoint file"):
        precompute_reference_latents(references, root, model_path=tmp_path / "absent.safetensors")
    assert not (root / "reference_audio_latents").exists()


def test_progress_counts_skipped_files_as_done_and_the_cli_draws_a_bar(
    dataset: tuple[Path, Path], checkpoint: Path
) -> None:
    references, root = dataset
    precompute_reference_latents(references, root, model_path=checkpoint)
    for name in ("a.pt", "b.pt"):
        (root / "reference_audio_latents" / name).unlink()
    calls: list[tuple[int, int]] = []
    result = precompute_reference_latents(
        references, root, model_path=checkpoint, progress=lambda done, total: calls.append((done, total))
    )
    assert [p.as_posix() for p in result.skipped] == ["speaker/c.pt"]
    assert [p.as_posix() for p in result.encoded] == ["a.pt", "b.pt"]
    assert calls == [(1, 3), (2, 3), (3, 3)]  # the skipped file counts as done from the start

    code, output = _invoke(str(references), "--model-path", str(checkpoint), "--output", str(root), "--overwrite")
    assert code == 0, output
    assert "Encoding reference audio" in output
    assert "3/3" in output
