"""Where the ``audio_reference`` strategy puts the reference: tokens and RoPE positions, in training and inference.

The reference is an audio clip only. Its tokens are appended after the target audio tokens (``[target | reference]``,
the order ltx-core's ``AudioConditionByReferenceLatent`` uses at inference), carry no loss, and sit at **negative**
RoPE time positions: shifted so the last reference token ends ``gap_s`` seconds (default one audio latent, 0.04 s)
before the first target token starts. With the default gap this is exactly the inference formula of LTX-2's DubIt
pipeline, ``positions - ref_end - 0.04``. Token durations are preserved (a pure translation).

Training (:mod:`.inputs`) and validation (:func:`audio_reference_conditioner`) both place the reference with
:func:`reference_positions`, so the two can never disagree. Torch and ltx-core only, never ltx-trainer.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from ltx_audio_reference.layout import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_MEL_BINS,
    DEFAULT_REFERENCE_GAP_S,
    VIDEO_LATENT_CHANNELS,
)
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

ReferencePositionMode = Literal["negative", "overlap"]

_AUDIO_PATCHIFIER = AudioPatchifier(patch_size=1)
_VIDEO_PATCHIFIER = VideoLatentPatchifier(patch_size=1)


class ReferenceOptions(Protocol):
    """The strategy settings this module reads (``AudioReferenceConfig`` satisfies it)."""

    reference_positions: ReferencePositionMode
    reference_gap_s: float
    reference_strength: float
    first_frame_conditioning_p: float
    generate_video: bool


# ---------------------------------------------------------------------------------------------------------------------
# Tokens and positions
# ---------------------------------------------------------------------------------------------------------------------


def patchify_audio(latents: Tensor) -> Tensor:
    """Flatten audio VAE latents ``[B, 8, T, 16]`` into tokens ``[B, T, 128]`` with ltx-core's patchifier.

    Raises:
        ValueError: If ``latents`` is not 4-D.
    """
    if latents.ndim != 4:
        raise ValueError(
            f"Audio latents must be [batch, channels, time, mel_bins] (4-D), got shape {tuple(latents.shape)}. "
            "Re-run the audio precompute; legacy patchified [time, features] files are not supported."
        )
    return _AUDIO_PATCHIFIER.patchify(latents)


def patchify_video(latents: Tensor) -> Tensor:
    """Flatten video VAE latents ``[B, 128, F, H, W]`` into tokens ``[B, F*H*W, 128]`` with ltx-core's patchifier.

    Raises:
        ValueError: If ``latents`` is not 5-D.
    """
    if latents.ndim != 5:
        raise ValueError(
            f"Video latents must be [batch, channels, frames, height, width] (5-D), got shape {tuple(latents.shape)}"
        )
    return _VIDEO_PATCHIFIER.patchify(latents)


def audio_positions(num_tokens: int, batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """RoPE positions of ``num_tokens`` audio latents starting at time 0, from ltx-core's ``AudioPatchifier``.

    Args:
        num_tokens: Number of audio latents (tokens).
        batch_size: Batch size.
        device: Device of the result.

    Returns:
        ``[B, 1, num_tokens, 2]`` float32 ``[start, end)`` times in seconds. The causal VAE makes the first token
        shorter (0.01 s); every other token covers 0.04 s.
    """
    if num_tokens <= 0:
        raise ValueError(f"An audio clip needs at least one latent, got {num_tokens}")
    shape = AudioLatentShape(
        batch=batch_size, channels=AUDIO_LATENT_CHANNELS, frames=num_tokens, mel_bins=AUDIO_MEL_BINS
    )
    device = torch.device(device) if device is not None else None
    return _AUDIO_PATCHIFIER.get_patch_grid_bounds(output_shape=shape, device=device).to(torch.float32)


def video_positions(
    num_frames: int,
    height: int,
    width: int,
    batch_size: int,
    fps: float,
    device: torch.device | str | None = None,
) -> Tensor:
    """RoPE positions of a latent video grid, as the stock strategies compute them.

    Returns:
        ``[B, 3, F*H*W, 2]`` float32 pixel-space bounds; the time axis is in seconds (causal first frame).
    """
    shape = VideoLatentShape(
        batch=batch_size, channels=VIDEO_LATENT_CHANNELS, frames=num_frames, height=height, width=width
    )
    device = torch.device(device) if device is not None else None
    latent_coords = _VIDEO_PATCHIFIER.get_patch_grid_bounds(output_shape=shape, device=device)
    pixel_coords = get_pixel_coords(
        latent_coords=latent_coords, scale_factors=SpatioTemporalScaleFactors.default(), causal_fix=True
    ).float()
    pixel_coords[:, 0, ...] = pixel_coords[:, 0, ...] / fps
    return pixel_coords


def shift_reference_positions(
    positions: Tensor,
    *,
    mode: ReferencePositionMode = "negative",
    gap_s: float = DEFAULT_REFERENCE_GAP_S,
    target_start: float | Tensor = 0.0,
) -> Tensor:
    """Move reference positions that start at 0 into their place relative to the target.

    Args:
        positions: ``[B, 1, R, 2]`` reference positions as :func:`audio_positions` builds them (starting at 0).
        mode: ``"negative"``: the last reference token ends ``gap_s`` seconds before ``target_start``.
            ``"overlap"``: the reference starts at ``target_start`` and overlaps the target in time, the layout of
            the stock ``flexible`` strategy and validation runner (kept for ablations).
        gap_s: Seconds between the reference end and the target start (``"negative"`` only).
        target_start: Start time of the first target token (0 for every target built by ltx-core).

    Returns:
        Float32 positions of the same shape. In ``"negative"`` mode with ``target_start == 0`` this equals, bit for
        bit, DubIt's ``positions - ref_end - gap_s`` where ``ref_end`` is the end of the last reference token.

    Raises:
        ValueError: For an unknown mode or a negative gap.
    """
    positions = positions.to(torch.float32)
    if mode == "overlap":
        return positions + target_start
    if mode != "negative":
        raise ValueError(f"Unknown reference position mode {mode!r}; use 'negative' or 'overlap'")
    if gap_s < 0:
        raise ValueError(f"reference gap must be >= 0 seconds, got {gap_s}")
    # Same operation order as DubIt (subtract ref_end, then the gap) so the float32 results match exactly;
    # adding a zero target start afterwards is exact as well.
    ref_end = positions[:, :, -1, 1].amax()
    return positions - ref_end - gap_s + target_start


def reference_positions(
    num_tokens: int,
    batch_size: int,
    *,
    mode: ReferencePositionMode = "negative",
    gap_s: float = DEFAULT_REFERENCE_GAP_S,
    target_positions: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """RoPE positions of ``num_tokens`` reference audio latents placed for the ``audio_reference`` strategy.

    Training (:func:`prepare_audio_reference_inputs`) and validation (:func:`audio_reference_conditioner`) both call
    this function, so the two can never disagree.

    Args:
        num_tokens: Number of reference latents ``R``.
        batch_size: Batch size.
        mode: ``"negative"`` (default) or ``"overlap"``; see :func:`shift_reference_positions`.
        gap_s: Seconds between the reference end and the target start (``"negative"`` only).
        target_positions: ``[B, 1, T, 2]`` target audio positions; the reference is placed relative to their
            earliest start. None means the target starts at 0.
        device: Device of the result (defaults to that of ``target_positions``).

    Returns:
        ``[B, 1, R, 2]`` float32 ``[start, end)`` seconds.
    """
    target_start: float | Tensor = 0.0
    if target_positions is not None:
        target_start = target_positions[:, 0, :, 0].amin().to(torch.float32)
        device = device if device is not None else target_positions.device
    positions = audio_positions(num_tokens, batch_size, device=device)
    return shift_reference_positions(positions, mode=mode, gap_s=gap_s, target_start=target_start)


def reference_denoise_value(reference_strength: float) -> float:
    """The denoise-mask value of reference tokens at inference: ``1 - strength`` (0.0 = clean)."""
    if not 0.0 <= reference_strength <= 1.0:
        raise ValueError(f"reference_strength must be in [0, 1], got {reference_strength}")
    return 1.0 - reference_strength


# ---------------------------------------------------------------------------------------------------------------------
# Validation / inference placement
# ---------------------------------------------------------------------------------------------------------------------


def audio_reference_conditioner(
    ref_tokens: Tensor,
    target_positions: Tensor,
    strategy_config: ReferenceOptions,
) -> tuple[Tensor, float]:
    """Place reference audio tokens for validation exactly as training does (a ``ReferenceConditioner``).

    Args:
        ref_tokens: ``[B, R, C]`` patchified reference tokens.
        target_positions: ``[B, 1, T, 2]`` positions of the target audio being generated.
        strategy_config: The strategy config (reads ``reference_positions``, ``reference_gap_s`` and
            ``reference_strength``).

    Returns:
        ``(positions, denoise_value)``: ``[B, 1, R, 2]`` float32 reference positions, and the denoise-mask value
        of the reference tokens (0.0 = clean).
    """
    positions = reference_positions(
        ref_tokens.shape[1],
        ref_tokens.shape[0],
        mode=strategy_config.reference_positions,
        gap_s=strategy_config.reference_gap_s,
        target_positions=target_positions,
        device=ref_tokens.device,
    )
    return positions, reference_denoise_value(strategy_config.reference_strength)
