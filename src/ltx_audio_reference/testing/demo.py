"""A tiny, complete model pack and training setup that runs on a laptop CPU in under a minute (``ltx-trainer demo``).

It writes a random 2-block audio+video model with every component a real pack has, a synthetic preprocessed dataset
with an audio reference per sample, and ``DIR/config.yaml`` for the ``audio_reference`` strategy. The model is one
of:

- ``ltx-2.3`` (the default): a monolithic checkpoint ``DIR/tiny_ltx2.safetensors`` (transformer, text connectors,
  audio VAE, vocoder and video VAE, :mod:`.tiny_model` and :mod:`.tiny_assets`) and a Gemma-3 text-encoder folder
  ``DIR/text_encoder`` with random weights;
- ``ltx-2.5``: a split pack, ``DIR/diffusion_models/``, ``DIR/text_encoders/`` (a packed Gemma-4 with weights) and
  ``DIR/vae/`` (video and audio VAE), and data with 2.5's prompt-embedding widths (:mod:`.tiny_ltx25`; needs
  ltx-core 1.2.0).

Every component loads completely through ltx-trainer's and ltx-core's own loaders (nothing is left on the meta
device), so upstream's preprocessing (``ltx-trainer audio-reference preprocess``), training, validation and
``audio-reference eval`` all run over the pack on a CPU. The pack is a few MB.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ltx_audio_reference.reliability.files import atomic_write_text

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DemoModel = Literal["ltx-2.3", "ltx-2.5"]
#: The models ``ltx-trainer demo --model`` writes, the default first.
DEMO_MODELS: tuple[str, ...] = ("ltx-2.3", "ltx-2.5")
#: The demo config's ``output_dir``, under the demo's folder.
DEMO_OUTPUT_DIR = "outputs"

_MONOLITH_MODEL_SECTION = """\
# ----- Model: the tiny random checkpoint and text-encoder folder written by `ltx-trainer demo` -----------------------
model:
  model_path: {root}/tiny_ltx2.safetensors
  text_encoder_path: {root}/text_encoder
  training_mode: lora"""

_SPLIT_PACK_MODEL_SECTION = """\
# ----- Model: the tiny random LTX-2.5 split pack written by `ltx-trainer demo --model ltx-2.5` ----------------------
# A split pack names every component: the transformer, the packed Gemma-4 text encoder (one .safetensors file, read
# even with validation off: it sizes the text feature extractor) and both VAEs (the video VAE's metadata is read at
# start-up; the audio VAE holds the encoder `ltx-trainer audio-reference precompute` uses).
model:
  model_path: {pack.transformer}
  text_encoder_path: {pack.text_encoder}
  video_vae_path: {pack.video_vae}
  audio_vae_path: {pack.audio_vae}
  training_mode: lora"""

DEMO_CONFIG_TEMPLATE = """\
# =====================================================================================================================
# ltx-audio-reference demo: a random {title} trained for a few steps on CPU.
# Run it with:  ltx-trainer train {root}/config.yaml
#
# Dataset tree ({root}/data):
#   conditions/sample_XXX.pt                video_prompt_embeds [L, D], audio_prompt_embeds, prompt_attention_mask [L]
#   latents/sample_XXX.pt                   latents [128, F, H, W], num_frames, height, width, fps
#   audio_latents/sample_XXX.pt             latents [8, T, 16], num_time_steps, frequency_bins, duration
#   reference_audio_latents/sample_XXX.pt   same format as audio_latents (the reference clip)
# =====================================================================================================================

{model_section}

# ----- LoRA: alpha must equal rank (exported LoRAs carry no alpha; ltx-core and ComfyUI apply scale 1) -------------
lora:
  rank: 4
  alpha: 4
  dropout: 0.0

# ----- Strategy: audio-only reference at negative RoPE positions, joint audio+video generation ----------------------
training_strategy:
  name: audio_reference
  lora_preset: audio            # LoRA on audio_attn1/audio_attn2 q/k/v/out and audio_ff in every block
  reference_positions: negative # the reference ends reference_gap_s before the target starts, as at inference
  reference_gap_s: 0.04
  first_frame_conditioning_p: 0.0

# ----- Optimization ---------------------------------------------------------------------------------------------------
optimization:
  learning_rate: 0.001
  steps: {steps}
  batch_size: 2
  optimizer_type: adamw
  scheduler_type: constant

# ----- Acceleration: bf16 autocast is what the stock runner supports on CPU ------------------------------------------
acceleration:
  mixed_precision_mode: bf16

# ----- Data -----------------------------------------------------------------------------------------------------------
data:
  preprocessed_data_root: {root}/data
  num_dataloader_workers: 0

# ----- Validation: off (nothing is decoded; the tiny models are random) ----------------------------------------------
validation:
  interval: null
  generate_video: false
  generate_audio: false

# ----- Checkpoints ----------------------------------------------------------------------------------------------------
checkpoints:
  interval: {checkpoint_interval}
  keep_last_n: -1

