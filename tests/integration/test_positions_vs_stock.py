"""Tier 2: our reference positions against the stock flexible strategy's, on the same batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from ltx_audio_reference.testing import tiny_model

pytestmark = pytest.mark.integration

TARGET_STEPS, REFERENCE_STEPS = 8, 5


def _batch(root: Path, sources: dict[str, str]) -> dict:
    from ltx_trainer.datasets import PrecomputedDataset  # noqa: PLC0415

    dataset = PrecomputedDataset(str(root), data_sources=sources)
    return next(iter(DataLoader(dataset, batch_size=2, shuffle=False)))


def _reference_positions(mode: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, stock flexible a2a) reference-token positions for the same two samples."""
    from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig  # noqa: PLC0415
    from ltx_audio_reference.strategies.audio_reference.strategy import AudioReferenceStrategy  # noqa: PLC0415
    from ltx_trainer.timestep_samplers import SAMPLERS  # noqa: PLC0415
    from ltx_trainer.training_strategies.flexible import FlexibleStrategy, FlexibleStrategyConfig  # noqa: PLC0415

    sampler = SAMPLERS["uniform"]()
    ours_config = AudioReferenceConfig(reference_positions=mode)
    ours = AudioReferenceStrategy(ours_config).prepare_training_inputs(
        _batch(root, ours_config.get_data_sources()), sampler
    )
    stock_config = FlexibleStrategyConfig(
        name="flexible",
        audio={
            "is_generated": True,
            "latents_dir": "audio_latents",
            "conditions": [{"type": "reference", "latents_dir": "reference_audio_latents", "probability": 1.0}],
        },
    )
    stock = FlexibleStrategy(stock_config).prepare_training_inputs(
        _batch(root, stock_config.get_data_sources()), sampler
    )
    # Ours is [target | reference]; flexible's is [reference | target].
    return ours.audio.positions[:, :, TARGET_STEPS:], stock.audio.positions[:, :, :REFERENCE_STEPS]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.write_synthetic_dataset(
        tmp_path_factory.mktemp("positions"), num_samples=2, audio_steps=TARGET_STEPS, reference_steps=REFERENCE_STEPS
    )


def test_overlap_mode_reproduces_stock_flexible_positions(root: Path) -> None:
    ours, stock = _reference_positions("overlap", root)
    assert torch.equal(ours, stock)
    assert float(stock.min()) == 0.0


def test_negative_mode_is_stock_positions_shifted_as_dubit_does(root: Path) -> None:
    ours, stock = _reference_positions("negative", root)
    ref_end = stock[:, :, -1, 1].max().item()
    assert torch.equal(ours, stock - ref_end - 0.04)  # ltx_pipelines.dubit: positions - aud_dur - 0.04
    assert float(ours.max()) < 0
