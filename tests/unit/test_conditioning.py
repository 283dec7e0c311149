"""Tier 1: the audio-reference conditioning math, on torch + ltx-core only (runs with ltx-core 1.0.0 and 1.2.0)."""

from __future__ import annotations

import pytest
import torch

from ltx_audio_reference import layout
from ltx_audio_reference.strategies.audio_reference import inputs as ar_inputs
from ltx_audio_reference.strategies.audio_reference import loss as ar_loss
from ltx_audio_reference.strategies.audio_reference import positions as ar_positions
from ltx_audio_reference.strategies.audio_reference.config import AudioReferenceConfig
from ltx_audio_reference.testing.tiny_model import build_tiny_model
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier
from ltx_core.model.transformer.model import LTXModel
from ltx_core.types import AudioLatentShape, LatentState

GRID = ar_inputs.VideoGrid(frames=2, height=2, width=2, fps=24.0)
PROMPT_LEN = 128
CAPTION_DIM = 64


def _dubit_negative_positions(vae_latents: torch.Tensor) -> torch.Tensor:
    """Re-derivation of ltx_pipelines.dubit.patchify_dubit_audio_reference_latent(negative_positions=True)."""
    patchifier = AudioPatchifier(patch_size=1)
    patchified = patchifier.patchify(vae_latents)
    b, c, _t, mel_bins = vae_latents.shape
    seq_len = patchified.shape[1]
    latent_coords = patchifier.get_patch_grid_bounds(
        output_shape=AudioLatentShape(batch=b, channels=c, frames=seq_len, mel_bins=mel_bins),
        device=torch.device("cpu"),
    )
    positions = latent_coords.to(dtype=torch.float32)
    aud_dur = positions[:, :, -1, 1].max().item()
    return positions - aud_dur - 0.04


@pytest.fixture(scope="module")
def tiny_model() -> LTXModel:
    return build_tiny_model(num_layers=2, seed=0).eval()


