"""Synthetic LTX-2.3-class models and the seed workload, for block-swap tests and benchmarks (no download).

``width="full"`` builds blocks at the real width (32 x 128 video heads, 32 x 64 audio heads, 4096 / 2048 text
context, gated attention, cross-attention AdaLN): about 387 M parameters per block. ``width="tiny"`` keeps the same
structure at the tiny checkpoint's dims, for CPU tests. Weights are random, drawn per parameter from a generator
seeded by ``seed`` and the parameter name, so two builds with the same arguments on the same device are identical.

The seed workload is one sample of 256 x 256 x 121 frames at 25 fps (1024 video tokens), 121 target + 50 reference
audio tokens, and a 256-token text context, with LoRA r32 on the audio stack.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ltx_audio_reference.layout import AUDIO_TOKEN_FEATURES, VIDEO_LATENT_CHANNELS
from ltx_audio_reference.strategies.audio_reference.positions import audio_positions, reference_positions
from ltx_audio_reference.testing.tiny_model import FULL_WIDTH_DIMS
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import LTXModel, LTXModelType

Width = Literal["tiny", "full"]

# Constructor arguments ltx-core 1.0.0 and 1.2.0 share.
_WIDTHS: dict[str, dict[str, Any]] = {
    "full": FULL_WIDTH_DIMS,
    "tiny": {
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "cross_attention_dim": 32,
        "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 8,
        "audio_cross_attention_dim": 16,
    },
}

#: LoRA on the audio stack: audio self-attention, audio text cross-attention and audio feed-forward (peft regex).
AUDIO_LORA_TARGETS = r".*\.audio_(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|.*\.audio_ff\.net\.(0\.proj|2)"


@dataclass(frozen=True)
class Workload:
    """Token counts of one training sample."""

    video_tokens: int = 1024  # 256 x 256 x 121 @ 25 fps -> 16 x 8 x 8 latents
    target_audio_tokens: int = 121
    reference_audio_tokens: int = 50
    context_tokens: int = 256
    batch_size: int = 1


SEED_WORKLOAD = Workload()
TINY_WORKLOAD = Workload(video_tokens=24, target_audio_tokens=12, reference_audio_tokens=5, context_tokens=8)


def model_kwargs(num_layers: int, width: Width) -> dict[str, Any]:
    """``LTXModel`` arguments of an LTX-2.3-class audio+video transformer."""
    return {
        "model_type": LTXModelType.AudioVideo,
        "num_layers": num_layers,
        "in_channels": 128,
        "out_channels": 128,
        "audio_in_channels": 128,
        "audio_out_channels": 128,
        "apply_gated_attention": True,
        "cross_attention_adaln": True,
        **_WIDTHS[width],
    }


def _seeded(name: str, seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return generator


@torch.no_grad()
def init_parameters(model: nn.Module, seed: int = 0) -> None:
    """Fill every parameter with seeded random values (no zeros, bounded activations)."""
    for name, param in model.named_parameters():
        generator = _seeded(name, seed, param.device)
        values = torch.randn(param.shape, generator=generator, device=param.device, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name and leaf == "weight":
            values = 1.0 + 0.1 * values
        elif param.ndim == 2 and leaf == "weight":
            values = values / math.sqrt(param.shape[1])
        else:
            values = 0.05 * values
        param.copy_(values.to(param.dtype))


def build_model(
    num_layers: int,
    width: Width = "full",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> LTXModel:
    """An ``LTXModel`` with random weights, built on the meta device and materialized on ``device``.

    Args:
        num_layers: Transformer blocks.
        width: ``"full"`` (LTX-2.3 dims) or ``"tiny"``.
        seed: Weight seed.
        dtype: Parameter dtype.
        device: Where the weights are created (random values are drawn there).

    Returns:
        The model in train mode.
    """
    with torch.device("meta"):
        model = LTXModel(**model_kwargs(num_layers, width))
    model = model.to_empty(device=device).to(dtype)
    init_parameters(model, seed)
    return model.train()


def quantize_blocks(model: nn.Module, backend: str = "int8-quanto") -> None:
    """Quantize the transformer blocks' Linear layers in place with a registered backend (``int8-quanto``, ``int8``,
    ``int8-dynamic``, ...).

    Follows the stock trainer's order: quantize and freeze, then the caller freezes the model and adds LoRA.
    Normalization layers are left alone.
    """
    from ltx_audio_reference.quantization import get_backend  # noqa: PLC0415

    quantizer = get_backend(backend)
    for block in model.transformer_blocks:
        quantizer.quantize_block(block)


def add_audio_lora(model: nn.Module, rank: int = 32, seed: int = 0) -> nn.Module:
    """Wrap ``model`` with peft LoRA on the audio stack (alpha = rank), seeded, with non-zero ``lora_B``.

    Returns:
        The peft model.
    """
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=AUDIO_LORA_TARGETS, init_lora_weights=True)
    peft_model = get_peft_model(model, config)
    # peft draws lora_A from the global RNG; redraw both factors from per-name generators so builds repeat exactly.
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                generator = _seeded(name, seed, param.device)
                values = torch.randn(param.shape, generator=generator, device=param.device)
                scale = 0.01 if "lora_B" in name else 1.0 / math.sqrt(param.shape[1])
                param.copy_(scale * values)
    return peft_model


def make_batch(
    width: Width = "full",
    workload: Workload = SEED_WORKLOAD,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    context_widths: tuple[int, int] | None = None,
) -> tuple[Modality, Modality, torch.Tensor, torch.Tensor]:
    """One training sample: the video and audio inputs and their flow-matching targets.

    The reference audio tokens come after the target, are clean (timestep 0) and sit at negative times, placed by the
    strategy's own :func:`~ltx_audio_reference.strategies.audio_reference.positions.reference_positions`. The text
    context is unmasked (every token valid), which keeps attention on the flash kernels.

    Args:
        width: The blocks' width (``"full"`` or ``"tiny"``).
        workload: Token counts and batch size.
        device: Where the tensors are made.
        dtype: The latents' and contexts' dtype.
        seed: The draw's seed.
        context_widths: The video and audio text contexts' feature widths; the width's cross-attention dims when
            None. A model built from a checkpoint projects its captions first (:func:`context_widths`).

    Returns:
        ``(video, audio, video_target, audio_target)``; ``audio_target`` covers the target tokens only.
    """
    dims = _WIDTHS[width]
    video_context, audio_context = context_widths or (dims["cross_attention_dim"], dims["audio_cross_attention_dim"])
    w = workload
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    b = w.batch_size
    sigma = torch.full((b,), 0.6, device=device, dtype=torch.float32)
    frames, side = 16, math.isqrt(w.video_tokens // 16) if w.video_tokens >= 16 else 1
    grid = torch.stack(
        torch.meshgrid(torch.arange(frames), torch.arange(side), torch.arange(side), indexing="ij"), dim=0
    ).reshape(3, -1)[:, : w.video_tokens]
    grid = torch.cat([grid, torch.zeros(3, w.video_tokens - grid.shape[1], dtype=grid.dtype)], dim=1)
    scale = torch.tensor([8 / 25, 32.0, 32.0]).view(3, 1)
    starts = grid.float() * scale
    video_positions = torch.stack([starts, starts + scale], dim=-1).unsqueeze(0).expand(b, -1, -1, -1)

    n_audio = w.target_audio_tokens + w.reference_audio_tokens
    target_positions = audio_positions(w.target_audio_tokens, b)
    ref_positions = reference_positions(w.reference_audio_tokens, b, target_positions=target_positions)
    positions = torch.cat([target_positions, ref_positions], dim=2)
    audio_timesteps = torch.cat(
        [torch.full((b, w.target_audio_tokens), 0.6), torch.zeros(b, w.reference_audio_tokens)], dim=1
    )

    video = Modality(
        latent=randn(b, w.video_tokens, VIDEO_LATENT_CHANNELS),
        sigma=sigma,
        timesteps=torch.full((b, w.video_tokens), 0.6, device=device, dtype=torch.float32),
        positions=video_positions.to(device),
        context=randn(b, w.context_tokens, video_context),
    )
    audio = Modality(
        latent=randn(b, n_audio, AUDIO_TOKEN_FEATURES),
        sigma=sigma,
        timesteps=audio_timesteps.to(device),
        positions=positions.to(device),
        context=randn(b, w.context_tokens, audio_context),
    )
    return (
        video,
        audio,
        randn(b, w.video_tokens, VIDEO_LATENT_CHANNELS),
        randn(b, w.target_audio_tokens, AUDIO_TOKEN_FEATURES),
    )


def context_widths(model: nn.Module, width: Width = "full") -> tuple[int, int]:
    """The text-context widths that ``model`` takes: its caption projections' inputs where it has them (a model
    built from a checkpoint, e.g. ``tiny_model``'s), else the width's cross-attention dims (:func:`build_model`)."""
    dims = _WIDTHS[width]

    def width_of(name: str, default: int) -> int:
        projection = getattr(model, name, None)
        return projection.linear_1.in_features if projection is not None else default

    return (
        width_of("caption_projection", dims["cross_attention_dim"]),
        width_of("audio_caption_projection", dims["audio_cross_attention_dim"]),
    )


def loss_fn(
    video_pred: torch.Tensor, audio_pred: torch.Tensor, video_target: torch.Tensor, audio_target: torch.Tensor
) -> torch.Tensor:
    """MSE on the video and the target audio tokens (the reference tokens carry no loss)."""
    n = audio_target.shape[1]
    return (video_pred.float() - video_target.float()).pow(2).mean() + (
        audio_pred[:, :n].float() - audio_target.float()
    ).pow(2).mean()


__all__ = [
    "AUDIO_LORA_TARGETS",
    "SEED_WORKLOAD",
    "TINY_WORKLOAD",
    "Workload",
    "add_audio_lora",
    "build_model",
    "context_widths",
    "init_parameters",
    "loss_fn",
    "make_batch",
    "model_kwargs",
    "quantize_blocks",
]
