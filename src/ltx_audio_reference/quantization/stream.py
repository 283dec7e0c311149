"""The streamed load: a quantized transformer built part by part, each part placed where it will live.

The stock trainer loads the whole transformer in bf16 on the CPU (``load_transformer``: ltx-core's
``SingleGPUModelBuilder``), then quantizes it block by block on the GPU and moves each block back to the CPU. The
host then holds the bf16 checkpoint (mmapped) and the whole quantized model, which ``non_blocking`` copies from the
GPU put in page-locked memory that torch's host allocator keeps (see ``docs/memory.md``).

:func:`load_transformer_streamed` builds the same model with another procedure:

1. the transformer is built on the meta device from the checkpoint's config, with ltx-core's configurator (the
   stock loader's own, ``LTXModelConfigurator``, and its key map ``LTXV_MODEL_COMFY_RENAMING_MAP``);
2. then, one part at a time (each transformer block, each other top-level module, the root's own tensors), only that
   part's tensors are read from the checkpoint (or from the quantized-weight cache, :mod:`.cache`), the part is
   quantized on the GPU when there is one, and placed where it will live: on the GPU if it stays resident, in
   pageable host memory if block swap will stream it (block swap copies it into its pinned buffers later, from
   wherever it is);
3. the next part is read while the current one is quantized (from the cache, the next
   :data:`CACHE_READ_AHEAD` parts, each by a thread of its own).

The host never holds a bf16 copy of the whole model: at most two parts' raw bytes, one quantized part, and the
quantized blocks that block swap will stream. The result equals the stock build followed by
:func:`~ltx_audio_reference.quantization.model.quantize_model` (the same tensors and module types; tests compare them
bit for bit), and :func:`~ltx_audio_reference.quantization.model.quantize_model` leaves it as it is.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltx_audio_reference.quantization import cache as qcache
from ltx_audio_reference.quantization.base import QuantizationBackend
from ltx_audio_reference.quantization.model import SKIP_ROOT_MODULES, QuantizationReport, _progress
from ltx_audio_reference.quantization.tensorfile import Header, pack, read_header, read_tensors

logger = logging.getLogger(__name__)

REPORT_ATTR = "_ltx_audio_reference_quantization"

#: Parts of a quantized-weight cache entry read at once, each by its own thread, while the current one is placed:
#: reads from the page cache or an NVMe drive scale with threads, and the parts are already quantized (about 0.4 GB
#: for an LTX-2.3 block), so at most four are in host memory at a time, less than two bf16 parts of the cold load.
CACHE_READ_AHEAD = 3


@dataclass(frozen=True)
class Part:
    """One unit of the streamed load.

    Attributes:
        name: ``transformer_blocks.N``, a top-level module's name, or ``""`` for the root's own tensors.
        block: The block index, for blocks.
        quantized: Whether the backend quantizes it (blocks and every top-level module but
            :data:`~ltx_audio_reference.quantization.model.SKIP_ROOT_MODULES`, as the stock procedure does).
    """

    name: str
    block: int | None
    quantized: bool


@dataclass(frozen=True)
class LoadPlan:
    """Where the streamed load quantizes and puts each part.

    Attributes:
        device: Where parts are quantized and where resident parts live (the training GPU, or the CPU).
        host_blocks: Blocks placed in pageable host memory (the ones block swap will stream); only with a GPU.
        dtype: The dtype of everything left in full precision (the stock loader's ``dtype``).
    """

    device: torch.device
    host_blocks: frozenset[int] = frozenset()
    dtype: torch.dtype = torch.bfloat16

    def destination(self, part: Part) -> torch.device:
        """Where ``part`` lives once loaded."""
        if self.device.type != "cpu" and part.block in self.host_blocks:
            return torch.device("cpu")
        return self.device


def meta_transformer(checkpoint: Path, header: Header | None = None) -> tuple[nn.Module, Any]:
    """The transformer on the meta device, built from the checkpoint's config as the stock ``load_transformer`` does
    (ltx-core's ``LTXModelConfigurator``), and the key map from checkpoint names to model names.

    The config comes from the header this module reads itself: ltx-core's loader would map the whole file to read it.
    Works with ltx-core 1.0.0 (``from_config`` reads the ``config`` entry) and 1.2.0 (``from_metadata`` reads the whole
    metadata, each value parsed as JSON where it is JSON, as its loader does).
    """
    import json  # noqa: PLC0415

    from ltx_core.model.transformer.model_configurator import (  # noqa: PLC0415
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )

    header = header or read_header(Path(checkpoint))
    metadata: dict[str, Any] = {}
    for key, value in header.metadata.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    with torch.device("meta"):
        if hasattr(LTXModelConfigurator, "from_metadata"):  # ltx-core >= 1.2
            model = LTXModelConfigurator.from_metadata(metadata)
        else:
            config = metadata.get("config", {})
            model = LTXModelConfigurator.from_config(config if isinstance(config, dict) else {})
    return model, LTXV_MODEL_COMFY_RENAMING_MAP


def model_parts(model: nn.Module) -> list[Part]:
    """Every block, then every other top-level module, then the root's own tensors (if it has any)."""
    parts = [Part(f"transformer_blocks.{i}", i, True) for i in range(len(model.transformer_blocks))]
    parts += [
        Part(name, None, name not in SKIP_ROOT_MODULES)
        for name, _ in model.named_children()
        if name != "transformer_blocks"
    ]
    if _root_keys(model):
        parts.append(Part("", None, False))
    return parts


def part_module(model: nn.Module, part: Part) -> nn.Module:
    """The module ``part`` names (the model itself for the root's own tensors)."""
    return model.get_submodule(part.name) if part.name else model


def _root_keys(model: nn.Module) -> list[str]:
    params = [n for n, p in model.named_parameters(recurse=False) if p is not None]
    return params + [n for n, b in model.named_buffers(recurse=False) if n not in model._non_persistent_buffers_set]


def part_keys(model: nn.Module, part: Part) -> list[str]:
    """The state-dict keys of ``part``, relative to it."""
    if not part.name:
        return _root_keys(model)
    return list(part_module(model, part).state_dict(keep_vars=True))


def source_keys(header: Header, sd_ops: Any, model: nn.Module, parts: list[Part]) -> dict[str, dict[str, str]]:  # noqa: ANN401
    """For each part, its keys (relative to it) -> the checkpoint's tensor names.

    Checkpoint tensors the transformer does not have (VAE, text encoder, connectors) are skipped, as the stock loader
    skips them.

    Raises:
        ValueError: If the checkpoint lacks a tensor the transformer needs (the stock loader would return a model
            left on the meta device).
    """
    by_part: dict[str, dict[str, str]] = {p.name: {} for p in parts}
    wanted = {p.name: set(part_keys(model, p)) for p in parts}
    root = wanted.get("", set())
    for file_key in header.tensors:
        key = sd_ops.apply_to_key(file_key) if sd_ops is not None else file_key
        if key is None:
            continue
        if key in root:
            by_part[""][key] = file_key
            continue
        first, _, rest = key.partition(".")
        name = first
        if first == "transformer_blocks":
            index, _, rest = rest.partition(".")
            name = f"transformer_blocks.{index}"
        if name in wanted and rest in wanted[name]:
            by_part[name][rest] = file_key
    missing = [f"{p}.{k}" if p else k for p, keys in wanted.items() for k in sorted(keys - by_part[p].keys())]
    if missing:
        raise ValueError(
            f"{header.path} lacks {len(missing)} tensor(s) the transformer needs (for example {', '.join(missing[:3])})"
        )
    return by_part


@dataclass
class _Loaded:
    tensors: dict[str, torch.Tensor]
    layout: dict[str, dict[str, Any]] | None = None  # from the cache: already quantized
    packed: bool = True  # views of one host buffer of their own


@dataclass
class _Build:
    model: nn.Module
    parts: list[Part]
    plan: LoadPlan
    backend: QuantizationBackend
    writer: qcache.CacheWriter | None = None
    layers: int = 0
    host_bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def _one_buffer(tensors: dict[str, torch.Tensor]) -> bool:
    pointers = {t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()}
    return len(pointers) <= 1 and all(t.device.type == "cpu" for t in tensors.values())


def _place(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors on ``device``; on the host, in one pageable buffer of the part's own (blocking copies)."""
    if device.type == "cpu":
        return tensors if _one_buffer(tensors) else pack(tensors)
    return {k: v.to(device) for k, v in tensors.items()}


def _assign(
    build: _Build, part: Part, tensors: dict[str, torch.Tensor], layout: dict[str, dict[str, Any]] | None
) -> None:
    model = build.model
    if not part.name:
        for name, value in tensors.items():
            if name in model._parameters:
                model._parameters[name] = nn.Parameter(value, requires_grad=model._parameters[name].requires_grad)
            else:
                model._buffers[name] = value
        return
    target = part_module(model, part)
    if layout is not None:
        build.backend.load_quantized(target, tensors, layout)
    else:
        target.load_state_dict(tensors, strict=True, assign=True)


def _replace(model: nn.Module, part: Part, module: nn.Module) -> None:
    parent_name, _, attr = part.name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _from_checkpoint(build: _Build, part: Part, loaded: _Loaded) -> None:
    """Quantize a part read from the checkpoint, write it to the cache, and place it."""
    plan, backend = build.plan, build.backend
    destination = plan.destination(part)
    state = {k: _to_device(v, plan.device, plan.dtype) for k, v in loaded.tensors.items()}
    loaded.tensors.clear()  # the raw read buffer goes now
    layout: dict[str, dict[str, Any]] | None = None
    if part.quantized:
        work = copy.deepcopy(part_module(build.model, part))
        work.load_state_dict(state, strict=True, assign=True)
        state.clear()
        build.layers += backend.quantize_block(work)
        if not backend.caches:  # a backend that cannot save its layers: the quantized module itself is placed
            _replace(build.model, part, work.to(destination))
            return
        state, layout = backend.save_quantized(work)
        del work
    if build.writer is not None:
        build.writer.write_part(part.name, state, layout or {})
    _assign(build, part, _place(state, destination), layout)


def _from_cache(build: _Build, part: Part, loaded: _Loaded) -> None:
    """Place a part read from the cache."""
    layout = loaded.layout if part.quantized else None
    if layout is not None:
        build.layers += len(layout)
    _assign(build, part, _place(loaded.tensors, build.plan.destination(part)), layout)


def _run(
    build: _Build,
    read: Callable[[Part], _Loaded],
    place: Callable[[_Build, Part, _Loaded], None],
    title: str,
    progress: bool,
    ahead: int = 1,
) -> None:
    """Place every part in order while the next ``ahead`` parts are read, each by a thread of its own."""
    parts = build.parts
    with (
        ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="streamed-load") as pool,
        _progress(progress, title, len(parts)) as advance,
    ):
        pending = deque(pool.submit(read, part) for part in parts[:ahead])
        for index, part in enumerate(parts):
            loaded = pending.popleft().result()
            if index + ahead < len(parts):
                pending.append(pool.submit(read, parts[index + ahead]))  # read ahead while this one is placed
            place(build, part, loaded)
            advance()


def _checkpoint_reader(header: Header, sources: dict[str, dict[str, str]], sd_ops: Any) -> Callable[[Part], _Loaded]:  # noqa: ANN401
    def read(part: Part) -> _Loaded:
        names = sources[part.name]
        raw = read_tensors(header, names.values())
        tensors: dict[str, torch.Tensor] = {}
        for local, file_key in names.items():
            key, value = (f"{part.name}.{local}" if part.name else local), raw.pop(file_key)
            for new_key, new_value in sd_ops.apply_to_key_value(key, value) if sd_ops is not None else [(key, value)]:
                tensors[new_key[len(part.name) + 1 :] if part.name else new_key] = new_value
        return _Loaded(tensors)

    return read


def _cache_reader(cached: qcache.CachedModel) -> Callable[[Part], _Loaded]:
    def read(part: Part) -> _Loaded:
        tensors, layout = cached.read_part(part.name)
        return _Loaded(tensors, layout)

    return read


def _unloaded(model: nn.Module) -> list[str]:
    return [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]


def _release_host_cache() -> None:
    """Hand the page-locked blocks torch's host caching allocator keeps back to the system."""
    release = getattr(torch._C, "_host_emptyCache", None)
    if release is not None and torch.cuda.is_available():
        release()


def _open_cache(
    checkpoint: Path,
    header: Header,
    backend: QuantizationBackend,
    plan: LoadPlan,
    parts: list[Part],
    cache_root: Path | None,
    write_cache: bool,
) -> tuple[Path | None, dict[str, Any] | None, qcache.CachedModel | None]:
    """The entry's folder and key, and the entry when it can be used (else None, with the reason logged)."""
    if cache_root is None:
        return None, None, None
    if not backend.caches:
        logger.info("The %s backend cannot save its quantized layers: no quantized-weight cache", backend.name)
        return None, None, None
    key = qcache.cache_key(
        checkpoint,
        backend,
        dtype=plan.dtype,
        quantized_on=plan.device.type,
        skip_root_modules=SKIP_ROOT_MODULES,
        header=header,
    )
    folder = qcache.entry_folder(cache_root, checkpoint, backend.name)
    try:
        return folder, key, qcache.open_entry(folder, key, [p.name for p in parts])
    except qcache.CacheUnusable as e:
        action = "quantizing from the checkpoint" + (" and writing it" if write_cache else "")
        logger.info("Quantized-weight cache %s not used: %s; %s", folder, e, action)
        return folder, key, None


def estimated_bytes(model: nn.Module, parts: list[Part], backend: QuantizationBackend, dtype: torch.dtype) -> int:
    """Bytes of the quantized model (what a cache entry holds), from the meta model."""
    from ltx_audio_reference.quantization.memory import part_bytes  # noqa: PLC0415 - memory imports this module

    return sum(part_bytes(model, p, backend if p.quantized else None, dtype)[1] for p in parts)


def load_transformer_streamed(
    checkpoint: Path | str,
    backend: QuantizationBackend,
    plan: LoadPlan,
    *,
    cache_root: Path | None = None,
    write_cache: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Build the quantized transformer of ``checkpoint`` part by part (see the module docstring).

    Args:
        checkpoint: The ``.safetensors`` file ``load_transformer`` would load.
        backend: The quantization backend.
        plan: Where to quantize and where each part lives.
        cache_root: The quantized-weight cache's folder (:func:`~.cache.cache_root`), or None for no cache.
        write_cache: Write the cache when it is missing or unusable (False on all but one process of a machine).
        progress: Show a progress bar.

    Returns:
        The transformer, quantized, its parts placed as planned, in train mode.

    Raises:
        ValueError: If the checkpoint lacks a tensor the transformer needs.
        ConfigurationError: If the backend cannot run on ``plan.device``.
    """
    from ltx_audio_reference.errors import ConfigurationError  # noqa: PLC0415

    problem = backend.problem(plan.device)
    if problem is not None:
        raise ConfigurationError(problem)
    start = time.perf_counter()
    checkpoint = Path(checkpoint)
    header = read_header(checkpoint)
    model, sd_ops = meta_transformer(checkpoint, header)
    parts = model_parts(model)
    sources = source_keys(header, sd_ops, model, parts)

    folder, key, cached = _open_cache(checkpoint, header, backend, plan, parts, cache_root, write_cache)
    build = None
    if cached is not None:
        build = _Build(model, parts, plan, backend)
        try:
            title = f"Loading {backend.name} from the cache"
            _run(build, _cache_reader(cached), _from_cache, title, progress, ahead=CACHE_READ_AHEAD)
        except qcache.CacheUnusable as e:
            logger.warning("Quantized-weight cache %s not used: %s; quantizing from the checkpoint", folder, e)
            build = None
        else:
            gigabytes = cached.total_bytes / 1e9
            logger.info("Quantized-weight cache hit: loaded %s (%.1f GB) from %s", backend.name, gigabytes, folder)
    if build is None:
        if cached is not None:  # the failed attempt may have filled some parts: start from a fresh meta model
            model, _ = meta_transformer(checkpoint, header)
        writer = None
        if folder is not None and key is not None and write_cache:
            writer = qcache.begin_write(folder, key, estimated_bytes(model, parts, backend, plan.dtype))
        build = _Build(model, parts, plan, backend, writer=writer)
        title = f"Loading and quantizing with {backend.name}"
        with qcache.writing(writer):
            _run(build, _checkpoint_reader(header, sources, sd_ops), _from_checkpoint, title, progress)
        if writer is not None and writer.finish() is not None:
            logger.info("Quantized-weight cache written: %s; later runs load it with no bf16 pass", folder)
        source = "stream"
    else:
        source = "cache"

    unloaded = _unloaded(build.model)
    if unloaded:
        raise RuntimeError(f"The streamed load left {len(unloaded)} tensor(s) unloaded, for example {unloaded[:3]}")
    _release_host_cache()
    seconds = time.perf_counter() - start
    blocks = len(build.model.transformer_blocks)
    report = QuantizationReport(backend.name, build.layers, blocks, seconds, source=source)
    build.model.__dict__[REPORT_ATTR] = report
    host = sorted(b for b in plan.host_blocks if b < blocks) if plan.device.type != "cpu" else []
    logger.info(
        "Loaded the transformer part by part (%s): %d layers (%d blocks) with %s on %s in %.1f s%s",
        "from the quantized-weight cache" if source == "cache" else "quantized as each part arrived",
        report.layers,
        blocks,
        backend.name,
        plan.device,
        seconds,
        f"; {len(host)} block(s) left in host memory for block swap" if host else "",
    )
    return build.model


__all__ = [
    "LoadPlan",
    "Part",
    "load_transformer_streamed",
    "meta_transformer",
    "model_parts",
    "part_keys",
    "part_module",
    "source_keys",
]
