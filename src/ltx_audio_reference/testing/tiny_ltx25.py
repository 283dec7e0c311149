"""Tiny LTX-2.5 split pack: transformer, packed Gemma-4 text encoder, video VAE and audio VAE, one file each.

LTX-2.5 ships as four safetensors files (``diffusion_models/``, ``text_encoders/``, ``vae/``), not as one
monolith. The stock ``ltx-trainer`` 1.2.0 recognises the transformer of such a *split pack* by its metadata
(``config`` holds ``transformer`` and none of ``vae``, ``audio_vae``, ``vocoder``) and then needs every other
component by path: ``text_encoder_path`` (one ``.safetensors`` file), ``video_vae_path`` and ``audio_vae_path``.
:func:`write_tiny_ltx25_pack` writes a random, tiny pack of exactly that layout, which ltx-core's and
ltx-trainer's loaders read along the code paths they take for the published files:

- the **transformer** (``model_version`` ``"2.5.0"``, ``gemma_source_checkpoint``): the 22B family's gated
  attention and cross-attention AdaLN, plus LTX-2.5's two changes, a bias-free *video* feed-forward (``ff_bias:
  false``; the audio feed-forward keeps its biases) and the ``keyframes_abs_pos_embedding`` marker; the V2 text path
  (``caption_proj_before_connector``: no caption projection in the transformer) with both text connectors;
- the **text encoder**: a tiny Gemma-4 (``gemma4_unified``: text, vision and audio towers) with LTX's
  ``text_embedding_projection`` (the V2 feature extractor), its tokenizer and processor sidecars, packed by
  ltx-core's own packer (``build_text_encoder_tensors_from_gemma_root``) into the ComfyUI-flat layout;
- the **video VAE**: the kit's space-to-depth encoder and convolutional decoder with the default 32 x 32 x 8
  compression (bare keys);
- the **audio VAE**: the tiny audio VAE encoder and decoder (:mod:`.tiny_audio_vae`, :mod:`.tiny_assets`) and a
  vocoder, by default LTX-2.3/2.5's BigVGAN-v2 vocoder with bandwidth extension to 48 kHz (``"bwe"``), or the plain
  HiFi-GAN one (``"plain"``), which decodes on CPU inside the trainer (the BWE one cannot: ltx-trainer loads it in
  bf16 and its float32 autocast does not exist on CPU).

:func:`write_ltx25_dataset` writes the matching preprocessed dataset: LTX-2.5's feature extractor gives the video and
audio prompt embeddings the transformer's inner widths (``num_attention_heads * attention_head_dim``, and the audio
pair), not the Gemma hidden size.

ltx-core only *warns* about a tensor a file lacks and hands back the whole module on the meta device, so tests check
every load with :func:`assert_materialized`.

Needs ltx-core >= 1.2.0 (the first with ``ff_bias`` and the Gemma-4 text path) and, for Gemma-4 weights,
transformers with ``gemma4_unified`` (ltx-core 1.2.0 pins ``>=5.8,<5.15``). Every file is written atomically.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from ltx_audio_reference.reliability.files import atomic_write, atomic_write_text
from ltx_audio_reference.testing import tiny_model

logger = logging.getLogger(__name__)

Width = Literal["tiny", "full"]
VocoderKind = Literal["bwe", "plain"]

#: ``model_version`` of the pack's files; three dotted parts (``"2.5"`` would JSON-parse to a float in ltx-core).
MODEL_VERSION = "2.5.0"
#: The Gemma build LTX-2.5 was trained with; the transformer's ``gemma_source_checkpoint`` and the text encoder's
#: config must name the same one (ltx-core checks this when it builds the embeddings processor).
GEMMA_VERSION = "gemma4-12b-ltx-v1"

#: The tiny Gemma-4 text width and depth (the real one: 3840 and 48). The V2 feature extractor reads
#: ``hidden * (layers + 1)`` = 192 features.
TINY_GEMMA4_HIDDEN_SIZE = 64
TINY_GEMMA4_NUM_HIDDEN_LAYERS = 2

#: What LTX-2.5 changes against :data:`~.tiny_model.TINY_TRANSFORMER_CONFIG` (which is LTX-2.0-shaped: no gated
#: attention, V1 text path). The values of the real 2.5 22B header, dims aside.
LTX25_TRANSFORMER_SWITCHES: dict[str, Any] = {
    # the 22B family (LTX-2.3 and 2.5)
    "apply_gated_attention": True,
    "cross_attention_adaln": True,
    "frequencies_precision": "float64",
    "av_ca_timestep_scale_multiplier": 1000,
    # new in 2.5: the video feed-forward has no biases, the audio one keeps them; the keyframe marker
    "ff_bias": False,
    "audio_ff_bias": True,
    "use_keyframes_abs_pos_embedding": True,
    # the V2 text path: exactly these four values (ltx-core refuses any other combination)
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
    "text_encoder_norm_type": "per_token_rms",
    "use_embeddings_connector": True,
    "caption_channels": TINY_GEMMA4_HIDDEN_SIZE,
    "connector_num_layers": 1,
    "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
    "connector_apply_gated_attention": True,
}

#: The ``LTXModel`` constructor arguments of an LTX-2.5 transformer beyond an LTX-2.3 22B one.
LTX25_MODEL_KWARGS: dict[str, Any] = {
    "apply_gated_attention": True,
    "cross_attention_adaln": True,
    "ff_bias": False,
    "audio_ff_bias": True,
    "use_keyframes_abs_pos_embedding": True,
}


def _video_vae_config() -> dict[str, Any]:
    """The video VAE's ``config.vae``: the kit's tiny encoder and convolutional decoder (32 x 32 x 8).

    ``CausalVideoAutoencoder`` selects the convolutional decoder; the published default 2.5 VAE has a diffusion
    decoder, whose kernels need a GPU.
    """
    from ltx_audio_reference.testing.tiny_assets import TINY_VIDEO_VAE_CONFIG  # noqa: PLC0415

    return copy.deepcopy(TINY_VIDEO_VAE_CONFIG)


#: LTX-2.3/2.5's vocoder format at tiny widths: BigVGAN v2 to 16 kHz, then bandwidth extension to 48 kHz.
TINY_BWE_VOCODER_CONFIG: dict[str, Any] = {
    "vocoder": {
        "resblock": "AMP1",
        "stereo": True,
        "activation": "snakebeta",
        "upsample_initial_channel": 128,  # at least 2 ** (stages + 1), or a stage gets zero channels
        "upsample_rates": [5, 2, 2, 2, 2, 2],
        "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
        "use_tanh_at_final": False,
        "use_bias_at_final": False,
    },
    "bwe": {
        "resblock": "AMP1",
        "stereo": True,
        "activation": "snakebeta",
        "upsample_initial_channel": 64,
        "upsample_rates": [6, 5, 2, 2, 2],
        "upsample_kernel_sizes": [12, 11, 4, 4, 4],
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
        "use_tanh_at_final": False,
        "use_bias_at_final": False,
        "input_sampling_rate": 16000,
        "output_sampling_rate": 48000,
        "n_fft": 256,
        "hop_length": 80,
        "num_mels": 64,
    },
}

#: File names inside the pack, as the published pack lays them out (the names are free; the folders are Comfy's).
TRANSFORMER_FILE = "diffusion_models/tiny-ltx-2.5-transformer.safetensors"
TEXT_ENCODER_FILE = "text_encoders/tiny-gemma4-with-proj-ltx-2.5.safetensors"
VIDEO_VAE_FILE = "vae/tiny-ltx-2.5-video-vae.safetensors"
AUDIO_VAE_FILE = "vae/tiny-ltx-2.5-audio-vae.safetensors"

# Gemma-4's special tokens; the processor finds its image and audio tokens through tokenizer_config.
_GEMMA4_SPECIAL_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<|image>",
    "<image|>",
    "<|image|>",
    "<|audio>",
    "<audio|>",
    "<|audio|>",
    "<|video|>",
    "<|turn>",
    "<turn|>",
)


class Ltx25NotSupportedError(RuntimeError):
    """The installed ltx-core (or transformers) cannot build an LTX-2.5 model."""


@dataclass(frozen=True)
class Ltx25Pack:
    """The four files of a split pack, and the trainer's ``model`` section that names them."""

    root: Path
    transformer: Path
    text_encoder: Path
    video_vae: Path
    audio_vae: Path

    def model_section(self) -> dict[str, str]:
        """``model_path``, ``text_encoder_path``, ``video_vae_path`` and ``audio_vae_path`` for a trainer config."""
        return {
            "model_path": str(self.transformer),
            "text_encoder_path": str(self.text_encoder),
            "video_vae_path": str(self.video_vae),
            "audio_vae_path": str(self.audio_vae),
        }


