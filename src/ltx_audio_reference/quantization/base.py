"""What a weight-quantization backend is, and which of a transformer block's modules every backend quantizes."""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import nn

#: Modules never quantized, as glob patterns over module names (relative to the module being quantized). The same
#: list as ltx-trainer 1.2.0's ``quantization.EXCLUDE_PATTERNS`` (a tier-2 test keeps them equal): projections in and
#: out, timestep and AdaLN embeddings (they see float32 sinusoids), caption projections and norms.
EXCLUDE_PATTERNS: tuple[str, ...] = (
    "patchify_proj",
    "audio_patchify_proj",
    "proj_out",
    "audio_proj_out",
    "*adaln*",
    "time_proj",
    "timestep_embedder*",
    "caption_projection*",
    "audio_caption_projection*",
    "*norm*",
)


def excluded(name: str) -> bool:
    """Whether the module called ``name`` stays in full precision (:data:`EXCLUDE_PATTERNS`)."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDE_PATTERNS)


def quantizable_linears(module: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """``(name, linear)`` for every plain ``nn.Linear`` under ``module`` that is not excluded.

    Subclasses of ``nn.Linear`` (an already quantized layer, a LoRA wrapper's base) are skipped, so quantizing twice
    changes nothing.
    """
    for name, child in module.named_modules():
        if type(child) is nn.Linear and not excluded(name):
            yield name, child


class QuantizationBackend(ABC):
    """One value of ``acceleration.quantization``: how a transformer block's weights become low-precision.

    A backend quantizes one block at a time, on whatever device the block is on (the caller moves each block to the
    GPU first, as the stock trainer does). Register instances through the ``register_quantization_backends`` hook.

    Attributes:
        name: The config value (``int8``, ``int8-quanto``, ...).
        summary: One line for ``ltx-trainer quantization`` and the docs.
        traceable: Whether ``torch.compile`` sees its matmul (True) or it is an opaque custom op.
        plugin: The plugin that registered it (set by the registry).
    """

    name: str
    summary: str
    traceable: bool = False
    plugin: str = "<direct>"

    def problem(self, device: torch.device | str | None = None) -> str | None:  # noqa: ARG002 - for subclasses
        """Why this backend cannot run here (a missing package, an unsupported device), or None when it can.

        The message names what to install or which setting to change; it is shown before any model loads.
        """
        return None

    @abstractmethod
    def version(self) -> str:
        """A string that changes whenever the quantized tensors this backend produces could change."""

    @abstractmethod
    def quantize_block(self, block: nn.Module) -> int:
        """Quantize ``block``'s eligible layers in place, frozen; returns how many layers were quantized."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


__all__ = ["EXCLUDE_PATTERNS", "QuantizationBackend", "excluded", "quantizable_linears"]
