"""Memory a config needs, estimated from the checkpoint's header and the block-swap plan (no tensor is read).

Used by ``ltx-trainer check`` (the host-memory estimate beside the GPU one, and a warning when the machine has less)
and by the streamed load (which blocks go to host memory, before LoRA and the engine exist).

Sizes come from the transformer built on the meta device (:func:`~.stream.meta_transformer`): every part's tensors
at the training dtype, and after quantization (each quantized Linear's weight at the backend's bits, plus one scale
per output row). The host-memory figure is what the kernel cannot drop (anonymous and shared pages); the page cache of
the checkpoint file comes on top and is reclaimable.

It is also the one home for reading what a process holds (``/proc/<pid>/status``, ``smaps_rollup``, its cgroup v2
folder): :func:`process_memory`, :func:`private_bytes` and :func:`cgroup_dir` serve the benchmarks and tests that
measure host memory. They return bytes, and an empty result (or None) where the files cannot be read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltx_audio_reference.blockswap.config import (
    GB,
    TRAINABLE_OVERHEAD,
    SwapPlan,
    estimate_peak,
    plan_auto,
    planned_reserve_bytes,
    resolve_block_swap,
    spread_blocks,
)
from ltx_audio_reference.quantization.base import QuantizationBackend, quantizable_linears
from ltx_audio_reference.quantization.stream import (
    Part,
    meta_transformer,
    model_parts,
    part_keys,
    part_module,
    source_keys,
)
from ltx_audio_reference.quantization.tensorfile import Header, read_header

logger = logging.getLogger(__name__)

#: Host memory of the training process beside the model: Python, torch, ltx-trainer, the CUDA context's host side, the
#: text connectors. Measured about 1.7 GB on the full-scale benchmark's main process; 3 GB leaves room for the data
#: loader's workers.
BASELINE_BYTES = 3 * 10**9

#: The text connectors' keys in a transformer checkpoint (ltx-core's ``EMBEDDINGS_PROCESSOR_KEY_OPS``, and the
#: video-only variant). ltx-trainer loads them onto the training GPU, in bf16, before the model is placed
#: (``LtxvTrainer._load_models``); they stay there, frozen, through training.
CONNECTOR_PREFIXES = tuple(
    f"model.diffusion_model.{name}_connector." for name in ("video_embeddings", "audio_embeddings", "embeddings")
)
#: Bytes per LoRA weight: peft keeps adapter weights in float32 (``autocast_adapter_dtype``) on a bf16 or int8 model.
LORA_ITEMSIZE = 4

#: ``model -> target module names``: how a config's LoRA targets resolve on the meta model
#: (:func:`~ltx_audio_reference.registry.lora_target_modules` bound to a hook and a config).
LoraTargets = Callable[[nn.Module], Sequence[str]]


@dataclass(frozen=True)
class PartSize:
    """One part's bytes.

    Attributes:
        part: The part.
        source_bytes: As stored in the checkpoint.
        loaded_bytes: Unquantized, at the training dtype.
        trained_bytes: As it trains: quantized when the part is (else ``loaded_bytes``).
    """

    part: Part
    source_bytes: int
    loaded_bytes: int
    trained_bytes: int


def part_bytes(
    model: nn.Module, part: Part, backend: QuantizationBackend | None, dtype: torch.dtype
) -> tuple[int, int]:
    """``(loaded, trained)`` bytes of a part of the meta model (see :class:`PartSize`)."""
    module = part_module(model, part)
    state = module.state_dict(keep_vars=True) if part.name else {k: getattr(model, k) for k in part_keys(model, part)}
    itemsize = torch.empty((), dtype=dtype).element_size()

    def size(tensor: torch.Tensor) -> int:
        return tensor.numel() * (itemsize if tensor.is_floating_point() else tensor.element_size())

    loaded = sum(size(t) for t in state.values())
    trained = loaded
    if backend is not None and part.quantized and part.name:
        for name, linear in quantizable_linears(module):
            weight = state[f"{name}.weight"]
            trained += weight.numel() * backend.weight_bits // 8 + linear.out_features * itemsize - size(weight)
    return loaded, trained


def checkpoint_sizes(
    checkpoint: Path | str, backend: QuantizationBackend | None, dtype: torch.dtype = torch.bfloat16
) -> list[PartSize]:
    """Every part's bytes for ``checkpoint`` trained with ``backend`` (None: unquantized)."""
    return _sized(checkpoint, backend, dtype)[0]


