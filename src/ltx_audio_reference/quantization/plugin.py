"""Built-in quantization backends, registered through the same hook a third-party backend uses.

Registered as the ``quantization`` entry point of the ``ltx_trainer`` group. The order is the order users see:
ltx-trainer's own optimum-quanto values first (unchanged), then this package's traceable int8 runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ltx_audio_reference.hookspecs import hookimpl

if TYPE_CHECKING:
    from ltx_audio_reference.registry import QuantizationRegistry

PLUGIN_NAME = "quantization"


@hookimpl
def register_quantization_backends(register: QuantizationRegistry) -> None:
    """``int8-quanto`` ... ``fp8uz-quanto`` (optimum-quanto), then ``int8`` and ``int8-dynamic``."""
    # Imported here: loading the plugin (``ltx-trainer --help``, ``strategies``) must not import torch.
    from ltx_audio_reference.quantization.int8 import Int8Backend  # noqa: PLC0415
    from ltx_audio_reference.quantization.quanto import QUANTO_TYPES, QuantoBackend  # noqa: PLC0415

    for name in QUANTO_TYPES:
        register(QuantoBackend(name))
    register(Int8Backend(dynamic=False))
    register(Int8Backend(dynamic=True))


@hookimpl
def validate_config(config: object) -> None:
    """A backend that cannot run here (optimum-quanto missing, no int8 tensor cores) stops before the model loads."""
    name = getattr(getattr(config, "acceleration", None), "quantization", None)
    if name is None:
        return
    import torch  # noqa: PLC0415

    from ltx_audio_reference.quantization.model import get_backend  # noqa: PLC0415

    problem = get_backend(name).problem("cuda" if torch.cuda.is_available() else "cpu")
    if problem is not None:
        raise ValueError(f"acceleration.quantization: {problem}")


__all__ = ["PLUGIN_NAME", "register_quantization_backends", "validate_config"]