def ltx25_supported() -> str | None:
    """``None`` when ltx-core can build LTX-2.5 transformers, else the reason it cannot (for skips and errors)."""
    from ltx_core.model.transformer.model import LTXModel  # noqa: PLC0415

    accepted = inspect.signature(LTXModel.__init__).parameters
    missing = [name for name in LTX25_MODEL_KWARGS if name not in accepted]
    if missing:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            installed = version("ltx-core")
        except PackageNotFoundError:
            installed = "unknown version"
        return f"LTX-2.5 needs ltx-core >= 1.2.0; the installed one ({installed}) has no {', '.join(missing)}"
    return None


def _require_ltx25() -> None:
    reason = ltx25_supported()
    if reason is not None:
        raise Ltx25NotSupportedError(reason)


def gemma4_supported() -> str | None:
    """``None`` when transformers knows ``gemma4_unified`` (needed for the Gemma-4 config and weights), else why not."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: PLC0415

    if "gemma4_unified" not in CONFIG_MAPPING:
        import transformers  # noqa: PLC0415

        return f"transformers {transformers.__version__} has no gemma4_unified (LTX-2.5's text encoder)"
    return None


def ltx25_transformer_config(num_layers: int = 2, width: Width = "tiny") -> dict[str, Any]:
    """The ``config.transformer`` entry of a tiny LTX-2.5 transformer file.

    Args:
        num_layers: Transformer blocks (the real model has 48).
        width: ``"tiny"`` (2 x 16 video and 2 x 8 audio heads) or ``"full"``: the real block width (32 x 128 and
            32 x 64, :data:`~.tiny_model.FULL_WIDTH_DIMS`), for GPU runs. With the V2 text path the connectors work
            at the transformer's inner widths, so they grow with it; the Gemma side stays tiny.

    Returns:
        A new dict.

    Raises:
        ValueError: On ``num_layers < 1`` or an unknown ``width``.
    """
    if width not in ("tiny", "full"):
        raise ValueError(f"width must be 'tiny' or 'full', got {width!r}")
    config = tiny_model.tiny_checkpoint_config(num_layers)["transformer"]
    config.update(copy.deepcopy(LTX25_TRANSFORMER_SWITCHES))
    if width == "full":
        config.update(tiny_model.FULL_WIDTH_DIMS)
    # V2: the connectors take the feature extractor's output, which has the transformer's inner widths, and hand it
    # to attn2 / audio_attn2, whose context width is cross_attention_dim.
    config["connector_num_attention_heads"] = config["num_attention_heads"]
    config["connector_attention_head_dim"] = config["attention_head_dim"]
    config["audio_connector_num_attention_heads"] = config["audio_num_attention_heads"]
    config["audio_connector_attention_head_dim"] = config["audio_attention_head_dim"]
    config["cross_attention_dim"] = config["num_attention_heads"] * config["attention_head_dim"]
    config["audio_cross_attention_dim"] = config["audio_num_attention_heads"] * config["audio_attention_head_dim"]
    return config


def prompt_widths(transformer_config: dict[str, Any]) -> tuple[int, int]:
    """``(video, audio)`` widths of the prompt embeddings a 2.5 dataset stores (the V2 feature extractor's outputs)."""
    return (
        transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"],
        transformer_config["audio_num_attention_heads"] * transformer_config["audio_attention_head_dim"],
    )


def build_tiny_ltx25_model(
    num_layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32, width: Width = "tiny"
) -> torch.nn.Module:
    """A real ltx-core ``LTXModel`` of the LTX-2.5 shape, with the kit's seeded weights (see ``build_tiny_model``).

    Raises:
        Ltx25NotSupportedError: With ltx-core older than 1.2.0.
    """
    _require_ltx25()
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator  # noqa: PLC0415

    config = {"transformer": ltx25_transformer_config(num_layers, width)}
    model = tiny_model._instantiate(LTXModelConfigurator, config)
    tiny_model._init_parameters(model, prefix=tiny_model.TRANSFORMER_PREFIX, seed=seed)
    return model.to(dtype=dtype)


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _float32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}


