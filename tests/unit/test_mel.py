"""Tier 1: the audio VAE front end in plain torch, and importing ltx-core's audio VAE with or without torchaudio."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from ltx_audio_reference.data.mel import (
    MelFrontEnd,
    front_end_for,
    import_audio_vae,
    resample,
    slaney_mel_filterbank,
    torchaudio_available,
)
from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder
from ltx_core.types import Audio

NEEDS_TORCHAUDIO = pytest.mark.skipif(
    not torchaudio_available(),
    reason="torchaudio cannot be imported here, so ltx-core's AudioProcessor (the reference) is unavailable; "
    "the comparison runs in an environment with a working torchaudio (venv-int)",
)


def _sine(frequency: float, sample_rate: int, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return torch.sin(2 * math.pi * frequency * t).to(torch.float32)


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000)])
def test_resample_keeps_a_sine_and_gives_the_expected_length(orig: int, new: int) -> None:
    signal = _sine(440.0, orig)
    out = resample(signal[None, None], orig, new)[0, 0]
    assert out.shape[-1] == math.ceil(signal.shape[-1] * new / orig)
    expected = _sine(440.0, new, seconds=out.shape[-1] / new)[: out.shape[-1]]
    middle = slice(out.shape[-1] // 10, -out.shape[-1] // 10)  # edges see the zero padding
    assert torch.allclose(out[middle], expected[middle], atol=2e-3)


def test_resample_removes_content_above_the_new_nyquist() -> None:
    out = resample(_sine(7000.0, 44100)[None], 44100, 8000)[0]
    assert out[400:-400].abs().max() < 0.01  # 7 kHz cannot exist at 8 kHz (Nyquist 4 kHz)


def test_resample_rejects_non_integer_rates_and_integer_audio() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        resample(torch.zeros(1, 100), 44100.5, 16000)
    with pytest.raises(ValueError, match="floating point"):
        resample(torch.zeros(1, 100, dtype=torch.int16), 44100, 16000)


def test_slaney_filterbank_is_triangular_and_area_normalised() -> None:
    bank = slaney_mel_filterbank(513, 0.0, 8000.0, 64, 16000)
    assert bank.shape == (513, 64)
    assert (bank >= 0).all()
    # Slaney normalisation: every triangle has area 1 over its width in Hz (bins are 15.625 Hz apart).
    areas = bank.sum(dim=0) * (8000.0 / 512)
    assert torch.allclose(areas[4:], torch.ones(60), atol=0.15)


def test_mel_front_end_shape_and_frames() -> None:
    front_end = MelFrontEnd(target_sample_rate=16000, mel_bins=64, mel_hop_length=160, n_fft=1024)
    mel = front_end(torch.randn(2, 2, 44100) * 0.1, 44100)
    assert mel.shape == (2, 2, 16000 // 160 + 1, 64)
    assert torch.isfinite(mel).all()
    assert mel.min() >= math.log(1e-5) - 1e-6


@NEEDS_TORCHAUDIO
@pytest.mark.parametrize("sample_rate", [16000, 22050, 44100, 48000])
def test_mel_front_end_equals_ltx_core_audio_processor(sample_rate: int) -> None:
    processor_cls = import_audio_vae().AudioProcessor
    params = {"target_sample_rate": 16000, "mel_bins": 64, "mel_hop_length": 160, "n_fft": 1024}
    waveform = torch.randn(1, 2, sample_rate, generator=torch.Generator().manual_seed(0)) * 0.2
    reference = processor_cls(**params).waveform_to_mel(Audio(waveform=waveform, sampling_rate=sample_rate))
    ours = MelFrontEnd(**params)(waveform, sample_rate)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()


def test_audio_vae_imports_and_front_end_matches_the_encoder() -> None:
    before = importlib.util.find_spec("torchaudio")
    audio_vae = import_audio_vae()
    assert hasattr(audio_vae, "AudioEncoder")
    # Importing without torchaudio must not make torchaudio look installed to others (transformers checks this).
    assert (importlib.util.find_spec("torchaudio") is None) == (before is None)
    encoder = build_tiny_audio_encoder()
    front_end = front_end_for(encoder)
    expected = "ltx-core" if torchaudio_available() else "plain torch"
    assert front_end.name.startswith(expected)
    mel = front_end(torch.zeros(1, 2, 8000), 16000)
    assert mel.shape == (1, 2, 51, encoder.mel_bins)


@pytest.mark.skipif(torchaudio_available(), reason="checks the torchaudio-free path; torchaudio loads here")
def test_without_torchaudio_ltx_core_front_end_fails_clearly() -> None:
    encoder = build_tiny_audio_encoder()
    with pytest.raises(ImportError, match="MelFrontEnd"):
        front_end_for(encoder, "ltx-core")
    with pytest.raises(ImportError, match="MelFrontEnd"):
        import_audio_vae().AudioProcessor(target_sample_rate=16000, mel_bins=64, mel_hop_length=160, n_fft=1024)
