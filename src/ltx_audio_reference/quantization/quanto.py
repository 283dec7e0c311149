"""optimum-quanto backends: the values ltx-trainer 1.2.0 accepts itself (``int8-quanto``, ``fp8-quanto``, ...).

Each block is quantized with ``optimum.quanto.quantize(block, weights=..., exclude=EXCLUDE_PATTERNS)`` and
``freeze``, which is what the stock trainer does block by block, so a config with ``quantization: int8-quanto``
trains on the same tensors as before this package routed quantization (a tier-2 test compares them with the stock
function). quanto's matmul is a custom op that ``torch.compile`` cannot see into, and optimum-quanto is in
maintenance mode; ``int8`` (:mod:`.int8`) quantizes onto the same int8 grid with a traceable runtime.
"""

from __future__ import annotations

import glob
from importlib import metadata
from typing import Any

import torch
from torch import nn

from ltx_audio_reference.quantization.base import EXCLUDE_PATTERNS, QuantizationBackend

#: Bits per weight of each optimum.quanto weight type.
QUANTO_BITS: dict[str, int] = {"qint8": 8, "qint4": 4, "qint2": 2, "qfloat8": 8, "qfloat8_e4m3fnuz": 8}

#: config value -> optimum.quanto weight type, in ltx-trainer 1.2.0's order.
QUANTO_TYPES: dict[str, str] = {
    "int8-quanto": "qint8",
    "int4-quanto": "qint4",
    "int2-quanto": "qint2",
    "fp8-quanto": "qfloat8",
    "fp8uz-quanto": "qfloat8_e4m3fnuz",
}

INSTALL_HINT = "pip install 'optimum-quanto>=0.2.6'"


class QuantoBackend(QuantizationBackend):
    """One optimum-quanto weight type."""

    traceable = False

    def __init__(self, name: str) -> None:
        if name not in QUANTO_TYPES:
            raise ValueError(f"Unknown quanto quantization {name!r}; known: {', '.join(QUANTO_TYPES)}")
        self.name = name
        self.qtype = QUANTO_TYPES[name]
        self.weight_bits = QUANTO_BITS[self.qtype]
        self.summary = f"optimum-quanto {self.qtype} weights (ltx-trainer's own)"

    def problem(self, device: object = None) -> str | None:  # noqa: ARG002
        try:
            import optimum.quanto  # noqa: F401, PLC0415
        except ImportError:
            return f"quantization: {self.name} needs optimum-quanto ({INSTALL_HINT}), or use quantization: int8"
        return None

    def version(self) -> str:
        return f"optimum-quanto/{metadata.version('optimum-quanto')}"

    def quantize_block(self, block: nn.Module) -> int:
        from optimum import quanto  # noqa: PLC0415 - optional at import time

        quanto.quantize(block, weights=getattr(quanto, self.qtype), exclude=list(EXCLUDE_PATTERNS))
        quanto.freeze(block)
        return sum(isinstance(m, quanto.QModuleMixin) for m in block.modules())

    @property
    def caches(self) -> bool:
        """8-bit types only (see :meth:`save_quantized`)."""
        return self.weight_bits == 8

    def save_quantized(self, part: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
        """quanto's own serialization: the state dict (``weight._data``, ``weight._scale``, ...) and
        ``quantization_map``. Only 8-bit weights: int4/int2 packings depend on the device they were made on."""
        from optimum import quanto  # noqa: PLC0415

        if self.weight_bits != 8:
            raise NotImplementedError(f"{self.name} weights are repacked per device; only 8-bit quanto types are saved")
        return dict(part.state_dict()), quanto.quantization_map(part)

    def load_quantized(
        self,
        part: nn.Module,
        tensors: dict[str, torch.Tensor],
        layout: dict[str, dict[str, Any]],
    ) -> None:
        """``quantize`` exactly the listed modules of the meta part (as ``requantize`` does), then assign the tensors:
        quanto rebuilds each weight from ``_data`` and ``_scale`` (``optimize()`` picks the device's subclass)."""
        from optimum import quanto  # noqa: PLC0415

        groups: dict[tuple[str, str], list[str]] = {}
        for name, settings in layout.items():
            groups.setdefault((settings["weights"], settings["activations"]), []).append(glob.escape(name))
        for (weights, activations), names in groups.items():
            quanto.quantize(
                part,
                weights=None if weights == "none" else weights,
                activations=None if activations == "none" else activations,
                include=names,
            )
        part.load_state_dict(tensors, strict=True, assign=True)


__all__ = ["QUANTO_TYPES", "QuantoBackend"]