def write_tiny_ltx25_transformer(path: Path, num_layers: int = 2, seed: int = 0, width: Width = "tiny") -> Path:
    """Write the transformer file of the pack: blocks, top-level modules and both text connectors, float32.

    Keys are ``model.diffusion_model.*`` (the connectors under ``video_embeddings_connector.`` and
    ``audio_embeddings_connector.``). The metadata has ``format``, ``model_version``, ``gemma_source_checkpoint``
    (JSON) and ``config`` = ``{"transformer": ...}`` only, which marks the file as a split pack's transformer.

    Returns:
        ``path``.
    """
    from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: PLC0415
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    model = build_tiny_ltx25_model(num_layers=num_layers, seed=seed, width=width)
    transformer_config = ltx25_transformer_config(num_layers, width)
    config = {"transformer": transformer_config}
    tensors = {f"{tiny_model.TRANSFORMER_PREFIX}{name}": t for name, t in model.state_dict().items()}
    for configurator, prefix in (
        (Embeddings1DConnectorConfigurator, tiny_model.VIDEO_CONNECTOR_PREFIX),
        (AudioEmbeddings1DConnectorConfigurator, tiny_model.AUDIO_CONNECTOR_PREFIX),
    ):
        connector = tiny_model._instantiate(configurator, config)
        tiny_model._init_parameters(connector, prefix=prefix, seed=seed)
        tensors.update({f"{prefix}{name}": t for name, t in connector.state_dict().items()})
    metadata = {
        "format": "pt",
        "model_version": MODEL_VERSION,
        "gemma_source_checkpoint": json.dumps({"ltx_version": MODEL_VERSION, "gemma_version": GEMMA_VERSION}),
        "config": json.dumps(config),
    }
    _save_safetensors(Path(path), _float32(tensors), metadata)
    logger.info("Wrote tiny LTX-2.5 transformer (%d blocks, %d tensors) to %s", num_layers, len(tensors), path)
    return Path(path)


