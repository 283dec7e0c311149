"""Tier 2: ``ltx-trainer demo`` writes a complete tiny pack that ltx-trainer's and ltx-core's own loaders read whole.

Before, the LTX-2.3 demo's Gemma folder held a 32 KB placeholder (``load_text_encoder`` left 49 parameters on the
meta device, and upstream's caption preprocessing died in ``Cannot copy out of meta tensor``), and its checkpoint had
no VAE. Now every loader upstream's preprocessing, training and validation use gets every tensor from the files, and
the pack stays a few MB. (The 2.5 pack's loaders are checked in ``test_ltx25.py``.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli

from ltx_audio_reference.testing import tiny_ltx25
from ltx_audio_reference.testing.tiny_ltx25 import assert_materialized

pytestmark = pytest.mark.integration

MB = 1e6


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ltx-trainer demo DIR``, through the CLI as a user runs it."""
    root = tmp_path_factory.mktemp("pack") / "demo"
    result = run_cli("demo", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_every_component_of_the_23_demo_loads_completely_through_the_stock_loaders(
    demo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ltx_trainer import model_loader as ml  # noqa: PLC0415

    checkpoint, text_encoder = str(demo / "tiny_ltx2.safetensors"), str(demo / "text_encoder")
    caplog.set_level(logging.WARNING)
    assert not ml.is_split_transformer(checkpoint)  # a monolith: every component in the one file
    factors = ml.read_video_scale_factors(ml.resolve_video_vae_path(checkpoint))
    assert (factors.time, factors.height, factors.width) == (8, 32, 32)

    cpu = {"device": "cpu", "dtype": torch.float32}
    # What process_dataset.py loads (text encoder, embeddings processor, both encoders), then training and
    # validation (transformer, decoders, vocoder).
    encoder = assert_materialized(ml.load_text_encoder(text_encoder, **cpu), text_encoder)
    processor = assert_materialized(
        ml.load_embeddings_processor(ml.embedding_weight_paths(checkpoint, text_encoder), text_encoder, **cpu),
        checkpoint,
    )
    video_encoder = assert_materialized(ml.load_video_vae_encoder(checkpoint, **cpu), checkpoint)
    audio_encoder = assert_materialized(ml.load_audio_vae_encoder(checkpoint, **cpu), checkpoint)
    assert_materialized(ml.load_transformer(checkpoint, **cpu), checkpoint)
    video_decoder = assert_materialized(ml.load_video_vae_decoder(checkpoint, **cpu), checkpoint)
    audio_decoder = assert_materialized(ml.load_audio_vae_decoder(checkpoint, **cpu), checkpoint)
    vocoder = assert_materialized(ml.load_vocoder(checkpoint, **cpu), checkpoint)
    assert "Uninitialized" not in caplog.text

    with torch.inference_mode():
        hidden_states, mask = encoder.encode(["a person speaks"])[0]
        video_embeds, audio_embeds = processor.feature_extractor(hidden_states, mask, "left")
        condition = torch.load(demo / "data" / "conditions" / "sample_000.pt", weights_only=True)
        assert video_embeds.shape[-1] == condition["video_prompt_embeds"].shape[-1]
        assert audio_embeds.shape[-1] == condition["audio_prompt_embeds"].shape[-1]
        assert bool(torch.isfinite(video_embeds).all())
        frames = torch.rand(1, 3, 9, 64, 64) * 2 - 1
        latents = video_encoder(frames)
        assert latents.shape == (1, 128, 2, 2, 2)
        assert video_decoder(latents).shape == (1, 3, 9, 64, 64)
        mel = torch.randn(1, 2, 100, 64)
        audio_latents = audio_encoder(mel)
        assert audio_latents.shape == (1, 8, 25, 16)  # 0.04 s a latent
        waveform = vocoder(audio_decoder(audio_latents))
        assert waveform.shape[:2] == (1, 2)
        assert bool(torch.isfinite(waveform).all())


def test_both_demo_packs_are_a_few_mb(demo: Path, tmp_path: Path) -> None:
    assert _size(demo) < 10 * MB
    if (reason := tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()) is not None:
        pytest.skip(reason)
    result = run_cli("demo", str(tmp_path / "d25"), "--model", "ltx-2.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _size(tmp_path / "d25") < 10 * MB  # was 30 MB (float32 VAEs)