def _sized(
    checkpoint: Path | str, backend: QuantizationBackend | None, dtype: torch.dtype = torch.bfloat16
) -> tuple[list[PartSize], nn.Module, Header]:
    """:func:`checkpoint_sizes`, with the meta model and the header it read."""
    header = read_header(Path(checkpoint))
    model, sd_ops = meta_transformer(Path(checkpoint), header)
    parts = model_parts(model)
    sources = source_keys(header, sd_ops, model, parts)
    sizes = []
    for part in parts:
        loaded, trained = part_bytes(model, part, backend, dtype)
        source = sum(header.tensors[k].nbytes for k in sources[part.name].values())
        sizes.append(PartSize(part, source, loaded, trained))
    return sizes, model, header


@dataclass(frozen=True)
class TrainingExtras:
    """What training keeps on the GPU beside the transformer's parts, which block swap plans around.

    Attributes:
        lora_modules: The Linear layers LoRA wraps (None when the targets are unknown: LoRA is not counted).
        lora_bytes: Their LoRA weights (float32).
        connector_bytes: ltx-trainer's text connectors (bf16).
    """

    lora_modules: int | None = None
    lora_bytes: int = 0
    connector_bytes: int = 0

    @property
    def fixed_bytes(self) -> int:
        """Their share of the plan's fixed bytes: LoRA with its gradients and AdamW's moments, and the connectors."""
        return TRAINABLE_OVERHEAD * self.lora_bytes + self.connector_bytes