def _inputs(
    options: AudioReferenceConfig,
    *,
    batch: int = 2,
    audio_steps: int = 8,
    ref_steps: int = 5,
    seed: int = 0,
    reference: torch.Tensor | None = None,
) -> ar_inputs.AudioReferenceInputs:
    g = torch.Generator().manual_seed(seed)
    video = ar_positions.patchify_video(torch.randn(batch, 128, GRID.frames, GRID.height, GRID.width, generator=g))
    audio = ar_positions.patchify_audio(torch.randn(batch, 8, audio_steps, 16, generator=g))
    if reference is None:
        reference = ar_positions.patchify_audio(torch.randn(batch, 8, ref_steps, 16, generator=g))
    mask = torch.ones(batch, PROMPT_LEN, dtype=torch.int64)
    mask[:, : PROMPT_LEN // 2] = 0
    return ar_inputs.prepare_audio_reference_inputs(
        video_tokens=video,
        video_grid=GRID,
        audio_tokens=audio,
        reference_tokens=reference,
        video_context=torch.randn(batch, PROMPT_LEN, CAPTION_DIM, generator=g),
        audio_context=torch.randn(batch, PROMPT_LEN, CAPTION_DIM, generator=g),
        context_mask=mask,
        sample_sigmas=lambda x: torch.full((x.shape[0],), 0.7),
        options=options,
        generator=torch.Generator().manual_seed(seed + 1),
    )


# --- positions --------------------------------------------------------------------------------------------------------


def test_audio_positions_are_ltx_core_patchifier_seconds() -> None:
    positions = ar_positions.audio_positions(6, batch_size=3)
    expected = AudioPatchifier(patch_size=1).get_patch_grid_bounds(
        AudioLatentShape(batch=3, channels=8, frames=6, mel_bins=16)
    )
    assert positions.shape == (3, 1, 6, 2)
    assert positions.dtype == torch.float32
    assert torch.equal(positions, expected.float())
    # Causal first latent covers 0.01 s, the others one latent (0.04 s).
    assert torch.allclose(positions[0, 0, 0], torch.tensor([0.0, 0.01]))
    assert torch.allclose(positions[0, 0, 1:, 1] - positions[0, 0, 1:, 0], torch.full((5,), 0.04))


@pytest.mark.parametrize("num_ref", [1, 2, 5, 50, 251])
@pytest.mark.parametrize("batch", [1, 3])
def test_negative_positions_equal_dubit_formula_exactly(num_ref: int, batch: int) -> None:
    latents = torch.randn(batch, 8, num_ref, 16)
    ours = ar_positions.reference_positions(num_ref, batch)
    assert torch.equal(ours, _dubit_negative_positions(latents))


def test_negative_positions_end_one_latent_before_target_start() -> None:
    target = ar_positions.audio_positions(10, batch_size=2)
    ref = ar_positions.reference_positions(7, 2, target_positions=target)
    unshifted = ar_positions.audio_positions(7, batch_size=2)
    assert target[:, 0, 0, 0].eq(0).all()
    assert torch.allclose(ref[:, 0, -1, 1], torch.full((2,), -0.04), atol=1e-7)
    assert (ref[..., 1] < 0).all()
    # A pure translation: every token keeps its duration.
    assert torch.allclose(ref[..., 1] - ref[..., 0], unshifted[..., 1] - unshifted[..., 0], atol=1e-6)


def test_reference_gap_is_configurable() -> None:
    ref = ar_positions.reference_positions(4, 1, gap_s=0.5)
    assert torch.allclose(ref[0, 0, -1, 1], torch.tensor(-0.5))
    no_gap = ar_positions.reference_positions(4, 1, gap_s=0.0)
    assert torch.allclose(no_gap[0, 0, -1, 1], torch.tensor(0.0), atol=1e-7)


def test_overlap_mode_is_the_stock_layout_from_zero() -> None:
    ref = ar_positions.reference_positions(5, 2, mode="overlap")
    assert torch.equal(ref, ar_positions.audio_positions(5, batch_size=2))


def test_reference_positions_follow_a_shifted_target_start() -> None:
    target = ar_positions.audio_positions(4, batch_size=1) + 1.0
    ref = ar_positions.reference_positions(3, 1, target_positions=target)
    assert torch.allclose(ref[0, 0, -1, 1], torch.tensor(1.0 - 0.04))


def test_unknown_mode_and_negative_gap_are_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown reference position mode"):
        ar_positions.reference_positions(3, 1, mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        ar_positions.reference_positions(3, 1, gap_s=-0.1)


# --- the validation conditioner ---------------------------------------------------------------------------------------


def test_conditioner_matches_training_placement() -> None:
    options = AudioReferenceConfig()
    inputs = _inputs(options, audio_steps=9, ref_steps=6)
    ref_tokens = torch.randn(2, 6, 128)
    target_positions = ar_positions.audio_positions(9, batch_size=2)
    positions, denoise = ar_positions.audio_reference_conditioner(ref_tokens, target_positions, options)
    assert torch.equal(positions, inputs.audio.positions[:, :, 9:])
    assert denoise == 0.0


def test_conditioner_follows_mode_gap_and_strength() -> None:
    options = AudioReferenceConfig(reference_positions="overlap", reference_strength=0.75)
    positions, denoise = ar_positions.audio_reference_conditioner(
        torch.randn(1, 4, 128), ar_positions.audio_positions(8, batch_size=1), options
    )
    assert torch.equal(positions, ar_positions.audio_positions(4, batch_size=1))
    assert denoise == pytest.approx(0.25)
    gap = AudioReferenceConfig(reference_gap_s=0.2)
    positions, _ = ar_positions.audio_reference_conditioner(
        torch.randn(1, 4, 128), ar_positions.audio_positions(8, 1), gap
    )
    assert torch.allclose(positions[0, 0, -1, 1], torch.tensor(-0.2))


# --- sequence assembly ------------------------------------------------------------------------------------------------


def test_audio_sequence_is_target_then_clean_reference() -> None:
    target = torch.randn(2, 8, 128)
    reference = torch.randn(2, 5, 128)
    noise = torch.randn(2, 8, 128)
    sigmas = torch.tensor([0.3, 0.9])
    seq = ar_inputs.build_audio_sequence(target, reference, sigmas, target_noise=noise)

    assert seq.latent.shape == (2, 13, 128)
    assert seq.num_target_tokens == 8
    assert seq.num_reference_tokens == 5
    expected_noisy = (1 - sigmas.view(-1, 1, 1)) * target + sigmas.view(-1, 1, 1) * noise
    assert torch.allclose(seq.latent[:, :8], expected_noisy)
    assert torch.equal(seq.latent[:, 8:], reference)
    assert torch.equal(seq.timesteps[:, :8], sigmas.view(-1, 1).expand(2, 8))
    assert seq.timesteps[:, 8:].eq(0).all()
    assert seq.loss_mask[:, :8].all()
    assert not seq.loss_mask[:, 8:].any()
    assert torch.allclose(seq.targets[:, :8], noise - target)
    assert seq.targets[:, 8:].eq(0).all()
    assert torch.equal(seq.positions[:, :, :8], ar_positions.audio_positions(8, 2))
    assert (seq.positions[:, :, 8:] < 0).all()


def test_clean_reference_draws_only_the_target_noise() -> None:
    target, reference, sigmas = torch.randn(1, 4, 128), torch.randn(1, 3, 128), torch.tensor([0.5])
    generator = torch.Generator().manual_seed(0)
    seq = ar_inputs.build_audio_sequence(target, reference, sigmas, generator=generator)
    after = torch.rand(1, generator=generator)

    replay = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 128, generator=replay)
    assert torch.allclose(seq.latent[:, :4], 0.5 * target + 0.5 * noise)
    assert torch.equal(torch.rand(1, generator=replay), after)


@pytest.mark.parametrize("strength", [0.0, 0.4, 0.9])
def test_partial_strength_reference_matches_gaussian_noiser(strength: float) -> None:
    reference = torch.randn(2, 5, 128)
    sigmas = torch.tensor([0.25, 0.8])
    seeds = [11, 12]
    noise = torch.cat([torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(s)) for s in seeds])
    seq = ar_inputs.build_audio_sequence(
        torch.randn(2, 4, 128), reference, sigmas, reference_strength=strength, reference_noise=noise
    )
    mask_value = 1.0 - strength
    for b, seed in enumerate(seeds):
        state = LatentState(
            latent=reference[b : b + 1].clone(),
            denoise_mask=torch.full((1, 5, 1), mask_value),
            positions=ar_positions.audio_positions(5, 1),
            clean_latent=reference[b : b + 1].clone(),
        )
        noised = GaussianNoiser(generator=torch.Generator().manual_seed(seed))(state, noise_scale=float(sigmas[b]))
        assert torch.allclose(seq.latent[b, 4:], noised.latent[0], atol=1e-6)
        # The sampler's timesteps_from_mask: denoise_mask * sigma.
        assert torch.allclose(seq.timesteps[b, 4:], torch.full((5,), mask_value * float(sigmas[b])))
    assert not seq.loss_mask[:, 4:].any()


