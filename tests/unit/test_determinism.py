"""Tier 1: per-sample draws: a sample's sigma and noise depend on (seed, epoch, index), not on its batch."""

from __future__ import annotations

import math

import pytest
import torch

from ltx_audio_reference.reliability import determinism as randomness
from ltx_audio_reference.reliability.determinism import DrawKey, SampleDraws
from ltx_audio_reference.strategies.audio_reference import inputs as ar_inputs
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig

GRID = ar_inputs.VideoGrid(frames=2, height=2, width=2, fps=24.0)
KEY = DrawKey(seed=42, epoch=3)


def _logit_normal(tokens: torch.Tensor) -> torch.Tensor:
    """A sampler shaped like ltx-trainer's: one draw per row from the global RNG, depending on the sequence length."""
    shift = math.log(tokens.shape[1])
    return torch.sigmoid(torch.randn(tokens.shape[0]) + shift * 0.1)


def test_seeds_are_pinned_and_differ_by_stream_epoch_index_and_seed() -> None:
    # Pinned: changing the derivation would silently change every user's noise.
    assert randomness.sample_seed(KEY, 7, "noise") == randomness.sample_seed(DrawKey(42, 3), 7, "noise")
    assert randomness.sample_seed(DrawKey(0, 0), 0, "noise") == 3171889340379325322  # blake2b-64 of "0:0:0:noise"
    seeds = {
        randomness.sample_seed(KEY, 7, "noise"),
        randomness.sample_seed(KEY, 7, "sigma"),
        randomness.sample_seed(KEY, 8, "noise"),
        randomness.sample_seed(DrawKey(42, 4), 7, "noise"),
        randomness.sample_seed(DrawKey(43, 3), 7, "noise"),
    }
    assert len(seeds) == 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_the_key_is_set_only_inside_a_step_and_nests() -> None:
    assert randomness.current_key() is None
    with randomness.per_sample_draws(1, 2) as outer:
        assert randomness.current_key() == outer == DrawKey(1, 2)
        with randomness.per_sample_draws(1, 3):
            assert randomness.current_key() == DrawKey(1, 3)
        assert randomness.current_key() == outer
    assert randomness.current_key() is None


def test_a_samples_sigma_is_the_same_alone_or_in_any_batch_and_the_global_rng_is_untouched() -> None:
    tokens = torch.randn(3, 10, 4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    batch = SampleDraws(KEY, torch.tensor([5, 9, 2]), "cpu").sigmas(_logit_normal, tokens)
    assert torch.equal(torch.get_rng_state(), before)
    alone = SampleDraws(KEY, [9], "cpu").sigmas(_logit_normal, tokens[1:2])
    reordered = SampleDraws(KEY, [2, 9], "cpu").sigmas(_logit_normal, tokens[[2, 1]])
    assert batch.shape == (3,)
    assert torch.equal(batch[1:2], alone)
    assert torch.equal(reordered, batch[[2, 1]])
    assert len(set(batch.tolist())) == 3
    other_epoch = SampleDraws(DrawKey(42, 4), [9], "cpu").sigmas(_logit_normal, tokens[1:2])
    assert not torch.equal(other_epoch, alone)
    with pytest.raises(ValueError, match="2 token rows for 3 sample indices"):
        SampleDraws(KEY, [1, 2, 3], "cpu").sigmas(_logit_normal, tokens[:2])


def _prepare(indices: list[int], rows: list[int], data: dict[str, torch.Tensor]) -> ar_inputs.AudioReferenceInputs:
    draws = SampleDraws(KEY, indices, "cpu")
    options = AudioReferenceConfig(first_frame_conditioning_p=0.5, reference_strength=0.5)
    return ar_inputs.prepare_audio_reference_inputs(
        video_tokens=data["video"][rows],
        video_grid=GRID,
        audio_tokens=data["audio"][rows],
        reference_tokens=data["reference"][rows],
        video_context=data["context"][rows],
        audio_context=data["context"][rows],
        context_mask=None,
        sample_sigmas=lambda tokens: draws.sigmas(_logit_normal, tokens),
        options=options,
        generator=draws.generators(),
    )


def test_every_draw_of_a_sample_is_independent_of_the_batch_it_is_in() -> None:
    """Sigma, video noise, the first-frame choice, target noise and reference noise (strength < 1) all per sample."""
    g = torch.Generator().manual_seed(0)
    data = {
        "video": torch.randn(4, 8, 128, generator=g),
        "audio": torch.randn(4, 11, 128, generator=g),
        "reference": torch.randn(4, 5, 128, generator=g),
        "context": torch.randn(4, 128, 64, generator=g),
    }
    indices = [10, 11, 12, 13]
    together = _prepare(indices, [0, 1, 2, 3], data)
    halves = [_prepare(indices[:2], [0, 1], data), _prepare(indices[2:], [2, 3], data)]
    alone = _prepare([12], [2], data)

    fields = {
        "video latent": lambda x: x.video.latent,
        "video timesteps": lambda x: x.video.timesteps,
        "video targets": lambda x: x.video_targets,
        "video loss mask": lambda x: x.video_loss_mask,
        "audio latent": lambda x: x.audio.latent,
        "audio timesteps": lambda x: x.audio.timesteps,
        "audio sigma": lambda x: x.audio.sigma,
        "audio targets": lambda x: x.audio_targets,
    }
    for name, get in fields.items():
        assert torch.equal(torch.cat([get(h) for h in halves]), get(together)), name
        assert torch.equal(get(alone), get(together)[2:3]), name
    # The draws really are random: samples differ, and the reference was noised (strength 0.5).
    assert len(set(together.audio.sigma.tolist())) == 4
    assert not torch.equal(together.audio.latent[:, 11:], data["reference"])


def test_per_sample_generators_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="1 per-sample generators for a batch of 2"):
        ar_inputs.first_frame_conditioning_mask(2, 8, 4, 0.5, generator=[torch.Generator()])
