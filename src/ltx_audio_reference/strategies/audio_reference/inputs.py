"""One ``audio_reference`` training step's inputs: noise, timesteps, masks and the assembled modalities.

Video and audio are generated together; the reference (placed by :mod:`.positions`) is clean, with timestep 0 and no
loss; first-frame conditioning is off unless ``first_frame_conditioning_p`` asks for it. Torch and ltx-core only:
the ltx-trainer strategy (:mod:`.strategy`) is a thin adapter over :func:`prepare_audio_reference_inputs`.

Shapes: ``B`` batch, ``N`` video tokens, ``T`` target audio tokens, ``R`` reference audio tokens, ``C`` channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx_audio_reference.layout import DEFAULT_FPS, DEFAULT_REFERENCE_GAP_S
from ltx_audio_reference.strategies.audio_reference.positions import (
    ReferenceOptions,
    ReferencePositionMode,
    audio_positions,
    reference_denoise_value,
    reference_positions,
    video_positions,
)
from ltx_core.model.transformer.modality import Modality

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Noise, timesteps, masks
# ---------------------------------------------------------------------------------------------------------------------


Generators = torch.Generator | Sequence[torch.Generator] | None
"""The random source of the draws: the global RNG (None), one generator, or one generator per sample (the batch's
rows are then drawn one by one, so a sample's draws do not depend on the rest of the batch)."""


def _per_sample(generator: Generators, batch_size: int) -> Sequence[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if len(generator) != batch_size:
        raise ValueError(f"{len(generator)} per-sample generators for a batch of {batch_size}")
    return generator


def _randn_like(x: Tensor, generator: Generators) -> Tensor:
    per_sample = _per_sample(generator, x.shape[0])
    if per_sample is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in per_sample])


def _rand(batch_size: int, generator: Generators, device: torch.device | str | None) -> Tensor:
    per_sample = _per_sample(generator, batch_size)
    if per_sample is None:
        return torch.rand(batch_size, generator=generator, device=device)
    return torch.cat([torch.rand(1, generator=g, device=device) for g in per_sample])


