"""Tiny-model kit: a real 2-block LTX-2 audio+video model, its checkpoint, a text-encoder folder and a dataset.

Everything here is generated locally and deterministically from a seed, and is small enough that the stock
``ltx-trainer`` runs LoRA training on it on CPU in seconds. Tests, the ``ltx-trainer demo`` command and the
benchmarks share it.

The kit depends on ltx-core, torch, safetensors and tokenizers only (never on ltx-trainer), and works with
ltx-core 1.0.0 and 1.2.0. The files it writes follow ltx-trainer 1.2.0's formats:

- :func:`write_tiny_checkpoint`: one safetensors file holding the transformer (``model.diffusion_model.*``), the
  text feature extractor (``text_embedding_projection.*``) and both text connectors, with the JSON ``config``
  metadata that ltx-core's ``LTXModelConfigurator`` accepts.
- :func:`write_text_encoder_dir`: a Gemma-3 folder (config, tokenizer and processor files) whose config sizes the
  feature extractor. Its ``model.safetensors`` is a placeholder, which serves training with validation off;
  :func:`~ltx_audio_reference.testing.tiny_assets.write_tiny_gemma_weights` replaces it with real random weights
  (``ltx-trainer demo`` does), so that prompts encode.
- :func:`write_synthetic_dataset`: ``conditions/``, ``latents/``, ``audio_latents/`` and
  ``reference_audio_latents/`` ``.pt`` files as ltx-trainer's ``PrecomputedDataset`` reads them.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, processors

from ltx_audio_reference.layout import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_LATENT_SECONDS,
    AUDIO_MEL_BINS,
    PROMPT_LENGTH_MULTIPLE,
    VIDEO_LATENT_CHANNELS,
)
from ltx_audio_reference.reliability.files import atomic_file, atomic_write, atomic_write_text
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

logger = logging.getLogger(__name__)

# The ``config.transformer`` entry of the tiny checkpoint (shared/reference/tiny_ltx2_config.json). ltx-core checks
# the keys from ``dropout`` to ``use_middle_indices_grid`` for exactly these values, and wants
# ``num_attention_heads == audio_num_attention_heads``. Callers must copy before changing it.
TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "dropout": 0.0,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 8,
    "in_channels": 128,
    "out_channels": 128,
    "audio_in_channels": 128,
    "audio_out_channels": 128,
    "num_layers": 2,
    "cross_attention_dim": 32,
    "audio_cross_attention_dim": 16,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20],
    "rope_type": "split",
    "caption_channels": 64,
    "connector_num_attention_heads": 2,
    "connector_attention_head_dim": 32,
    "connector_num_layers": 1,
}

# The tiny Gemma-3 text encoder. The feature extractor maps hidden * (layers + 1) = 128 features to ``hidden``,
# which must equal the connector width (2 heads * 32) and ``caption_channels``.
TINY_GEMMA_HIDDEN_SIZE = 64
TINY_GEMMA_NUM_HIDDEN_LAYERS = 1

# Checkpoint key prefixes ltx-core's state-dict ops expect.
TRANSFORMER_PREFIX = "model.diffusion_model."
FEATURE_EXTRACTOR_PREFIX = "text_embedding_projection.aggregate_embed."
VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."

#: LTX-2.3-class block width (32x128 video heads, 32x64 audio heads, gated attention, cross-attention AdaLN, about
#: 387 M parameters a block) with the tiny text side; for GPU runs of the stock trainer on real-size blocks.
FULL_WIDTH_DIMS: dict[str, int] = {
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "cross_attention_dim": 4096,
    "audio_cross_attention_dim": 2048,
}
FULL_WIDTH_OVERRIDES: dict[str, Any] = {**FULL_WIDTH_DIMS, "apply_gated_attention": True, "cross_attention_adaln": True}

DATASET_FOLDERS = ("conditions", "latents", "audio_latents", "reference_audio_latents")

ReferenceFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``reference_fn(reference, num_time_steps) -> target`` for :func:`write_synthetic_dataset`.

``reference`` is one sample's reference audio latents ``[8, T_ref, 16]`` (float32). The function returns that
sample's target audio latents ``[8, num_time_steps, 16]``.
"""

