"""Block-swap plugin: config fields and model configuration hooks (block swap and compiled blocks).

Registered as the ``block_swap`` entry point of the ``ltx_trainer`` group. It adds ``acceleration.block_swap_blocks``
(the seed's key) and a root ``block_swap`` section to the stock config, validates them before the model loads, and
sets the engine up right before ``accelerator.prepare``: the swapped blocks' frozen weights go to (pinned) host
memory, everything else to the device, and the hook turns accelerate's device placement off so the swapped blocks
never reach the GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ltx_audio_reference.blockswap.config import (
    GB,
    TRAINABLE_OVERHEAD,
    BlockCount,
    BlockSwapConfig,
    estimate_peak,
    num_blocks_from_checkpoint,
    plan_auto,
    planned_reserve_bytes,
    spread_blocks,
    validate_block_swap,
)
from ltx_audio_reference.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from ltx_audio_reference.blockswap.engine import BlockSwapEngine
    from ltx_audio_reference.registry import ConfigFieldRegistry, ModelContext

logger = logging.getLogger(__name__)

PLUGIN_NAME = "block_swap"
NOTES_KEY = "block_swap"
COMPILE_NOTES_KEY = "compile_blocks"


@hookimpl
def register_config_fields(register: ConfigFieldRegistry) -> None:
    """Add ``acceleration.block_swap_blocks``, ``acceleration.compile_blocks`` and the ``block_swap`` section."""
    register(
        "acceleration",
        "block_swap_blocks",
        BlockCount | None,
        Field(
            default=None,
            description=(
                "Stream this many transformer blocks' frozen weights from host memory to the GPU during training "
                "(0 or unset = off). The block_swap section offers more knobs."
            ),
        ),
    )
    register(
        "acceleration",
        "compile_blocks",
        bool | Literal["auto"],
        Field(
            default=False,
            description=(
                "Compile each transformer block's forward (one graph serves every block; works with block swap, "
                "int8-quanto, LoRA, gradient checkpointing and DDP). true: stop with a clear error where it cannot "
                "compile; auto: fall back to eager with a warning; false: eager."
            ),
        ),
    )
    register(
        "acceleration",
        "cuda_graphs",
        bool | Literal["auto"],
        Field(
            default=False,
            description=(
                "Record each compiled block's forward and backward as CUDA graphs (needs compile_blocks; gradient "
                "checkpointing then runs inside the graphs, and swapped blocks use fixed GPU slots). true: stop with "
                "a clear error where a graph cannot be recorded; auto: run compiled without graphs, with a warning; "
                "false: no graphs."
            ),
        ),
    )
    register(
        "root",
        "block_swap",
        BlockSwapConfig | None,
        Field(
            default=None,
            description="Training-time block swap (blocks_to_swap, max_vram_gb, prefetch, pin_memory).",
        ),
    )


def _launch_distributed_type() -> str | None:
    """FSDP or DeepSpeed as ``accelerate launch`` announces it, before any Accelerator exists."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return "DEEPSPEED"
    return None


def _compile_setting(config: object) -> bool | str:
    return getattr(getattr(config, "acceleration", None), "compile_blocks", False)


def _graphs_setting(config: object) -> bool | str:
    return getattr(getattr(config, "acceleration", None), "cuda_graphs", False)


def cuda_graphs_problem(config: object, cuda_available: bool) -> str | None:
    """Why ``acceleration.cuda_graphs`` cannot record graphs for ``config`` here, or None when it can."""
    if not cuda_available:
        return "CUDA graphs need a CUDA GPU"
    accumulation = getattr(getattr(config, "optimization", None), "gradient_accumulation_steps", 1)
    if accumulation > 1:
        return (
            f"gradient_accumulation_steps is {accumulation}: gradients that accumulate across micro-batches would "
            "live in CUDA-graph memory, which the next replay overwrites"
        )
    return None


