"""A tiny, seeded LTX-2 audio VAE encoder built from ltx-core, and a checkpoint that ltx-core's loader reads.

The encoder keeps the real model's interface: 16 kHz stereo in, 64 mel bins, hop 160, ``n_fft`` 1024, two causal
time/frequency downsamplings and 8 latent channels, so latents are ``[8, T, 16]`` with one step per 0.04 s, exactly
as ltx-trainer writes ``audio_latents/``. Only the depth and width are cut: no residual block between the
downsamplings (the decoder then gets one per level), no attention, and the same 128 channels on every level. (128 is
fixed: the per-channel statistics have ``ch`` entries and normalise the patchified ``8 * 16`` latent features.) It
encodes a second of audio on CPU in well under a second, and its weights are bfloat16 numbers (a file stores them in
bf16 without loss).

Works with ltx-core 1.0.0 and 1.2.0, with or without torchaudio (see :mod:`ltx_audio_reference.data.mel`).
"""

from __future__ import annotations

import copy
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ltx_audio_reference.data.precompute import build_meta_audio_encoder

logger = logging.getLogger(__name__)

# The checkpoint's ``config.audio_vae`` entry, in the layout ltx-core's AudioEncoderConfigurator reads.
TINY_AUDIO_VAE_CONFIG: dict[str, Any] = {
    "model": {
        "params": {
            "sampling_rate": 16000,
            "ddconfig": {
                "ch": 128,
                "ch_mult": [1, 1, 1],
                "num_res_blocks": 0,
                "attn_resolutions": [],
                "resolution": 256,
                "z_channels": 8,
                "double_z": True,
                "in_channels": 2,
                "out_ch": 2,
                "mel_bins": 64,
                "dropout": 0.0,
                "norm_type": "pixel",
                "causality_axis": "height",
                "mid_block_add_attention": False,
            },
        },
    },
    "preprocessing": {
        "stft": {"hop_length": 160, "filter_length": 1024, "causal": True},
        "mel": {"n_mel_channels": 64},
    },
}

ENCODER_PREFIX = "audio_vae.encoder."
STATISTICS_PREFIX = "audio_vae.per_channel_statistics."
_STATISTICS_MODULE = "per_channel_statistics."


def tiny_audio_vae_config() -> dict[str, Any]:
    """The JSON ``config`` metadata entry of a tiny audio VAE checkpoint: ``{"audio_vae": ...}`` (a copy)."""
    return {"audio_vae": copy.deepcopy(TINY_AUDIO_VAE_CONFIG)}


def build_tiny_audio_encoder(seed: int = 0) -> torch.nn.Module:
    """Build a real ltx-core ``AudioEncoder`` with the tiny config and seeded float32 weights, on CPU.

    Weights are ``N(0, 1/fan_in)`` (activations stay of order one), biases ``N(0, 0.02^2)``. The per-channel latent
    statistics get means ``N(0, 0.1^2)`` and standard deviations ``0.5 + U(0, 1)``, so normalisation is exercised.
    Every value is rounded to bfloat16.

    Args:
        seed: Weight seed; the same seed gives the same weights on any machine.

    Returns:
        An ``AudioEncoder`` in eval mode.
    """
    encoder = build_meta_audio_encoder(tiny_audio_vae_config()).to_empty(device="cpu")
    _init_tensors(encoder, seed)
    return encoder.eval()


@torch.no_grad()
def _init_tensors(encoder: torch.nn.Module, seed: int) -> None:
    tensors = dict(encoder.named_parameters())
    tensors.update(encoder.named_buffers())
    for name, tensor in tensors.items():
        generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        if name.endswith("std-of-means"):
            value = 0.5 + torch.rand(tensor.shape, generator=generator)
        elif name.endswith("mean-of-means"):
            value = 0.1 * torch.randn(tensor.shape, generator=generator)
        elif tensor.ndim >= 2:
            fan_in = tensor[0].numel()
            value = torch.randn(tensor.shape, generator=generator) / fan_in**0.5
        else:
            value = 0.02 * torch.randn(tensor.shape, generator=generator)
        tensor.copy_(value.to(torch.bfloat16).to(tensor.dtype))


def write_tiny_audio_vae_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a safetensors file holding the tiny audio VAE encoder, as a full checkpoint stores it.

    Keys are ``audio_vae.encoder.*`` and ``audio_vae.per_channel_statistics.*`` and the metadata carries the JSON
    ``config`` entry, so ltx-core's ``SingleGPUModelBuilder`` with ``AudioEncoderConfigurator`` and
    ``AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER`` (what ltx-trainer's ``load_audio_vae_encoder`` uses) loads it.

    Args:
        path: Output file; parent folders are created.
        seed: Weight seed.

    Returns:
        ``path``.
    """
    path = Path(path)
    encoder = build_tiny_audio_encoder(seed)
    tensors = {}
    for name, tensor in encoder.state_dict().items():
        if name.startswith(_STATISTICS_MODULE):
            key = STATISTICS_PREFIX + name.removeprefix(_STATISTICS_MODULE)
        else:
            key = ENCODER_PREFIX + name
        tensors[key] = tensor.detach().to(torch.float32).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "config": json.dumps(tiny_audio_vae_config())})
    logger.info("Wrote tiny audio VAE encoder (%d tensors) to %s", len(tensors), path)
    return path
