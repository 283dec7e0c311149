"""A tiny, complete training setup that runs on a laptop CPU in under a minute (``ltx-trainer demo DIR``).

It writes a random 2-block LTX-2 audio+video checkpoint, a minimal text-encoder folder, a synthetic preprocessed
dataset with an audio reference per sample, and ``DIR/config.yaml`` for the ``audio_reference`` strategy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEMO_CONFIG_TEMPLATE = """\
# =====================================================================================================================
# ltx-audio-reference demo: a random 2-block LTX-2 model trained for a few steps on CPU.
# Run it with:  ltx-trainer train {root}/config.yaml
#
# Dataset tree ({root}/data):
#   conditions/sample_XXX.pt                video_prompt_embeds [L, D], audio_prompt_embeds, prompt_attention_mask [L]
#   latents/sample_XXX.pt                   latents [128, F, H, W], num_frames, height, width, fps
#   audio_latents/sample_XXX.pt             latents [8, T, 16], num_time_steps, frequency_bins, duration
#   reference_audio_latents/sample_XXX.pt   same format as audio_latents (the reference clip)
# =====================================================================================================================

# ----- Model: the tiny random checkpoint and text-encoder folder written by `ltx-trainer demo` -----------------------
model:
  model_path: {root}/tiny_ltx2.safetensors
  text_encoder_path: {root}/text_encoder
  training_mode: lora

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

# ----- Validation: off (the tiny checkpoint carries no VAE or vocoder weights to decode with) ------------------------
validation:
  interval: null
  generate_video: false
  generate_audio: false

# ----- Checkpoints ----------------------------------------------------------------------------------------------------
checkpoints:
  interval: {checkpoint_interval}
  keep_last_n: -1

output_dir: {root}/outputs
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
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> Path:
    """Write the demo checkpoint, text encoder, dataset and config under ``root``.

    Args:
        root: Output folder (created if needed).
        steps: Training steps in the config.
        num_samples: Samples in the synthetic dataset.
        seed: Seed for the random weights and data.
        num_layers: Transformer blocks in the checkpoint.
        width: ``"tiny"`` (trains on a CPU in seconds) or ``"full"``: LTX-2.3-class block dimensions
            (``tiny_model.FULL_WIDTH_OVERRIDES``, about 0.77 GB of bf16 weights a block) and data of the seed
            workload's size
            (:data:`FULL_WIDTH_DATA`), for GPU tests and benchmarks. The text side stays tiny either way.
        dtype: Stored dtype of the checkpoint (float32 by default; bf16 halves a full-scale file).
        device: Where the checkpoint's values are drawn (``"cuda"`` writes a 48-block full-width file in seconds).

    Returns:
        The path of the written ``config.yaml``.

    Raises:
        ValueError: If ``width`` is neither ``"tiny"`` nor ``"full"``.
    """
    if width not in ("tiny", "full"):
        raise ValueError(f"width must be 'tiny' or 'full', got {width!r}")

    from ltx_audio_reference.testing import tiny_model  # noqa: PLC0415

    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    full = width == "full"
    overrides = tiny_model.FULL_WIDTH_OVERRIDES if full else None
    precision = {} if dtype is None else {"dtype": dtype}
    tiny_model.write_tiny_checkpoint(
        root / "tiny_ltx2.safetensors",
        num_layers=num_layers,
        overrides=overrides,
        seed=seed,
        device=device,
        **precision,
    )
    tiny_model.write_text_encoder_dir(root / "text_encoder")
    tiny_model.write_synthetic_dataset(
        root / "data", num_samples=num_samples, seed=seed, **(FULL_WIDTH_DATA if full else {})
    )
    config_path = root / "config.yaml"
    config_path.write_text(DEMO_CONFIG_TEMPLATE.format(root=root, steps=steps, checkpoint_interval=max(1, steps // 2)))
    logger.info("Demo written to %s", root)
    return config_path
