"""Tiny random VAEs, vocoder and text-encoder weights: what makes the kit's checkpoint a *complete* model pack.

The transformer file (:func:`ltx_audio_reference.testing.tiny_model.write_tiny_checkpoint`) alone trains with
validation off. Preprocessing clips (ltx-trainer's ``process_dataset.py``) and sampling (``ValidationRunner``,
``audio-reference eval``) also need:

- a Gemma-3 text encoder with weights (prompt embeddings): :func:`write_tiny_gemma_weights` fills the kit's folder
  with a randomly initialised 1-layer Gemma-3 in the checkpoint layout ltx-core's loader maps;
- the audio VAE encoder (audio -> latents), decoder (latents -> mel) and vocoder (mel -> 24 kHz stereo waveform),
  and the video VAE encoder (frames -> latents) and decoder: :func:`tiny_vae_tensors` builds them, with their
  ``config`` sections, the way a full LTX-2 checkpoint holds them; ``write_tiny_checkpoint(components=...)`` writes
  them into the checkpoint, and :func:`add_tiny_vaes` adds them to an existing one.

The audio encoder is :mod:`ltx_audio_reference.testing.tiny_audio_vae`'s (same config, same seed); the decoder
shares its per-channel latent statistics. The audio VAE keeps the real interface (64 mel bins, hop 160 at 16 kHz,
8 x 16 latent features, x4 in time), the vocoder the real x240 upsampling to 24 kHz at a width of 64 channels,
and the video VAE the default 32 x 32 x 8 compression (a space-to-depth encoder, an 8-channel decoder).

Every drawn value is a bfloat16 number, so the files store those tensors in bf16 without loss and the whole pack
stays a few MB; tensors computed rather than drawn (a vocoder's filters) stay float32. Everything is random:
generated audio is noise-like, so numbers measured on it are meaningless; only the mechanics are real.
"""

from __future__ import annotations

import copy
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx_audio_reference.reliability.files import atomic_write

logger = logging.getLogger(__name__)

#: The ``config.vocoder`` entry: ltx-core's plain (pre-2.3) HiFi-GAN vocoder at 64 channels.
TINY_VOCODER_CONFIG: dict[str, Any] = {
    "resblock": "1",
    "stereo": True,
    "upsample_initial_channel": 64,
    "upsample_rates": [6, 5, 2, 2, 2],
    "upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
    "output_sampling_rate": 24000,
}

#: The ``config.vae`` entry: after the x4 spatial patch, three x2 (time, height, width) steps each way, i.e. the
#: default 32 x 32 x 8 compression. The encoder's steps are space-to-depth (``compress_all_res``: a 16-channel conv
#: and a channel-averaged skip, a tenth of a plain 128-channel conv's weights); the convolutional decoder runs at 8
#: channels. ``CausalVideoAutoencoder`` selects that decoder (the published 2.5 VAE's diffusion decoder needs a GPU).
TINY_VIDEO_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "latent_channels": 128,
    "out_channels": 3,
    "patch_size": 4,
    "encoder_blocks": [["compress_all_res", {"multiplier": 1}]] * 3,
    "latent_log_var": "uniform",
    "encoder_spatial_padding_mode": "zeros",
    "decoder_blocks": [["compress_all", {"multiplier": 1}]] * 3,
    "decoder_base_channels": 8,
    "norm_layer": "pixel_norm",
    "causal_decoder": False,
    "timestep_conditioning": False,
    "spatial_padding_mode": "zeros",
}

_STATISTICS_MODULE = "per_channel_statistics."


def _build(configurator: type, config: dict[str, Any]) -> torch.nn.Module:
    """Build a module through an ltx-core configurator on the meta device, then give it empty CPU storage."""
    with torch.device("meta"):
        if hasattr(configurator, "from_metadata"):  # ltx-core 1.2
            module = configurator.from_metadata({"config": config})
        else:  # ltx-core 1.0
            module = configurator.from_config(config)
    return module.to_empty(device="cpu")


@torch.no_grad()
def _init_random(module: torch.nn.Module, prefix: str, seed: int) -> None:
    """Seeded by ``seed`` and each tensor's checkpoint key: ``N(0, 1/fan_in)`` matrices, small biases, unit norms.

    Values are rounded to bfloat16, so a file stores them in bf16 without loss (:func:`compact`).
    """
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name, tensor in tensors.items():
        generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(f"{prefix}{name}".encode())) % 2**63)
        noise = torch.randn(tensor.shape, generator=generator)
        if name.endswith("std-of-means"):
            value = torch.ones(tensor.shape)
        elif name.endswith("mean-of-means"):
            value = torch.zeros(tensor.shape)
        elif tensor.ndim >= 2:
            value = noise / tensor[0].numel() ** 0.5
        elif "norm" in name:
            value = 1.0 + 0.05 * noise
        else:
            value = 0.02 * noise
        tensor.copy_(value.to(torch.bfloat16).to(tensor.dtype))


