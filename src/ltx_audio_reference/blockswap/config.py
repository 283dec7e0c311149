"""Block-swap configuration: the plugin's ``block_swap`` section, the seed's key, validation and ``auto`` sizing.

Two ways to turn block swap on, both parsed by the stock trainer config once the bridge adds the plugin's fields:

.. code-block:: yaml

    acceleration:
      block_swap_blocks: 24          # the seed's key: stream 24 blocks

    block_swap:                      # the plugin's section: every knob
      blocks_to_swap: auto           # or an int
      max_vram_gb: 12                # auto: the smallest N whose estimated peak fits
      prefetch: 1
      pin_memory: true

Nothing here imports torch, so the CLI's ``check`` command validates a config in milliseconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

logger = logging.getLogger(__name__)

GB = 1e9
#: GPU bytes per byte of trainable (LoRA) weights: the weights, their gradients and AdamW's two moments.
TRAINABLE_OVERHEAD = 4

# Quantizations whose CUDA form equals the host form (optimum-quanto 8-bit QBytes tensors). int4/int2 weights are
# repacked for CUDA kernels when they move to the GPU, so streaming their host packing would not match residency.
# int8 and int8-dynamic hold plain int8 and float tensors, the same on both sides.
SWAPPABLE_QUANTIZATIONS: tuple[str | None, ...] = (
    None,
    "int8-quanto",
    "fp8-quanto",
    "fp8uz-quanto",
    "int8",
    "int8-dynamic",
)


def _check_blocks(value: int) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a number of blocks, not a boolean; use 0 to turn block swap off")
    if value < 0:
        raise ValueError(f"must be >= 0 (0 turns block swap off), got {value}")
    return value


BlockCount = Annotated[int, AfterValidator(_check_blocks)]
"""A number of blocks to swap: ``>= 0``, not a boolean."""


class BlockSwapConfig(BaseModel):
    """Training-time block swap: stream frozen transformer blocks from host memory to the GPU.

    Needs a CUDA GPU, LoRA training and gradient checkpointing. Works on one GPU and with DDP (each rank streams its
    own copy); FSDP and DeepSpeed shard the same weights and are refused.
    """

    model_config = ConfigDict(extra="forbid")

    blocks_to_swap: BlockCount | Literal["auto"] = Field(
        default="auto",
        description=(
            "How many transformer blocks to stream from host memory (0 = off, up to the model's block count), or "
            "'auto' to pick the smallest number whose estimated peak VRAM fits max_vram_gb. Left out, it takes "
            "acceleration.block_swap_blocks when that is set."
        ),
    )
    max_vram_gb: float | None = Field(
        default=None,
        gt=0,
        description=(
            "VRAM budget in GB for blocks_to_swap: auto, compared with the estimated PyTorch allocation peak "
            "(what torch.cuda.max_memory_allocated reports). Use your GPU's memory minus ~1 GB for the CUDA "
            "context (22 on a 24 GB GPU leaves room to spare)."
        ),
    )
    prefetch: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Blocks copied ahead of the one running. Each costs one block of VRAM; 1 hides the copy when a block "
            "computes longer than it takes to copy, more smooths out uneven blocks."
        ),
    )
    pin_memory: bool = Field(
        default=True,
        description=(
            "Page-lock the host copies of the swapped blocks (about 3x faster, asynchronous copies). Costs that much "
            "locked RAM per process."
        ),
    )
    reserve_gb: float = Field(
        default=1.0,
        ge=0,
        description=(
            "blocks_to_swap: auto only. VRAM set aside for activations and allocator slack on top of the weights; "
            "about 1 GB for 1024 video + 171 audio tokens with gradient checkpointing."
        ),
    )

    @field_validator("blocks_to_swap", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic hands over the raw input
        if isinstance(value, bool):
            raise ValueError("must be a number of blocks or 'auto', not a boolean; use 0 to turn block swap off")
        return value

    @model_validator(mode="after")
    def _budget_matches_mode(self) -> BlockSwapConfig:
        explicit = "blocks_to_swap" in self.model_fields_set
        if self.blocks_to_swap == "auto" and explicit and self.max_vram_gb is None:
            raise ValueError(
                "block_swap.blocks_to_swap: auto needs block_swap.max_vram_gb (your GPU's memory minus ~1 GB), or "
                "set blocks_to_swap to a number"
            )
        if isinstance(self.blocks_to_swap, int) and self.max_vram_gb is not None:
            raise ValueError(
                f"block_swap.max_vram_gb is only used by blocks_to_swap: auto, but blocks_to_swap is "
                f"{self.blocks_to_swap}; remove max_vram_gb or set blocks_to_swap: auto"
            )
        return self

    @property
    def is_auto(self) -> bool:
        """Whether the number of blocks is sized from ``max_vram_gb``."""
        return self.blocks_to_swap == "auto"


def resolve_block_swap(config: object | None) -> BlockSwapConfig | None:
    """The effective block-swap settings of a trainer config, merging the seed's key into the plugin's section.

    Args:
        config: An ``LtxTrainerConfig`` with the plugin's fields, a :class:`BlockSwapConfig`, or None.

    Returns:
        The settings, or None when block swap is off (nothing set, or 0 blocks).

    Raises:
        ValueError: When ``acceleration.block_swap_blocks`` and ``block_swap.blocks_to_swap`` disagree, or the
            section leaves the number open with neither a budget nor the seed's key.
    """
    if config is None:
        return None
    if isinstance(config, BlockSwapConfig):
        section, seed = config, None
    else:
        section = getattr(config, "block_swap", None)
        seed = getattr(getattr(config, "acceleration", None), "block_swap_blocks", None)
    if section is None:
        if not seed:
            return None
        return BlockSwapConfig(blocks_to_swap=seed)

    explicit = "blocks_to_swap" in section.model_fields_set
    if seed is not None:
        if explicit and section.blocks_to_swap != seed:
            raise ValueError(
                f"acceleration.block_swap_blocks is {seed} but block_swap.blocks_to_swap is "
                f"{section.blocks_to_swap!r}; keep only one of them"
            )
        if not explicit:
            if section.max_vram_gb is not None:
                raise ValueError(
                    f"acceleration.block_swap_blocks is {seed} but block_swap.max_vram_gb asks for automatic sizing; "
                    "remove one of them"
                )
            section = section.model_copy(update={"blocks_to_swap": seed})
    elif not explicit and section.max_vram_gb is None:
        raise ValueError(
            "block_swap needs blocks_to_swap (a number of blocks) or max_vram_gb (for automatic sizing); "
            "or set acceleration.block_swap_blocks"
        )
    if section.blocks_to_swap == 0:
        return None
    return section


def _distributed_name(distributed_type: object | None) -> str:
    value = getattr(distributed_type, "value", distributed_type)
    return str(value or "NO").upper()


def validate_block_swap(
    config: object | None,
    num_blocks: int | None = None,
    distributed_type: object | None = None,
    cuda_available: bool = True,
) -> BlockSwapConfig | None:
    """Check block-swap settings before any model is loaded.

    Args:
        config: An ``LtxTrainerConfig`` with the plugin's fields (its LoRA mode, gradient checkpointing and
            quantization are checked too), a :class:`BlockSwapConfig`, or None.
        num_blocks: The model's transformer block count, when known (see :func:`num_blocks_from_checkpoint`).
        distributed_type: accelerate's ``DistributedType`` (or its name), when known.
        cuda_available: ``torch.cuda.is_available()``.

    Returns:
        The effective settings, or None when block swap is off.

    Raises:
        ValueError: With a message that says what to change.
    """
    swap = resolve_block_swap(config)
    if swap is None:
        return None
    n = swap.blocks_to_swap
    if num_blocks is not None and isinstance(n, int) and n > num_blocks:
        raise ValueError(
            f"block swap asks for {n} blocks but the model has {num_blocks} transformer blocks; use at most "
            f"{num_blocks} ({num_blocks - 1} keeps one block resident), or blocks_to_swap: auto with max_vram_gb"
        )
    kind = _distributed_name(distributed_type)
    if "FSDP" in kind:
        raise ValueError(
            "Block swap cannot run with FSDP: FSDP shards the same frozen weights that block swap streams. Use DDP "
            "(each process streams its own copy) or one GPU, or turn block swap off"
        )
    if "DEEPSPEED" in kind:
        raise ValueError(
            "Block swap cannot run with DeepSpeed, which partitions and offloads the weights itself. Use DDP or one "
            "GPU, or turn block swap off"
        )
    _check_trainer_config(config)
    if not cuda_available:
        raise ValueError(
            "Block swap streams weights to a CUDA GPU and none is available; remove the block_swap section and "
            "acceleration.block_swap_blocks (or set it to 0) to train without it"
        )
    return swap


def _check_trainer_config(config: object | None) -> None:
    model = getattr(config, "model", None)
    if getattr(model, "training_mode", "lora") != "lora":
        raise ValueError(
            "Block swap streams a frozen base model, so it needs model.training_mode: lora (full fine-tuning "
            "updates the weights it would stream)"
        )
    optimization = getattr(config, "optimization", None)
    if optimization is not None and not getattr(optimization, "enable_gradient_checkpointing", True):
        raise ValueError(
            "Block swap needs optimization.enable_gradient_checkpointing: true (a block's GPU slot is reused once "
            "the block has run, so its weights must not be kept for the backward pass)"
        )
    quantization = getattr(getattr(config, "acceleration", None), "quantization", None)
    if quantization not in SWAPPABLE_QUANTIZATIONS:
        swappable = ", ".join(q for q in SWAPPABLE_QUANTIZATIONS if q is not None)
        raise ValueError(
            f"Block swap streams bf16 and {swappable} weights; {quantization} weights are repacked for CUDA when "
            "they move. Use acceleration.quantization: int8 (or another of those), or none"
        )


@dataclass(frozen=True)
class SwapPlan:
    """The outcome of ``auto`` sizing (or the estimate for a fixed N).

    Attributes:
        blocks_to_swap: Blocks to stream.
        num_blocks: Blocks in the model.
        estimated_peak_bytes: Fixed bytes + resident blocks + slots + reserve.
        budget_bytes: The budget it was sized for (None for a fixed N).
        resident_block_bytes: Bytes of the blocks that stay on the GPU.
        slot_bytes: Bytes of the GPU slot ring.
    """

    blocks_to_swap: int
    num_blocks: int
    estimated_peak_bytes: int
    budget_bytes: int | None
    resident_block_bytes: int
    slot_bytes: int

    def describe(self) -> str:
        """One line for the log."""
        budget = f" <= max_vram_gb {self.budget_bytes / GB:.2f}" if self.budget_bytes is not None else ""
        return (
            f"{self.blocks_to_swap} of {self.num_blocks} blocks swapped; estimated peak "
            f"{self.estimated_peak_bytes / GB:.2f} GB{budget} (resident blocks "
            f"{self.resident_block_bytes / GB:.2f} GB, slots {self.slot_bytes / GB:.2f} GB)"
        )


def spread_blocks(num_blocks: int, blocks_to_swap: int) -> list[int]:
    """Indices of ``blocks_to_swap`` of ``num_blocks`` blocks, spread evenly (the engine's choice).

    Block ``i`` is swapped when ``floor((i + 1) * n / L)`` steps up at ``i``: with ``n = L - 1`` block 0 stays
    resident, with ``n = L / 2`` every other block is swapped.

    Raises:
        ValueError: If ``blocks_to_swap`` is not between 0 and ``num_blocks``.
    """
    if not 0 <= blocks_to_swap <= num_blocks:
        raise ValueError(f"blocks_to_swap must be between 0 and {num_blocks}, got {blocks_to_swap}")
    return [
        i
        for i in range(num_blocks)
        if ((i + 1) * blocks_to_swap) // num_blocks - (i * blocks_to_swap) // num_blocks == 1
    ]


#: VRAM that ``auto`` sizing sets aside per transformer block, on top of ``reserve_gb``, when the blocks run as CUDA
#: graphs. Measured at 48 blocks (int8, 24 swapped, 1024 video + 171 audio tokens, H100): the graph runs reserved
#: 21.25-21.41 GB against 12.16 GB allocated at their steady peak, and the same run compiled without graphs 14.24 GB:
#: 9.1-9.3 GB more, 0.19 GB a block. Where it sits (the graphs' private pool is the likely holder) is not measured yet:
#: ``full_scale.py`` rows carry ``graph_pool_reserved_gb`` for that. A flat 2 GB ran ``auto`` at 22 GB out of memory
#: (H100 and H200).
GRAPHS_RESERVE_GB_PER_BLOCK = 0.2


def planned_reserve_bytes(swap: BlockSwapConfig, cuda_graphs: bool, num_blocks: int) -> int:
    """VRAM the plan sets aside for activations and slack: ``reserve_gb``, plus
    :data:`GRAPHS_RESERVE_GB_PER_BLOCK` for each of the ``num_blocks`` blocks when ``auto`` sizes the swap for blocks
    that run as CUDA graphs."""
    extra = GRAPHS_RESERVE_GB_PER_BLOCK * num_blocks if cuda_graphs and swap.is_auto else 0.0
    return int((swap.reserve_gb + extra) * GB)


def slot_count(blocks_to_swap: int, prefetch: int) -> int:
    """GPU slots in the ring: the running block plus ``prefetch`` ahead, never more than the blocks swapped."""
    return min(blocks_to_swap, prefetch + 1)


def estimate_peak(
    block_bytes: Sequence[int],
    blocks_to_swap: int,
    fixed_bytes: int,
    prefetch: int,
    reserve_bytes: int,
) -> SwapPlan:
    """Estimated peak VRAM with ``blocks_to_swap`` blocks streamed.

    Args:
        block_bytes: Measured bytes of each block's frozen tensors, in block order.
        blocks_to_swap: Blocks streamed.
        fixed_bytes: Everything else that stays on the GPU: the non-block model, the LoRA parameters with their
            gradients and optimizer state, and what is already allocated.
        prefetch: The engine's prefetch depth.
        reserve_bytes: Headroom for activations.

    Returns:
        The plan with its estimate (``budget_bytes`` None).
    """
    swapped = set(spread_blocks(len(block_bytes), blocks_to_swap))
    resident = sum(b for i, b in enumerate(block_bytes) if i not in swapped)
    slot = max((block_bytes[i] for i in swapped), default=0) * slot_count(blocks_to_swap, prefetch)
    return SwapPlan(
        blocks_to_swap=blocks_to_swap,
        num_blocks=len(block_bytes),
        estimated_peak_bytes=fixed_bytes + resident + slot + reserve_bytes,
        budget_bytes=None,
        resident_block_bytes=resident,
        slot_bytes=slot,
    )


def plan_auto(
    block_bytes: Sequence[int],
    fixed_bytes: int,
    max_vram_bytes: int,
    prefetch: int,
    reserve_bytes: int,
) -> SwapPlan:
    """The smallest number of swapped blocks whose estimated peak fits ``max_vram_bytes``.

    Swapping ``n <= prefetch + 1`` blocks saves nothing (the ring holds them all), so the estimate is not monotone
    at the start; the search still returns the smallest fitting ``n``.

    Raises:
        ValueError: If even streaming every block does not fit; the message gives the smallest estimate.
    """
    for n in range(len(block_bytes) + 1):
        plan = estimate_peak(block_bytes, n, fixed_bytes, prefetch, reserve_bytes)
        if plan.estimated_peak_bytes <= max_vram_bytes:
            plan = SwapPlan(**{**plan.__dict__, "budget_bytes": max_vram_bytes})
            logger.info("Block swap auto: %s", plan.describe())
            return plan
    smallest = min(
        (estimate_peak(block_bytes, n, fixed_bytes, prefetch, reserve_bytes) for n in range(len(block_bytes) + 1)),
        key=lambda p: p.estimated_peak_bytes,
    )
    raise ValueError(
        f"block_swap.max_vram_gb={max_vram_bytes / GB:.2f} is too small: the lowest estimate is "
        f"{smallest.estimated_peak_bytes / GB:.2f} GB with {smallest.blocks_to_swap} of {len(block_bytes)} blocks "
        f"swapped (fixed {fixed_bytes / GB:.2f} GB, slots {smallest.slot_bytes / GB:.2f} GB, reserve "
        f"{reserve_bytes / GB:.2f} GB). Raise max_vram_gb, lower reserve_gb or prefetch, or quantize "
        "(acceleration.quantization: int8-quanto)"
    )


def num_blocks_from_checkpoint(path: str | Path) -> int | None:
    """The transformer block count in a checkpoint's ``config`` metadata, without loading any tensor.

    Args:
        path: A ``.safetensors`` checkpoint (LTX-2 monolith or transformer file).

    Returns:
        ``config.transformer.num_layers``, or None when the file has no such metadata or cannot be read.
    """
    try:
        from safetensors import safe_open  # noqa: PLC0415 - only needed for this lookup

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        config = json.loads(metadata.get("config", "{}"))
        value = config.get("transformer", {}).get("num_layers")
        return int(value) if value is not None else None
    except Exception as e:  # any unreadable file just means "unknown"
        logger.debug("No block count in %s: %s", path, e)
        return None


__all__ = [
    "GRAPHS_RESERVE_GB_PER_BLOCK",
    "SWAPPABLE_QUANTIZATIONS",
    "TRAINABLE_OVERHEAD",
    "BlockCount",
    "BlockSwapConfig",
    "SwapPlan",
    "estimate_peak",
    "num_blocks_from_checkpoint",
    "plan_auto",
    "planned_reserve_bytes",
    "resolve_block_swap",
    "slot_count",
    "spread_blocks",
    "validate_block_swap",
]
