"""Tiny random VAEs, vocoder and Gemma weights: shapes, shared latent statistics, the checkpoint layout ltx-core
loads, lossless bf16 storage, and a demo pack of a few MB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ltx_audio_reference.data.mel import import_audio_vae
from ltx_audio_reference.testing import tiny_ltx25, tiny_model
from ltx_audio_reference.testing.demo import write_demo
from ltx_audio_reference.testing.tiny_assets import (
    add_tiny_vaes,
    build_tiny_audio_decoder,
    build_tiny_video_decoder,
    build_tiny_video_encoder,
    build_tiny_vocoder,
    compact,
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
    latents = build_tiny_video_encoder()(video.clamp(-1, 1))
    assert latents.shape == (1, 128, 2, 1, 1)
    assert bool(torch.isfinite(latents).all())


def test_decoder_shares_the_encoders_latent_statistics() -> None:
    encoder = build_tiny_audio_encoder(seed=3).state_dict()
    decoder = build_tiny_audio_decoder(seed=3).state_dict()
    for name in ("per_channel_statistics.std-of-means", "per_channel_statistics.mean-of-means"):
        assert torch.equal(encoder[name], decoder[name])
    assert not torch.equal(decoder["per_channel_statistics.std-of-means"], torch.ones(128))


def test_add_tiny_vaes_writes_a_full_checkpoint_layout(tmp_path: Path) -> None:
    path = tiny_model.write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    add_tiny_vaes(path)
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
        "vae.encoder.",
        "vae.decoder.",
        "vae.per_channel_statistics.",
    ):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # rewritten atomically, no leftovers

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


def test_compact_stores_bf16_only_where_it_loses_nothing() -> None:
    exact = torch.tensor([0.5, -1.25, 3.0])
    inexact = torch.tensor([0.1, 1 / 3])
    stored = compact({"a": exact, "b": inexact, "i": torch.arange(3)})
    assert stored["a"].dtype == torch.bfloat16
    assert torch.equal(stored["a"].float(), exact)
    assert stored["b"].dtype == torch.float32
    assert torch.equal(stored["b"], inexact)
    assert stored["i"].dtype == torch.int64


def test_the_demo_pack_is_complete_and_a_few_mb(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    root = write_demo(tmp_path / "demo", steps=1, num_samples=2).parent
    checkpoint = root / "tiny_ltx2.safetensors"
    with safe_open(str(checkpoint), "pt") as f:
        config = json.loads(f.metadata()["config"])
        keys = [k for k in f.keys() if k.startswith(("audio_vae.", "vae."))]  # noqa: SIM118 - safe_open has no __iter__
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert {"transformer", "vae", "audio_vae", "vocoder"} <= set(config)
    assert dtypes == {"BF16"}  # every drawn VAE weight is a bf16 number
    sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    # ltx-core 1.0 ignores decoder_base_channels (its video decoder is 128 channels wide: 6 MB more); the trainer's
    # ltx-core 1.2 builds the 8-channel one.
    old_ltx_core = tiny_ltx25.ltx25_supported() is not None
    assert sum(sizes.values()) < (16e6 if old_ltx_core else 10e6), sizes
    assert sizes["text_encoder/model.safetensors"] > 100e3  # real Gemma weights, not the 32 KB placeholder