output_dir: {root}/{output_dir}
seed: 42
"""


# Full-width data: the seed workload's size, 256x256x121 @ 25 fps -> 16x8x8 video latents (1024 tokens), 121 target
# and 50 reference audio steps, a 256-token prompt.
FULL_WIDTH_DATA = {
    "video_frames": 16,
    "video_height": 8,
    "video_width": 8,
    "audio_steps": 121,
    "reference_steps": 50,
    "prompt_len": 256,
}


def write_demo(
    root: Path,
    *,
    steps: int = 4,
    num_samples: int = 4,
    seed: int = 0,
    num_layers: int = 2,
    width: Literal["tiny", "full"] = "tiny",
    model: DemoModel = "ltx-2.3",
    complete: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """Write the demo model, dataset and config under ``root``.

    Args:
        root: Output folder (created if needed).
        steps: Training steps in the config.
        num_samples: Samples in the synthetic dataset.
        seed: Seed for the random weights and data.
        num_layers: Transformer blocks in the checkpoint.
        width: ``"tiny"`` (trains on a CPU in seconds) or ``"full"``: LTX-2.3-class block dimensions
            (``tiny_model.FULL_WIDTH_OVERRIDES``, about 0.77 GB of bf16 weights a block) and data of the seed
            workload's size
            (:data:`FULL_WIDTH_DATA`), for GPU tests and benchmarks. The Gemma side stays tiny either way.
        model: ``"ltx-2.3"`` (a monolithic checkpoint and a Gemma-3 folder) or ``"ltx-2.5"`` (a split pack with a
            packed Gemma-4 text encoder, :func:`~.tiny_ltx25.write_tiny_ltx25_pack`).
        complete: ``True`` (the default) writes every component: Gemma weights in the text encoder and, for
            ``ltx-2.3``, the VAEs and vocoder in the checkpoint (``ltx-2.5``'s VAE files are always written).
            ``False`` leaves those out: the pack then serves training with validation off only, and ``ltx-2.5``
            needs only transformers' Gemma-4 *config* (GPU tests use it).
        dtype: ``ltx-2.3`` only: stored dtype of the checkpoint (float32 by default; bf16 halves a full-scale file).
        device: ``ltx-2.3`` only: where the checkpoint's values are drawn (``"cuda"`` writes a 48-block full-width
            file in about a minute, one tensor at a time).

    Returns:
        The path of the written ``config.yaml``.

    Raises:
        ValueError: If ``width`` or ``model`` is not one of the listed values.
        tiny_ltx25.Ltx25NotSupportedError: For ``"ltx-2.5"`` with ltx-core older than 1.2.0 (or transformers without
            Gemma-4), before anything is written.
    """
    if width not in ("tiny", "full"):
        raise ValueError(f"width must be 'tiny' or 'full', got {width!r}")
    if model not in DEMO_MODELS:
        raise ValueError(f"model must be one of {', '.join(DEMO_MODELS)}; got {model!r}")
    if model == "ltx-2.5":
        from ltx_audio_reference.testing import tiny_ltx25  # noqa: PLC0415 - torch/ltx-core import only when used

        if (reason := tiny_ltx25.ltx25_supported() or tiny_ltx25.gemma4_supported()) is not None:
            raise tiny_ltx25.Ltx25NotSupportedError(reason)
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    full = width == "full"
    data = {"num_samples": num_samples, "seed": seed, **(FULL_WIDTH_DATA if full else {})}
    if model == "ltx-2.5":
        pack = tiny_ltx25.write_tiny_ltx25_pack(
            root, num_layers=num_layers, seed=seed, width=width, gemma_weights=complete
        )
        tiny_ltx25.write_ltx25_dataset(root / "data", num_layers=num_layers, width=width, **data)
        model_section = _SPLIT_PACK_MODEL_SECTION.format(pack=pack)
        title = f"{num_layers}-block LTX-2.5 split pack"
    else:
        from ltx_audio_reference.testing import tiny_model  # noqa: PLC0415 - torch/ltx-core import only when used

        overrides = tiny_model.FULL_WIDTH_OVERRIDES if full else None
        precision = {} if dtype is None else {"dtype": dtype}
        components = None
        if complete:
            from ltx_audio_reference.testing import tiny_assets  # noqa: PLC0415

            components = tiny_assets.tiny_vae_tensors(seed)
        tiny_model.write_tiny_checkpoint(
            root / "tiny_ltx2.safetensors",
            num_layers=num_layers,
            overrides=overrides,
            seed=seed,
            device=device,
            components=components,
            **precision,
        )
        tiny_model.write_text_encoder_dir(root / "text_encoder")
        if complete:
            tiny_assets.write_tiny_gemma_weights(root / "text_encoder", seed=seed)
        tiny_model.write_synthetic_dataset(root / "data", **data)
        model_section = _MONOLITH_MODEL_SECTION.format(root=root)
        title = f"{num_layers}-block LTX-2 model"
    config = DEMO_CONFIG_TEMPLATE.format(
        title=title,
        model_section=model_section,
        root=root,
        output_dir=DEMO_OUTPUT_DIR,
        steps=steps,
        checkpoint_interval=max(1, steps // 2),
    )
    config_path = atomic_write_text(root / "config.yaml", config)
    logger.info("Demo (%s) written to %s", model, root)
    return config_path