_TOKENIZER_SPECIAL_TOKENS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)


def tiny_checkpoint_config(num_layers: int = 2, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the JSON ``config`` metadata entry of a tiny checkpoint.

    Args:
        num_layers: Number of transformer blocks.
        overrides: ``config.transformer`` values to change, e.g. full-width heads for GPU runs
            (:data:`FULL_WIDTH_OVERRIDES`). The text side stays tiny.

    Returns:
        ``{"transformer": ..., "vae": {}}``. The empty ``vae`` section marks the file as a monolith rather than the
        transformer of a split pack, and gives the default 32x32x8 video scale factors.

    Raises:
        ValueError: If ``num_layers`` is below 1.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    transformer = copy.deepcopy(TINY_TRANSFORMER_CONFIG)
    transformer["num_layers"] = num_layers
    transformer.update(overrides or {})
    return {"transformer": transformer, "vae": {}}


def build_tiny_model(
    num_layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    overrides: dict[str, Any] | None = None,
) -> LTXModel:
    """Build a real ltx-core ``LTXModel`` (audio + video) with the tiny config and seeded weights.

    Every parameter is drawn from a generator seeded by ``seed`` and the parameter's checkpoint key, so the
    weights do not depend on the global RNG, on the ltx-core version, or on ``num_layers`` (block 0 is the same
    in a 2- and a 4-block model). Nothing is zero or left uninitialised (ltx-core allocates the scale-shift tables
    with ``torch.empty`` and expects a checkpoint to fill them), so gradient tests are not vacuous; the output
    projections are drawn small so that initial predictions are near zero.

    Args:
        num_layers: Number of transformer blocks.
        seed: Weight seed.
        dtype: Parameter dtype (weights are drawn in float32, then cast).
        overrides: ``config.transformer`` values to change (see :func:`tiny_checkpoint_config`).

    Returns:
        The model on CPU, in training mode.
    """
    model = _instantiate(LTXModelConfigurator, tiny_checkpoint_config(num_layers, overrides))
    _init_parameters(model, prefix=TRANSFORMER_PREFIX, seed=seed)
    return model.to(dtype=dtype)


def write_tiny_checkpoint(
    path: Path,
    num_layers: int = 2,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    components: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    header_only: bool = False,
) -> Path:
    """Write an LTX-2 checkpoint that the stock ltx-trainer 1.2.0 loads, one tensor at a time.

    The file holds every transformer parameter under ``model.diffusion_model.``, plus what
    ``load_embeddings_processor`` needs: the V1 feature extractor ``text_embedding_projection.aggregate_embed.weight``
    and the video and audio text connectors. Its metadata carries the JSON ``config`` from
    :func:`tiny_checkpoint_config`. The transformer is never materialized: it is built on the meta device for its
    names and shapes, and each tensor is drawn, converted and written on its own, so host memory holds one tensor at a
    time (a 48-block full-width LTX-2.3-class file is about 44 GB in bf16). On the CPU the values are exactly
    :func:`build_tiny_model`'s; on another ``device`` they come from that device's generator (other values, drawn
    much faster).

    Args:
        path: Output file (conventionally ``*.safetensors``). Written atomically; parent folders are created.
        num_layers: Number of transformer blocks.
        seed: Weight seed.
        overrides: ``config.transformer`` values to change (see :func:`tiny_checkpoint_config`).
        dtype: Stored dtype of every transformer and text-side tensor (float32, bfloat16 or float16).
        device: Where the values are drawn (``"cuda"`` for full-scale files).
        components: ``(tensors, config_sections)`` of further models to store in the same file, each tensor in its
            own dtype, e.g. :func:`~ltx_audio_reference.testing.tiny_assets.tiny_vae_tensors`' VAEs and vocoder (a
            complete monolith, as published LTX-2 checkpoints are).
        header_only: Write the header and leave the data a hole of the right size (a sparse file: no disk, no
            drawing), for what reads only the header: ``check``'s memory estimates of a full-scale model in a second.
            Its tensors read as zeros.

    Returns:
        ``path``.
    """
    # Importing ltx_core.text_encoders pulls in transformers (seconds); only checkpoint writing needs it.
    from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: PLC0415
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )

    if dtype not in _SAFETENSORS_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(map(str, _SAFETENSORS_DTYPES))}, got {dtype}")
    path = Path(path)
    device = torch.device(device)
    config = tiny_checkpoint_config(num_layers, overrides)
    shapes = {f"{TRANSFORMER_PREFIX}{n}": (n, tuple(p.shape)) for n, p in _meta(LTXModelConfigurator, config).items()}

    # The text side is tiny whatever the transformer's width: built in memory as the stock loader expects it.
    small: dict[str, torch.Tensor] = {}
    for configurator, prefix in (
        (Embeddings1DConnectorConfigurator, VIDEO_CONNECTOR_PREFIX),
        (AudioEmbeddings1DConnectorConfigurator, AUDIO_CONNECTOR_PREFIX),
    ):
        connector = _instantiate(configurator, config)
        _init_parameters(connector, prefix=prefix, seed=seed)
        small.update({f"{prefix}{name}": t.detach() for name, t in connector.state_dict().items()})
    # V1 feature extractor: the checkpoint has no caption_proj_before_connector keys, so ltx-core builds a
    # bias-free Linear(hidden * (layers + 1) -> hidden).
    feature_extractor = torch.nn.Linear(
        TINY_GEMMA_HIDDEN_SIZE * (TINY_GEMMA_NUM_HIDDEN_LAYERS + 1), TINY_GEMMA_HIDDEN_SIZE, bias=False
    )
    _init_parameters(feature_extractor, prefix=FEATURE_EXTRACTOR_PREFIX, seed=seed)
    small[f"{FEATURE_EXTRACTOR_PREFIX}weight"] = feature_extractor.weight.detach()

    extra, sections = components if components is not None else ({}, {})
    # The empty ``vae`` marker section (see tiny_checkpoint_config) gives way to a real one.
    clash = sorted(k for k in set(sections) & set(config) if config[k])
    clash += sorted(set(extra) & (set(shapes) | set(small)))
    if clash:
        raise ValueError(f"components repeat what the checkpoint already holds: {clash[:5]}")
    config = {**config, **sections}
    small = {k: t.to(dtype) for k, t in small.items()}
    small.update({k: t.detach().contiguous() for k, t in extra.items()})
    layout = [(key, shape) for key, (_, shape) in shapes.items()] + [(k, tuple(t.shape)) for k, t in small.items()]
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "config": json.dumps(config)}}
    offset = 0
    for key, shape in layout:
        stored = small[key].dtype if key in small else dtype
        nbytes = torch.empty((), dtype=stored).element_size() * int(torch.Size(shape).numel())
        header[key] = {
            "dtype": _SAFETENSORS_DTYPES[stored],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header to 8 bytes

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        if header_only:
            f.truncate(8 + len(encoded) + offset)
        for key, shape in [] if header_only else layout:
            if key in small:
                value = small[key]
            else:
                name = shapes[key][0]
                value = _initial_value(name, shape, key=key, seed=seed, device=device).to(dtype)
            f.write(value.contiguous().cpu().view(torch.uint8).numpy().data)
    logger.info(
        "Wrote LTX-2 checkpoint (%d blocks, %d tensors, %.2f GB, transformer in %s%s%s) to %s",
        num_layers,
        len(layout),
        offset / 1e9,
        str(dtype).removeprefix("torch."),
        f"; also {', '.join(sorted(sections))}" if sections else "",
        "; header only" if header_only else "",
        path,
    )
    return path


def write_text_encoder_dir(path: Path) -> Path:
    """Write a minimal offline Gemma-3 text-encoder folder for the tiny checkpoint.

    ltx-core reads the folder when it builds the embeddings processor, even with validation off: ``config.json``
    (``model_type: gemma3``; ``text_config`` sizes the feature extractor), ``tokenizer.json``,
    ``tokenizer_config.json``, ``processor_config.json`` and at least one ``model*.safetensors``. The tokenizer is
    a real character-level tokenizer built here (Gemma's special tokens, a leading ``<bos>``). ``model.safetensors``
    is a placeholder without Gemma weights, so the folder cannot encode prompts until
    :func:`~ltx_audio_reference.testing.tiny_assets.write_tiny_gemma_weights` fills it (``ltx-trainer demo`` does).

    Args:
        path: Output folder (created if needed).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer()
    atomic_write_text(path / "tokenizer.json", tokenizer.to_str())
    token_id = tokenizer.token_to_id
    vocab_size = tokenizer.get_vocab_size()

    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "boi_token_index": token_id("<start_of_image>"),
        "eoi_token_index": token_id("<end_of_image>"),
        "image_token_index": token_id("<image_soft_token>"),
        "mm_tokens_per_image": 4,
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": TINY_GEMMA_HIDDEN_SIZE,
            "num_hidden_layers": TINY_GEMMA_NUM_HIDDEN_LAYERS,
            "intermediate_size": 2 * TINY_GEMMA_HIDDEN_SIZE,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": TINY_GEMMA_HIDDEN_SIZE // 2,
            "vocab_size": vocab_size,
            "max_position_embeddings": 1024,
            "sliding_window": 512,
            "pad_token_id": token_id("<pad>"),
            "eos_token_id": token_id("<eos>"),
            "bos_token_id": token_id("<bos>"),
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
    }
    tokenizer_config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
        "padding_side": "left",
        "model_max_length": 1024,
    }
    image_processor = {
        "image_processor_type": "Gemma3ImageProcessor",
        "processor_class": "Gemma3Processor",
        "size": {"height": 64, "width": 64},
        "do_resize": True,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    files = {
        "config.json": config,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {
            k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
        "processor_config.json": {"processor_class": "Gemma3Processor", "image_seq_length": 4},
        "preprocessor_config.json": image_processor,
    }
    for name, content in files.items():
        atomic_write_text(path / name, json.dumps(content, indent=2) + "\n")

    # ltx-core 1.2 globs model*.safetensors to find the weights; nothing reads them while validation is off.
    atomic_write(
        path / "model.safetensors",
        lambda tmp: save_file(
            {"placeholder": torch.zeros(1)},
            str(tmp),
            metadata={"format": "pt", "note": "ltx-audio-reference kit placeholder: no Gemma weights"},
        ),
    )
    logger.info("Wrote tiny Gemma-3 text-encoder folder to %s", path)
    return path


def write_synthetic_dataset(  # noqa: PLR0913
    root: Path,
    num_samples: int = 4,
    *,
    video_frames: int = 2,
    video_height: int = 2,
    video_width: int = 2,
    audio_steps: int = 8,
    reference_steps: int = 5,
    prompt_len: int = 128,
    caption_dim: int = TINY_GEMMA_HIDDEN_SIZE,
    audio_caption_dim: int | None = None,
    seed: int = 0,
    with_reference: bool = True,
    reference_fn: ReferenceFn | None = None,
) -> Path:
    """Write a precomputed dataset in the layout stock ltx-trainer's ``PrecomputedDataset`` reads.

    Each sample ``sample_NNN.pt`` appears in every folder (files pair by relative path), with the dtypes that
    ltx-trainer's preprocessing writes:

    - ``conditions/``: ``video_prompt_embeds`` ``[prompt_len, caption_dim]`` and ``audio_prompt_embeds``
      ``[prompt_len, audio_caption_dim]`` bfloat16 (the feature-extractor output, zero on padding),
      ``prompt_attention_mask`` ``[prompt_len]`` int64, left-padded.
    - ``latents/``: ``latents`` ``[128, F, H, W]`` bfloat16, ``num_frames``, ``height``, ``width`` (latent units,
      ints) and ``fps`` (float).
    - ``audio_latents/`` and ``reference_audio_latents/``: ``latents`` ``[8, T, 16]`` float32,
      ``num_time_steps``, ``frequency_bins`` (ints) and ``duration`` (seconds, ``T * 0.04``).

    Args:
        root: Dataset root; use it as ``data.preprocessed_data_root``.
        num_samples: Number of samples.
        video_frames: Latent frames F.
        video_height: Latent height H.
        video_width: Latent width W.
        audio_steps: Target audio latent steps T.
        reference_steps: Reference audio latent steps.
        prompt_len: Prompt tokens; a multiple of 128 (the connectors' register count).
        caption_dim: Video prompt-embedding width; the tiny checkpoint's connectors take 64.
        audio_caption_dim: Audio prompt-embedding width; ``caption_dim`` when None. LTX-2.5's feature extractor
            gives the video and audio streams their own widths (:mod:`.tiny_ltx25`).
        seed: Data seed.
        with_reference: Write ``reference_audio_latents/``.
        reference_fn: Makes each target audio a function of its reference, ``reference_fn(reference,
            audio_steps)`` (see :data:`ReferenceFn`), for synthetic learning tasks. ``None`` draws targets at random.

    Every file is written atomically (:func:`~ltx_audio_reference.reliability.files.atomic_write`).

    Returns:
        ``root``.

    Raises:
        ValueError: On a non-positive size, a ``prompt_len`` that is not a multiple of 128, a ``reference_fn``
            without ``with_reference``, or a ``reference_fn`` result of the wrong shape.
    """
    sizes = {
        "num_samples": num_samples,
        "video_frames": video_frames,
        "video_height": video_height,
        "video_width": video_width,
        "audio_steps": audio_steps,
        "reference_steps": reference_steps,
        "prompt_len": prompt_len,
        "caption_dim": caption_dim,
        "audio_caption_dim": caption_dim if audio_caption_dim is None else audio_caption_dim,
    }
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if prompt_len % PROMPT_LENGTH_MULTIPLE:
        raise ValueError(f"prompt_len must be a multiple of {PROMPT_LENGTH_MULTIPLE}, got {prompt_len}")
    if reference_fn is not None and not with_reference:
        raise ValueError("reference_fn needs with_reference=True: the target is a function of the reference")

    root = Path(root)
    folders = DATASET_FOLDERS if with_reference else DATASET_FOLDERS[:-1]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)

    generator = torch.Generator().manual_seed(seed)
    target_shape = (AUDIO_LATENT_CHANNELS, audio_steps, AUDIO_MEL_BINS)
    for index in range(num_samples):
        name = f"sample_{index:03d}.pt"
        valid = int(torch.randint(1, prompt_len + 1, (1,), generator=generator))
        mask = torch.zeros(prompt_len, dtype=torch.int64)
        mask[prompt_len - valid :] = 1
        embeds = [
            torch.randn(prompt_len, width, generator=generator) * mask[:, None]
            for width in (caption_dim, sizes["audio_caption_dim"])
        ]
        _save_pt(
            {
                "video_prompt_embeds": embeds[0].to(torch.bfloat16),
                "audio_prompt_embeds": embeds[1].to(torch.bfloat16),
                "prompt_attention_mask": mask,
            },
            root / "conditions" / name,
        )

        video = torch.randn(VIDEO_LATENT_CHANNELS, video_frames, video_height, video_width, generator=generator)
        _save_pt(
            {
                "latents": video.to(torch.bfloat16),
                "num_frames": video_frames,
                "height": video_height,
                "width": video_width,
                "fps": 24.0,
            },
            root / "latents" / name,
        )

        reference = torch.randn(AUDIO_LATENT_CHANNELS, reference_steps, AUDIO_MEL_BINS, generator=generator)
        if reference_fn is None:
            target = torch.randn(target_shape, generator=generator)
        else:
            target = reference_fn(reference.clone(), audio_steps)
            if tuple(target.shape) != target_shape:
                raise ValueError(f"reference_fn returned shape {tuple(target.shape)}, expected {target_shape}")
        _save_pt(_audio_record(target), root / "audio_latents" / name)
        if with_reference:
            _save_pt(_audio_record(reference), root / "reference_audio_latents" / name)

    logger.info("Wrote %d synthetic samples to %s (folders: %s)", num_samples, root, ", ".join(folders))
    return root


def _save_pt(data: dict[str, Any], path: Path) -> None:
    atomic_write(path, functools.partial(torch.save, data))


def _audio_record(latents: torch.Tensor) -> dict[str, Any]:
    """One audio-latent ``.pt`` payload, as ltx-trainer's audio preprocessing writes it."""
    latents = latents.detach().to(torch.float32).contiguous()
    num_time_steps = latents.shape[1]
    return {
        "latents": latents,
        "num_time_steps": num_time_steps,
        "frequency_bins": latents.shape[2],
        "duration": num_time_steps * AUDIO_LATENT_SECONDS,
    }


def _instantiate(configurator: type, config: dict[str, Any]) -> torch.nn.Module:
    """Build a module from a checkpoint ``config`` through an ltx-core configurator, on CPU, uninitialised.

    ltx-core 1.2 configurators take the whole safetensors metadata (``from_metadata``), 1.0 ones take its
    ``config`` entry (``from_config``). The module is built on the meta device (as ltx-core's loader does) and
    then given empty CPU storage, which :func:`_init_parameters` fills.
    """
    with torch.device("meta"):
        if hasattr(configurator, "from_metadata"):
            module = configurator.from_metadata({"config": config})
        else:
            module = configurator.from_config(config)
    buffers = [name for name, _ in module.named_buffers()]
    if buffers:
        raise RuntimeError(f"{type(module).__name__} has buffers the kit cannot initialise: {buffers}")
    return module.to_empty(device="cpu")


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def _meta(configurator: type, config: dict[str, Any]) -> dict[str, torch.nn.Parameter]:
    """The parameters of a module built from a checkpoint ``config`` on the meta device (names and shapes only)."""
    with torch.device("meta"):
        module = (
            configurator.from_metadata({"config": config})
            if hasattr(configurator, "from_metadata")
            else configurator.from_config(config)
        )
    return dict(module.named_parameters())


def _initial_value(
    name: str, shape: tuple[int, ...], *, key: str, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One parameter's float32 initial value, drawn from a generator seeded by ``seed`` and its checkpoint ``key``.

    Matrices (and scale-shift tables) get ``N(0, 1/fan_in)``, which keeps activations of order one through the
    blocks. The final output projections (``proj_out``, ``audio_proj_out``), which diffusion transformers usually
    zero-initialise, get a small ``N(0, 0.02^2)`` instead: predictions start near zero (initial flow-matching loss
    near the target variance, 2) but every parameter still receives gradient. Norm weights get
    ``1 + N(0, 0.05^2)`` and other vectors (biases) ``N(0, 0.02^2)``.
    """
    generator = torch.Generator(device=device).manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    if name.endswith("proj_out.weight"):
        return 0.02 * noise
    if len(shape) >= 2:
        return noise / shape[-1] ** 0.5
    if "norm" in name.rpartition(".")[0].rpartition(".")[2]:  # e.g. attn1.q_norm.weight
        return 1.0 + 0.05 * noise
    return 0.02 * noise


@torch.no_grad()
def _init_parameters(module: torch.nn.Module, *, prefix: str, seed: int) -> None:
    """Fill every parameter with :func:`_initial_value` (its checkpoint key is ``prefix + name``)."""
    for name, param in module.named_parameters():
        param.copy_(_initial_value(name, tuple(param.shape), key=f"{prefix}{name}", seed=seed).to(param.dtype))


def _build_tokenizer(
    special_tokens: tuple[str, ...] = _TOKENIZER_SPECIAL_TOKENS, *, prepend_bos: bool = True
) -> Tokenizer:
    """A character-level tokenizer with Gemma's special tokens.

    A BPE model without merges splits text into single characters; printable ASCII covers prompts, anything
    else maps to ``<unk>``.

    Args:
        special_tokens: The special tokens, first in the vocabulary (they must include ``<bos>`` and ``<unk>``).
        prepend_bos: Prepend ``<bos>`` in a post-processor, as Gemma-3 tokenizers do. Gemma-4 tokenizers add none
            (ltx-core's tokenizer wrapper prepends it itself).
    """
    tokens = [*special_tokens, *(chr(code) for code in range(32, 127))]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.add_special_tokens(list(special_tokens))
    if prepend_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return tokenizer
