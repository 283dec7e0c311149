"""optimum-quanto backends: the values ltx-trainer 1.2.0 accepts itself (``int8-quanto``, ``fp8-quanto``, ...).

Each block is quantized with ``optimum.quanto.quantize(block, weights=..., exclude=EXCLUDE_PATTERNS)`` and
``freeze``, which is what the stock trainer does block by block, so a config with ``quantization: int8-quanto``
trains on the same tensors as before this package routed quantization (a tier-2 test compares them with the stock
function). quanto's matmul is a custom op that ``torch.compile`` cannot see into, and optimum-quanto is in
maintenance mode; ``int8`` (:mod:`.int8`) quantizes onto the same int8 grid with a traceable runtime.
"""

from __future__ import annotations

from importlib import metadata

from torch import nn

from ltx_audio_reference.quantization.base import EXCLUDE_PATTERNS, QuantizationBackend

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


__all__ = ["QUANTO_TYPES", "QuantoBackend"]