def _gemma4_config(token_id: dict[str, int], vocab_size: int) -> dict[str, Any]:
    """The HF ``config.json`` of a tiny Gemma-4 (``gemma4_unified``), with LTX's ``gemma_version`` stamp."""
    return {
        "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "model_type": "gemma4_unified",
        "gemma_version": GEMMA_VERSION,
        "dtype": "bfloat16",
        "boi_token_id": token_id["<|image>"],
        "eoi_token_id": token_id["<image|>"],
        "image_token_id": token_id["<|image|>"],
        "video_token_id": token_id["<|video|>"],
        "boa_token_id": token_id["<|audio>"],
        "eoa_token_index": token_id["<audio|>"],
        "audio_token_id": token_id["<|audio|>"],
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "gemma4_unified_text",
            "vocab_size": vocab_size,
            "hidden_size": TINY_GEMMA4_HIDDEN_SIZE,
            "intermediate_size": 2 * TINY_GEMMA4_HIDDEN_SIZE,
            "num_hidden_layers": TINY_GEMMA4_NUM_HIDDEN_LAYERS,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "num_global_key_value_heads": 1,
            "global_head_dim": 32,
            "attention_k_eq_v": True,  # as the real 12B: full-attention layers have no v_proj
            "layer_types": ["sliding_attention", "full_attention"],
            "sliding_window": 64,
            "max_position_embeddings": 2048,  # ltx-core pads prompts to 1024 tokens
            "final_logit_softcapping": 30.0,
            "pad_token_id": token_id["<pad>"],
            "eos_token_id": token_id["<eos>"],
            "bos_token_id": token_id["<bos>"],
            "tie_word_embeddings": True,
            "rope_parameters": {
                "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
            },
        },
        "vision_config": {
            "model_type": "gemma4_unified_vision",
            "patch_size": 4,
            "pooling_kernel_size": 2,
            "mm_embed_dim": 32,
            "mm_posemb_size": 16,
            "output_proj_dims": TINY_GEMMA4_HIDDEN_SIZE,
        },
        "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 32},
    }