def noise_target(clean: Tensor, sigmas: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """Rectified-flow noising of generated tokens, as the stock strategies do it.

    Args:
        clean: ``[B, L, C]`` clean tokens.
        sigmas: ``[B]`` noise levels in ``[0, 1]``.
        noise: ``[B, L, C]`` standard normal noise.

    Returns:
        ``(noisy, velocity_target)``: ``(1 - sigma) * clean + sigma * noise`` and ``noise - clean``.
    """
    s = sigmas.view(-1, 1, 1).to(clean.dtype)
    return (1 - s) * clean + s * noise, noise - clean


def noise_reference(
    clean: Tensor,
    sigmas: Tensor,
    reference_strength: float,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference tokens and their per-token timesteps as inference would present them at noise level ``sigma``.

    At inference a reference token has denoise mask ``m = 1 - strength``. ltx-core's ``GaussianNoiser`` noises it to
    ``lerp(clean, noise, m * sigma)`` and the sampler feeds it timestep ``m * sigma`` at every step (the denoised
    estimate of such a token is blended back towards the clean latent, so it stays on that path). Training shows the
    model the same thing. With ``strength == 1`` the tokens are returned clean with timestep 0 and no noise is needed.

    Args:
        clean: ``[B, R, C]`` clean reference tokens.
        sigmas: ``[B]`` noise levels of the target.
        reference_strength: 1.0 keeps the reference clean; lower values noise it.
        noise: ``[B, R, C]`` standard normal noise; required when ``reference_strength < 1``.

    Returns:
        ``(tokens, timesteps)`` with shapes ``[B, R, C]`` and ``[B, R]`` (timesteps in the dtype of ``sigmas``).
    """
    level = reference_denoise_value(reference_strength) * sigmas.view(-1, 1)
    timesteps = level.expand(clean.shape[0], clean.shape[1]).clone()
    if reference_strength == 1.0:
        return clean, torch.zeros_like(timesteps)
    if noise is None:
        raise ValueError("noise is required to noise a reference with reference_strength < 1")
    tokens = torch.lerp(clean.float(), noise.float(), level.unsqueeze(-1).float()).to(clean.dtype)
    return tokens, timesteps


def first_frame_conditioning_mask(
    batch_size: int,
    num_tokens: int,
    tokens_per_frame: int,
    probability: float,
    *,
    device: torch.device | str | None = None,
    generator: Generators = None,
) -> Tensor:
    """Which video tokens are first-frame conditioning (clean, timestep 0, no loss).

    Each sample is conditioned independently with ``probability`` (so a batch's training signal stays i.i.d.). When
    the video has a single latent frame nothing is conditioned, since nothing would be left to generate.

    Returns:
        ``[B, N]`` bool, True on the first ``tokens_per_frame`` tokens of the selected samples.
    """
    mask = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=device)
    if probability <= 0 or tokens_per_frame >= num_tokens:
        return mask
    selected = _rand(batch_size, generator, device) < probability
    mask[selected, :tokens_per_frame] = True
    return mask


def stack_audio_latents(
    latents: Tensor | Sequence[Tensor],
    *,
    what: str,
    lengths: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Stack per-sample audio latents into a batch, refusing clips of different lengths.

    Args:
        latents: ``[B, 8, T, 16]`` or a sequence of ``[8, T, 16]`` (or ``[1, 8, T, 16]``) tensors.
        what: Name used in the error message (e.g. ``"reference audio"``).
        lengths: The dataset's per-sample ``num_time_steps``, if known; they must all be equal too (a padding
            collate would otherwise hide different lengths).

    Returns:
        ``[B, 8, T, 16]``.

    Raises:
        ValueError: If the clips in the batch have different lengths.
    """
    if isinstance(latents, Tensor):
        stacked = latents
        sizes = [latents.shape[2]] * latents.shape[0] if latents.ndim == 4 else []
    else:
        items = [t.squeeze(0) if t.ndim == 4 and t.shape[0] == 1 else t for t in latents]
        sizes = [t.shape[1] for t in items]
        if len(set(sizes)) > 1:
            raise ValueError(_length_error(what, sizes))
        stacked = torch.stack(items)
    if lengths is not None:
        declared = [int(v) for v in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
        if len(set(declared)) > 1:
            raise ValueError(_length_error(what, declared))
    return stacked


def _length_error(what: str, sizes: list[int]) -> str:
    return (
        f"The {what} clips in one batch have different lengths ({sizes} audio latents). Use optimization.batch_size "
        f"1, or crop the {what} to a common duration when precomputing latents."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Assembling the model inputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoGrid:
    """Latent grid of the target video: frame count, latent height and width, frames per second."""

    frames: int
    height: int
    width: int
    fps: float = DEFAULT_FPS

    @property
    def tokens_per_frame(self) -> int:
        """Number of video tokens in one latent frame."""
        return self.height * self.width


@dataclass(frozen=True)
class AudioSequence:
    """The ``[target | reference]`` audio sequence with everything the loss needs.

    Attributes:
        latent: ``[B, T + R, C]`` noisy target tokens followed by the (clean) reference tokens.
        positions: ``[B, 1, T + R, 2]`` float32 seconds; the reference part is negative in ``"negative"`` mode.
        timesteps: ``[B, T + R]``: the sampled sigma on target tokens, 0 (or ``(1 - strength) * sigma``) on reference.
        targets: ``[B, T + R, C]`` velocity targets; zeros on reference tokens, which the loss mask excludes.
        loss_mask: ``[B, T + R]`` bool, True only on target tokens.
        num_target_tokens: ``T``.
    """

    latent: Tensor
    positions: Tensor
    timesteps: Tensor
    targets: Tensor
    loss_mask: Tensor
    num_target_tokens: int

    @property
    def num_reference_tokens(self) -> int:
        """``R``."""
        return self.latent.shape[1] - self.num_target_tokens


def build_audio_sequence(
    target_tokens: Tensor,
    reference_tokens: Tensor,
    sigmas: Tensor,
    *,
    mode: ReferencePositionMode = "negative",
    gap_s: float = DEFAULT_REFERENCE_GAP_S,
    reference_strength: float = 1.0,
    target_noise: Tensor | None = None,
    reference_noise: Tensor | None = None,
    generator: Generators = None,
) -> AudioSequence:
    """Noise the target audio and append the reference after it at its RoPE positions.

    Args:
        target_tokens: ``[B, T, C]`` clean target audio tokens.
        reference_tokens: ``[B, R, C]`` clean reference audio tokens.
        sigmas: ``[B]`` sampled noise levels.
        mode: Reference position mode (see :func:`shift_reference_positions`).
        gap_s: Seconds between reference end and target start.
        reference_strength: 1.0 keeps the reference clean (timestep 0).
        target_noise: Noise for the target (drawn when None).
        reference_noise: Noise for the reference (drawn when None and ``reference_strength < 1``).
        generator: Random source of the draws (:data:`Generators`; the global RNG when None).

    Returns:
        The assembled :class:`AudioSequence`.

    Raises:
        ValueError: If the batch sizes or channel counts of target and reference differ.
    """
    if target_tokens.ndim != 3 or reference_tokens.ndim != 3:
        raise ValueError(
            f"Expected [B, T, C] tokens, got target {tuple(target_tokens.shape)}, "
            f"reference {tuple(reference_tokens.shape)}"
        )
    batch_size, num_target, _ = target_tokens.shape
    if reference_tokens.shape[0] != batch_size or reference_tokens.shape[2] != target_tokens.shape[2]:
        raise ValueError(
            f"Reference tokens {tuple(reference_tokens.shape)} do not match target tokens "
            f"{tuple(target_tokens.shape)} in batch size or channels"
        )
    device = target_tokens.device
    reference_tokens = reference_tokens.to(dtype=target_tokens.dtype)

    if target_noise is None:
        target_noise = _randn_like(target_tokens, generator)
    noisy_target, velocity = noise_target(target_tokens, sigmas, target_noise)
    target_timesteps = sigmas.view(-1, 1).expand(batch_size, num_target).clone()

    if reference_strength < 1.0 and reference_noise is None:
        reference_noise = _randn_like(reference_tokens, generator)
    ref_latent, ref_timesteps = noise_reference(reference_tokens, sigmas, reference_strength, reference_noise)

    target_positions = audio_positions(num_target, batch_size, device=device)
    ref_positions = reference_positions(
        reference_tokens.shape[1],
        batch_size,
        mode=mode,
        gap_s=gap_s,
        target_positions=target_positions,
        device=device,
    )

    num_ref = reference_tokens.shape[1]
    loss_mask = torch.cat(
        [
            torch.ones(batch_size, num_target, dtype=torch.bool, device=device),
            torch.zeros(batch_size, num_ref, dtype=torch.bool, device=device),
        ],
        dim=1,
    )
    return AudioSequence(
        latent=torch.cat([noisy_target, ref_latent], dim=1),
        positions=torch.cat([target_positions, ref_positions], dim=2),
        timesteps=torch.cat([target_timesteps, ref_timesteps.to(target_timesteps.dtype)], dim=1),
        targets=torch.cat([velocity, torch.zeros_like(reference_tokens)], dim=1),
        loss_mask=loss_mask,
        num_target_tokens=num_target,
    )


@dataclass(frozen=True)
class VideoSequence:
    """The video stream's inputs.

    Attributes:
        latent: ``[B, N, C]`` noisy tokens (clean where first-frame conditioned, or everywhere when not generated).
        positions: ``[B, 3, N, 2]`` float32.
        timesteps: ``[B, N]``.
        sigma: ``[B]`` noise level of the stream (0 when not generated).
        targets: ``[B, N, C]`` velocity targets, or None when the video is not generated.
        loss_mask: ``[B, N]`` bool (False on conditioning tokens), or None when the video is not generated.
    """

    latent: Tensor
    positions: Tensor
    timesteps: Tensor
    sigma: Tensor
    targets: Tensor | None
    loss_mask: Tensor | None


def build_video_sequence(
    tokens: Tensor,
    grid: VideoGrid,
    sigmas: Tensor,
    *,
    generate: bool = True,
    first_frame_conditioning_p: float = 0.0,
    noise: Tensor | None = None,
    generator: Generators = None,
) -> VideoSequence:
    """Noise the video tokens (or keep them clean when the video is only a condition).

    Args:
        tokens: ``[B, N, C]`` clean video tokens.
        grid: The latent grid the tokens came from.
        sigmas: ``[B]`` sampled noise levels (shared with the audio, as at inference).
        generate: False keeps the whole video clean with timestep 0 and sigma 0 and no loss, the way the stock
            ``flexible`` strategy treats a modality with ``is_generated: false``.
        first_frame_conditioning_p: Probability per sample of keeping the first latent frame clean.
        noise: Noise for the video (drawn when None).
        generator: Random source of the draws (:data:`Generators`).

    Returns:
        The :class:`VideoSequence`.
    """
    batch_size, num_tokens, _ = tokens.shape
    if grid.frames * grid.tokens_per_frame != num_tokens:
        raise ValueError(f"Video grid {grid} does not match {num_tokens} video tokens")
    device = tokens.device
    positions = video_positions(grid.frames, grid.height, grid.width, batch_size, grid.fps, device=device)
    if not generate:
        zeros = torch.zeros(batch_size, device=device, dtype=sigmas.dtype)
        return VideoSequence(
            latent=tokens,
            positions=positions,
            timesteps=torch.zeros(batch_size, num_tokens, device=device, dtype=sigmas.dtype),
            sigma=zeros,
            targets=None,
            loss_mask=None,
        )
    if noise is None:
        noise = _randn_like(tokens, generator)
    noisy, velocity = noise_target(tokens, sigmas, noise)
    conditioned = first_frame_conditioning_mask(
        batch_size,
        num_tokens,
        grid.tokens_per_frame,
        first_frame_conditioning_p,
        device=device,
        generator=generator,
    )
    noisy = torch.where(conditioned.unsqueeze(-1), tokens, noisy)
    timesteps = torch.where(conditioned, torch.zeros_like(sigmas).view(-1, 1), sigmas.view(-1, 1))
    return VideoSequence(
        latent=noisy,
        positions=positions,
        timesteps=timesteps,
        sigma=sigmas,
        targets=velocity,
        loss_mask=~conditioned,
    )


@dataclass(frozen=True)
class AudioReferenceInputs:
    """Model inputs and loss ingredients of one ``audio_reference`` training step (trainer-independent)."""

    video: Modality
    audio: Modality
    video_targets: Tensor | None
    audio_targets: Tensor
    video_loss_mask: Tensor | None
    audio_loss_mask: Tensor
    num_target_audio_tokens: int


def prepare_audio_reference_inputs(
    *,
    video_tokens: Tensor,
    video_grid: VideoGrid,
    audio_tokens: Tensor,
    reference_tokens: Tensor,
    video_context: Tensor,
    audio_context: Tensor,
    context_mask: Tensor | None,
    sample_sigmas: Callable[[Tensor], Tensor],
    options: ReferenceOptions,
    generator: Generators = None,
) -> AudioReferenceInputs:
    """Build both modalities of an ``audio_reference`` training step.

    Video and audio share one sampled sigma per sample, as they do at inference. It is drawn for the video tokens
    when the video is generated (the shifted samplers depend on that sequence length), otherwise for the target
    audio tokens.

    Args:
        video_tokens: ``[B, N, C]`` clean video tokens.
        video_grid: Their latent grid and fps.
        audio_tokens: ``[B, T, C]`` clean target audio tokens.
        reference_tokens: ``[B, R, C]`` clean reference audio tokens.
        video_context: Video text embeddings.
        audio_context: Audio text embeddings.
        context_mask: Text attention mask.
        sample_sigmas: Draws ``[B]`` sigmas for a ``[B, L, C]`` tensor (a trainer ``TimestepSampler.sample_for``).
        options: Strategy settings (an ``AudioReferenceConfig``).
        generator: Random source of the noise and first-frame draws (:data:`Generators`; the global RNG when None).
            ``sample_sigmas`` draws the sigmas; pass a per-sample one too (``randomness.SampleDraws.sigmas``) to
            make every draw of a sample independent of the rest of the batch.

    Returns:
        The prepared :class:`AudioReferenceInputs`.
    """
    sigmas = sample_sigmas(video_tokens if options.generate_video else audio_tokens)
    sigmas = sigmas.to(device=audio_tokens.device, dtype=torch.float32).view(-1)

    video = build_video_sequence(
        video_tokens,
        video_grid,
        sigmas,
        generate=options.generate_video,
        first_frame_conditioning_p=options.first_frame_conditioning_p,
        generator=generator,
    )
    audio = build_audio_sequence(
        audio_tokens,
        reference_tokens,
        sigmas,
        mode=options.reference_positions,
        gap_s=options.reference_gap_s,
        reference_strength=options.reference_strength,
        generator=generator,
    )
    return AudioReferenceInputs(
        video=Modality(
            enabled=True,
            latent=video.latent,
            sigma=video.sigma,
            timesteps=video.timesteps,
            positions=video.positions,
            context=video_context,
            context_mask=context_mask,
        ),
        audio=Modality(
            enabled=True,
            latent=audio.latent,
            sigma=sigmas,
            timesteps=audio.timesteps,
            positions=audio.positions,
            context=audio_context,
            context_mask=context_mask,
        ),
        video_targets=video.targets,
        audio_targets=audio.targets,
        video_loss_mask=video.loss_mask,
        audio_loss_mask=audio.loss_mask,
        num_target_audio_tokens=audio.num_target_tokens,
    )


def resolve_fps(fps: Tensor | Sequence[float] | float | None, default: float = DEFAULT_FPS) -> float:
    """The frame rate of a batch: the first sample's (warning when samples disagree), or ``default``."""
    if fps is None:
        return default
    if isinstance(fps, int | float):
        return float(fps)
    values = [float(v) for v in (fps.flatten().tolist() if isinstance(fps, Tensor) else fps)]
    if not values:
        return default
    if len(set(values)) > 1:
        logger.warning("Different FPS values in one batch (%s); using the first, %s", values, values[0])
    return values[0]
