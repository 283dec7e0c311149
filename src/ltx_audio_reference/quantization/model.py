"""Quantize a whole transformer with any registered backend, block by block (the stock trainer's procedure)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ltx_audio_reference.errors import ConfigurationError
from ltx_audio_reference.quantization.base import QuantizationBackend

logger = logging.getLogger(__name__)

#: Top-level modules never quantized (ltx-trainer 1.2.0's ``SKIP_ROOT_MODULES``; a tier-2 test keeps them equal).
#: The other top-level modules (AdaLN, caption projection, ...) are quantized as the stock trainer does.
SKIP_ROOT_MODULES = frozenset(
    {"patchify_proj", "audio_patchify_proj", "proj_out", "audio_proj_out", "audio_caption_projection"}
)


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` (or the streamed load, :mod:`.stream`) did.

    Attributes:
        backend: The backend's name.
        layers: Layers quantized.
        blocks: Transformer blocks.
        seconds: How long it took.
        source: ``pass`` (:func:`quantize_model` on a loaded model), ``stream`` (quantized while it loaded) or
            ``cache`` (loaded from the quantized-weight cache).
    """

    backend: str
    layers: int
    blocks: int
    seconds: float
    source: str = "pass"


def registered_backends() -> object:
    """The registered backends (``register_quantization_backends`` on every plugin), a ``QuantizationRegistry``."""
    from ltx_audio_reference.plugins import collect  # noqa: PLC0415 - the plugin host sits above this layer
    from ltx_audio_reference.registry import QuantizationRegistry  # noqa: PLC0415

    return collect(QuantizationRegistry)


def get_backend(name: str, backends: object | None = None) -> QuantizationBackend:
    """The backend registered as ``name``.

    Raises:
        UnknownNameError: Listing the registered names.
    """
    return (backends if backends is not None else registered_backends()).get(name)


def quantize_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The parts quantized one at a time: every transformer block, then the remaining top-level modules."""
    blocks = getattr(model, "transformer_blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        return [("", model)]
    parts = [(f"transformer_blocks.{i}", block) for i, block in enumerate(blocks)]
    parts += [(n, m) for n, m in model.named_children() if n != "transformer_blocks" and n not in SKIP_ROOT_MODULES]
    return parts


def quantize_model(
    model: nn.Module,
    precision: str,
    quantize_activations: bool = False,
    device: torch.device | str | None = None,
    *,
    backends: object | None = None,
    progress: bool = True,
) -> nn.Module:
    """Quantize ``model`` in place with the backend named ``precision``; the call ltx-trainer 1.2.0 makes.

    Each part moves to ``device`` (CUDA when available, as in the stock trainer), is quantized there and moves back,
    so the peak on the GPU is one block and the host never holds two copies of a block. The way back is a blocking
    copy into pageable memory: a ``non_blocking`` one (the stock trainer's) puts the whole quantized model in
    page-locked memory that torch's host caching allocator keeps for the life of the process. A model the streamed
    load already quantized (:mod:`.stream`) is returned as it is.

    Args:
        model: The transformer (bf16, usually on the CPU).
        precision: A registered backend name (``int8``, ``int8-dynamic``, ``int8-quanto``, ...).
        quantize_activations: Not supported (the stock trainer never sets it); must be False.
        device: Where to quantize (default: CUDA if available, else CPU).
        backends: The registry to look the name up in (default: the registered backends).
        progress: Show a progress bar.

    Returns:
        ``model``, quantized and back on its original device.

    Raises:
        ConfigurationError: If the backend cannot run here (the message says what to install or change).
        UnknownNameError: If no backend has that name.
    """
    if quantize_activations:
        raise ConfigurationError("quantize_activations is not supported; use quantization: int8-dynamic for W8A8")
    done = quantization_report(model)
    if done is not None and done.source != "pass":
        if done.backend != precision:
            raise ConfigurationError(f"The transformer was loaded quantized with {done.backend}, not {precision}")
        logger.info("The transformer was quantized with %s while it loaded; nothing left to quantize", done.backend)
        return model
    backend = get_backend(precision, backends)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    problem = backend.problem(device)
    if problem is not None:
        raise ConfigurationError(problem)
    first = next(model.parameters())
    original_device, dtype = first.device, first.dtype
    parts = quantize_parts(model)
    start = time.perf_counter()
    layers = 0
    with _progress(progress, f"Quantizing with {backend.name}", len(parts)) as advance:
        for _, part in parts:
            part.to(device, dtype=dtype, non_blocking=True)
            layers += backend.quantize_block(part)
            part.to(original_device)  # blocking: see the docstring
            advance()
    model.to(original_device)
    release = getattr(torch._C, "_host_emptyCache", None)
    if release is not None and device.type == "cuda":
        release()
    blocks = len(getattr(model, "transformer_blocks", ()))
    report = QuantizationReport(backend.name, layers, blocks, time.perf_counter() - start)
    logger.info(
        "Quantized %d layers (%d blocks) with %s on %s in %.1f s",
        report.layers,
        report.blocks,
        report.backend,
        device,
        report.seconds,
    )
    model.__dict__["_ltx_audio_reference_quantization"] = report
    return model


def quantization_report(model: nn.Module) -> QuantizationReport | None:
    """What :func:`quantize_model` did to ``model`` (or to the transformer inside a wrapper), or None."""
    for module in model.modules():
        report = module.__dict__.get("_ltx_audio_reference_quantization")
        if report is not None:
            return report
    return None


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar; yields the function that advances it (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


__all__ = [
    "SKIP_ROOT_MODULES",
    "QuantizationReport",
    "get_backend",
    "quantization_report",
    "quantize_model",
    "quantize_parts",
    "registered_backends",
]
