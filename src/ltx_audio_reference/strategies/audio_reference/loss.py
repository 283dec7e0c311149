"""The ``audio_reference`` loss: masked MSE on the target audio and the generated video; the reference never counts."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mse(pred: Tensor, targets: Tensor, loss_mask: Tensor) -> Tensor:
    """Per-sample mean squared error over the tokens where ``loss_mask`` is True.

    Args:
        pred: ``[B, L, C]`` predictions.
        targets: ``[B, L, C]`` targets.
        loss_mask: ``[B, L]`` bool.

    Returns:
        ``[B]`` float32; a sample without any masked-in token contributes 0.
    """
    if pred.shape != targets.shape:
        raise ValueError(f"Prediction {tuple(pred.shape)} and target {tuple(targets.shape)} shapes differ")
    if loss_mask.shape != pred.shape[:2]:
        raise ValueError(f"Loss mask {tuple(loss_mask.shape)} does not match tokens {tuple(pred.shape[:2])}")
    weights = loss_mask.to(torch.float32).unsqueeze(-1)
    squared = (pred.float() - targets.float()).pow(2) * weights
    count = weights.sum(dim=(1, 2)) * pred.shape[-1]
    return squared.sum(dim=(1, 2)) / count.clamp(min=1.0)


def audio_reference_loss(
    *,
    video_pred: Tensor | None,
    audio_pred: Tensor | None,
    video_targets: Tensor | None,
    video_loss_mask: Tensor | None,
    audio_targets: Tensor,
    audio_loss_mask: Tensor,
    video_loss_weight: float = 1.0,
    audio_loss_weight: float = 1.0,
) -> Tensor:
    """Weighted loss on the target audio and the generated video, per sample.

    Reference tokens never count: ``audio_loss_mask`` is False on them. A term with weight 0 is not computed.

    Returns:
        ``[B]`` float32 ``video_loss_weight * video_mse + audio_loss_weight * audio_mse``.

    Raises:
        ValueError: If a weighted term lacks its prediction, or no term is weighted.
    """
    total: Tensor | None = None
    if audio_loss_weight > 0:
        if audio_pred is None:
            raise ValueError("audio_loss_weight > 0 but the model returned no audio prediction")
        total = audio_loss_weight * masked_mse(audio_pred, audio_targets, audio_loss_mask)
    if video_loss_weight > 0 and video_targets is not None:
        if video_pred is None or video_loss_mask is None:
            raise ValueError("video_loss_weight > 0 but the model returned no video prediction")
        video_term = video_loss_weight * masked_mse(video_pred, video_targets, video_loss_mask)
        total = video_term if total is None else total + video_term
    if total is None:
        raise ValueError(
            "Nothing to train: both loss terms are off. Set audio_loss_weight > 0, or generate_video: true with "
            "video_loss_weight > 0."
        )
    return total