def test_mismatched_target_and_reference_are_rejected() -> None:
    with pytest.raises(ValueError, match="batch size or channels"):
        ar_inputs.build_audio_sequence(torch.randn(2, 4, 128), torch.randn(1, 3, 128), torch.rand(2))


# --- video ------------------------------------------------------------------------------------------------------------


def test_first_frame_mask_probability_extremes_and_single_frame() -> None:
    assert not ar_inputs.first_frame_conditioning_mask(4, 12, 4, 0.0).any()
    always = ar_inputs.first_frame_conditioning_mask(4, 12, 4, 1.0)
    assert always[:, :4].all()
    assert not always[:, 4:].any()
    assert not ar_inputs.first_frame_conditioning_mask(4, 4, 4, 1.0).any()


def test_first_frame_mask_is_drawn_per_sample() -> None:
    mask = ar_inputs.first_frame_conditioning_mask(64, 8, 4, 0.5, generator=torch.Generator().manual_seed(0))
    per_sample = mask[:, 0]
    assert per_sample.any()
    assert not per_sample.all()
    assert torch.equal(mask[:, :4], per_sample.view(-1, 1).expand(64, 4))


def test_video_first_frame_conditioning_keeps_frame_clean_and_out_of_loss() -> None:
    tokens = torch.randn(2, 8, 128)
    sigmas = torch.tensor([0.5, 0.5])
    seq = ar_inputs.build_video_sequence(tokens, GRID, sigmas, first_frame_conditioning_p=1.0)
    assert torch.equal(seq.latent[:, :4], tokens[:, :4])
    assert not torch.allclose(seq.latent[:, 4:], tokens[:, 4:])
    assert seq.timesteps[:, :4].eq(0).all()
    assert seq.timesteps[:, 4:].eq(0.5).all()
    assert seq.loss_mask is not None
    assert not seq.loss_mask[:, :4].any()
    assert seq.loss_mask[:, 4:].all()