def _check_graphs(config: object, cuda_available: bool) -> None:
    setting = _graphs_setting(config)
    if not setting:
        return
    if not _compile_setting(config):
        raise ValueError(
            "acceleration.cuda_graphs records the compiled blocks' graphs: set acceleration.compile_blocks: auto "
            "(or true) too, or cuda_graphs: false"
        )
    problem = cuda_graphs_problem(config, cuda_available)
    if problem is None:
        return
    if setting is True:
        raise ValueError(f"acceleration.cuda_graphs: true, but {problem}. Set acceleration.cuda_graphs: auto or false")
    logger.warning("acceleration.cuda_graphs: auto: %s; the blocks run compiled without graphs", problem)


def _check_compile(config: object) -> None:
    """``compile_blocks: true`` where the backend cannot run stops here, before the model loads; ``auto`` warns.
    The same for ``cuda_graphs``."""
    setting = _compile_setting(config)
    if not setting:
        _check_graphs(config, cuda_available=False)
        return
    import torch  # noqa: PLC0415

    from ltx_audio_reference.blockswap.compile import compile_problem  # noqa: PLC0415

    _check_graphs(config, cuda_available=torch.cuda.is_available())
    problem = compile_problem("cuda" if torch.cuda.is_available() else "cpu")
    if problem is None:
        return
    if setting is True:
        raise ValueError(
            f"acceleration.compile_blocks: true, but {problem}. Install it, or set acceleration.compile_blocks: auto "
            "(eager where it cannot compile) or false"
        )
    logger.warning("acceleration.compile_blocks: auto: %s; the blocks train eagerly", problem)


@hookimpl
def validate_config(config: object) -> None:
    """Reject bad block-swap and compile settings before the model loads (block count read from the checkpoint)."""
    _check_compile(config)
    if getattr(config, "block_swap", None) is None and not getattr(
        getattr(config, "acceleration", None), "block_swap_blocks", None
    ):
        return
    import torch  # noqa: PLC0415 - only when block swap is configured

    model_path = getattr(getattr(config, "model", None), "model_path", None)
    num_blocks = None
    if model_path and Path(str(model_path)).is_file():
        num_blocks = num_blocks_from_checkpoint(model_path)
    validate_block_swap(
        config,
        num_blocks=num_blocks,
        distributed_type=_launch_distributed_type(),
        cuda_available=torch.cuda.is_available(),
    )


def setup_block_swap(
    model: object,
    swap: BlockSwapConfig,
    device: object,
    distributed_type: object | None = None,
    cuda_graphs: bool = False,
) -> BlockSwapEngine | None:
    """Size, build and place the engine on a LoRA-wrapped model (what ``configure_model`` does, without the trainer).

    Args:
        model: The peft-wrapped transformer, before ``accelerator.prepare``.
        swap: Validated settings (see :func:`~ltx_audio_reference.blockswap.config.validate_block_swap`).
        device: The training device.
        distributed_type: accelerate's ``DistributedType``; for DDP the swapped tensors are marked for DDP to skip.
        cuda_graphs: The blocks will run as CUDA graphs (``auto`` sizing sets more VRAM aside).

    Returns:
        The placed engine, or None when ``auto`` sizing needs no swap (the caller then places the model as usual).
    """
    import torch  # noqa: PLC0415

    from ltx_audio_reference.blockswap.engine import BlockSwapEngine  # noqa: PLC0415
    from ltx_audio_reference.blockswap.tensors import (  # noqa: PLC0415
        block_frozen_bytes,
        find_transformer,
        freeze_base_weights,
        tensor_bytes,
    )

    device = torch.device(device)
    transformer = find_transformer(model)
    blocks = list(transformer.transformer_blocks)
    validate_block_swap(swap, num_blocks=len(blocks), cuda_available=True)
    freeze_base_weights(model)

    block_bytes = [block_frozen_bytes(b) for b in blocks]
    trainable = [p for p in model.parameters() if p.requires_grad]
    everything = tensor_bytes([*model.parameters(), *model.buffers()])
    non_block = max(everything - sum(block_bytes) - tensor_bytes(trainable), 0)
    allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    # The streamed load puts the resident parts on the GPU before this runs: they are counted above and in the plan,
    # so they are taken out of what is already allocated.
    on_device = tensor_bytes([t for t in (*model.parameters(), *model.buffers()) if t.device.type == device.type])
    fixed = max(allocated - on_device, 0) + non_block + TRAINABLE_OVERHEAD * tensor_bytes(trainable)
    reserve = planned_reserve_bytes(swap, cuda_graphs, len(blocks))
    if swap.is_auto:
        assert swap.max_vram_gb is not None
        plan = plan_auto(
            block_bytes,
            fixed_bytes=fixed,
            max_vram_bytes=int(swap.max_vram_gb * GB),
            prefetch=swap.prefetch,
            reserve_bytes=reserve,
        )
    else:
        plan = estimate_peak(block_bytes, int(swap.blocks_to_swap), fixed, swap.prefetch, reserve)
        logger.info("Block swap: %s", plan.describe())
    if plan.blocks_to_swap == 0:
        logger.info("Block swap: the model fits max_vram_gb without swapping; training fully resident")
        return None

    engine = BlockSwapEngine(
        model,
        blocks=spread_blocks(len(blocks), plan.blocks_to_swap),
        device=device,
        prefetch=swap.prefetch,
        pin_memory=swap.pin_memory,
    )
    engine.place(model)
    if "MULTI_GPU" in str(getattr(distributed_type, "value", distributed_type) or "").upper():
        # DDP broadcasts and device-checks every parameter it is not told to skip; each rank streams its own copy.
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, engine.swapped_tensor_names(model)
        )
    if device.type == "cuda":
        logger.info("Block swap: %.2f GB allocated after placement", torch.cuda.memory_allocated(device) / GB)
    return engine


