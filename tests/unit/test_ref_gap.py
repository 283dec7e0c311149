"""The reference-attribution gap: sample choice, the rolled reference, paired noise, the config knob, the plugin."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
import torch
from torch.utils.data import default_collate

from ltx_audio_reference.strategies.audio_reference import ref_gap
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.strategies.audio_reference.ref_gap import measure_ref_gap, probe_indices

REF = "ref_audio_latents"


def _dataset(n: int, *, informative: bool) -> list[dict[str, Any]]:
    """Samples whose target is (or is not) a function of the reference."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        reference = torch.randn(3, generator=generator)
        target = 2.0 * reference if informative else torch.randn(3, generator=generator)
        samples.append({"target": {"latents": target}, REF: {"latents": reference}})
    return samples


def _noisy_loss(batch: dict[str, Any]) -> torch.Tensor:
    """A per-sample loss that draws noise, like a flow-matching step: the prediction is 2 * reference."""
    target, reference = batch["target"]["latents"], batch[REF]["latents"]
    noise = torch.randn_like(target)
    return (2.0 * reference + noise - target - noise.flip(0)).pow(2).mean(dim=1)


def test_probe_indices_are_fixed_and_spread() -> None:
    assert probe_indices(10, 4) == [0, 3, 6, 9]
    assert probe_indices(3, 8) == [0, 1, 2]
    assert probe_indices(100, 2) == [0, 99]
    with pytest.raises(ValueError, match="at least 2 samples"):
        probe_indices(1, 4)


def test_gap_is_positive_when_the_reference_determines_the_target() -> None:
    result = measure_ref_gap(
        _dataset(8, informative=True), default_collate, _noisy_loss, num_samples=8, batch_size=3, reference_key=REF
    )
    assert result.indices == list(range(8))
    assert len(result.per_sample_gap) == 8
    assert result.gap > 1.0
    assert result.wrong_loss - result.right_loss == pytest.approx(result.gap)


def test_paired_noise_cancels_exactly_when_the_reference_is_unused() -> None:
    def ignores_reference(batch: dict[str, Any]) -> torch.Tensor:
        return (batch["target"]["latents"] - torch.randn_like(batch["target"]["latents"])).pow(2).mean(dim=1)

    result = measure_ref_gap(
        _dataset(6, informative=False),
        default_collate,
        ignores_reference,
        num_samples=6,
        batch_size=2,
        reference_key=REF,
    )
    # Unpaired noise would leave a random difference; paired noise leaves exactly none.
    assert result.per_sample_gap == [0.0] * 6
    assert result.right_loss > 0


def test_wrong_reference_is_the_next_samples() -> None:
    seen: list[torch.Tensor] = []

    def record(batch: dict[str, Any]) -> torch.Tensor:
        seen.append(batch[REF]["latents"].clone())
        return torch.zeros(batch[REF]["latents"].shape[0])

    data = _dataset(3, informative=True)
    measure_ref_gap(data, default_collate, record, num_samples=3, batch_size=3, reference_key=REF)
    right, wrong = seen
    refs = torch.stack([s[REF]["latents"] for s in data])
    assert torch.equal(right, refs)
    assert torch.equal(wrong, refs.roll(-1, dims=0))


def test_config_knob_is_off_by_default_and_refuses_one_sample() -> None:
    assert AudioReferenceConfig().ref_gap_samples == 0
    assert AudioReferenceConfig(ref_gap_samples=16).ref_gap_samples == 16
    with pytest.raises(ValueError, match="Set ref_gap_samples: 0 \\(off\\) or at least 2"):
        AudioReferenceConfig(ref_gap_samples=1)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        AudioReferenceConfig(ref_gap_samples=-1)


def test_registered_as_a_plugin_implementing_on_checkpoint(fresh_pm: pluggy.PluginManager) -> None:
    assert fresh_pm.get_plugin("ref_gap") is ref_gap
    assert "ref_gap" in [name for name, _ in fresh_pm.list_name_plugin()]
    assert any(impl.plugin is ref_gap for impl in fresh_pm.hook.on_checkpoint.get_hookimpls())