def test_video_is_fully_generated_by_default() -> None:
    seq = ar_inputs.build_video_sequence(torch.randn(2, 8, 128), GRID, torch.tensor([0.2, 0.6]))
    assert seq.loss_mask is not None
    assert seq.loss_mask.all()
    assert torch.equal(seq.timesteps, torch.tensor([[0.2] * 8, [0.6] * 8]))


def test_video_not_generated_is_a_clean_condition() -> None:
    tokens = torch.randn(2, 8, 128)
    seq = ar_inputs.build_video_sequence(tokens, GRID, torch.tensor([0.3, 0.7]), generate=False)
    assert torch.equal(seq.latent, tokens)
    assert seq.timesteps.eq(0).all()
    assert seq.sigma.eq(0).all()
    assert seq.targets is None
    assert seq.loss_mask is None


def test_video_grid_must_match_tokens() -> None:
    with pytest.raises(ValueError, match="does not match"):
        ar_inputs.build_video_sequence(torch.randn(1, 9, 128), GRID, torch.rand(1))


# --- batches of clips -------------------------------------------------------------------------------------------------


def test_references_of_different_lengths_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"different lengths \(\[5, 7\]"):
        ar_inputs.stack_audio_latents([torch.randn(8, 5, 16), torch.randn(8, 7, 16)], what="reference audio")
    with pytest.raises(ValueError, match="batch_size"):
        ar_inputs.stack_audio_latents(torch.randn(2, 8, 7, 16), what="reference audio", lengths=torch.tensor([5, 7]))


def test_references_of_equal_length_stack() -> None:
    stacked = ar_inputs.stack_audio_latents([torch.randn(8, 5, 16), torch.randn(1, 8, 5, 16)], what="reference audio")
    assert stacked.shape == (2, 8, 5, 16)


def test_patchify_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="4-D"):
        ar_positions.patchify_audio(torch.randn(8, 5, 16))
    with pytest.raises(ValueError, match="5-D"):
        ar_positions.patchify_video(torch.randn(128, 2, 2, 2))


# --- whole step -------------------------------------------------------------------------------------------------------


def test_video_and_audio_share_the_sampled_sigma() -> None:
    inputs = _inputs(AudioReferenceConfig())
    assert torch.equal(inputs.video.sigma, inputs.audio.sigma)
    assert inputs.video.sigma.eq(0.7).all()


def test_sigma_is_sampled_for_video_tokens_unless_video_is_a_condition() -> None:
    seen: list[int] = []

    def sampler(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[1])
        return torch.full((x.shape[0],), 0.5)

    for options in (AudioReferenceConfig(), AudioReferenceConfig(generate_video=False)):
        ar_inputs.prepare_audio_reference_inputs(
            video_tokens=torch.randn(1, 8, 128),
            video_grid=GRID,
            audio_tokens=torch.randn(1, 11, 128),
            reference_tokens=torch.randn(1, 3, 128),
            video_context=torch.randn(1, PROMPT_LEN, CAPTION_DIM),
            audio_context=torch.randn(1, PROMPT_LEN, CAPTION_DIM),
            context_mask=None,
            sample_sigmas=sampler,
            options=options,
        )
    assert seen == [8, 11]


def test_forward_through_tiny_model_gives_per_sample_loss(tiny_model: LTXModel) -> None:
    inputs = _inputs(AudioReferenceConfig(), batch=3)
    with torch.no_grad():
        video_pred, audio_pred = tiny_model(video=inputs.video, audio=inputs.audio, perturbations=None)
    assert audio_pred.shape == (3, 8 + 5, 128)
    assert video_pred.shape == (3, 8, 128)
    loss = ar_loss.audio_reference_loss(
        video_pred=video_pred,
        audio_pred=audio_pred,
        video_targets=inputs.video_targets,
        video_loss_mask=inputs.video_loss_mask,
        audio_targets=inputs.audio_targets,
        audio_loss_mask=inputs.audio_loss_mask,
    )
    assert loss.shape == (3,)
    assert torch.isfinite(loss).all()
    assert (loss > 0).all()


