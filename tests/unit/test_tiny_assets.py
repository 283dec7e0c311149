"""Tiny random decoders and Gemma weights: shapes, shared latent statistics, the checkpoint layout ltx-core loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ltx_audio_reference.data.mel import import_audio_vae
from ltx_audio_reference.testing import tiny_model
from ltx_audio_reference.testing.tiny_assets import (
    add_tiny_decoders,
    build_tiny_audio_decoder,
    build_tiny_video_decoder,
    build_tiny_vocoder,
    write_tiny_gemma_weights,
)
from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder


@torch.no_grad()
def test_decoders_keep_the_real_interfaces() -> None:
    mel = build_tiny_audio_decoder()(torch.randn(1, 8, 25, 16))  # 25 audio latents = 1 s
    assert mel.shape == (1, 2, 97, 64)  # x4 in time (causal), 64 mel bins, stereo
    waveform = build_tiny_vocoder()(mel)
    assert waveform.shape == (1, 2, 97 * 240)  # 24 kHz
    assert bool(torch.isfinite(waveform).all())
    video = build_tiny_video_decoder()(torch.randn(1, 128, 2, 1, 1))
    assert video.shape == (1, 3, 9, 32, 32)  # 32 x 32 x 8


def test_decoder_shares_the_encoders_latent_statistics() -> None:
    encoder = build_tiny_audio_encoder(seed=3).state_dict()
    decoder = build_tiny_audio_decoder(seed=3).state_dict()
    for name in ("per_channel_statistics.std-of-means", "per_channel_statistics.mean-of-means"):
        assert torch.equal(encoder[name], decoder[name])
    assert not torch.equal(decoder["per_channel_statistics.std-of-means"], torch.ones(128))


def test_add_tiny_decoders_writes_a_full_checkpoint_layout(tmp_path: Path) -> None:
    path = tiny_model.write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    add_tiny_decoders(path)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        config = json.loads(f.metadata()["config"])
    assert {"transformer", "vae", "audio_vae", "vocoder"} <= set(config)
    for prefix in (
        "model.diffusion_model.",
        "audio_vae.encoder.",
        "audio_vae.decoder.",
        "audio_vae.per_channel_statistics.",
        "vocoder.",
        "vae.decoder.",
        "vae.per_channel_statistics.",
    ):
        assert any(k.startswith(prefix) for k in keys), prefix

    # ltx-core's own loader builds the decoder from the file, with every tensor present.
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: PLC0415

    audio_vae = import_audio_vae()
    decoder = SingleGPUModelBuilder(
        model_path=str(path),
        model_class_configurator=audio_vae.AudioDecoderConfigurator,
        model_sd_ops=audio_vae.AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
    ).build(device=torch.device("cpu"), dtype=torch.float32)
    expected = build_tiny_audio_decoder().state_dict()
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_gemma_weights_use_the_checkpoint_names_ltx_core_maps(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = tiny_model.write_text_encoder_dir(tmp_path / "text_encoder")
    path = write_tiny_gemma_weights(folder)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("language_model.model.layers.0.") for k in keys)
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    assert "lm_head.weight" not in keys
    assert not any(k.startswith("model.") for k in keys)
