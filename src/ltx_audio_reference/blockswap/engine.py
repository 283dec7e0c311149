"""Training-time block swap: frozen base weights streamed host-to-device around each transformer block.

In LoRA training the base model is frozen, so its weights only ever travel host-to-device. The engine keeps a
permanent (pinned) host copy of every swapped block's frozen tensors in one flat buffer per block, and a small ring
of GPU slots, each one flat buffer large enough for a block. Where a block's tensors already fill one host buffer of
their own (the streamed load and the quantized-weight cache read every part into one), that buffer becomes the host
copy and is pinned in place, with no copy. Loading a block is a single ``copy_`` from its host
buffer into a free slot on a side CUDA stream; the compute stream waits on that copy's event before the block runs,
and the copy stream waits on the compute stream's event before it overwrites a slot.

The engine plugs into the model with forward pre-hooks on the blocks, so it adds no wrapper module and the
state-dict keys stay ``transformer_blocks.N.``. A block's pre-hook fires three times per training step: in the
forward pass, and again when non-reentrant gradient checkpointing recomputes the block during the backward pass,
which visits the blocks in reverse. The engine predicts the order (forward, then backward from the top, then the
next forward from the bottom), keeps ``prefetch`` blocks in flight ahead of the current one, and reuses a slot only
once the block in it is done:

- in the forward pass a checkpointed block saves no weight for backward, so its slot is free once its kernels are
  queued;
- in the backward pass autograd runs the graph's nodes in decreasing creation order on the device's queue, so when
  the recompute of block ``j`` starts, every node of block ``j + 1`` (the last readers of its weights) has been
  queued.

Any other order (validation, a partial backward) stays correct: a block that is not in a slot is loaded on demand.
LoRA parameters, their gradients and the optimizer state never move.

optimum-quanto weights are tensor subclasses whose payload lives in inner tensors (``_data``, ``_scale``);
assigning ``Parameter.data`` would leave those behind. The engine flattens any traceable wrapper subclass with
``__tensor_flatten__``, streams the inner tensors, and swaps prebuilt device-side wrappers (one per slot) into the
module, so the quantized module always sees a consistent tensor on the right device.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ltx_audio_reference.blockswap.compile import blocks_owner, recomputes_in_graph
from ltx_audio_reference.blockswap.config import slot_count
from ltx_audio_reference.blockswap.tensors import (
    ALIGNMENT,
    Leaf,
    adapter_tensor_ids,
    align,
    find_transformer,
    flatten,
    is_quantized,
    view,
)

logger = logging.getLogger(__name__)

_FORWARD = "forward"
_BACKWARD = "backward"


@dataclass
class _Entry:
    """One frozen parameter or buffer of a swapped block."""

    owners: list[tuple[nn.Module, str]]
    kind: Literal["param", "buffer", "subclass"]
    leaves: list[Leaf]
    rebuild: Callable[[list[torch.Tensor]], torch.Tensor] | None
    param: nn.Parameter | None = None


@dataclass
class _Block:
    index: int
    module: nn.Module
    entries: list[_Entry]
    nbytes: int
    host: torch.Tensor | None = None
    host_values: list[torch.Tensor] = field(default_factory=list)
    slot_values: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    slot: int | None = None
    active: bool = False


@dataclass
class SwapStats:
    """Counters since the last :meth:`BlockSwapEngine.reset_stats`.

    Attributes:
        loads: Blocks copied host-to-device.
        bytes: Bytes copied host-to-device.
        misses: Loads issued for the block about to run (its copy could not hide behind compute).
        copy_ms: Summed duration of the copies on the copy stream (``profile=True`` only).
    """

    loads: int = 0
    bytes: int = 0
    misses: int = 0
    copy_ms: float = 0.0

    @property
    def gb_per_s(self) -> float:
        """Achieved host-to-device bandwidth of the profiled copies, in GB/s (0 when not profiled)."""
        return self.bytes / self.copy_ms / 1e6 if self.copy_ms > 0 else 0.0


#: How much larger than the block's own aligned layout a host buffer may be and still be adopted as its host copy.
ADOPT_SLACK = 1.01


def _adoptable(leaves: list[torch.Tensor], nbytes: int) -> torch.Tensor | None:
    """The one host buffer that ``leaves`` (a block's frozen tensors) are views of, as a flat byte tensor, when it can
    serve as the block's host copy as it is; else None (the engine copies them into a buffer of its own).

    It can when every leaf is a contiguous view of one unpinned CPU storage at an offset aligned as the engine aligns
    its own (so slot views keep the kernels a resident weight gets), and the storage holds little else: at most
    :data:`ADOPT_SLACK` times ``nbytes``, the block's own aligned layout, since the whole storage travels to the GPU.
    """
    if not leaves or any(leaf.device.type != "cpu" or not leaf.is_contiguous() for leaf in leaves):
        return None
    storage = leaves[0].untyped_storage()
    base = storage.data_ptr()
    if storage.nbytes() > nbytes * ADOPT_SLACK or any(leaf.untyped_storage().data_ptr() != base for leaf in leaves):
        return None
    if any((leaf.data_ptr() - base) % ALIGNMENT for leaf in leaves):
        return None
    flat = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,))
    return None if flat.is_pinned() else flat


#: Linux ``madvise`` advice values (``<asm-generic/mman-common.h>``).
MADV_DONTFORK, MADV_DOFORK = 10, 11
#: Buffers this large come from ``mmap`` in glibc's allocator (its threshold tops out at 32 MiB), so their pages hold
#: nothing but the buffer; smaller ones may share pages with other allocations and are left alone.
DONTFORK_MIN_BYTES = 64 << 20


def _madvise(ptr: int, nbytes: int, advice: int) -> bool:
    """``madvise`` on the whole pages inside ``[ptr, ptr + nbytes)``; whether it was applied."""
    if sys.platform != "linux":
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    start, end = (ptr + page - 1) // page * page, (ptr + nbytes) // page * page
    if end <= start:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(start, end - start, advice) == 0


def keep_out_of_forks(ptr: int, nbytes: int) -> bool:
    """Keep a page-locked host buffer out of child processes (``MADV_DONTFORK``); whether it was applied.

    The NVIDIA driver pins ``cudaHostRegister``'d pages with ``pin_user_pages()``, and Linux (5.9 and later) copies such
    pages into a child at ``fork()`` rather than share them copy-on-write. PyTorch's ``DataLoader`` forks its workers
    after block swap has pinned the swapped blocks, so each worker would hold a private copy of them (9.3 GB at 48
    blocks) and every fork would take as long as copying it (``benchmarks/fork_pinned.py`` measures both). Children
    never read the model's weights: with the advice they do not get the range at all. Only buffers of at least
    :data:`DONTFORK_MIN_BYTES` are advised (whole pages inside the buffer only), so no page is shared with another
    allocation that a child might use.
    """
    return nbytes >= DONTFORK_MIN_BYTES and _madvise(ptr, nbytes, MADV_DONTFORK)


def _unregister_host(registered: list[tuple[int, int, bool]]) -> None:
    for ptr, nbytes, dontfork in registered:
        if dontfork:  # the memory may be reused by the allocator once freed: children get it again
            _madvise(ptr, nbytes, MADV_DOFORK)
        torch.cuda.cudart().cudaHostUnregister(ptr)


class BlockSwapEngine:
    """Streams the frozen weights of some transformer blocks from host memory to the GPU around their use.

    Typical use, before ``accelerator.prepare`` and after LoRA and gradient checkpointing are set::

        engine = BlockSwapEngine(peft_model, blocks=spread_blocks(48, 24), device=device, prefetch=1)
        engine.place(peft_model)  # everything else to the device; swapped blocks stay on the host

    Args:
        model: The model (``LTXModel``, or a peft/DDP wrapper around one).
        blocks: Indices of the blocks to stream.
        device: The compute device. Any device works (CPU runs the same logic without streams, for tests);
            training needs CUDA for the copies to overlap compute.
        prefetch: Blocks loaded ahead of the one running (>= 1). The engine allocates
            ``min(len(blocks), prefetch + 1)`` GPU slots.
        pin_memory: Page-lock the host copies (fast asynchronous copies). Without it copies are synchronous.
        profile: Time every copy with CUDA events (for :attr:`stats` bandwidth figures; adds a sync-free event
            pair per copy).

    Raises:
        ValueError: For bad block indices or ``prefetch < 1``.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Sequence[int],
        device: torch.device | str,
        prefetch: int = 1,
        pin_memory: bool = True,
        profile: bool = False,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.transformer = find_transformer(model)
        # The ltx-core model itself (inside a peft wrapper): where compiled blocks record that they recompute in
        # their graphs. Looked up once; the hooks ask on every block call.
        self._owner = blocks_owner(self.transformer)
        num_blocks = len(self.transformer.transformer_blocks)
        indices = sorted(set(blocks))
        if indices and (indices[0] < 0 or indices[-1] >= num_blocks):
            raise ValueError(f"Block indices must be in [0, {num_blocks}), got {list(blocks)}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.num_blocks = num_blocks
        self.prefetch = prefetch
        self.pin_memory = pin_memory and self.device.type == "cuda"
        self.profile = profile and self.device.type == "cuda"
        self.stats = SwapStats()

        self._blocks: dict[int, _Block] = {}
        self._order: list[int] = indices
        # Block i always lands in the same slot (its place in the swap order, modulo the slot count), so every
        # swapped block's weights sit at the same GPU addresses on every visit: what a recorded CUDA graph needs.
        self._slot_of: dict[int, int] = {b: i % slot_count(len(indices), prefetch) for i, b in enumerate(indices)}
        self._registered: list[tuple[int, int, bool]] = []  # (pointer, bytes, kept out of forks)
        #: Swapped blocks whose own host buffer became their host copy (no copy made; see :func:`_adoptable`).
        self.adopted = 0
        self._slots: list[torch.Tensor] = []
        self._slot_block: list[int | None] = []
        self._ready: list[Any] = []
        # Per slot: None when no copy is outstanding, else the ids of the streams that have waited for its copy.
        self._waiters: list[set[int] | None] = []
        self._copy_stream: Any = None
        self._pending_profile: list[tuple[Any, Any, int]] = []
        self._hooks: list[Any] = []
        self._phase = _FORWARD
        self._placed = False
        self._closed = False

        start = time.perf_counter()
        for index in indices:
            self._blocks[index] = self._build_block(index, self.transformer.transformer_blocks[index])
        self._finalizer = weakref.finalize(self, _unregister_host, self._registered)
        if indices:
            logger.info(
                "Block swap: streaming %d of %d blocks (%s), %.2f GB of frozen weights on the host (%s), %d GPU "
                "slot(s) of %.2f GB; host copies made in %.1f s",
                len(indices),
                num_blocks,
                _ranges(indices),
                self.host_bytes / 1e9,
                "pinned" if self.pin_memory else "pageable",
                self.num_slots,
                self.slot_bytes / 1e9,
                time.perf_counter() - start,
            )

    # ------------------------------------------------------------------------------------------------------------
    # Setup
    # ------------------------------------------------------------------------------------------------------------

    def _build_block(self, index: int, block: nn.Module) -> _Block:
        adapters = adapter_tensor_ids(block)
        entries: list[_Entry] = []
        sources: list[list[torch.Tensor]] = []
        seen: dict[int, _Entry] = {}
        offset = 0
        refrozen = 0
        for module in block.modules():
            for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
                for name, tensor in table.items():
                    if tensor is None or id(tensor) in adapters:
                        continue
                    if id(tensor) in seen:
                        seen[id(tensor)].owners.append((module, name))
                        continue
                    subclass = is_quantized(tensor)
                    if tensor.requires_grad:
                        # The subclass case is replaced below by wrappers that do not require grad.
                        if not subclass:
                            tensor.requires_grad_(False)
                        refrozen += 1
                    leaves, rebuild = flatten(tensor.detach())
                    layout = []
                    for leaf in leaves:
                        nbytes = leaf.numel() * leaf.element_size()
                        layout.append(Leaf(offset, nbytes, leaf.dtype, leaf.shape))
                        offset = align(offset + nbytes)
                    entry = _Entry(
                        owners=[(module, name)],
                        kind="subclass" if subclass else kind,  # type: ignore[arg-type]
                        leaves=layout,
                        rebuild=rebuild if subclass else None,
                        param=tensor if kind == "param" and not subclass else None,  # type: ignore[arg-type]
                    )
                    entries.append(entry)
                    sources.append(leaves)
                    seen[id(tensor)] = entry
        if refrozen:
            logger.warning(
                "Block %d: re-froze %d base tensors that required grad (optimum-quanto's quantize()/freeze() after "
                "requires_grad_(False) creates them); block swap streams a frozen base only",
                index,
                refrozen,
            )

        host, offset = self._host_copy(entries, sources, offset)
        record = _Block(index=index, module=block, entries=entries, nbytes=offset, host=host)
        record.host_values = self._values(record, host)
        # From here on the original tensors are unreferenced and freed: the host copy is the only one.
        self._point(record, record.host_values)
        return record

    def _host_copy(
        self, entries: list[_Entry], sources: list[list[torch.Tensor]], nbytes: int
    ) -> tuple[torch.Tensor, int]:
        """The block's host buffer and its size: the block's own buffer where :func:`_adoptable` allows (the streamed
        load and the quantized-weight cache read each part into one), pinned in place with no copy, and the entries'
        leaves re-pointed at their places in it; else a new buffer of ``nbytes``, the sources copied into it."""
        adopted = _adoptable([leaf for leaves in sources for leaf in leaves], nbytes)
        if adopted is not None:
            for entry, leaves in zip(entries, sources, strict=True):
                entry.leaves = [
                    Leaf(leaf.data_ptr() - adopted.data_ptr(), old.nbytes, old.dtype, old.shape)
                    for leaf, old in zip(leaves, entry.leaves, strict=True)
                ]
            host = self._pin(adopted)  # in place, or (where registering fails) a pinned copy with the same layout
            self.adopted += host.data_ptr() == adopted.data_ptr()
            return host, adopted.numel()
        host = self._alloc_host(nbytes)
        with torch.no_grad():
            for entry, leaves in zip(entries, sources, strict=True):
                for leaf, source in zip(entry.leaves, leaves, strict=True):
                    view(host, leaf).copy_(source.contiguous())
        return host, nbytes

    def _alloc_host(self, nbytes: int) -> torch.Tensor:
        return self._pin(torch.empty(max(nbytes, 1), dtype=torch.uint8))

    def _pin(self, host: torch.Tensor) -> torch.Tensor:
        """``host`` page-locked in place (a copy in torch's pinned memory where that fails), or as it is without
        ``pin_memory``."""
        if not self.pin_memory:
            return host
        # cudaHostRegister pins exactly these bytes; torch's pinned allocator would round each block up to a power of
        # two (0.78 GB -> 1.07 GB).
        status = int(torch.cuda.cudart().cudaHostRegister(host.data_ptr(), host.numel(), 0))
        if status == 0:
            self._registered.append((host.data_ptr(), host.numel(), keep_out_of_forks(host.data_ptr(), host.numel())))
            return host
        logger.debug("cudaHostRegister failed (%d); falling back to torch's pinned allocator", status)
        return host.pin_memory()

    @torch.inference_mode(False)
    def _values(self, block: _Block, buffer: torch.Tensor) -> list[torch.Tensor]:
        """The value each entry takes when its block lives in ``buffer`` (host copy or a slot).

        The views are cached and reused in training, so they are never made as inference tensors, even when the
        first forward that needs them runs under ``torch.inference_mode()``.
        """
        values = []
        for entry in block.entries:
            views = [view(buffer, leaf) for leaf in entry.leaves]
            if entry.kind == "subclass":
                assert entry.rebuild is not None
                values.append(nn.Parameter(entry.rebuild(views), requires_grad=False))
            else:
                values.append(views[0])
        return values

    def _point(self, block: _Block, values: list[torch.Tensor]) -> None:
        for entry, value in zip(block.entries, values, strict=True):
            if entry.kind == "param":
                assert entry.param is not None
                entry.param.data = value
            elif entry.kind == "buffer":
                for module, name in entry.owners:
                    module._buffers[name] = value
            else:
                for module, name in entry.owners:
                    module._parameters[name] = value

    @property
    def blocks(self) -> list[int]:
        """Indices of the swapped blocks."""
        return list(self._order)

    @property
    def num_slots(self) -> int:
        """GPU slots in the ring."""
        return slot_count(len(self._order), self.prefetch)

    @property
    def slot_bytes(self) -> int:
        """Bytes of one GPU slot (the largest swapped block)."""
        return max((b.nbytes for b in self._blocks.values()), default=0)

    @property
    def host_bytes(self) -> int:
        """Bytes of the host copies."""
        return sum(b.nbytes for b in self._blocks.values())

    def _detached(self) -> _Detached:
        return _Detached(self)

    def place(self, model: nn.Module | None = None) -> None:
        """Move everything but the swapped blocks' frozen tensors to the device, allocate the slots, add the hooks.

        The swapped tensors are taken out of their modules while ``model.to(device)`` runs, so they never reach the
        GPU and the startup peak stays at the steady state's resident part plus the slots.

        Args:
            model: The model to move (default: the transformer the engine was built on). Pass the outermost
                wrapper that will be trained (the peft model) so its own tensors move too.
        """
        if self._placed:
            raise RuntimeError("BlockSwapEngine.place() was already called")
        target = model if model is not None else self.transformer
        with self._detached():
            target.to(self.device)
        if self._order:
            self._slots = [
                torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device) for _ in range(self.num_slots)
            ]
            self._slot_block = [None] * self.num_slots
            if self.device.type == "cuda":
                self._copy_stream = torch.cuda.Stream(self.device)
                self._ready = [torch.cuda.Event() for _ in range(self.num_slots)]
            else:
                self._ready = [None] * self.num_slots
            self._waiters = [None] * self.num_slots
            self._install_hooks()
        self._placed = True

    def _install_hooks(self) -> None:
        root = self.transformer
        self._hooks.append(root.register_forward_pre_hook(self._on_model_forward))
        self._hooks.append(root.register_forward_hook(self._on_model_output))
        for index, block in enumerate(root.transformer_blocks):
            self._hooks.append(block.register_forward_pre_hook(functools.partial(self._on_block, index)))
            self._hooks.append(
                block.register_forward_hook(functools.partial(self._after_block, index), with_kwargs=True)
            )

    # ------------------------------------------------------------------------------------------------------------
    # Hooks
    # ------------------------------------------------------------------------------------------------------------

    def mark_forward(self) -> None:
        """Declare that a forward pass starts (the model's forward pre-hook calls this)."""
        self._phase = _FORWARD

    def watch_backward(self, outputs: Any) -> None:  # noqa: ANN401 - any nesting of tensors
        """Switch to backward-order prefetching once a gradient reaches ``outputs`` (the forward hook calls this).

        Custom loops that run the blocks without the model's ``forward`` call :meth:`mark_forward` before the blocks
        and this on their outputs.
        """
        if not torch.is_grad_enabled():
            return
        for tensor in _tensors(outputs):
            if tensor.requires_grad:
                tensor.register_hook(self._on_backward)

    def _on_model_forward(self, module: nn.Module, args: Any) -> None:  # noqa: ANN401, ARG002
        self.mark_forward()

    def _on_model_output(self, module: nn.Module, args: Any, output: Any) -> None:  # noqa: ANN401, ARG002
        self.watch_backward(output)

    def _on_backward(self, grad: torch.Tensor) -> None:  # noqa: ARG002
        self._phase = _BACKWARD

    def _checkpointed(self) -> bool:
        root = self.transformer
        checkpointing = getattr(root, "_enable_gradient_checkpointing", False) or recomputes_in_graph(self._owner)
        return bool(checkpointing and root.training)

    def _after_block(self, index: int, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:  # noqa: ANN401, ARG002
        """When compiled blocks recompute inside their graphs, no pre-hook fires in the backward pass: a hook on the
        block's outputs (it runs right before the block's backward) loads the block and prefetches the next ones.

        Only the tensors the block made get the hook. An input it passes through unchanged (ltx-core's blocks return
        their ``TransformerArgs`` with a new ``x`` and the same ``context``, timesteps and RoPE tables) is an output
        of every block; where it requires grad (ltx-trainer leaves its text connectors trainable), its gradient is
        complete only after the last block's backward, and hooks on it would load every block once more per hook.
        """
        if self._closed or not torch.is_grad_enabled() or not recomputes_in_graph(self._owner):
            return
        inputs = {id(t) for t in _tensors((args, kwargs))}
        hook = functools.partial(self._before_backward, index)
        for tensor in _tensors(output):
            if tensor.requires_grad and id(tensor) not in inputs:
                tensor.register_hook(hook)

    def _before_backward(self, index: int, grad: torch.Tensor) -> None:  # noqa: ARG002
        self._phase = _BACKWARD
        self._on_block(index, self.transformer.transformer_blocks[index], ())

    def _on_block(self, index: int, module: nn.Module, args: Any) -> None:  # noqa: ANN401, ARG002
        if self._closed:
            return
        grad = torch.is_grad_enabled()
        if grad and self._phase == _FORWARD and not self._checkpointed():
            raise RuntimeError(
                "Block swap reuses a block's GPU slot once the block has run, so a forward pass with gradients needs "
                "gradient checkpointing (set optimization.enable_gradient_checkpointing: true and keep the model in "
                "train mode), or run inference under torch.no_grad()."
            )
        want = self._wanted(index, backward_follows=grad)
        for block_index in want:
            if self._blocks[block_index].slot is None:
                self._load(block_index, miss=block_index == index)
        if index in self._blocks:
            self._activate(self._blocks[index])

    def _wanted(self, index: int, backward_follows: bool) -> list[int]:
        """The blocks that should be in the slots now: the current one (if swapped) and the next ones predicted."""
        order = self._order
        if self._phase == _BACKWARD:
            future = [b for b in reversed(order) if b < index] + order
        elif backward_follows:
            future = [b for b in order if b > index] + order[::-1]
        else:
            future = [b for b in order if b > index] + order
        want = [index] if index in self._blocks else []
        claimed = {self._slot_of[b] for b in want}
        for b in future:
            if b in want:
                continue
            if len(want) >= self.num_slots or self._slot_of[b] in claimed:
                break
            want.append(b)
            claimed.add(self._slot_of[b])
        return want

    # ------------------------------------------------------------------------------------------------------------
    # Copies
    # ------------------------------------------------------------------------------------------------------------

    def _load(self, index: int, miss: bool) -> None:
        slot = self._slot_of[index]
        previous = self._slot_block[slot]
        if previous is not None:
            self._evict(self._blocks[previous])
        block = self._blocks[index]
        assert block.host is not None
        # Through ``.data``: the copy must not bump the version counter that the slot's views share. A block whose
        # graph recomputes inside the compiled backward saved those views in its forward; its weights are back in
        # place before that backward runs, and autograd's in-place check would otherwise refuse them.
        target = self._slots[slot].data[: block.nbytes]
        source = block.host[: block.nbytes]
        if self._copy_stream is not None:
            compute = torch.cuda.current_stream(self.device)
            # Everything queued so far on the compute stream, the slot's last readers included, precedes the copy.
            self._copy_stream.wait_stream(compute)
            with torch.cuda.stream(self._copy_stream):
                if self.profile:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record(self._copy_stream)
                target.copy_(source, non_blocking=self.pin_memory)
                if self.profile:
                    end.record(self._copy_stream)
                    self._pending_profile.append((start, end, block.nbytes))
                self._ready[slot].record(self._copy_stream)
            self._waiters[slot] = set()
        else:
            target.copy_(source)
        self._slot_block[slot] = index
        block.slot = slot
        self.stats.loads += 1
        self.stats.bytes += block.nbytes
        self.stats.misses += int(miss)

    def _activate(self, block: _Block) -> None:
        assert block.slot is not None
        if block.active:
            return
        waiters = self._waiters[block.slot]
        if self._copy_stream is not None and waiters is not None:
            stream = torch.cuda.current_stream(self.device)
            if stream.cuda_stream not in waiters:
                stream.wait_event(self._ready[block.slot])
                waiters.add(stream.cuda_stream)
        values = block.slot_values.get(block.slot)
        if values is None:
            values = block.slot_values[block.slot] = self._values(block, self._slots[block.slot])
        self._point(block, values)
        block.active = True

    def _evict(self, block: _Block) -> None:
        if block.active:
            self._point(block, block.host_values)
            block.active = False
        if block.slot is not None:
            self._slot_block[block.slot] = None
        block.slot = None

    # ------------------------------------------------------------------------------------------------------------
    # Reporting and teardown
    # ------------------------------------------------------------------------------------------------------------

    def join(self) -> None:
        """Make the current stream wait for every copy issued so far (for example before a CUDA-graph capture ends)."""
        if self._copy_stream is not None and any(w is not None for w in self._waiters):
            stream = torch.cuda.current_stream(self.device)
            stream.wait_stream(self._copy_stream)
            for waiters in self._waiters:
                if waiters is not None:
                    waiters.add(stream.cuda_stream)

    def synchronize(self) -> None:
        """Block until every copy has landed, and forget their events (call before capturing a CUDA graph)."""
        if self._copy_stream is not None:
            self._copy_stream.synchronize()
            self._waiters = [None] * len(self._waiters)

    def reset_stats(self) -> None:
        """Zero :attr:`stats` (call at the start of a measured window)."""
        self.collect_profile()
        self.stats = SwapStats()

    def collect_profile(self) -> SwapStats:
        """Fold the finished copy timings into :attr:`stats` (synchronizes the copy stream when profiling)."""
        if self._pending_profile:
            self._copy_stream.synchronize()
            for start, end, _ in self._pending_profile:
                self.stats.copy_ms += start.elapsed_time(end)
            self._pending_profile.clear()
        return self.stats

    def swapped_tensor_names(self, model: nn.Module) -> list[str]:
        """Names, relative to ``model``, of the parameters and buffers the engine streams.

        Pass them to ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` so that DDP neither
        broadcasts nor checks the device of the host-resident tensors: each rank streams its own identical copy.
        """
        owners = {(id(m), n) for b in self._blocks.values() for e in b.entries for m, n in e.owners}
        names = []
        for prefix, module in model.named_modules(remove_duplicate=False):
            for table in (module._parameters, module._buffers):
                for name in table:
                    if (id(module), name) in owners:
                        names.append(f"{prefix}.{name}" if prefix else name)
        return sorted(set(names))

    def close(self, device: torch.device | str | None = "cpu") -> None:
        """Remove the hooks and give every swapped tensor its own storage on ``device`` again.

        Args:
            device: Where the swapped blocks' tensors end up (``None`` keeps them on the host; unpinned copies).
        """
        if self._closed:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._copy_stream is not None:
            self.synchronize()
            torch.cuda.current_stream(self.device).synchronize()
        target = torch.device(device) if device is not None else torch.device("cpu")
        for block in self._blocks.values():
            assert block.host is not None
            self._evict(block)
            own = block.host.to(target, copy=True)
            self._point(block, self._values(block, own))
            block.slot_values.clear()
            block.host_values = []
            block.host = None
        self._slots.clear()
        self._slot_block.clear()
        self._finalizer()
        self._closed = True


class _Detached:
    """Context manager: take the swapped tensors out of their modules (``model.to()`` then skips them)."""

    def __init__(self, engine: BlockSwapEngine) -> None:
        self.engine = engine
        self.saved: list[tuple[dict[str, Any], str, Any]] = []

    def __enter__(self) -> None:
        for block in self.engine._blocks.values():
            for entry in block.entries:
                for module, name in entry.owners:
                    table = module._buffers if entry.kind == "buffer" else module._parameters
                    self.saved.append((table, name, table[name]))
                    table[name] = None

    def __exit__(self, *exc: object) -> None:
        for table, name, value in self.saved:
            table[name] = value
        self.saved.clear()


def _tensors(output: Any) -> Iterator[torch.Tensor]:  # noqa: ANN401
    if isinstance(output, torch.Tensor):
        yield output
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):  # ltx-core's TransformerArgs
        for item in dataclasses.fields(output):
            yield from _tensors(getattr(output, item.name))
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _tensors(item)


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    parts, start, prev = [], None, None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


__all__ = ["BlockSwapEngine", "SwapStats"]