def _gemma4_sidecars(token_id: dict[str, int]) -> dict[str, dict[str, Any]]:
    """``tokenizer_config.json``, ``processor_config.json`` and ``generation_config.json`` of the tiny Gemma-4."""
    extra_special_tokens = {
        "image_token": "<|image|>",
        "boi_token": "<|image>",
        "eoi_token": "<image|>",
        "audio_token": "<|audio|>",
        "boa_token": "<|audio>",
        "eoa_token": "<audio|>",
    }
    processor = {"patch_size": 4, "pooling_kernel_size": 2, "max_soft_tokens": 70}  # 70: the smallest it accepts
    return {
        "tokenizer_config.json": {
            "tokenizer_class": "GemmaTokenizer",
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "extra_special_tokens": extra_special_tokens,
            "padding_side": "left",
            "model_max_length": 1024,
        },
        "processor_config.json": {
            "processor_class": "Gemma4UnifiedProcessor",
            "image_seq_length": 4,
            "audio_seq_length": 16,
            "audio_ms_per_token": 40,
            "image_processor": {
                "image_processor_type": "Gemma4UnifiedImageProcessor",
                **processor,
                "do_normalize": False,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_resize": True,
            },
            "video_processor": {"video_processor_type": "Gemma4UnifiedVideoProcessor", **processor, "num_frames": 2},
            "feature_extractor": {
                "feature_extractor_type": "Gemma4UnifiedAudioFeatureExtractor",
                "sampling_rate": 16000,
                "audio_samples_per_token": 32,
            },
        },
        "generation_config.json": {
            "bos_token_id": token_id["<bos>"],
            "eos_token_id": token_id["<eos>"],
            "pad_token_id": token_id["<pad>"],
        },
    }


