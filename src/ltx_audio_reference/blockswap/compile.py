"""Regional compile that works with block swap: each transformer block's ``forward`` is compiled, its hooks are not.

``block.compile()`` compiles the block's ``__call__``, hooks included, so Dynamo traces into the swap engine's
pre-hook (CUDA streams and events) and fails (``'torch.Stream' object has no attribute 'cuda_stream'``). Here each
block's *forward* becomes a compiled function and ``nn.Module.__call__`` stays eager: the engine's pre-hooks and
``torch.utils.checkpoint``'s recompute run outside the graph, as in eager training, and the engine adds no arithmetic.

- **One graph serves every block.** The class's ``forward`` is compiled once and each block passes itself as
  ``self``; Dynamo guards on the module's type and the attributes the trace reads, not on its identity, so 48
  identical blocks share one cache entry (two graphs in all: the first block's input needs no gradient, the
  others' do).
- **No recompile storm.** The sequence dims of every per-token input (video and audio tokens, text tokens, their
  RoPE tables and masks) are marked dynamic (``maybe_mark_dynamic``; size-1 broadcast dims stay static), so
  references and targets of other lengths reuse the graphs.
- **State-dict keys are unchanged**: only an instance attribute ``forward`` is set, a bound method (so
  ``copy.deepcopy`` rebinds it); no wrapper module, no ``_orig_mod.``, and the export keeps ComfyUI's keys.
- Blocks run eagerly outside a gradient-enabled forward (validation, the ``on_checkpoint`` probes, inference), whose
  STG and modality perturbations would add graphs for little gain.

Works with optimum-quanto int8 weights, peft LoRA, gradient checkpointing and DDP (``accelerator.prepare`` wraps
the model after this).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: ``acceleration.compile_blocks``: ``true`` compiles and stops with a clear error when it cannot; ``"auto"`` compiles
#: where it can and falls back to eager with a warning; ``false`` (default) trains eagerly.
CompileSetting = bool | Literal["auto"]

_MARK = "_ltx_audio_reference_compiled"


class CompileUnavailableError(RuntimeError):
    """The requested compile backend cannot run here; the message says what is missing and how to fix it."""


def compile_problem(device: torch.device | str, backend: str = "inductor") -> str | None:
    """Why ``backend`` cannot compile on ``device`` here, or None when it can (checked before any model loads)."""
    if backend != "inductor":
        return None
    device = torch.device(device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton  # noqa: PLC0415

        if not has_triton():
            return "the inductor backend needs Triton on CUDA (pip install triton, matching your torch)"
        return None
    compilers = ("c++", "g++", "clang++", "cl")
    if not any(shutil.which(c) for c in compilers):
        return "the inductor backend needs a C++ compiler on the CPU (e.g. apt-get install g++)"
    return None


def _mark(tensor: object, dim: int) -> None:
    if isinstance(tensor, torch.Tensor) and tensor.ndim > dim and tensor.shape[dim] > 1:
        torch._dynamo.maybe_mark_dynamic(tensor, dim)


def mark_sequence_dynamic(args: object) -> None:
    """Mark the token dims of one modality's block inputs (ltx-core's ``TransformerArgs``) dynamic."""
    if args is None or not dataclasses.is_dataclass(args):
        return
    for name in ("x", "timesteps", "embedded_timestep", "context", "cross_scale_shift_timestep", "prompt_timestep"):
        _mark(getattr(args, name, None), 1)
    for name in ("positional_embeddings", "cross_positional_embeddings"):
        value = getattr(args, name, None)
        for table in value if isinstance(value, tuple | list) else (value,):
            if isinstance(table, torch.Tensor):
                _mark(table, table.ndim - 2)  # interleaved [B, T, D] or split [B, H, T, D/2]
    context_mask = getattr(args, "context_mask", None)
    if isinstance(context_mask, torch.Tensor):
        _mark(context_mask, context_mask.ndim - 1)
    mask = getattr(args, "self_attention_mask", None)
    if isinstance(mask, torch.Tensor):
        _mark(mask, mask.ndim - 2)
        _mark(mask, mask.ndim - 1)


@dataclass
class CompiledBlocks:
    """What :func:`compile_blocks` did, and what happened since (for logs, tests and benchmarks)."""

    num_blocks: int
    backend: str
    fallback: bool
    compiled_calls: int = 0
    eager_calls: int = 0
    failed: str | None = None
    first_call_s: float | None = None
    _started: float | None = field(default=None, repr=False)


def compile_blocks(
    transformer: nn.Module,
    *,
    backend: str | Callable[..., Any] = "inductor",
    fallback: bool = False,
    mark_dynamic: bool = True,
    **compile_kwargs: Any,  # noqa: ANN401 - torch.compile's own arguments
) -> CompiledBlocks:
    """Compile every ``transformer.transformer_blocks[i].forward`` in place (see the module docstring).

    Args:
        transformer: The ltx-core ``LTXModel`` (not a wrapper; use ``find_transformer`` on a peft model).
        backend: ``torch.compile`` backend.
        fallback: On a compile error, log a warning and run the blocks eagerly from then on, instead of raising.
        mark_dynamic: Mark the sequence dims dynamic (one graph for every length).
        **compile_kwargs: More ``torch.compile`` arguments (``mode``, ``options``).

    Returns:
        The record of the compiled blocks, updated as they run.

    Raises:
        TypeError: If the blocks are of different classes, or already compiled.
    """
    blocks = list(transformer.transformer_blocks)
    if not blocks:
        raise TypeError(f"{type(transformer).__name__} has no transformer blocks to compile")
    cls = type(blocks[0])
    if any(type(b) is not cls for b in blocks):
        raise TypeError("All transformer blocks must be of one class to share one compiled graph")
    if any(_MARK in b.__dict__ for b in blocks):
        raise TypeError("The transformer blocks are already compiled")
    # ltx-core's attention backends are typing.Protocol classes, which rewrite their __dict__ on first instantiation;
    # instantiate one now so the class-dict guard of the first trace does not fail once (a wasted recompile).
    try:
        from ltx_core.model.transformer.attention import PytorchAttention  # noqa: PLC0415

        PytorchAttention()
    except (ImportError, TypeError):  # older ltx-core layouts: nothing to warm
        pass
    eager_forward = cls.forward
    compiled = torch.compile(eager_forward, backend=backend, **compile_kwargs)
    record = CompiledBlocks(
        num_blocks=len(blocks), backend=getattr(backend, "__name__", str(backend)), fallback=fallback
    )

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        if record.failed is not None or not torch.is_grad_enabled():
            record.eager_calls += 1
            return eager_forward(self, *args, **kwargs)
        if mark_dynamic:
            mark_sequence_dynamic(kwargs["video"] if "video" in kwargs else (args[0] if args else None))
            mark_sequence_dynamic(kwargs["audio"] if "audio" in kwargs else (args[1] if len(args) > 1 else None))
        first = record.compiled_calls == 0
        if first:
            logger.info("Compiling the transformer blocks (one graph for all %d, backend %s)...", len(blocks), backend)
            record._started = time.perf_counter()
        try:
            out = compiled(self, *args, **kwargs)
        # Only compile failures: checkpoint's recompute stops itself early with an exception of its own.
        except torch._dynamo.exc.TorchDynamoException as e:
            if not fallback:
                raise CompileUnavailableError(
                    f"Compiling the transformer blocks failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
                    "Set acceleration.compile_blocks: auto to fall back to eager, or false"
                ) from e
            record.failed = f"{type(e).__name__}: {e}"
            logger.warning("Compiling the transformer blocks failed (%s); training them eagerly", record.failed[:300])
            record.eager_calls += 1
            return eager_forward(self, *args, **kwargs)
        record.compiled_calls += 1
        if first:
            record.first_call_s = time.perf_counter() - record._started
            logger.info(
                "Transformer blocks compiled in %.1f s (the backward graph compiles in the first backward pass)",
                record.first_call_s,
            )
        return out

    for block in blocks:
        block.__dict__[_MARK] = record
        # An instance attribute: nn.Module.__call__ runs the (eager) hooks, then calls it. A bound method, so that
        # copy.deepcopy(model) rebinds it to the copied block.
        block.forward = types.MethodType(forward, block)
    return record


def uncompile_blocks(transformer: nn.Module) -> None:
    """Undo :func:`compile_blocks`: every block runs its class's eager ``forward`` again."""
    for block in transformer.transformer_blocks:
        if block.__dict__.pop(_MARK, None) is not None:
            block.__dict__.pop("forward", None)


def compiled_record(transformer: nn.Module) -> CompiledBlocks | None:
    """The record of :func:`compile_blocks` on ``transformer``, or None when its blocks are not compiled."""
    blocks = list(getattr(transformer, "transformer_blocks", ()))
    return blocks[0].__dict__.get(_MARK) if blocks else None


__all__ = [
    "CompileSetting",
    "CompileUnavailableError",
    "CompiledBlocks",
    "compile_blocks",
    "compile_problem",
    "compiled_record",
    "mark_sequence_dynamic",
    "uncompile_blocks",
]
