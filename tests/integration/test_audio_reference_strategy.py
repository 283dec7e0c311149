"""Tier 2: the real ``AudioReferenceStrategy`` on a real batch from ltx-trainer's ``PrecomputedDataset``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("ltx_trainer", reason="tier 2 needs ltx-trainer 1.2.0 importable")

from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader

from ltx_audio_reference.strategies.audio_reference import loss as ar_loss
from ltx_audio_reference.strategies.audio_reference import positions as ar_positions
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.strategies.audio_reference.lora_targets import (
    assert_only_allowed_trainable,
    expand_lora_targets,
)
from ltx_audio_reference.strategies.audio_reference.strategy import AudioReferenceStrategy
from ltx_audio_reference.testing.tiny_model import build_tiny_model, write_synthetic_dataset
from ltx_trainer.datasets import PrecomputedDataset
from ltx_trainer.timestep_samplers import SAMPLERS
from ltx_trainer.training_strategies import ModelInputs, TrainingStrategy, TrainingStrategyConfigBase

pytestmark = pytest.mark.integration

AUDIO_STEPS = 8
REFERENCE_STEPS = 5
BATCH = 2


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("audio_reference_data"),
        num_samples=4,
        audio_steps=AUDIO_STEPS,
        reference_steps=REFERENCE_STEPS,
    )


def _trainer_autocast() -> torch.autocast:
    """The trainer's default bf16 mixed precision: the dataset's video latents are bf16, its audio float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _batch(root: Path, config: AudioReferenceConfig) -> dict:
    dataset = PrecomputedDataset(str(root), data_sources=config.get_data_sources())
    torch.manual_seed(0)
    return next(iter(DataLoader(dataset, batch_size=BATCH, shuffle=False)))


def _prepare(root: Path, config: AudioReferenceConfig) -> tuple[AudioReferenceStrategy, ModelInputs]:
    strategy = AudioReferenceStrategy(config)
    torch.manual_seed(0)
    return strategy, strategy.prepare_training_inputs(_batch(root, config), SAMPLERS["shifted_logit_normal"]())


def test_classes_plug_into_the_stock_strategy_api() -> None:
    assert issubclass(AudioReferenceConfig, TrainingStrategyConfigBase)
    assert issubclass(AudioReferenceStrategy, TrainingStrategy)


def test_prepared_batch_places_a_clean_reference_after_the_target(dataset_root: Path) -> None:
    strategy, inputs = _prepare(dataset_root, AudioReferenceConfig())
    audio = inputs.audio
    assert audio is not None
    assert inputs.video is not None
    assert audio.latent.shape == (BATCH, AUDIO_STEPS + REFERENCE_STEPS, 128)
    reference_positions = audio.positions[:, :, AUDIO_STEPS:]
    assert (reference_positions < 0).all()
    assert torch.allclose(reference_positions[:, 0, -1, 1], torch.full((BATCH,), -0.04), atol=1e-7)
    assert audio.timesteps[:, AUDIO_STEPS:].eq(0).all()
    assert (audio.timesteps[:, :AUDIO_STEPS] > 0).all()
    assert inputs.audio_loss_mask is not None
    assert inputs.audio_loss_mask[:, :AUDIO_STEPS].all()
    assert not inputs.audio_loss_mask[:, AUDIO_STEPS:].any()
    # The reference tokens are the dataset's reference latents, untouched.
    refs = torch.stack(
        [
            torch.load(p, weights_only=True)["latents"]
            for p in sorted((dataset_root / "reference_audio_latents").glob("*.pt"))
        ]
    )[:BATCH]
    assert torch.equal(audio.latent[:, AUDIO_STEPS:], ar_positions.patchify_audio(refs))
    # Target positions and video positions are the stock helpers' own.
    assert torch.equal(audio.positions[:, :, :AUDIO_STEPS], strategy._get_audio_positions(AUDIO_STEPS, BATCH, "cpu"))
    assert torch.equal(inputs.video.positions, strategy._get_video_positions(2, 2, 2, BATCH, 24.0, torch.device("cpu")))
    assert torch.equal(inputs.video.sigma, audio.sigma)


def test_training_step_through_tiny_model_trains_only_audio_lora(dataset_root: Path) -> None:
    config = AudioReferenceConfig()
    strategy, inputs = _prepare(dataset_root, config)
    model = build_tiny_model(num_layers=2).requires_grad_(False)
    targets = expand_lora_targets(model, config.lora_preset)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=True))
    assert_only_allowed_trainable(model, config.lora_preset)

    with _trainer_autocast():
        video_pred, audio_pred = model(video=inputs.video, audio=inputs.audio, perturbations=None)
    loss = strategy.compute_loss(video_pred, audio_pred, inputs)
    assert loss.shape == (BATCH,)
    assert torch.isfinite(loss).all()
    loss.mean().backward()

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(".lora_" in n and ".audio_" in n for n in with_grad)
    # LoRA B starts at zero, so B is what the first step moves.
    lora_b = [model.get_parameter(n).grad for n in with_grad if ".lora_B." in n]
    assert len(lora_b) == 20
    assert all(g.abs().sum() > 0 for g in lora_b)


def test_video_as_condition_only_is_clean_and_unscored(dataset_root: Path) -> None:
    config = AudioReferenceConfig(generate_video=False)
    strategy, inputs = _prepare(dataset_root, config)
    assert inputs.video is not None
    assert inputs.video.timesteps.eq(0).all()
    assert inputs.video_targets is None
    clean_video = ar_positions.patchify_video(_batch(dataset_root, config)["latents"]["latents"])
    assert torch.equal(inputs.video.latent, clean_video)
    with torch.no_grad(), _trainer_autocast():
        video_pred, audio_pred = build_tiny_model()(video=inputs.video, audio=inputs.audio, perturbations=None)
    loss = strategy.compute_loss(video_pred, audio_pred, inputs)
    assert inputs.audio_targets is not None
    assert torch.allclose(loss, ar_loss.masked_mse(audio_pred, inputs.audio_targets, inputs.audio_loss_mask))


def test_references_of_different_lengths_in_one_batch_raise(dataset_root: Path) -> None:
    config = AudioReferenceConfig()
    batch = _batch(dataset_root, config)
    batch["ref_audio_latents"]["latents"] = [torch.randn(8, 5, 16), torch.randn(8, 6, 16)]
    with pytest.raises(ValueError, match="reference audio clips in one batch have different lengths"):
        AudioReferenceStrategy(config).prepare_training_inputs(batch, SAMPLERS["uniform"]())


def test_checkpoint_metadata_carries_the_reference_layout() -> None:
    metadata = AudioReferenceStrategy(AudioReferenceConfig()).get_checkpoint_metadata()
    as_written = {k: str(v) for k, v in metadata.items()}  # what the stock trainer stores
    assert as_written["strategy"] == "audio_reference"
    assert as_written["reference_modality"] == "audio"
    assert as_written["reference_positions"] == "negative"
    assert as_written["reference_gap_s"] == "0.04"
    assert as_written["reference_downscale_factor"] == "1"
    assert as_written["reference_guidance_scale"] == "0.0"
    assert as_written["ltx_audio_reference_version"]
    guided = AudioReferenceStrategy(AudioReferenceConfig(validation_reference_guidance=3.0)).get_checkpoint_metadata()
    assert guided["reference_guidance_scale"] == 3.0  # what validation sampled with, for an inference tool to read