def _write_gemma4_root(root: Path, seed: int, weights: bool) -> None:
    """A tiny HF Gemma-4 folder: config, tokenizer, sidecars and (with ``weights``) transformers' own checkpoint."""
    tokenizer = tiny_model._build_tokenizer(_GEMMA4_SPECIAL_TOKENS, prepend_bos=False)
    token_id = {token: tokenizer.token_to_id(token) for token in _GEMMA4_SPECIAL_TOKENS}
    config = _gemma4_config(token_id, tokenizer.get_vocab_size())
    if weights:
        from transformers import AutoModelForImageTextToText  # noqa: PLC0415
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: PLC0415

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(CONFIG_MAPPING["gemma4_unified"].from_dict(config))
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        # save_pretrained writes the checkpoint names (model.vision_embedder.*, not the module names transformers
        # renames them to at load time), leaves the tied lm_head out, and writes config.json.
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model.to(torch.bfloat16).save_pretrained(str(root))
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    else:
        # Training with validation off reads only the config, the tokenizer, the sidecars and the projection.
        atomic_write_text(root / "config.json", json.dumps(config))
        atomic_write(root / "model.safetensors", lambda tmp: save_file({}, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(root / "tokenizer.json", tokenizer.to_str())
    for name, content in _gemma4_sidecars(token_id).items():
        atomic_write_text(root / name, json.dumps(content))


def write_tiny_gemma4_text_encoder(
    path: Path,
    transformer_config: dict[str, Any],
    seed: int = 0,
    *,
    gemma_weights: bool = True,
) -> Path:
    """Write the pack's text encoder: a tiny Gemma-4 and LTX's text projection, packed the way ltx-core packs it.

    A tiny HF Gemma-4 folder is written to a temporary directory and packed by ltx-core's
    ``build_text_encoder_tensors_from_gemma_root``: the Gemma weights under ComfyUI's flat names (``model.layers.*``,
    ``vision_model.*``, ``multi_modal_projector.*``, ``audio_projector.*``), the tokenizer (``tokenizer_json``) and
    sidecars (``hf_asset__*``) as uint8 tensors, and the HF config as the ``gemma_config`` metadata. Beside them go
    ``text_embedding_projection.{video,audio}_aggregate_embed.{weight,bias}``, the V2 feature extractor mapping
    ``hidden * (layers + 1)`` features to the transformer's video and audio inner widths. Floats are bf16.

    Args:
        path: Output file (must end in ``.safetensors``: the trainer recognises a packed text encoder by it).
        transformer_config: The pack's ``config.transformer`` (sizes the projection).
        seed: Weight seed.
        gemma_weights: Include random Gemma-4 weights, so that prompts encode (validation, ``ltx-trainer``'s
            caption preprocessing). Without them the file still serves training with validation off, and its
            writing needs no ``gemma4_unified`` model class.

    Returns:
        ``path``.

    Raises:
        Ltx25NotSupportedError: When transformers lacks ``gemma4_unified`` and ``gemma_weights`` is set.
    """
    if gemma_weights and (reason := gemma4_supported()) is not None:
        raise Ltx25NotSupportedError(reason)
    from ltx_core.text_encoders.gemma.gemma_assets import build_text_encoder_tensors_from_gemma_root  # noqa: PLC0415

    features = TINY_GEMMA4_HIDDEN_SIZE * (TINY_GEMMA4_NUM_HIDDEN_LAYERS + 1)
    projection: dict[str, torch.Tensor] = {}
    names = ("video_aggregate_embed", "audio_aggregate_embed")
    for name, width in zip(names, prompt_widths(transformer_config), strict=True):
        prefix = f"text_embedding_projection.{name}."
        linear = torch.nn.Linear(features, width, bias=True)
        tiny_model._init_parameters(linear, prefix=prefix, seed=seed)
        projection.update({f"{prefix}{k}": v.to(torch.bfloat16) for k, v in linear.state_dict().items()})

    with tempfile.TemporaryDirectory(prefix="tiny-gemma4-") as root:
        _write_gemma4_root(Path(root), seed, gemma_weights)
        tensors, metadata = build_text_encoder_tensors_from_gemma_root(
            root, projection, gemma_version=GEMMA_VERSION, comfy_flat_lm_keys=True
        )
        tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
        _save_safetensors(Path(path), tensors, metadata)
    logger.info("Wrote tiny Gemma-4 text encoder (%d tensors) to %s", len(tensors), path)
    return Path(path)


def write_tiny_ltx25_video_vae(path: Path, seed: int = 0) -> Path:
    """Write the pack's video VAE: encoder, decoder and their shared latent statistics, bare keys, bf16 (lossless).

    Keys are ``encoder.*``, ``decoder.*`` and ``per_channel_statistics.*`` (the standalone-file layout; ltx-core also
    reads the monolith's ``vae.`` prefix); the metadata has ``config`` = ``{"vae": ...}`` and ``model_version``
    (ltx-pipelines reads its image-conditioning default from the video VAE's version).

    Returns:
        ``path``.
    """
    from ltx_audio_reference.testing.tiny_assets import _build, _init_random, _prefixed, compact  # noqa: PLC0415
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator  # noqa: PLC0415

    config = {"vae": _video_vae_config()}
    tensors: dict[str, torch.Tensor] = {}
    for configurator, part in ((VideoEncoderConfigurator, "encoder"), (VideoDecoderConfigurator, "decoder")):
        module = _build(configurator, config)
        _init_random(module, f"vae.{part}.", seed)  # statistics: mean 0, std 1, the same in both halves
        tensors.update(_prefixed(module, f"{part}.", "per_channel_statistics."))
    metadata = {"format": "pt", "model_version": MODEL_VERSION, "config": json.dumps(config)}
    _save_safetensors(Path(path), compact(tensors), metadata)
    logger.info("Wrote tiny LTX-2.5 video VAE (%d tensors) to %s", len(tensors), path)
    return Path(path)


@torch.no_grad()
def _fill_mel_stft(mel_stft: torch.nn.Module, bwe: dict[str, Any]) -> None:
    """The BWE's STFT bases (DFT rows x periodic Hann, real then imaginary) and its Slaney mel filterbank.

    ltx-core allocates these persistent buffers as zeros and expects a checkpoint to fill them.
    """
    from ltx_audio_reference.data.mel import slaney_mel_filterbank  # noqa: PLC0415

    n_fft, sample_rate = bwe["n_fft"], bwe["input_sampling_rate"]
    n_freqs = n_fft // 2 + 1
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * torch.pi * torch.arange(n_freqs, dtype=torch.float64)[:, None] * torch.arange(n_fft)[None, :] / n_fft
    forward = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    mel_stft.stft_fn.forward_basis.copy_(forward[:, None, :].float())
    mel_stft.stft_fn.inverse_basis.copy_(torch.linalg.pinv(forward).T[:, None, :].float())
    bank = slaney_mel_filterbank(n_freqs, 0.0, sample_rate / 2, bwe["num_mels"], sample_rate)
    mel_stft.mel_basis.copy_(bank.T)


def build_tiny_bwe_vocoder(seed: int = 0) -> torch.nn.Module:
    """ltx-core's ``VocoderWithBWE`` at tiny widths, seeded: mel in, 48 kHz stereo out.

    Built on CPU, not on the meta device: its anti-aliasing filters are persistent buffers computed at construction,
    and a checkpoint stores them as computed. Only the parameters are drawn; the STFT and mel bases are computed.
    """
    from ltx_audio_reference.data.mel import import_audio_vae  # noqa: PLC0415

    vocoder = import_audio_vae().VocoderConfigurator.from_metadata(
        {"config": {"vocoder": copy.deepcopy(TINY_BWE_VOCODER_CONFIG)}}
    )
    tiny_model._init_parameters(vocoder, prefix="vocoder.", seed=seed)
    with torch.no_grad():
        for parameter in vocoder.parameters():  # bf16 numbers: stored in bf16 without loss (tiny_assets.compact)
            parameter.copy_(parameter.to(torch.bfloat16).to(parameter.dtype))
    _fill_mel_stft(vocoder.mel_stft, TINY_BWE_VOCODER_CONFIG["bwe"])
    return vocoder.eval()


def write_tiny_ltx25_audio_vae(path: Path, seed: int = 0, vocoder: VocoderKind = "bwe") -> Path:
    """Write the pack's audio VAE: the tiny encoder and decoder, their shared statistics and a vocoder.

    Drawn values are stored in bf16 (without loss), computed ones (the BWE vocoder's filters) in float32.

    Keys keep the prefixes ltx-core's audio loaders require (``audio_vae.encoder.``, ``audio_vae.decoder.``,
    ``audio_vae.per_channel_statistics.``, ``vocoder.``); the metadata has ``config`` = ``{"audio_vae": ...,
    "vocoder": ...}`` and ``model_version``. The encoder is :func:`~.tiny_audio_vae.build_tiny_audio_encoder`'s, so
    ``precompute`` on this file gives the latents of the kit's tiny encoder.

    Args:
        path: Output file.
        seed: Weight seed.
        vocoder: ``"bwe"`` (LTX-2.3/2.5's format; cannot decode on CPU inside the trainer) or ``"plain"``.

    Returns:
        ``path``.
    """
    from ltx_audio_reference.testing.tiny_assets import (  # noqa: PLC0415
        TINY_VOCODER_CONFIG,
        _prefixed,
        build_tiny_audio_decoder,
        build_tiny_vocoder,
        compact,
    )
    from ltx_audio_reference.testing.tiny_audio_vae import build_tiny_audio_encoder, tiny_audio_vae_config  # noqa: PLC0415

    if vocoder not in ("bwe", "plain"):
        raise ValueError(f"vocoder must be 'bwe' or 'plain', got {vocoder!r}")
    statistics = "audio_vae.per_channel_statistics."
    tensors = _prefixed(build_tiny_audio_encoder(seed), "audio_vae.encoder.", statistics)
    tensors.update(_prefixed(build_tiny_audio_decoder(seed), "audio_vae.decoder.", statistics))  # same statistics
    if vocoder == "bwe":
        tensors.update(_prefixed(build_tiny_bwe_vocoder(seed), "vocoder.", "vocoder.per_channel_statistics."))
        vocoder_config = copy.deepcopy(TINY_BWE_VOCODER_CONFIG)
    else:
        tensors.update(_prefixed(build_tiny_vocoder(seed), "vocoder.", "vocoder.per_channel_statistics."))
        vocoder_config = copy.deepcopy(TINY_VOCODER_CONFIG)
    config = {**tiny_audio_vae_config(), "vocoder": vocoder_config}
    metadata = {"format": "pt", "model_version": MODEL_VERSION, "config": json.dumps(config)}
    _save_safetensors(Path(path), compact(tensors), metadata)
    logger.info("Wrote tiny LTX-2.5 audio VAE with a %s vocoder (%d tensors) to %s", vocoder, len(tensors), path)
    return Path(path)


def write_tiny_ltx25_pack(
    root: Path,
    *,
    num_layers: int = 2,
    seed: int = 0,
    width: Width = "tiny",
    vocoder: VocoderKind = "bwe",
    gemma_weights: bool = True,
) -> Ltx25Pack:
    """Write a tiny LTX-2.5 split pack under ``root`` (``diffusion_models/``, ``text_encoders/``, ``vae/``).

    Args:
        root: Pack folder (created if needed).
        num_layers: Transformer blocks.
        seed: Weight seed for every file.
        width: ``"tiny"`` or ``"full"`` block width (see :func:`ltx25_transformer_config`).
        vocoder: The audio VAE file's vocoder (see :func:`write_tiny_ltx25_audio_vae`).
        gemma_weights: Random Gemma-4 weights in the text encoder (see :func:`write_tiny_gemma4_text_encoder`).

    Returns:
        The pack's paths.

    Raises:
        Ltx25NotSupportedError: With ltx-core older than 1.2.0, or transformers without ``gemma4_unified`` when
            ``gemma_weights`` is set.
    """
    _require_ltx25()
    root = Path(root).expanduser().resolve()
    pack = Ltx25Pack(
        root=root,
        transformer=root / TRANSFORMER_FILE,
        text_encoder=root / TEXT_ENCODER_FILE,
        video_vae=root / VIDEO_VAE_FILE,
        audio_vae=root / AUDIO_VAE_FILE,
    )
    write_tiny_ltx25_transformer(pack.transformer, num_layers=num_layers, seed=seed, width=width)
    write_tiny_gemma4_text_encoder(
        pack.text_encoder, ltx25_transformer_config(num_layers, width), seed=seed, gemma_weights=gemma_weights
    )
    write_tiny_ltx25_video_vae(pack.video_vae, seed=seed)
    write_tiny_ltx25_audio_vae(pack.audio_vae, seed=seed, vocoder=vocoder)
    return pack


def write_ltx25_dataset(
    root: Path,
    num_layers: int = 2,
    width: Width = "tiny",
    **kwargs: Any,  # noqa: ANN401 - write_synthetic_dataset's
) -> Path:
    """:func:`~.tiny_model.write_synthetic_dataset` with the prompt-embedding widths of the 2.5 pack's transformer.

    Args:
        root: Dataset root.
        num_layers: Passed to :func:`ltx25_transformer_config` (the widths do not depend on it).
        width: The pack's block width.
        **kwargs: Any other :func:`~.tiny_model.write_synthetic_dataset` argument except the two widths.

    Returns:
        ``root``.
    """
    video, audio = prompt_widths(ltx25_transformer_config(num_layers, width))
    return tiny_model.write_synthetic_dataset(root, caption_dim=video, audio_caption_dim=audio, **kwargs)


def meta_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` still on the meta device (never loaded from a file)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_meta]


def assert_materialized(module: torch.nn.Module, source: str | Path) -> torch.nn.Module:
    """Fail unless every parameter and buffer of a freshly loaded ``module`` holds real data.

    ltx-core's loader logs "Uninitialized parameters or buffers" for tensors a file lacks and returns the whole module
    on the meta device; this turns that warning into an error.

    Args:
        module: What a loader returned.
        source: The file it was loaded from, for the message.

    Returns:
        ``module``.

    Raises:
        AssertionError: Naming the first missing tensors and the file.
    """
    missing = meta_tensors(module)
    if missing:
        raise AssertionError(
            f"{source}: {len(missing)} tensor(s) of {type(module).__name__} left on the meta device (not in the "
            f"file): {missing[:8]}"
        )
    return module


__all__ = [
    "AUDIO_VAE_FILE",
    "GEMMA_VERSION",
    "LTX25_MODEL_KWARGS",
    "LTX25_TRANSFORMER_SWITCHES",
    "MODEL_VERSION",
    "TEXT_ENCODER_FILE",
    "TINY_BWE_VOCODER_CONFIG",
    "TRANSFORMER_FILE",
    "VIDEO_VAE_FILE",
    "Ltx25NotSupportedError",
    "Ltx25Pack",
    "assert_materialized",
    "build_tiny_bwe_vocoder",
    "build_tiny_ltx25_model",
    "gemma4_supported",
    "ltx25_supported",
    "ltx25_transformer_config",
    "meta_tensors",
    "prompt_widths",
    "write_ltx25_dataset",
    "write_tiny_gemma4_text_encoder",
    "write_tiny_ltx25_audio_vae",
    "write_tiny_ltx25_pack",
    "write_tiny_ltx25_transformer",
    "write_tiny_ltx25_video_vae",
]