def connector_bytes(header: Header, dtype: torch.dtype = torch.bfloat16) -> int:
    """The text connectors' bytes as ltx-trainer loads them (``dtype``), from the checkpoint's header."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(
        math.prod(info.shape) * (itemsize if info.dtype.is_floating_point else info.dtype.itemsize)
        for name, info in header.tensors.items()
        if name.startswith(CONNECTOR_PREFIXES)
    )


def lora_bytes(model: nn.Module, targets: Sequence[str], rank: int) -> tuple[int, int]:
    """``(modules, bytes)`` of a rank-``rank`` LoRA on ``targets``, matched by peft's own rule (a name, or a suffix
    after a dot), on any model: the meta model included. Each wrapped Linear gets ``A`` (rank x in) and ``B``
    (out x rank) in float32."""
    from peft import LoraConfig  # noqa: PLC0415 - peft loads only where LoRA is sized
    from peft.tuners.tuners_utils import check_target_module_exists  # noqa: PLC0415

    config = LoraConfig(r=rank, target_modules=list(targets))
    modules = nbytes = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and check_target_module_exists(config, name):
            modules += 1
            nbytes += rank * (module.in_features + module.out_features) * LORA_ITEMSIZE
    return modules, nbytes


def training_extras(
    config: object, model: nn.Module, header: Header, lora_targets: LoraTargets | None
) -> TrainingExtras:
    """The LoRA (where ``lora_targets`` is given and the config trains one) and the connectors of a config."""
    lora: Any = getattr(config, "lora", None)
    rank = getattr(lora, "rank", None)
    mode = getattr(getattr(config, "model", None), "training_mode", "lora")
    connectors = connector_bytes(header)
    if lora_targets is None or not rank or mode != "lora":
        return TrainingExtras(connector_bytes=connectors)
    try:
        targets = lora_targets(model)
    except Exception as e:  # an estimate: a plugin's hook that cannot answer here must not stop a load
        logger.warning(
            "The memory estimate leaves LoRA out: its targets could not be resolved (%s: %s)", type(e).__name__, e
        )
        return TrainingExtras(connector_bytes=connectors)
    modules, nbytes = lora_bytes(model, targets, int(rank))
    return TrainingExtras(modules, nbytes, connectors)


@dataclass(frozen=True)
class SwapEstimate:
    """The block-swap plan a config implies, estimated before the model loads.

    Attributes:
        blocks: The blocks swapped (the engine's spread).
        pin_memory: Whether their host copies are page-locked.
        plan: The VRAM estimate. Its fixed bytes: the model's non-block parts plus ``extras``.
        extras: What training adds to the fixed bytes (LoRA with its gradients and optimizer state, the text
            connectors), as the engine counts them once the model is loaded.
        problem: Why ``auto`` found no fit (then every block is counted as swapped).
    """

    blocks: list[int]
    pin_memory: bool
    plan: SwapPlan
    extras: TrainingExtras = TrainingExtras()
    problem: str | None = None


def estimate_swap(config: object, sizes: list[PartSize], extras: TrainingExtras | None = None) -> SwapEstimate | None:
    """The swap plan of a trainer config (duck-typed: ``block_swap``, ``acceleration.block_swap_blocks``), or None
    when block swap is off or its settings are invalid (``validate_config`` reports those).

    Args:
        config: The trainer config.
        sizes: Its checkpoint's parts (:func:`checkpoint_sizes`).
        extras: LoRA and the connectors (:func:`training_extras`); None counts neither.
    """
    extras = extras or TrainingExtras()
    try:
        swap = resolve_block_swap(config)
    except ValueError:
        return None
    if swap is None:
        return None
    blocks = [s.trained_bytes for s in sizes if s.part.block is not None]
    fixed = sum(s.trained_bytes for s in sizes if s.part.block is None) + extras.fixed_bytes
    acceleration = getattr(config, "acceleration", None)
    graphs = bool(getattr(acceleration, "compile_blocks", False) and getattr(acceleration, "cuda_graphs", False))
    reserve = planned_reserve_bytes(swap, graphs, len(blocks))
    if not swap.is_auto:
        count = min(int(swap.blocks_to_swap), len(blocks))
        plan = estimate_peak(blocks, count, fixed, swap.prefetch, reserve)
        return SwapEstimate(spread_blocks(len(blocks), count), swap.pin_memory, plan, extras)
    assert swap.max_vram_gb is not None
    budget = int(swap.max_vram_gb * GB)
    for count in range(len(blocks) + 1):  # plan_auto's search, without its log line (this is only an estimate)
        plan = estimate_peak(blocks, count, fixed, swap.prefetch, reserve)
        if plan.estimated_peak_bytes <= budget:
            return SwapEstimate(spread_blocks(len(blocks), count), swap.pin_memory, plan, extras)
    try:
        plan_auto(blocks, fixed, budget, swap.prefetch, reserve)
    except ValueError as e:
        problem = str(e)
    else:  # pragma: no cover - the loop above found no fit, so plan_auto cannot either
        problem = None
    plan = estimate_peak(blocks, len(blocks), fixed, swap.prefetch, reserve)
    return SwapEstimate(list(range(len(blocks))), swap.pin_memory, plan, extras, problem)


@dataclass(frozen=True)
class HostMemoryEstimate:
    """Peak host memory the kernel cannot reclaim (anonymous + shared), by cause.

    Attributes:
        baseline_bytes: The process without the model (:data:`BASELINE_BYTES`).
        model_bytes: Model tensors that live in host memory while training: the swapped blocks (pinned or not), or
            the whole model when training on the CPU.
        load_bytes: What the load holds on top of that at its peak.
        load: How the model loads: ``streamed`` or ``stock``.
        pinned: Whether ``model_bytes`` is page-locked.
        page_cache_bytes: The checkpoint's bytes the load reads (page cache; reclaimable, not in the total).
    """

    baseline_bytes: int
    model_bytes: int
    load_bytes: int
    load: str
    pinned: bool
    page_cache_bytes: int

    @property
    def total_bytes(self) -> int:
        """The estimated peak."""
        return self.baseline_bytes + self.model_bytes + self.load_bytes


def estimate_host_memory(
    sizes: list[PartSize],
    *,
    quantized: bool,
    streamed: bool,
    cuda: bool,
    swap: SwapEstimate | None,
) -> HostMemoryEstimate:
    """The peak host memory of a training run (see :class:`HostMemoryEstimate`).

    Args:
        sizes: The checkpoint's parts (:func:`checkpoint_sizes`).
        quantized: Whether the transformer is quantized.
        streamed: Whether it loads through the streamed load (else the stock load, then the stock quantization pass).
        cuda: Whether it trains on a GPU (else everything lives in host memory).
        swap: The block-swap plan, if any.
    """
    swapped = set(swap.blocks) if swap is not None and cuda else set()
    trained = [s.trained_bytes for s in sizes]
    swapped_bytes = [s.trained_bytes for s in sizes if s.part.block in swapped]
    largest_swapped = max(swapped_bytes, default=0)
    source = sum(s.source_bytes for s in sizes)
    model = sum(swapped_bytes) if cuda else sum(trained)
    if streamed:
        # Two parts read ahead (the one being quantized and the next), one quantized part packed for the host or the
        # cache; then block swap copies each swapped block into its pinned buffer while the pageable one still exists.
        in_flight = 2 * max((s.source_bytes for s in sizes), default=0) + max(trained, default=0)
        load = max(in_flight, largest_swapped)
    else:
        # ltx-core's loader maps the file: tensors stored in the training dtype stay page cache, the others are cast
        # into anonymous memory. The stock quantization pass then brings the whole quantized model back to the host,
        # where it stays until the resident parts move to the GPU.
        cast = sum(s.loaded_bytes for s in sizes if s.source_bytes != s.loaded_bytes)
        back = sum(trained) - (model if cuda else 0) if quantized else 0
        load = cast + back + (largest_swapped if cuda else 0)
    return HostMemoryEstimate(
        baseline_bytes=BASELINE_BYTES,
        model_bytes=model,
        load_bytes=load,
        load="streamed" if streamed else "stock",
        pinned=bool(swapped) and swap is not None and swap.pin_memory,
        page_cache_bytes=source,
    )


def host_memory_limit() -> tuple[int | None, str]:
    """The memory this process may use: ``min(MemTotal, its cgroup's memory.max)``, and where it comes from."""
    limit, origin = None, ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limit, origin = int(line.split()[1]) * 1024, "MemTotal"
                break
    except OSError:
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None and (limit is None or cgroup < limit):
        limit, origin = cgroup, "cgroup memory.max"
    return limit, origin


def _cgroup_limit() -> int | None:
    group = cgroup_dir()
    try:
        value = (group / "memory.max").read_text().strip() if group is not None else ""
    except OSError:
        return None
    return int(value) if value.isdigit() else None


#: ``/proc/<pid>/status`` fields reported by :func:`process_memory`, in bytes.
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """The memory fields of ``/proc/<pid>/status`` in bytes, plus ``NonReclaimable`` (anonymous + shared pages).

    Anonymous and shared pages (pinned host buffers among them) are what the kernel cannot drop; file-backed pages
    (an mmapped checkpoint) it can. Empty once the process is gone.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    found = {key: int(fields[key].split()[0]) * 1024 for key in STATUS_FIELDS if key in fields}
    if "RssAnon" in found and "RssShmem" in found:
        found["NonReclaimable"] = found["RssAnon"] + found["RssShmem"]
    return found


def private_bytes(pid: int | str = "self") -> int | None:
    """``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup``: the pages that only this process maps.

    A forked child's ``RssAnon`` counts the pages it shares copy-on-write with its parent too; this counts the ones it
    holds alone (a copy the kernel made at ``fork()`` among them). None where the file cannot be read.
    """
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))


def cgroup_dir(pid: int | str = "self") -> Path | None:
    """The cgroup v2 folder of process ``pid`` under ``/sys/fs/cgroup``, or None (no cgroup v2 entry)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    return None if relative is None else Path("/sys/fs/cgroup") / relative.lstrip("/")


@dataclass(frozen=True)
class ConfigMemory:
    """Memory estimates of a config, for ``ltx-trainer check``.

    Attributes:
        host: The host-memory estimate.
        swap: The block-swap plan (None without block swap).
        resident_bytes: Transformer bytes on the GPU without block swap (0 when training on the CPU).
        limit_bytes: The memory this machine gives the process (see :func:`host_memory_limit`), if known.
        limit_origin: Where the limit comes from.
    """

    host: HostMemoryEstimate
    swap: SwapEstimate | None
    resident_bytes: int
    limit_bytes: int | None
    limit_origin: str

    def lines(self) -> list[str]:
        """What ``check`` prints: the host estimate, the GPU estimate, and a warning when the machine has less."""
        h = self.host
        terms = [f"process ~{_gb(h.baseline_bytes)}"]
        if h.model_bytes:
            if self.swap is not None:
                terms.append(f"swapped blocks {_gb(h.model_bytes)} ({'pinned' if h.pinned else 'pageable'})")
            else:
                terms.append(f"the model {_gb(h.model_bytes)} (training on the CPU)")
        terms.append(f"{h.load} load {_gb(h.load_bytes)}")
        have = f"; this machine has {_gb(self.limit_bytes)} GB ({self.limit_origin})" if self.limit_bytes else ""
        lines = [
            f"host memory: ~{_gb(h.total_bytes)} GB at the peak ({' + '.join(terms)} GB), plus up to "
            f"{_gb(h.page_cache_bytes)} GB of page cache for the checkpoint (reclaimable){have}"
        ]
        if self.swap is not None:
            x = self.swap.extras
            counted = (
                f"the text connectors ({_gb(x.connector_bytes)} GB) but not LoRA (its targets are unknown here)"
                if x.lora_modules is None
                else f"LoRA ({x.lora_modules} modules: {_gb(TRAINABLE_OVERHEAD * x.lora_bytes)} GB with its gradients "
                f"and optimizer state) and the text connectors ({_gb(x.connector_bytes)} GB)"
            )
            lines.append(f"GPU memory: block swap {self.swap.plan.describe()}, counting {counted}")
            if self.swap.problem:
                lines.append(f"GPU memory: {self.swap.problem}")
        elif self.resident_bytes:
            lines.append(
                f"GPU memory: ~{_gb(self.resident_bytes)} GB of transformer weights, all resident (no block swap), "
                "before LoRA, its optimizer state and activations"
            )
        if self.limit_bytes is not None and self.limit_bytes < h.total_bytes:
            lines.append(f"WARNING: {self.shortfall()}")
        return lines

    def shortfall(self) -> str:
        """The warning when the machine has less memory than the estimate, with what to change."""
        h = self.host
        if h.load == "stock" and h.load_bytes > h.model_bytes:
            advice = "quantize (acceleration.quantization: int8-quanto) with acceleration.streamed_load: true"
        elif self.swap is not None:
            advice = "swap fewer blocks (a larger block_swap.max_vram_gb, if the GPU has it) or quantize them"
        else:
            advice = "quantize the transformer (acceleration.quantization: int8-quanto)"
        return (
            f"this machine has {_gb(self.limit_bytes or 0)} GB ({self.limit_origin}), less than the ~"
            f"{_gb(h.total_bytes)} GB of host memory this config needs at its peak: {advice}"
        )


def _gb(n: int) -> str:
    return f"{n / GB:.1f}" if n >= GB / 10 or n == 0 else "<0.1"


def _quantization(config: object) -> str | None:
    return getattr(getattr(config, "acceleration", None), "quantization", None)


def streams(config: object) -> bool:
    """Whether a trainer config loads through the streamed load: quantized, LoRA, ``acceleration.streamed_load``."""
    acceleration = getattr(config, "acceleration", None)
    return (
        _quantization(config) is not None
        and getattr(getattr(config, "model", None), "training_mode", "lora") == "lora"
        and bool(getattr(acceleration, "streamed_load", False))
    )


def estimate_config(
    config: object,
    checkpoint: Path | str,
    backend: QuantizationBackend | None,
    *,
    cuda: bool,
    lora_targets: LoraTargets | None = None,
) -> ConfigMemory:
    """Estimate the host and GPU memory of a trainer config (duck-typed) without loading the model.

    Args:
        config: The trainer config (``model.training_mode``, ``acceleration``, ``block_swap``, ``lora.rank``).
        checkpoint: Its transformer checkpoint (``model.model_path``).
        backend: The backend ``acceleration.quantization`` names, or None.
        cuda: Whether training runs on a GPU.
        lora_targets: How the config's LoRA targets resolve on the model (None: LoRA is not counted).
    """
    sizes, model, header = _sized(checkpoint, backend)
    swap = estimate_swap(config, sizes, training_extras(config, model, header, lora_targets)) if cuda else None
    host = estimate_host_memory(sizes, quantized=backend is not None, streamed=streams(config), cuda=cuda, swap=swap)
    limit, origin = host_memory_limit()
    resident = sum(s.trained_bytes for s in sizes) if cuda and swap is None else 0
    return ConfigMemory(host=host, swap=swap, resident_bytes=resident, limit_bytes=limit, limit_origin=origin)


def planned_host_blocks(
    config: object, checkpoint: Path | str, backend: QuantizationBackend, lora_targets: LoraTargets | None = None
) -> frozenset[int]:
    """The blocks the streamed load leaves in host memory: those block swap will stream, as planned from the config.

    The plan counts what the engine counts once LoRA is attached (:func:`training_extras`), so both agree where the
    estimate is exact. The engine sizes ``auto`` again from measured bytes and copes with any difference (it copies
    each swapped block from wherever it is, and moves the others to the GPU).
    """
    sizes, model, header = _sized(checkpoint, backend)
    swap = estimate_swap(config, sizes, training_extras(config, model, header, lora_targets))
    return frozenset(swap.blocks) if swap is not None else frozenset()


__all__ = [
    "BASELINE_BYTES",
    "CONNECTOR_PREFIXES",
    "ConfigMemory",
    "HostMemoryEstimate",
    "LoraTargets",
    "PartSize",
    "SwapEstimate",
    "TrainingExtras",
    "cgroup_dir",
    "checkpoint_sizes",
    "connector_bytes",
    "estimate_config",
    "estimate_host_memory",
    "estimate_swap",
    "host_memory_limit",
    "lora_bytes",
    "part_bytes",
    "planned_host_blocks",
    "private_bytes",
    "process_memory",
    "streams",
    "training_extras",
]
