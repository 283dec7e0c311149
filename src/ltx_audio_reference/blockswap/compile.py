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

**CUDA graphs** (``cuda_graphs=True``, ``mode="reduce-overhead"``): an eager ``torch.utils.checkpoint`` around a
compiled region breaks graph recording (its recompute frees the graph's inputs: pytorch #154306), so the checkpoint
moves *inside* the compiled region. The model's own checkpoint is turned off (its ``set_gradient_checkpointing``
records the request instead), and each block's graph is partitioned with ``activation_memory_budget=0``: autograd
saves only the graph's inputs and the backward graph recomputes the block, which is what activation checkpointing of
the whole region does. Each block then runs as one forward and one backward graph replay. Block swap keeps every
swapped block in a fixed GPU slot, so each block's weights have the same addresses at every replay, and loads a
block for its backward from a hook on its outputs (no forward pre-hook fires there any more). CUDA-graph trees record
one graph per block position and shape; :func:`graph_stats` counts the recordings.
"""

from __future__ import annotations

import contextlib
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
#: Set on the transformer while its compiled blocks recompute inside their graphs (the block-swap engine reads it).
RECOMPUTE_IN_GRAPH = "_ltx_audio_reference_recompute_in_graph"


def blocks_owner(model: nn.Module) -> nn.Module:
    """The module that holds ``transformer_blocks`` itself (the ltx-core model inside a peft or DDP wrapper).

    A peft model answers ``model.transformer_blocks`` through attribute forwarding, so the owner is looked up by its
    registered children, not by attribute.
    """
    return next((m for m in model.modules() if "transformer_blocks" in m._modules), model)


def recomputes_in_graph(model: nn.Module) -> bool:
    """Whether ``model``'s compiled blocks checkpoint inside their graphs (see the module docstring)."""
    return bool(blocks_owner(model).__dict__.get(RECOMPUTE_IN_GRAPH, False))


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
    cuda_graphs: bool = False
    graphs_failed: str | None = None
    _started: float | None = field(default=None, repr=False)
    _skips_at_start: int = field(default=0, repr=False)
    _hooks: list[Any] = field(default_factory=list, repr=False)