def test_reference_reaches_target_audio_and_video(tiny_model: LTXModel) -> None:
    options = AudioReferenceConfig()
    first = _inputs(options, seed=3)
    second = _inputs(options, seed=3, reference=torch.randn(2, 5, 128))
    with torch.no_grad():
        v1, a1 = tiny_model(video=first.video, audio=first.audio, perturbations=None)
        v2, a2 = tiny_model(video=second.video, audio=second.audio, perturbations=None)
    assert not torch.allclose(a1[:, :8], a2[:, :8])
    # Audio-video cross-attention is unmasked, so the video sees the reference audio too.
    assert not torch.allclose(v1, v2)


def test_reference_position_mode_changes_the_prediction(tiny_model: LTXModel) -> None:
    negative = _inputs(AudioReferenceConfig(), seed=5)
    overlap = _inputs(AudioReferenceConfig(reference_positions="overlap"), seed=5)
    assert torch.equal(negative.audio.latent, overlap.audio.latent)
    with torch.no_grad():
        _, a_negative = tiny_model(video=negative.video, audio=negative.audio, perturbations=None)
        _, a_overlap = tiny_model(video=overlap.video, audio=overlap.audio, perturbations=None)
    assert not torch.allclose(a_negative[:, :8], a_overlap[:, :8])


# --- loss -------------------------------------------------------------------------------------------------------------


def test_masked_mse_ignores_masked_out_tokens() -> None:
    pred = torch.randn(2, 6, 4)
    targets = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 3 + [False] * 3])
    loss = ar_loss.masked_mse(pred, targets, mask)
    assert loss.shape == (2,)
    assert torch.allclose(loss[0], (pred[0, :4] - targets[0, :4]).pow(2).mean())
    assert torch.allclose(loss[1], (pred[1, :3] - targets[1, :3]).pow(2).mean())
    changed = pred.clone()
    changed[:, 4:] += 100.0
    assert torch.equal(ar_loss.masked_mse(changed, targets, mask), loss)


def test_loss_weights_combine_video_and_audio() -> None:
    video_pred, video_targets = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    audio_pred, audio_targets = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    video_mask = torch.ones(2, 8, dtype=torch.bool)
    audio_mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    video_mse = ar_loss.masked_mse(video_pred, video_targets, video_mask)
    audio_mse = ar_loss.masked_mse(audio_pred, audio_targets, audio_mask)
    common = {
        "video_pred": video_pred,
        "audio_pred": audio_pred,
        "video_targets": video_targets,
        "video_loss_mask": video_mask,
        "audio_targets": audio_targets,
        "audio_loss_mask": audio_mask,
    }
    weighted = ar_loss.audio_reference_loss(**common, video_loss_weight=0.5, audio_loss_weight=2.0)
    assert torch.allclose(weighted, 0.5 * video_mse + 2.0 * audio_mse)
    audio_only = ar_loss.audio_reference_loss(**common, video_loss_weight=0.0, audio_loss_weight=1.0)
    assert torch.allclose(audio_only, audio_mse)
    no_video = ar_loss.audio_reference_loss(**{**common, "video_targets": None, "video_loss_mask": None})
    assert torch.allclose(no_video, audio_mse)
    with pytest.raises(ValueError, match="Nothing to train"):
        ar_loss.audio_reference_loss(**common, video_loss_weight=0.0, audio_loss_weight=0.0)
    with pytest.raises(ValueError, match="no audio prediction"):
        ar_loss.audio_reference_loss(**{**common, "audio_pred": None})


def test_resolve_fps() -> None:
    assert ar_inputs.resolve_fps(None) == layout.DEFAULT_FPS
    assert ar_inputs.resolve_fps(torch.tensor([25.0, 25.0])) == 25.0
    assert ar_inputs.resolve_fps(30) == 30.0