@hookimpl
def configure_model(context: ModelContext) -> None:
    """Set up block swap on the LoRA-wrapped model (device placement off), then compile the blocks if asked."""
    _setup_swap(context)
    setting = _compile_setting(context.config)
    if not setting:
        return
    import torch  # noqa: PLC0415

    from ltx_audio_reference.blockswap.compile import compile_blocks, compile_problem  # noqa: PLC0415
    from ltx_audio_reference.blockswap.tensors import find_transformer  # noqa: PLC0415

    problem = compile_problem(context.device)
    if problem is not None:  # compile_blocks: true with this problem was refused before the model loaded
        logger.warning("Transformer blocks not compiled: %s", problem)
        return
    context.notes[COMPILE_NOTES_KEY] = compile_blocks(
        find_transformer(context.model),
        fallback=setting == "auto",
        cuda_graphs=_records_graphs(context.config, torch.device(context.device)),
        graphs_fallback=_graphs_setting(context.config) == "auto",
    )


def _records_graphs(config: object, device: torch.device) -> bool:
    """Whether the compiled blocks will run as CUDA graphs here (a ``true`` setting that cannot was refused before
    the model loaded; ``auto`` warned and runs without)."""
    from ltx_audio_reference.blockswap.compile import compile_problem  # noqa: PLC0415

    if not _compile_setting(config) or not _graphs_setting(config) or compile_problem(device) is not None:
        return False
    return cuda_graphs_problem(config, device.type == "cuda") is None


def _setup_swap(context: ModelContext) -> None:
    import torch  # noqa: PLC0415

    swap = validate_block_swap(
        context.config,
        distributed_type=getattr(context.accelerator, "distributed_type", None),
        cuda_available=_cuda_available(),
    )
    if swap is None:
        return
    engine = setup_block_swap(
        context.model,
        swap,
        device=context.device,
        distributed_type=getattr(context.accelerator, "distributed_type", None),
        cuda_graphs=_records_graphs(context.config, torch.device(context.device)),
    )
    if engine is None:
        return
    context.device_placement = False
    context.notes[NOTES_KEY] = engine


def _cuda_available() -> bool:
    import torch  # noqa: PLC0415

    return torch.cuda.is_available()


__all__ = [
    "COMPILE_NOTES_KEY",
    "NOTES_KEY",
    "PLUGIN_NAME",
    "configure_model",
    "cuda_graphs_problem",
    "register_config_fields",
    "setup_block_swap",
    "validate_config",
]