def compile_blocks(
    transformer: nn.Module,
    *,
    backend: str | Callable[..., Any] = "inductor",
    fallback: bool = False,
    mark_dynamic: bool = True,
    cuda_graphs: bool = False,
    graphs_fallback: bool | None = None,
    recompute_in_graph: bool | None = None,
    **compile_kwargs: Any,  # noqa: ANN401 - torch.compile's own arguments
) -> CompiledBlocks:
    """Compile every ``transformer.transformer_blocks[i].forward`` in place (see the module docstring).

    Args:
        transformer: The ltx-core ``LTXModel`` (not a wrapper; use ``find_transformer`` on a peft model).
        backend: ``torch.compile`` backend.
        fallback: On a compile error, log a warning and run the blocks eagerly from then on, instead of raising.
        mark_dynamic: Mark the sequence dims dynamic (one graph for every length).
        cuda_graphs: Record each block's forward and backward as CUDA graphs (``mode="reduce-overhead"``);
            implies ``recompute_in_graph``.
        graphs_fallback: Where a block's graph cannot be recorded, warn and run it compiled without a graph,
            instead of raising :class:`CompileUnavailableError` (default: ``fallback``).
        recompute_in_graph: Move gradient checkpointing inside the compiled region (default: ``cuda_graphs``).
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
    if recompute_in_graph is None:
        recompute_in_graph = cuda_graphs
    graphs_fallback = fallback if graphs_fallback is None else graphs_fallback
    if cuda_graphs and "mode" not in compile_kwargs:
        # mode="reduce-overhead" is options={"triton.cudagraphs": True}; torch.compile takes one or the other. A graph
        # that cannot be recorded raises (strict) instead of running without one.
        options = {"triton.cudagraphs": True, "triton.cudagraph_or_error": not graphs_fallback}
        compile_kwargs["options"] = {**options, **(compile_kwargs.get("options") or {})}
    eager_forward = cls.forward
    compiled = torch.compile(eager_forward, backend=backend, **compile_kwargs)
    record = CompiledBlocks(
        num_blocks=len(blocks),
        backend=getattr(backend, "__name__", str(backend)),
        fallback=fallback,
        cuda_graphs=cuda_graphs,
        _skips_at_start=_cudagraph_skips(),
    )
    if recompute_in_graph:
        _checkpoint_inside(transformer)
    if cuda_graphs:
        # One generation of CUDA-graph trees per training forward: the previous step's outputs are dead by then.
        record._hooks.append(transformer.register_forward_pre_hook(_mark_step_begin))

    forward = _compiled_forward(
        transformer, record, eager_forward, compiled, mark_dynamic=mark_dynamic, graphs_fallback=graphs_fallback
    )
    for block in blocks:
        block.__dict__[_MARK] = record
        # An instance attribute: nn.Module.__call__ runs the (eager) hooks, then calls it. A bound method, so that
        # copy.deepcopy(model) rebinds it to the copied block.
        block.forward = types.MethodType(forward, block)
    return record


def _compiled_forward(
    transformer: nn.Module,
    record: CompiledBlocks,
    eager_forward: Callable[..., Any],
    compiled: Callable[..., Any],
    *,
    mark_dynamic: bool,
    graphs_fallback: bool,
) -> Callable[..., Any]:
    """The ``forward`` every compiled block runs: the compiled graph under grad, eager otherwise (see the module
    docstring), with its fallbacks and CUDA-graph checks."""
    fallback, cuda_graphs, num_blocks, backend = record.fallback, record.cuda_graphs, record.num_blocks, record.backend
    owner = blocks_owner(transformer)  # looked up once: every block call asks it

    def graphs_error(reason: str) -> CompileUnavailableError:
        return CompileUnavailableError(
            f"CUDA graphs cannot be recorded for the transformer blocks ({reason}). Set acceleration.cuda_graphs: "
            "auto to run them compiled without graphs, or false"
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
            logger.info(
                "Compiling the transformer blocks (one graph for all %d, backend %s%s)...",
                num_blocks,
                backend,
                ", CUDA graphs" if cuda_graphs else "",
            )
            record._started = time.perf_counter()
        try:
            with _compile_settings(0.0 if recomputes_in_graph(owner) else None):
                out = compiled(self, *args, **kwargs)
        # Only compile failures: checkpoint's recompute stops itself early with an exception of its own.
        except (torch._dynamo.exc.TorchDynamoException, RuntimeError) as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            if cuda_graphs and "cudagraph" in str(e).lower():
                raise graphs_error(reason) from e
            if not isinstance(e, torch._dynamo.exc.TorchDynamoException):
                raise
            if not fallback:
                raise CompileUnavailableError(
                    f"Compiling the transformer blocks failed ({reason}). Set acceleration.compile_blocks: auto to "
                    "fall back to eager, or false"
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
        if cuda_graphs and record.graphs_failed is None and _cudagraph_skips() > record._skips_at_start:
            record.graphs_failed = "torch skipped the CUDA graph of a block (its warning above says why)"
            if not graphs_fallback:
                raise graphs_error(record.graphs_failed)
            logger.warning("CUDA graphs: %s; the blocks run compiled without graphs", record.graphs_failed)
        return out

    return forward


def uncompile_blocks(transformer: nn.Module) -> None:
    """Undo :func:`compile_blocks`: every block runs its class's eager ``forward`` again."""
    for block in transformer.transformer_blocks:
        record = block.__dict__.pop(_MARK, None)
        if record is not None:
            block.__dict__.pop("forward", None)
            for hook in record._hooks:
                hook.remove()
            record._hooks.clear()
    owner = blocks_owner(transformer)
    if owner.__dict__.pop("set_gradient_checkpointing", None) is not None:
        owner.set_gradient_checkpointing(owner.__dict__.pop(RECOMPUTE_IN_GRAPH, False))


def _checkpoint_inside(transformer: nn.Module) -> None:
    """Route the model's gradient checkpointing into the compiled blocks (see the module docstring).

    ``set_gradient_checkpointing`` (the stock trainer calls it after the model hooks ran) records the request on
    the instance and keeps the model's own eager checkpoint off.
    """
    owner = blocks_owner(transformer)
    stock = type(owner).set_gradient_checkpointing

    def set_gradient_checkpointing(enable: bool) -> None:
        owner.__dict__[RECOMPUTE_IN_GRAPH] = bool(enable)
        stock(owner, False)

    requested = bool(getattr(owner, "_enable_gradient_checkpointing", False))
    owner.__dict__["set_gradient_checkpointing"] = set_gradient_checkpointing
    set_gradient_checkpointing(requested)