def compact(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each floating tensor in bfloat16 where that loses nothing (its values are bf16 numbers), else in float32.

    ltx-core's loaders cast to the dtype they build in, so a mixed file loads exactly as the all-float32 one would.
    """
    result = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().contiguous()  # noqa: PLW2901
        if tensor.is_floating_point():
            as_bf16 = tensor.to(torch.bfloat16)
            tensor = as_bf16 if torch.equal(as_bf16.to(tensor.dtype), tensor) else tensor.to(torch.float32)  # noqa: PLW2901
        result[key] = tensor
    return result


def _audio_vae_config() -> dict[str, Any]:
    from ltx_audio_reference.testing.tiny_audio_vae import tiny_audio_vae_config  # noqa: PLC0415

    return tiny_audio_vae_config()


def build_tiny_audio_decoder(seed: int = 0) -> torch.nn.Module:
    """The audio VAE decoder matching the tiny encoder, with seeded weights and the encoder's latent statistics."""
    from ltx_audio_reference.data.mel import import_audio_vae  # noqa: PLC0415
    from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder  # noqa: PLC0415

    decoder = _build(import_audio_vae().AudioDecoderConfigurator, _audio_vae_config())
    _init_random(decoder, "audio_vae.decoder.", seed)
    statistics = {
        name: tensor for name, tensor in build_tiny_audio_encoder(seed).state_dict().items() if "statistics" in name
    }
    decoder.load_state_dict(statistics, strict=False)
    return decoder.eval()


def build_tiny_vocoder(seed: int = 0) -> torch.nn.Module:
    """The tiny vocoder: 128 stereo mel features in, 2 channels at 24 kHz out (x240 per mel frame)."""
    from ltx_audio_reference.data.mel import import_audio_vae  # noqa: PLC0415

    vocoder = _build(import_audio_vae().VocoderConfigurator, {"vocoder": copy.deepcopy(TINY_VOCODER_CONFIG)})
    _init_random(vocoder, "vocoder.", seed)
    return vocoder.eval()


def build_tiny_video_encoder(seed: int = 0) -> torch.nn.Module:
    """The tiny video VAE encoder: ``[B, 3, 8k+1, 32H, 32W]`` frames in [-1, 1] -> latents ``[B, 128, k+1, H, W]``."""
    from ltx_core.model.video_vae import VideoEncoderConfigurator  # noqa: PLC0415

    encoder = _build(VideoEncoderConfigurator, {"vae": copy.deepcopy(TINY_VIDEO_VAE_CONFIG)})
    _init_random(encoder, "vae.encoder.", seed)  # statistics: mean 0, std 1, as the decoder's
    return encoder.eval()


def build_tiny_video_decoder(seed: int = 0) -> torch.nn.Module:
    """The tiny convolutional video VAE decoder: latents ``[B, 128, F, H, W]`` -> ``[B, 3, 8(F-1)+1, 32H, 32W]``."""
    from ltx_core.model.video_vae import VideoDecoderConfigurator  # noqa: PLC0415

    decoder = _build(VideoDecoderConfigurator, {"vae": copy.deepcopy(TINY_VIDEO_VAE_CONFIG)})
    _init_random(decoder, "vae.decoder.", seed)
    return decoder.eval()


def _prefixed(module: torch.nn.Module, prefix: str, statistics_prefix: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, tensor in module.state_dict().items():
        key = (
            statistics_prefix + name.removeprefix(_STATISTICS_MODULE)
            if name.startswith(_STATISTICS_MODULE)
            else prefix + name
        )
        tensors[key] = tensor.detach().to(torch.float32).contiguous()
    return tensors


def tiny_vae_tensors(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and ``config`` sections of the tiny audio VAE, vocoder and video VAE, in a full checkpoint's layout.

    Keys are ``audio_vae.encoder.``, ``audio_vae.decoder.``, ``audio_vae.per_channel_statistics.``, ``vocoder.``,
    ``vae.encoder.``, ``vae.decoder.`` and ``vae.per_channel_statistics.``; the sections are ``audio_vae``,
    ``vocoder`` and ``vae``. With them beside the transformer, ltx-trainer's ``load_audio_vae_encoder``,
    ``load_audio_vae_decoder``, ``load_vocoder``, ``load_video_vae_encoder`` and ``load_video_vae_decoder`` all load
    from the one file, as from a published monolith.

    Args:
        seed: Weight seed (the audio encoder is the data module's tiny encoder with this seed).

    Returns:
        ``(tensors, config_sections)``; tensors in bf16 where lossless (:func:`compact`).

    Raises:
        RuntimeError: If two modules disagree on a shared latent-statistics tensor.
    """
    from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder  # noqa: PLC0415

    parts = [
        (build_tiny_audio_encoder(seed), "audio_vae.encoder.", "audio_vae.per_channel_statistics."),
        (build_tiny_audio_decoder(seed), "audio_vae.decoder.", "audio_vae.per_channel_statistics."),
        (build_tiny_vocoder(seed), "vocoder.", "vocoder.per_channel_statistics."),
        (build_tiny_video_encoder(seed), "vae.encoder.", "vae.per_channel_statistics."),
        (build_tiny_video_decoder(seed), "vae.decoder.", "vae.per_channel_statistics."),
    ]
    tensors: dict[str, torch.Tensor] = {}
    for module, prefix, statistics in parts:
        for key, tensor in _prefixed(module, prefix, statistics).items():
            if key in tensors and not torch.equal(tensors[key], tensor):
                raise RuntimeError(f"The tiny {prefix.rstrip('.')} disagrees with another module on {key}")
            tensors[key] = tensor
    config = {
        **_audio_vae_config(),
        "vocoder": copy.deepcopy(TINY_VOCODER_CONFIG),
        "vae": copy.deepcopy(TINY_VIDEO_VAE_CONFIG),
    }
    return compact(tensors), config


def add_tiny_vaes(checkpoint: Path, seed: int = 0) -> Path:
    """Add the tiny audio VAE, vocoder and video VAE (:func:`tiny_vae_tensors`) to a transformer checkpoint, in place.

    The file is rewritten atomically with the components' tensors and ``config`` sections beside its own.
    ``ltx-trainer demo`` writes them at once (``write_tiny_checkpoint(components=...)``); this is for a checkpoint
    written without them.

    Args:
        checkpoint: A checkpoint written by :func:`ltx_audio_reference.testing.tiny_model.write_tiny_checkpoint`.
        seed: Weight seed.

    Returns:
        ``checkpoint``.
    """
    checkpoint = Path(checkpoint)
    with safe_open(str(checkpoint), "pt") as f:
        metadata = dict(f.metadata() or {})
    tensors = load_file(str(checkpoint))
    extra, sections = tiny_vae_tensors(seed)
    tensors.update(extra)
    config = json.loads(metadata.get("config", "{}"))
    config.update(sections)
    metadata["config"] = json.dumps(config)
    atomic_write(checkpoint, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    logger.info("Added a tiny audio VAE, vocoder and video VAE to %s (%d tensors)", checkpoint, len(tensors))
    return checkpoint


# The checkpoint layout ltx-core's Gemma-3 loader maps (``GEMMA3_LLM_KEY_OPS``) from the names transformers' model
# uses for its modules.
_GEMMA_CHECKPOINT_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)


def write_tiny_gemma_weights(text_encoder_dir: Path, seed: int = 0) -> Path:
    """Replace the kit's placeholder ``model.safetensors`` with randomly initialised Gemma-3 weights.

    The model is built by transformers from the folder's ``config.json`` (1 layer, hidden size 64) with a seeded
    RNG, and stored under the checkpoint names ltx-core maps (``language_model.model.``, ``vision_tower.vision_model.``,
    ``multi_modal_projector.``; the tied ``lm_head`` is left out). Prompts then encode, so ``ValidationRunner`` can
    cache prompt embeddings for generation.

    Args:
        text_encoder_dir: A folder written by :func:`ltx_audio_reference.testing.tiny_model.write_text_encoder_dir`.
        seed: Weight seed.

    Returns:
        The written ``model.safetensors``.
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration  # noqa: PLC0415

    text_encoder_dir = Path(text_encoder_dir)
    config = Gemma3Config(**json.loads((text_encoder_dir / "config.json").read_text()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForConditionalGeneration(config)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        for source, target in _GEMMA_CHECKPOINT_PREFIXES:
            if name.startswith(source):
                name = target + name.removeprefix(source)  # noqa: PLW2901
                break
        tensors[name] = tensor.detach().clone().contiguous()
    path = text_encoder_dir / "model.safetensors"
    metadata = {"format": "pt", "note": "ltx-audio-reference: random tiny Gemma-3"}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    logger.info("Wrote random tiny Gemma-3 weights (%d tensors) to %s", len(tensors), path)
    return path
