"""What a weight-quantization backend is, and which of a transformer block's modules every backend quantizes."""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

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
        weight_bits: Bits per quantized weight element (sizes the memory estimates of ``ltx-trainer check``).
        plugin: The plugin that registered it (set by the registry).
    """

    name: str
    summary: str
    traceable: bool = False
    weight_bits: int = 8
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

    @property
    def caches(self) -> bool:
        """Whether the backend implements :meth:`save_quantized` and :meth:`load_quantized` (the quantized-weight
        cache and the streamed load's placement use them)."""
        return type(self).save_quantized is not QuantizationBackend.save_quantized

    def save_quantized(self, part: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
        """What rebuilds ``part`` once :meth:`quantize_block` has run on it.

        Returns:
            ``(tensors, layout)``: plain tensors by state-dict key (on the part's device, not copied), and the
            quantization map: quantized module name (relative to ``part``) -> JSON-serializable settings.

        Raises:
            NotImplementedError: If the backend cannot save its quantized layers (then it is never cached).
        """
        raise NotImplementedError(f"the {self.name} backend cannot save its quantized layers")

    def load_quantized(
        self,
        part: nn.Module,
        tensors: dict[str, torch.Tensor],
        layout: dict[str, dict[str, Any]],
    ) -> None:
        """Rebuild ``part`` in place from what :meth:`save_quantized` returned.

        Args:
            part: The part as built from the checkpoint's config, unquantized, on the meta device.
            tensors: The saved tensors, on the device the part will live on; they become the part's tensors (no
                copy).
            layout: The saved quantization map.

        Raises:
            NotImplementedError: If the backend cannot load saved layers.
            RuntimeError: If the tensors do not fit the part (``load_state_dict``'s missing or unexpected keys).
        """
        raise NotImplementedError(f"the {self.name} backend cannot load saved quantized layers")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


__all__ = ["EXCLUDE_PATTERNS", "QuantizationBackend", "excluded", "quantizable_linears"]