#: Functions that AOT autograd's cache does not know but that are safe to cache (keyed by the torch version): ltx-core
#: >= 1.2 runs attention under ``sdpa_kernel(..., set_priority=True)``, whose traced graph calls these two to pick and
#: restore the attention backends. Each depends only on its arguments.
_CACHEABLE = dict.fromkeys(
    ("torch.nn.attention._backend_from_string", "torch.nn.attention._sdpa_kernel"), torch.__version__
)


def _compile_settings(budget: float | None) -> contextlib.AbstractContextManager:
    """AOT autograd's settings for a block's compile (and for its cache lookups, whose key holds them).

    - ``activation_memory_budget``: ``0.0`` makes the partitioner save only the graph's inputs (full recompute);
      None leaves it unchanged.
    - ``autograd_cache_allow_custom_autograd_functions``: AOT autograd's on-disk cache refuses (bypasses) any graph
      that holds a ``torch.autograd.Function``, and the ``int8`` backends' matmul is one (Dynamo traces its forward
      and backward into the graph; it holds no state of its own).
    - ``unsafe_marked_cacheable_functions`` (inductor's): :data:`_CACHEABLE`, which the same cache refuses otherwise.

    Without the last two, every start retraces and repartitions the blocks' graphs instead of loading them (see
    ``docs/speed.md``).
    """
    from torch._inductor import config as inductor_config  # noqa: PLC0415

    settings: dict[str, Any] = {}
    if hasattr(torch._functorch.config, "autograd_cache_allow_custom_autograd_functions"):  # torch >= 2.6
        settings["autograd_cache_allow_custom_autograd_functions"] = True
    if budget is not None:
        settings["activation_memory_budget"] = budget
    stack = contextlib.ExitStack()
    stack.enter_context(torch._functorch.config.patch(**settings))
    marked = getattr(inductor_config, "unsafe_marked_cacheable_functions", None)
    if isinstance(marked, dict):
        stack.enter_context(inductor_config.patch(unsafe_marked_cacheable_functions={**marked, **_CACHEABLE}))
    return stack


def _mark_step_begin(module: nn.Module, args: Any) -> None:  # noqa: ANN401, ARG001
    if torch.is_grad_enabled() and module.training:
        torch.compiler.cudagraph_mark_step_begin()


def _cudagraph_skips() -> int:
    return int(torch._dynamo.utils.counters["inductor"]["cudagraph_skips"])


def graph_stats(device: torch.device | int | None = None) -> dict[str, int]:
    """What CUDA-graph trees did on ``device``: graphs recorded, re-records, skips (zeros without CUDA graphs).

    ``recorded`` counts every recording (one per block position, direction and shape in steady state);
    ``rerecords`` counts the recordings torch made again for a node it had recorded before (unexpected address or
    shape changes); ``skips`` counts graphs torch ran without a CUDA graph.
    """
    stats = {"recorded": 0, "rerecords": 0, "skips": _cudagraph_skips()}
    if not torch.cuda.is_available():
        return stats
    from torch._inductor import cudagraph_trees  # noqa: PLC0415

    index = torch.device(device if device is not None else "cuda").index
    container = cudagraph_trees.get_container(index if index is not None else torch.cuda.current_device())
    manager = container.tree_manager
    if manager is None:
        return stats
    nodes = [n for roots in manager.roots.values() for n in roots]
    while nodes:
        node = nodes.pop()
        stats["recorded"] += 1
        nodes.extend(child for children in node.children.values() for child in children)
    stats["rerecords"] = sum(sum(per_function.values()) for per_function in manager.num_rerecord.values())
    return stats


def compiled_record(transformer: nn.Module) -> CompiledBlocks | None:
    """The record of :func:`compile_blocks` on ``transformer``, or None when its blocks are not compiled."""
    blocks = list(getattr(transformer, "transformer_blocks", ()))
    return blocks[0].__dict__.get(_MARK) if blocks else None


__all__ = [
    "RECOMPUTE_IN_GRAPH",
    "CompileSetting",
    "CompileUnavailableError",
    "CompiledBlocks",
    "blocks_owner",
    "compile_blocks",
    "compile_problem",
    "compiled_record",
    "graph_stats",
    "mark_sequence_dynamic",
    "recomputes_in_graph",
    "uncompile_blocks",
]
